//! Due-ness: for an enrolled (volume, policy) the slot is the latest schedule occurrence at or
//! before now; it is due when no snapshot of ours for that slot exists in any status but error.
//! Only the latest slot is ever judged, so after downtime one snapshot is taken for the latest
//! missed slot: never a burst of catch-up snapshots, never a silent skip. A create that a crash
//! left unfinished is resolved by looking for its snapshot, whatever the current slot is.

use chrono::{DateTime, Utc};

use crate::listing::OurSnapshot;

/// The verdict for one enrolled (volume, policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dueness {
    /// No snapshot of ours covers the current slot: take one.
    Due {
        /// The slot the snapshot is for.
        slot: DateTime<Utc>,
    },
    /// A snapshot of ours already covers the current slot.
    Taken {
        /// The slot.
        slot: DateTime<Utc>,
        /// The covering snapshot.
        snapshot_id: String,
    },
    /// The schedule has no occurrence at or before now yet (an interval anchored in the future).
    NoSlotYet,
}

/// Whether `snapshot` stands for `slot`: it records that slot (or a later one), or, for the old
/// system's snapshots that record none, it was created at or after the slot. Error snapshots
/// never count.
pub fn covers(snapshot: &OurSnapshot, slot: DateTime<Utc>) -> bool {
    if snapshot.is_error() {
        return false;
    }
    match snapshot.slot {
        Some(recorded) => recorded >= slot,
        None => snapshot.created_at.is_some_and(|created| created >= slot),
    }
}

/// Judges one (volume, policy) given its current slot (`None`: no occurrence yet) and our
/// snapshots of that pair.
pub fn judge(current_slot: Option<DateTime<Utc>>, existing: &[OurSnapshot]) -> Dueness {
    let Some(slot) = current_slot else { return Dueness::NoSlotYet };
    match existing.iter().find(|s| covers(s, slot)) {
        Some(snapshot) => Dueness::Taken { slot, snapshot_id: snapshot.id.to_string() },
        None => Dueness::Due { slot },
    }
}

/// What became of a create an interrupted run left unfinished (its work item still `creating`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfinished {
    /// Cinder has a snapshot of ours for the item's slot: record it as created.
    Found {
        /// The snapshot.
        snapshot_id: String,
    },
    /// No snapshot, and the slot is still the current one: it is due and is created under the
    /// same idempotency key.
    Retry,
    /// No snapshot, and the slot has passed: the create never reached Cinder.
    Lost,
}

