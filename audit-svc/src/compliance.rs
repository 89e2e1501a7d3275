//! Compliance judgement, pure and synchronous: per enrolled (volume, policy) pair, given the
//! policy's window (the slot owed and the next one, computed from its own schedule and grace),
//! the pair's snapshots and its latest attempt, decide compliant / pending / quota_blocked /
//! missing / excluded and say why. Roll-ups are counts of verdicts.
//!
//! Order of the checks (DESIGN.md §5): excluded; compliant when an available snapshot of ours
//! stands for the judged slot; pending when the pair was enrolled after that slot; quota_blocked
//! when the latest attempt for that slot was blocked by quota; missing otherwise.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use policy_svc::schedule::Schedule;

/// `created_by` of snapshots Snapkeeper makes.
pub const CREATED_BY_SNAPKEEPER: &str = "snapkeeper";
/// `created_by` of snapshots the old system made; they count as ours.
pub const CREATED_BY_SEED: &str = "p9_auto_snapshots";

/// Whether a snapshot's `created_by` marks it as ours.
pub fn is_ours(created_by: &str) -> bool {
    created_by == CREATED_BY_SNAPKEEPER || created_by == CREATED_BY_SEED
}

/// The judgement of one pair. Declared in the seed's severity order, which sorting uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// The latest attempt for the judged slot was blocked by quota.
    QuotaBlocked,
    /// No good snapshot for the judged slot.
    Missing,
    /// A good snapshot stands for the judged slot.
    Compliant,
    /// Enrolled after the judged slot (or no slot yet): nothing owed.
    Pending,
    /// An active exclusion covers the volume or its project.
    Excluded,
}

/// How one policy is judged at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Human-readable schedule, e.g. "daily at 00:00 UTC" or "window 2 days".
    pub cadence: String,
    /// The latest slot whose grace has passed; `None` when the schedule has none yet.
    pub judged_slot: Option<DateTime<Utc>>,
    /// The slot after the judged one: when the next snapshot is owed.
    pub next_due_at: Option<DateTime<Utc>>,
}

impl Window {
    /// The window of a schedule with `grace` at `now`: the judged slot is the latest slot at or
    /// before `now - grace`, so a slot is only judged once its grace has passed.
    pub fn of_schedule(schedule: &Schedule, grace: Duration, cadence: String, now: DateTime<Utc>) -> Self {
        let horizon = now - grace;
        let judged_slot = schedule.latest_at_or_before(horizon);
        let next_due_at = schedule.next_after(judged_slot.unwrap_or(horizon));
        Self { cadence, judged_slot, next_due_at }
    }

    /// The seed's rule for a policy without a known schedule: a snapshot within the last `days`.
    pub fn of_days(days: u32, now: DateTime<Utc>) -> Self {
        Self {
            cadence: format!("window {days} days"),
            judged_slot: Some(now - Duration::days(i64::from(days))),
            next_due_at: None,
        }
    }
}

/// One snapshot of a (volume, policy) pair, as the inventory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFact<'a> {
    /// Metadata `created_by`.
    pub created_by: &'a str,
    /// Cinder status.
    pub status: &'a str,
    /// Cinder's created_at.
    pub created_at: DateTime<Utc>,
    /// Metadata `slot` (ours); `None` for the old system's snapshots.
    pub slot: Option<DateTime<Utc>>,
}

/// What the snapshots of one pair add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Available snapshots of ours.
    pub available: u32,
    /// Newest snapshot of ours in any state.
    pub last_any: Option<DateTime<Utc>>,
    /// Newest available snapshot of ours.
    pub last_good: Option<DateTime<Utc>>,
    /// Newest slot an available snapshot stands for (its `slot`, else its created_at).
    pub good_for: Option<DateTime<Utc>>,
    /// Newest slot an error snapshot stands for.
    pub error_for: Option<DateTime<Utc>>,
    /// Newest slot a snapshot still in another state (creating, ...) stands for.
    pub unsettled_for: Option<DateTime<Utc>>,
}

