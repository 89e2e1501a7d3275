//! Retention per (volume, policy): keep the newest `count` available snapshots, drop available ones
//! older than `max_age`, never the last available one; snapshots still creating never count and
//! are never touched; our error snapshots go after a grace period; held snapshots
//! (`snapkeeper_hold=true`) are neither counted nor deleted. The old system's snapshots are
//! included (they are ours). The plan is pure: the runner executes and verifies the deletes.

use chrono::{DateTime, Duration, Utc};

use crate::listing::{OurSnapshot, Status};

/// How many snapshots of one (volume, policy) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest `count` available snapshots (at least 1 is always kept).
    pub count: u32,
    /// Also drop available snapshots older than this.
    pub max_age: Option<Duration>,
}

/// Why a snapshot is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Beyond the newest `count` available ones.
    OverCount,
    /// Older than `max_age`.
    TooOld,
    /// In error for longer than the grace period.
    ErrorAfterGrace,
}

impl DeleteReason {
    /// Short text for records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverCount => "over retention count",
            Self::TooOld => "older than max_age",
            Self::ErrorAfterGrace => "error snapshot past grace",
        }
    }
}

/// One planned delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Cinder snapshot id.
    pub snapshot_id: String,
    /// Size in GiB (freed by the delete).
    pub size_gb: u64,
    /// Why.
    pub reason: DeleteReason,
}

/// Plans the deletes of one (volume, policy) from its listed snapshots.
pub fn plan(
    snapshots: &[OurSnapshot],
    rule: Retention,
    now: DateTime<Utc>,
    error_grace: Duration,
) -> Vec<Deletion> {
    let mut deletions = Vec::new();
    let mut available: Vec<&OurSnapshot> =
        snapshots.iter().filter(|s| !s.held && s.status == Status::Available).collect();
    // Newest first; a snapshot without a creation time sorts as the oldest. Cinder on MySQL keeps
    // whole seconds, so snapshots made in one second tie: the later slot is the newer one.
    available.sort_by(|a, b| {
        b.created_at.cmp(&a.created_at).then_with(|| b.slot.cmp(&a.slot)).then_with(|| a.id.cmp(&b.id))
    });
    let keep = rule.count.max(1) as usize;
    for (position, snapshot) in available.iter().enumerate() {
        if position == 0 {
            continue; // never the last available one
        }
        let reason = if position >= keep {
            Some(DeleteReason::OverCount)
        } else {
            match (rule.max_age, snapshot.created_at) {
                (Some(max_age), Some(created)) if now - created > max_age => Some(DeleteReason::TooOld),
                _ => None,
            }
        };
        if let Some(reason) = reason {
            deletions.push(Deletion {
                snapshot_id: snapshot.id.to_string(),
                size_gb: snapshot.size_gb,
                reason,
            });
        }
    }
    for snapshot in snapshots.iter().filter(|s| !s.held && s.status == Status::Error) {
        if snapshot.created_at.is_some_and(|created| now - created > error_grace) {
            deletions.push(Deletion {
                snapshot_id: snapshot.id.to_string(),
                size_gb: snapshot.size_gb,
                reason: DeleteReason::ErrorAfterGrace,
            });
        }
    }
    deletions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::CinderId;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn snap(id: &str, status: &str, day: u32) -> OurSnapshot {
        OurSnapshot {
            id: CinderId::new(id),
            status: Status::new(status),
            created_at: Some(at(&format!("2026-03-{day:02}T00:01:00Z"))),
            slot: None,
            held: false,
            size_gb: 10,
        }
    }

    fn ids(deletions: &[Deletion]) -> Vec<&str> {
        deletions.iter().map(|d| d.snapshot_id.as_str()).collect()
    }

    const NOW: &str = "2026-03-20T12:00:00Z";

    #[test]
    fn keeps_the_newest_count_available_and_deletes_the_rest() {
        let list: Vec<_> = (1..=7).map(|d| snap(&format!("s{d}"), "available", d)).collect();
        let plan = plan(&list, Retention { count: 5, max_age: None }, at(NOW), Duration::hours(24));
        assert_eq!(ids(&plan), ["s2", "s1"]);
        assert!(plan.iter().all(|d| d.reason == DeleteReason::OverCount));
    }

    #[test]
    fn snapshots_made_in_the_same_second_are_ordered_by_slot() {
        let mut list: Vec<_> = ["z-older", "a-newer"].iter().map(|id| snap(id, "available", 5)).collect();
        list[0].slot = Some(at("2026-03-03T00:00:00Z"));
        list[1].slot = Some(at("2026-03-04T00:00:00Z"));
        let plan = plan(&list, Retention { count: 1, max_age: None }, at(NOW), Duration::hours(24));
        assert_eq!(ids(&plan), ["z-older"]);
    }

    #[test]
    fn creating_snapshots_never_count_and_are_never_deleted() {
        let mut list: Vec<_> = (1..=3).map(|d| snap(&format!("s{d}"), "available", d)).collect();
        list.push(snap("new", "creating", 19));
        let plan = plan(&list, Retention { count: 3, max_age: None }, at(NOW), Duration::hours(24));
        assert!(plan.is_empty(), "the creating one does not push an available one out: {plan:?}");
    }

    #[test]
    fn max_age_drops_old_ones_but_never_the_last_available() {
        let list = vec![snap("s1", "available", 1), snap("s2", "available", 2), snap("s18", "available", 18)];
        let rule = Retention { count: 10, max_age: Some(Duration::days(7)) };
        let plan = plan(&list, rule, at(NOW), Duration::hours(24));
        assert_eq!(ids(&plan), ["s2", "s1"]);
        assert!(plan.iter().all(|d| d.reason == DeleteReason::TooOld));
        // All too old: the newest stays.
        let old = vec![snap("s1", "available", 1), snap("s2", "available", 2)];
        assert_eq!(ids(&super::plan(&old, rule, at(NOW), Duration::hours(24))), ["s1"]);
    }

    #[test]
    fn the_last_available_one_stays_even_with_count_zero() {
        let list = vec![snap("s1", "available", 1)];
        assert!(plan(&list, Retention { count: 0, max_age: None }, at(NOW), Duration::hours(1)).is_empty());
    }

    #[test]
    fn error_snapshots_go_after_the_grace_and_held_ones_never() {
        let mut list =
            vec![snap("s1", "available", 1), snap("err-old", "error", 10), snap("err-new", "error", 20)];
        let mut held = snap("held", "available", 2);
        held.held = true;
        list.push(held);
        let mut held_error = snap("held-err", "error", 3);
        held_error.held = true;
        list.push(held_error);
        let plan = plan(&list, Retention { count: 1, max_age: None }, at(NOW), Duration::hours(24));
        assert_eq!(ids(&plan), ["err-old"]);
        assert_eq!(plan[0].reason, DeleteReason::ErrorAfterGrace);
    }

    #[test]
    fn the_old_systems_snapshots_are_pruned_with_ours() {
        // Both kinds arrive as OurSnapshot; without a recorded slot they sort by creation time.
        let mut legacy = snap("legacy", "available", 1);
        legacy.slot = None;
        let mut ours = snap("ours", "available", 5);
        ours.slot = Some(at("2026-03-05T00:00:00Z"));
        let plan = plan(&[legacy, ours], Retention { count: 1, max_age: None }, at(NOW), Duration::hours(24));
        assert_eq!(ids(&plan), ["legacy"]);
    }
}