/// Resolves an unfinished create of `item_slot` against our snapshots of the pair, in any status
/// (an error snapshot was created too, and is recorded before retention removes it).
pub fn resolve_unfinished(
    item_slot: DateTime<Utc>,
    current_slot: Option<DateTime<Utc>>,
    existing: &[OurSnapshot],
) -> Unfinished {
    if let Some(snapshot) = existing.iter().find(|s| s.slot == Some(item_slot)) {
        return Unfinished::Found { snapshot_id: snapshot.id.to_string() };
    }
    if current_slot == Some(item_slot) { Unfinished::Retry } else { Unfinished::Lost }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{CinderId, Status};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn snap(id: &str, status: &str, slot: Option<&str>, created: &str) -> OurSnapshot {
        OurSnapshot {
            id: CinderId::new(id),
            status: Status::new(status),
            created_at: Some(at(created)),
            slot: slot.map(at),
            held: false,
            size_gb: 1,
        }
    }

    /// Daily slots at midnight: the latest at or before `now`.
    fn daily_slot(now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        now.date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc())
    }

    #[test]
    fn a_pair_without_a_snapshot_for_the_slot_is_due() {
        let now = at("2026-03-02T09:00:00Z");
        let yesterday = snap("s1", "available", Some("2026-03-01T00:00:00Z"), "2026-03-01T00:01:00Z");
        assert_eq!(judge(daily_slot(now), &[yesterday]), Dueness::Due { slot: at("2026-03-02T00:00:00Z") });
    }

    #[test]
    fn any_status_but_error_covers_the_slot() {
        let slot = at("2026-03-02T00:00:00Z");
        for status in ["creating", "available", "deleting"] {
            let taken = snap("s1", status, Some("2026-03-02T00:00:00Z"), "2026-03-02T00:01:00Z");
            assert_eq!(
                judge(Some(slot), &[taken]),
                Dueness::Taken { slot, snapshot_id: "s1".to_owned() },
                "{status}"
            );
        }
        let failed = snap("s1", "error", Some("2026-03-02T00:00:00Z"), "2026-03-02T00:01:00Z");
        assert_eq!(judge(Some(slot), &[failed]), Dueness::Due { slot });
    }

    #[test]
    fn the_old_systems_snapshots_count_by_creation_time() {
        let slot = at("2026-03-02T00:00:00Z");
        let before = snap("old1", "available", None, "2026-03-01T23:59:59Z");
        let after = snap("old2", "available", None, "2026-03-02T00:00:00Z");
        assert_eq!(judge(Some(slot), std::slice::from_ref(&before)), Dueness::Due { slot });
        assert_eq!(
            judge(Some(slot), &[before, after]),
            Dueness::Taken { slot, snapshot_id: "old2".to_owned() }
        );
    }

    #[test]
    fn after_downtime_only_the_latest_missed_slot_is_due() {
        // Last snapshot four days ago; the service was down since. One snapshot, for today's slot.
        let now = at("2026-03-06T10:00:00Z");
        let last = snap("s1", "available", Some("2026-03-02T00:00:00Z"), "2026-03-02T00:00:30Z");
        let verdict = judge(daily_slot(now), &[last]);
        assert_eq!(verdict, Dueness::Due { slot: at("2026-03-06T00:00:00Z") });
        // Once taken, the same run (or the next) finds nothing more to do: no burst.
        let taken = snap("s2", "creating", Some("2026-03-06T00:00:00Z"), "2026-03-06T10:00:01Z");
        assert!(matches!(judge(daily_slot(now), &[taken]), Dueness::Taken { .. }));
    }

    #[test]
    fn policy_schedules_give_the_slot_and_catch_up_takes_only_the_latest() {
        // The slot math of policy-svc (the library snapshot-svc's NextSlots calls also run).
        let weekly = policy_svc::schedule::Schedule::cron("0 0 * * 0", "UTC").unwrap();
        let now = at("2026-03-20T10:00:00Z"); // a Friday; the last Sunday was the 15th
        let slot = weekly.latest_at_or_before(now);
        assert_eq!(slot, Some(at("2026-03-15T00:00:00Z")));
        // Down for three weeks: one snapshot for the latest Sunday, none for the missed ones.
        let old = snap("s1", "available", Some("2026-02-22T00:00:00Z"), "2026-02-22T00:00:10Z");
        assert_eq!(judge(slot, &[old]), Dueness::Due { slot: at("2026-03-15T00:00:00Z") });
        let berlin = policy_svc::schedule::Schedule::cron("0 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(berlin.latest_at_or_before(now), Some(at("2026-03-20T01:00:00Z")));
    }

    #[test]
    fn an_unfinished_create_is_found_by_its_slot_even_after_the_slot_has_passed() {
        let earlier = at("2026-03-02T00:00:00Z");
        let current = Some(at("2026-03-03T00:00:00Z"));
        let made = snap("s1", "creating", Some("2026-03-02T00:00:00Z"), "2026-03-02T00:00:01Z");
        assert_eq!(
            resolve_unfinished(earlier, current, std::slice::from_ref(&made)),
            Unfinished::Found { snapshot_id: "s1".to_owned() }
        );
        assert_eq!(resolve_unfinished(earlier, current, &[]), Unfinished::Lost);
        assert_eq!(resolve_unfinished(at("2026-03-03T00:00:00Z"), current, &[made]), Unfinished::Retry);
    }

    #[test]
    fn a_schedule_without_an_occurrence_yet_is_not_due() {
        assert_eq!(judge(None, &[]), Dueness::NoSlotYet);
    }
}