impl SnapshotStats {
    /// Adds one snapshot; snapshots not created by us (or the old system) are ignored.
    pub fn add(&mut self, snapshot: &SnapshotFact<'_>) {
        if !is_ours(snapshot.created_by) {
            return;
        }
        let stands_for = snapshot.slot.unwrap_or(snapshot.created_at);
        self.last_any = self.last_any.max(Some(snapshot.created_at));
        match snapshot.status {
            "available" => {
                self.available += 1;
                self.last_good = self.last_good.max(Some(snapshot.created_at));
                self.good_for = self.good_for.max(Some(stands_for));
            }
            "error" => self.error_for = self.error_for.max(Some(stands_for)),
            _ => self.unsettled_for = self.unsettled_for.max(Some(stands_for)),
        }
    }
}

/// What an attempt for a slot came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A snapshot was created.
    Created,
    /// The create failed.
    Failed,
    /// The snapshot was not attempted (not for quota).
    Skipped,
    /// Quota blocked it; `detail` says which quota, e.g. "gigabytes quota 980/1000 GiB".
    QuotaBlocked {
        /// The figures, for the reason.
        detail: String,
    },
}

/// One attempt of snapshot-svc for a pair, from the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The slot it was for, when recorded.
    pub slot: Option<DateTime<Utc>>,
    /// Its outcome.
    pub outcome: Outcome,
}

impl Attempt {
    /// Whether it was made for `slot`: recorded with that slot, or (no slot recorded) made at or
    /// after it.
    pub fn is_for(&self, slot: DateTime<Utc>) -> bool {
        match self.slot {
            Some(s) => s == slot,
            None => self.occurred_at >= slot,
        }
    }
}

/// Takes `attempt`, the next one of a pair in append order, into `latest`, the latest attempt
/// made for `slot` so far. Ties go to the later attempt, as records are appended in order.
pub fn take_latest_for(latest: &mut Option<Attempt>, attempt: Attempt, slot: DateTime<Utc>) {
    if attempt.is_for(slot) && latest.as_ref().is_none_or(|l| attempt.occurred_at >= l.occurred_at) {
        *latest = Some(attempt);
    }
}

/// An active exclusion covering a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// When it stops applying; `None` for never.
    pub until: Option<DateTime<Utc>>,
    /// Why, as entered.
    pub reason: String,
}

/// What is known of one pair.
#[derive(Debug, Clone, Copy)]
pub struct PairFacts<'a> {
    /// When the pair was first seen enrolled; `None` when unknown (treated as long ago).
    pub enrolled_at: Option<DateTime<Utc>>,
    /// The exclusion covering it, if any.
    pub exclusion: Option<&'a Exclusion>,
    /// Its snapshots.
    pub snapshots: &'a SnapshotStats,
    /// The latest attempt for the judged slot.
    pub attempt: Option<&'a Attempt>,
}

/// A judgement with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The status.
    pub status: Status,
    /// Why, for people.
    pub reason: String,
}

fn day_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

/// Judges one pair in its policy's window.
pub fn judge(facts: &PairFacts<'_>, window: &Window) -> Verdict {
    let verdict = |status, reason: String| Verdict { status, reason };
    if let Some(exclusion) = facts.exclusion {
        let until = exclusion.until.map(|t| format!(" until {}", t.format("%Y-%m-%d"))).unwrap_or_default();
        return verdict(Status::Excluded, format!("excluded{until}: {}", exclusion.reason));
    }
    let Some(slot) = window.judged_slot else {
        let first = window.next_due_at.map(|t| format!("; first due {}", day_text(t))).unwrap_or_default();
        return verdict(Status::Pending, format!("no slot has passed its grace yet{first}"));
    };
    if facts.snapshots.good_for.is_some_and(|good| good >= slot) {
        return verdict(Status::Compliant, format!("snapshot available for slot {}", day_text(slot)));
    }
    if let Some(enrolled) = facts.enrolled_at
        && enrolled > slot
    {
        return verdict(
            Status::Pending,
            format!("enrolled {} after slot {}; nothing owed yet", day_text(enrolled), day_text(slot)),
        );
    }
    if let Some(Attempt { outcome: Outcome::QuotaBlocked { detail }, .. }) = facts.attempt {
        return verdict(Status::QuotaBlocked, detail.clone());
    }
    let slot_text = day_text(slot);
    let reason = if facts.snapshots.error_for.is_some_and(|t| t >= slot) {
        format!("only an error snapshot for slot {slot_text}")
    } else if facts.snapshots.unsettled_for.is_some_and(|t| t >= slot) {
        format!("snapshot for slot {slot_text} not available yet")
    } else if matches!(facts.attempt, Some(Attempt { outcome: Outcome::Failed, .. })) {
        format!("create failed for slot {slot_text}")
    } else if matches!(facts.attempt, Some(Attempt { outcome: Outcome::Skipped, .. })) {
        format!("skipped for slot {slot_text}")
    } else {
        format!("no snapshot for slot {slot_text}")
    };
    verdict(Status::Missing, reason)
}

/// Counts of verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Compliant pairs.
    pub compliant: u32,
    /// Missing pairs (the seed's "noncompliant").
    pub missing: u32,
    /// Pending pairs.
    pub pending: u32,
    /// Quota-blocked pairs.
    pub quota_blocked: u32,
    /// Excluded pairs.
    pub excluded: u32,
}

impl Summary {
    /// Counts one more verdict.
    pub fn add(&mut self, status: Status) {
        let counter = match status {
            Status::Compliant => &mut self.compliant,
            Status::Missing => &mut self.missing,
            Status::Pending => &mut self.pending,
            Status::QuotaBlocked => &mut self.quota_blocked,
            Status::Excluded => &mut self.excluded,
        };
        *counter += 1;
    }

    /// Every pair counted.
    pub fn total(&self) -> u32 {
        self.compliant + self.missing + self.pending + self.quota_blocked + self.excluded
    }

    /// compliant / (compliant + missing + quota_blocked) in percent; 100 when nothing is owed.
    pub fn compliance_pct(&self) -> f64 {
        let owed = self.compliant + self.missing + self.quota_blocked;
        if owed == 0 { 100.0 } else { f64::from(self.compliant) * 100.0 / f64::from(owed) }
    }
}

/// Counts of one group (domain, project or policy) with its display name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Display name.
    pub name: String,
    /// Counts.
    pub summary: Summary,
}

/// Adds a verdict to the group `key` of `groups`, naming it on first sight.
pub fn tally(groups: &mut BTreeMap<String, Group>, key: &str, name: &str, status: Status) {
    // Looking up before inserting keeps the hot path (a known group) free of allocations.
    if let Some(group) = groups.get_mut(key) {
        group.summary.add(status);
        return;
    }
    let mut group = Group { name: name.to_owned(), summary: Summary::default() };
    group.summary.add(status);
    groups.insert(key.to_owned(), group);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn window(expression: &str, zone: &str, grace_hours: i64, now: &str) -> Window {
        let schedule = Schedule::cron(expression, zone).unwrap();
        Window::of_schedule(&schedule, Duration::hours(grace_hours), schedule.cadence(), at(now))
    }

    fn ours(status: &'static str, created_at: &str, slot: Option<&str>) -> SnapshotFact<'static> {
        SnapshotFact {
            created_by: CREATED_BY_SNAPKEEPER,
            status,
            created_at: at(created_at),
            slot: slot.map(at),
        }
    }

    fn stats(snapshots: &[SnapshotFact<'_>]) -> SnapshotStats {
        let mut stats = SnapshotStats::default();
        for snapshot in snapshots {
            stats.add(snapshot);
        }
        stats
    }

    fn status_of(snapshots: &SnapshotStats, window: &Window) -> Status {
        let facts = PairFacts { enrolled_at: None, exclusion: None, snapshots, attempt: None };
        judge(&facts, window).status
    }

    #[test]
    fn daily_policy_is_judged_against_the_slot_whose_grace_passed() {
        let yesterday = stats(&[ours("available", "2026-11-24T00:03:00Z", Some("2026-11-24T00:00:00Z"))]);
        // 01:00 with 2 h grace: today's slot is still in grace, so yesterday's is judged.
        let early = window("0 0 * * *", "UTC", 2, "2026-11-25T01:00:00Z");
        assert_eq!(early.judged_slot, Some(at("2026-11-24T00:00:00Z")));
        assert_eq!(early.next_due_at, Some(at("2026-11-25T00:00:00Z")));
        assert_eq!(status_of(&yesterday, &early), Status::Compliant);
        // Exactly at slot + grace the new slot is judged, and yesterday's snapshot no longer covers it.
        let boundary = window("0 0 * * *", "UTC", 2, "2026-11-25T02:00:00Z");
        assert_eq!(boundary.judged_slot, Some(at("2026-11-25T00:00:00Z")));
        assert_eq!(status_of(&yesterday, &boundary), Status::Missing);
        let today = stats(&[ours("available", "2026-11-25T00:04:00Z", Some("2026-11-25T00:00:00Z"))]);
        assert_eq!(status_of(&today, &boundary), Status::Compliant);
    }

    #[test]
    fn weekly_policy_is_judged_weekly() {
        // Sunday 2026-11-22 00:00 UTC is the slot all week long.
        let sunday = stats(&[ours("available", "2026-11-22T00:10:00Z", Some("2026-11-22T00:00:00Z"))]);
        let friday = window("0 0 * * 0", "UTC", 2, "2026-11-27T12:00:00Z");
        assert_eq!(friday.judged_slot, Some(at("2026-11-22T00:00:00Z")));
        assert_eq!(friday.next_due_at, Some(at("2026-11-29T00:00:00Z")));
        assert_eq!(status_of(&sunday, &friday), Status::Compliant);
        let next_sunday_after_grace = window("0 0 * * 0", "UTC", 2, "2026-11-29T03:00:00Z");
        assert_eq!(status_of(&sunday, &next_sunday_after_grace), Status::Missing);
    }

    #[test]
    fn monthly_policy_is_not_missing_for_the_rest_of_the_month() {
        // The seed judged everything by a 2-day window, so this pair looked missing on the 20th.
        let first = stats(&[ours("available", "2026-11-01T00:02:00Z", Some("2026-11-01T00:00:00Z"))]);
        let late_in_month = window("0 0 1 * *", "UTC", 2, "2026-11-20T09:00:00Z");
        assert_eq!(late_in_month.judged_slot, Some(at("2026-11-01T00:00:00Z")));
        assert_eq!(late_in_month.next_due_at, Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(status_of(&first, &late_in_month), Status::Compliant);
        let seed_window = Window::of_days(2, at("2026-11-20T09:00:00Z"));
        assert_eq!(status_of(&first, &seed_window), Status::Missing);
        // Inside the grace of December's slot November's snapshot still counts; after it, not.
        assert_eq!(
            status_of(&first, &window("0 0 1 * *", "UTC", 2, "2026-12-01T01:59:00Z")),
            Status::Compliant
        );
        assert_eq!(
            status_of(&first, &window("0 0 1 * *", "UTC", 2, "2026-12-01T02:00:00Z")),
            Status::Missing
        );
    }

    #[test]
    fn cron_policy_in_a_time_zone_follows_dst() {
        // 02:30 Europe/Berlin daily. 2026-03-29 has no 02:30 (spring forward): no slot that day,
        // so on the 29th the 28th's slot is still the one judged.
        let berlin = window("30 2 * * *", "Europe/Berlin", 1, "2026-03-29T12:00:00Z");
        assert_eq!(berlin.judged_slot, Some(at("2026-03-28T01:30:00Z")));
        assert_eq!(berlin.next_due_at, Some(at("2026-03-30T00:30:00Z")));
        let on_the_28th = stats(&[ours("available", "2026-03-28T01:31:00Z", Some("2026-03-28T01:30:00Z"))]);
        assert_eq!(status_of(&on_the_28th, &berlin), Status::Compliant);
        // 2026-10-25 (fall back): 02:30 happens twice; the slot is the first, 00:30Z.
        let fall_back = window("30 2 * * *", "Europe/Berlin", 1, "2026-10-25T01:45:00Z");
        assert_eq!(fall_back.judged_slot, Some(at("2026-10-25T00:30:00Z")));
        // Every 6 hours, in New York, grace 0: on the spring-forward day 02:00 local is skipped.
        let every_six = window("0 */6 * * *", "America/New_York", 0, "2026-03-08T07:30:00Z");
        assert_eq!(every_six.judged_slot, Some(at("2026-03-08T05:00:00Z")));
        assert_eq!(every_six.next_due_at, Some(at("2026-03-08T10:00:00Z")));
    }

    #[test]
    fn grace_longer_than_an_hourly_interval_judges_an_older_slot() {
        let hourly = window("0 * * * *", "UTC", 2, "2026-11-25T10:30:00Z");
        assert_eq!(hourly.judged_slot, Some(at("2026-11-25T08:00:00Z")));
        assert_eq!(hourly.next_due_at, Some(at("2026-11-25T09:00:00Z")));
    }

    #[test]
    fn newly_enrolled_pairs_are_pending_until_their_first_slot_is_judged() {
        let none = SnapshotStats::default();
        let daily = window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z");
        let facts = PairFacts {
            enrolled_at: Some(at("2026-11-25T06:00:00Z")),
            exclusion: None,
            snapshots: &none,
            attempt: None,
        };
        let verdict = judge(&facts, &daily);
        assert_eq!(verdict.status, Status::Pending);
        assert!(verdict.reason.contains("after slot 2026-11-25T00:00Z"), "{}", verdict.reason);
        let enrolled_before = PairFacts { enrolled_at: Some(at("2026-11-24T23:00:00Z")), ..facts };
        assert_eq!(judge(&enrolled_before, &daily).status, Status::Missing);
        // An interval anchored in the future has no slot yet.
        let future = Schedule::interval(Duration::hours(6), Some(at("2027-01-01T00:00:00Z"))).unwrap();
        let window =
            Window::of_schedule(&future, Duration::zero(), future.cadence(), at("2026-11-25T12:00:00Z"));
        assert_eq!(judge(&facts, &window).status, Status::Pending);
    }

    #[test]
    fn quota_blocked_when_the_latest_attempt_for_the_slot_was_blocked() {
        let none = SnapshotStats::default();
        let daily = window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z");
        let slot = at("2026-11-25T00:00:00Z");
        let blocked =
            Outcome::QuotaBlocked { detail: "gigabytes quota 980/1000 GiB, needs 40 GiB".to_owned() };
        let attempts = vec![
            Attempt {
                occurred_at: at("2026-11-24T00:05:00Z"),
                slot: Some(at("2026-11-24T00:00:00Z")),
                outcome: Outcome::Failed,
            },
            Attempt { occurred_at: at("2026-11-25T00:05:00Z"), slot: Some(slot), outcome: Outcome::Failed },
            Attempt { occurred_at: at("2026-11-25T01:05:00Z"), slot: Some(slot), outcome: blocked },
        ];
        let attempt = latest_for(&attempts, slot);
        let facts =
            PairFacts { enrolled_at: None, exclusion: None, snapshots: &none, attempt: attempt.as_ref() };
        let verdict = judge(&facts, &daily);
        assert_eq!(verdict.status, Status::QuotaBlocked);
        assert_eq!(verdict.reason, "gigabytes quota 980/1000 GiB, needs 40 GiB");
        // A later attempt that failed for another reason replaces the quota block.
        let mut later = attempts.clone();
        later.push(Attempt { occurred_at: at("2026-11-25T02:00:00Z"), slot: None, outcome: Outcome::Failed });
        let latest = latest_for(&later, slot);
        let facts = PairFacts { attempt: latest.as_ref(), ..facts };
        let verdict = judge(&facts, &daily);
        assert_eq!(
            (verdict.status, verdict.reason.as_str()),
            (Status::Missing, "create failed for slot 2026-11-25T00:00Z")
        );
        // A quota block for an older slot does not make the current slot quota-blocked.
        assert_eq!(latest_for(&attempts[..1], slot), None);
    }

    fn latest_for(attempts: &[Attempt], slot: DateTime<Utc>) -> Option<Attempt> {
        let mut latest = None;
        for attempt in attempts {
            take_latest_for(&mut latest, attempt.clone(), slot);
        }
        latest
    }

    #[test]
    fn ties_go_to_the_later_attempt_and_attempts_without_a_slot_count_from_it_on() {
        let slot = at("2026-11-25T00:00:00Z");
        let blocked = Outcome::QuotaBlocked { detail: "snapshot count quota 10/10".to_owned() };
        let same_time = at("2026-11-25T00:05:00Z");
        let attempts = [
            Attempt { occurred_at: same_time, slot: Some(slot), outcome: Outcome::Failed },
            Attempt { occurred_at: same_time, slot: None, outcome: blocked.clone() },
            // Older than the latest so far: kept out although it comes later.
            Attempt { occurred_at: at("2026-11-25T00:01:00Z"), slot: Some(slot), outcome: Outcome::Skipped },
            // Made before the slot without naming one: not for it.
            Attempt { occurred_at: at("2026-11-24T23:59:00Z"), slot: None, outcome: Outcome::Created },
        ];
        assert_eq!(latest_for(&attempts, slot).map(|a| a.outcome), Some(blocked));
        assert!(!attempts[3].is_for(slot));
        assert!(attempts[1].is_for(slot));
    }

    #[test]
    fn excluded_pairs_are_listed_as_excluded_whatever_their_snapshots() {
        let none = SnapshotStats::default();
        let exclusion = Exclusion { until: Some(at("2026-12-01T00:00:00Z")), reason: "migration".to_owned() };
        let facts =
            PairFacts { enrolled_at: None, exclusion: Some(&exclusion), snapshots: &none, attempt: None };
        let verdict = judge(&facts, &window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z"));
        assert_eq!(verdict.status, Status::Excluded);
        assert_eq!(verdict.reason, "excluded until 2026-12-01: migration");
    }

    #[test]
    fn error_only_snapshots_are_missing() {
        let errors = stats(&[ours("error", "2026-11-25T00:01:00Z", Some("2026-11-25T00:00:00Z"))]);
        assert_eq!(errors.available, 0);
        assert_eq!(errors.last_any, Some(at("2026-11-25T00:01:00Z")));
        assert_eq!(errors.last_good, None);
        let facts = PairFacts { enrolled_at: None, exclusion: None, snapshots: &errors, attempt: None };
        let verdict = judge(&facts, &window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z"));
        assert_eq!(verdict.status, Status::Missing);
        assert_eq!(verdict.reason, "only an error snapshot for slot 2026-11-25T00:00Z");
        let creating = stats(&[ours("creating", "2026-11-25T00:01:00Z", Some("2026-11-25T00:00:00Z"))]);
        assert_eq!(
            status_of(&creating, &window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z")),
            Status::Missing
        );
    }

    #[test]
    fn snapshots_of_the_old_system_count_and_manual_ones_do_not() {
        let seed = SnapshotFact {
            created_by: CREATED_BY_SEED,
            status: "available",
            created_at: at("2026-11-25T00:07:00Z"),
            slot: None,
        };
        let manual = SnapshotFact { created_by: "someone", ..seed.clone() };
        let counted = stats(&[seed]);
        assert_eq!(counted.available, 1);
        assert_eq!(
            status_of(&counted, &window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z")),
            Status::Compliant
        );
        let ignored = stats(&[manual]);
        assert_eq!(ignored, SnapshotStats::default());
        assert_eq!(
            status_of(&ignored, &window("0 0 * * *", "UTC", 2, "2026-11-25T12:00:00Z")),
            Status::Missing
        );
    }

    #[test]
    fn summaries_count_and_rate_like_the_seed() {
        let mut groups = BTreeMap::new();
        for status in [
            Status::Compliant,
            Status::Compliant,
            Status::Missing,
            Status::Pending,
            Status::QuotaBlocked,
            Status::Excluded,
        ] {
            tally(&mut groups, "d1", "Domain One", status);
        }
        let group = &groups["d1"];
        assert_eq!(group.name, "Domain One");
        assert_eq!(group.summary.total(), 6);
        assert!((group.summary.compliance_pct() - 50.0).abs() < 1e-9);
        assert!((Summary::default().compliance_pct() - 100.0).abs() < 1e-9);
        assert!(Status::QuotaBlocked < Status::Missing && Status::Missing < Status::Compliant);
    }
}
