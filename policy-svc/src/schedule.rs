//! When a policy's slots occur: a 5-field cron expression in an IANA time zone, or a fixed
//! interval from an anchor. Pure computation, shared with snapshot-svc (due-ness) and audit-svc
//! (compliance windows).
//!
//! Cron slots follow local wall-clock time: a local time skipped by a DST change has no slot that
//! day, and a local time that happens twice has one slot, at its first occurrence.

use std::fmt;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Shortest interval a schedule may have.
pub const MIN_INTERVAL: Duration = Duration::minutes(1);
/// Longest interval a schedule may have.
pub const MAX_INTERVAL: Duration = Duration::days(366);

/// Why a schedule definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is not 5 valid fields, or never occurs.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not an IANA zone name.
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Berlin")]
    TimeZone(String),
    /// The interval is out of range or not whole minutes.
    #[error("interval must be whole minutes from 1 minute to 366 days, got {0}")]
    Interval(String),
}

/// When slots occur.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression evaluated in local time of `zone`.
    Cron(Box<CronSchedule>),
    /// Slots at `anchor + k * every` for k = 0, 1, 2, ...
    Interval {
        /// Time between slots.
        every: Duration,
        /// An instant that is a slot.
        anchor: DateTime<Utc>,
    },
}

/// A parsed 5-field cron expression with its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    zone: Tz,
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Cron(a), Self::Cron(b)) => a.expression == b.expression && a.zone == b.zone,
            (Self::Interval { every: a, anchor: x }, Self::Interval { every: b, anchor: y }) => {
                a == b && x == y
            }
            _ => false,
        }
    }
}

impl Eq for Schedule {}

impl CronSchedule {
    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone slots are computed in.
    pub fn zone(&self) -> Tz {
        self.zone
    }
}

impl Schedule {
    /// Parses a 5-field cron expression in `time_zone` (empty means UTC).
    pub fn cron(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let zone = parse_zone(time_zone)?;
        let expression = expression.trim();
        let invalid = |reason: String| ScheduleError::Cron { expression: expression.to_owned(), reason };
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(invalid(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {fields}"
            )));
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|e| invalid(e.to_string()))?;
        let schedule = CronSchedule { expression: expression.to_owned(), zone, cron };
        // A pattern such as "0 0 30 2 *" parses but never occurs; refuse it now rather than at
        // every slot computation.
        let probe = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or(DateTime::UNIX_EPOCH);
        if schedule.next_after(probe).is_none() {
            return Err(invalid("never occurs".to_owned()));
        }
        Ok(Self::Cron(Box::new(schedule)))
    }

    /// A fixed interval counted from `anchor` (default: the Unix epoch).
    pub fn interval(every: Duration, anchor: Option<DateTime<Utc>>) -> Result<Self, ScheduleError> {
        if every < MIN_INTERVAL
            || every > MAX_INTERVAL
            || every.num_seconds() % 60 != 0
            || every.subsec_nanos() != 0
        {
            return Err(ScheduleError::Interval(format_duration(every)));
        }
        Ok(Self::Interval { every, anchor: anchor.unwrap_or(DateTime::UNIX_EPOCH) })
    }

    /// The latest slot at or before `t`: the slot due-ness and compliance judge.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron.latest_at_or_before(t),
            Self::Interval { every, anchor } => {
                let step = every.num_seconds();
                let since = (t - *anchor).num_seconds();
                if since < 0 {
                    return None;
                }
                anchor.checked_add_signed(Duration::seconds(since - since.rem_euclid(step)))
            }
        }
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron.next_after(t),
            Self::Interval { every, anchor } => {
                if t < *anchor {
                    return Some(*anchor);
                }
                let step = every.num_seconds();
                let since = (t - *anchor).num_seconds();
                // Sub-second parts of `t` are ignored by num_seconds; a slot equal to the truncated
                // second is not strictly after t when t has a fraction.
                let k = since.div_euclid(step) + 1;
                let mut slot = anchor.checked_add_signed(Duration::seconds(k.checked_mul(step)?))?;
                if slot <= t {
                    slot = slot.checked_add_signed(*every)?;
                }
                Some(slot)
            }
        }
    }

    /// The next `n` slots strictly after `after`, ascending.
    pub fn next_slots(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(n);
        let mut cursor = after;
        while slots.len() < n {
            let Some(slot) = self.next_after(cursor) else { break };
            slots.push(slot);
            cursor = slot;
        }
        slots
    }

    /// A short human-readable description, e.g. "cron '0 2 * * *' Europe/Berlin" or "every 6h".
    pub fn cadence(&self) -> String {
        match self {
            Self::Cron(cron) => format!("cron '{}' {}", cron.expression, cron.zone.name()),
            Self::Interval { every, anchor } if *anchor == DateTime::UNIX_EPOCH => {
                format!("every {}", format_duration(*every))
            }
            Self::Interval { every, anchor } => {
                format!("every {} from {}", format_duration(*every), anchor.to_rfc3339())
            }
        }
    }
}

impl CronSchedule {
    /// Maps a local wall-clock time to the instant of its slot: none in a DST gap, the first
    /// occurrence in a repeated hour.
    fn instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => None,
        }
    }

    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = t.with_timezone(&self.zone).naive_local();
        // Local candidates inside a repeated hour can map before `t`, and candidates in a gap
        // map nowhere; a handful of steps always gets past both.
        for _ in 0..2000 {
            local = self.cron.find_next_occurrence(&local, false).ok()?;
            if let Some(slot) = self.instant(local)
                && slot > t
            {
                return Some(slot);
            }
        }
        None
    }

    fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = t.with_timezone(&self.zone).naive_local();
        let mut inclusive = true;
        for _ in 0..2000 {
            local = self.cron.find_previous_occurrence(&local, inclusive).ok()?;
            inclusive = false;
            if let Some(slot) = self.instant(local)
                && slot <= t
            {
                return Some(slot);
            }
        }
        None
    }
}

/// Parses an IANA time zone name; empty means UTC.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

/// Formats a duration compactly: "6h", "1d12h", "90s".
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.num_seconds();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if seconds < 0 {
        out.push('-');
        seconds = -seconds;
    }
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            let _ = write!(out, "{}{unit}", seconds / size);
            seconds %= size;
        }
    }
    out
}

/// Why a duration text is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationSyntax(pub String);

impl fmt::Display for DurationSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a duration such as \"90m\", \"6h\", \"1d12h\" or \"3600s\"", self.0)
    }
}

/// Parses "1d12h", "90m", "3600s", "6h" (units d, h, m, s; at least one part).
pub fn parse_duration(text: &str) -> Result<Duration, DurationSyntax> {
    let err = || DurationSyntax(text.to_owned());
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let size = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(err()),
        };
        let value: i64 = digits.parse().map_err(|_| err())?;
        total = value.checked_mul(size).and_then(|v| total.checked_add(v)).ok_or_else(err)?;
        digits.clear();
        parts += 1;
    }
    if parts == 0 || !digits.is_empty() {
        return Err(err());
    }
    Duration::try_seconds(total).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn texts(slots: &[DateTime<Utc>]) -> Vec<String> {
        slots.iter().map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).collect()
    }

    #[test]
    fn daily_cron_in_berlin_follows_local_time_across_spring_forward() {
        let schedule = Schedule::cron("0 2 * * *", "Europe/Berlin").unwrap();
        // 2026-03-29: 02:00 local does not exist (clocks jump 02:00 -> 03:00): no slot that day.
        let slots = schedule.next_slots(at("2026-03-27T12:00:00Z"), 3);
        assert_eq!(texts(&slots), ["2026-03-28T01:00:00Z", "2026-03-30T00:00:00Z", "2026-03-31T00:00:00Z"]);
        assert_eq!(
            schedule.latest_at_or_before(at("2026-03-29T12:00:00Z")),
            Some(at("2026-03-28T01:00:00Z"))
        );
    }

    #[test]
    fn cron_in_berlin_takes_the_first_of_a_repeated_hour_at_fall_back() {
        let schedule = Schedule::cron("30 2 * * *", "Europe/Berlin").unwrap();
        // 2026-10-25: 02:30 local happens at 00:30Z (CEST) and 01:30Z (CET); one slot, the first.
        let slots = schedule.next_slots(at("2026-10-24T12:00:00Z"), 2);
        assert_eq!(texts(&slots), ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
        // Standing in the second occurrence, the first one is the latest slot.
        assert_eq!(
            schedule.latest_at_or_before(at("2026-10-25T01:45:00Z")),
            Some(at("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn every_15_minutes_in_new_york_has_no_duplicate_or_gap_slots_across_dst() {
        let schedule = Schedule::cron("*/15 * * * *", "America/New_York").unwrap();
        // Fall back 2026-11-01 02:00 EDT -> 01:00 EST: 01:xx local repeats; only first occurrences.
        let slots = schedule.next_slots(at("2026-11-01T05:30:00Z"), 4);
        assert_eq!(
            texts(&slots),
            ["2026-11-01T05:45:00Z", "2026-11-01T07:00:00Z", "2026-11-01T07:15:00Z", "2026-11-01T07:30:00Z"]
        );
        // Spring forward 2026-03-08 02:00 EST -> 03:00 EDT: 02:xx local does not exist.
        let slots = schedule.next_slots(at("2026-03-08T06:30:00Z"), 3);
        assert_eq!(texts(&slots), ["2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z"]);
        let local: Vec<String> = slots
            .iter()
            .map(|t| t.with_timezone(&chrono_tz::America::New_York).format("%H:%M").to_string())
            .collect();
        assert_eq!(local, ["01:45", "03:00", "03:15"]);
    }

    #[test]
    fn new_york_daily_at_0130_runs_once_on_fall_back_day() {
        let schedule = Schedule::cron("30 1 * * *", "America/New_York").unwrap();
        let slots = schedule.next_slots(at("2026-10-31T12:00:00Z"), 2);
        assert_eq!(texts(&slots), ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]);
    }

    #[test]
    fn latest_slot_is_inclusive_and_next_is_strict() {
        let schedule = Schedule::cron("0 0 * * *", "").unwrap();
        let midnight = at("2026-05-01T00:00:00Z");
        assert_eq!(schedule.latest_at_or_before(midnight), Some(midnight));
        assert_eq!(schedule.next_after(midnight), Some(at("2026-05-02T00:00:00Z")));
    }

    #[test]
    fn interval_slots_count_from_the_anchor() {
        let schedule = Schedule::interval(Duration::hours(6), Some(at("2026-01-01T01:00:00Z"))).unwrap();
        assert_eq!(
            schedule.latest_at_or_before(at("2026-01-01T08:00:00Z")),
            Some(at("2026-01-01T07:00:00Z"))
        );
        assert_eq!(
            texts(&schedule.next_slots(at("2026-01-01T07:00:00Z"), 2)),
            ["2026-01-01T13:00:00Z", "2026-01-01T19:00:00Z"]
        );
        assert_eq!(schedule.latest_at_or_before(at("2025-12-31T00:00:00Z")), None);
        assert_eq!(schedule.next_after(at("2025-12-31T00:00:00Z")), Some(at("2026-01-01T01:00:00Z")));
        assert_eq!(schedule.cadence(), "every 6h from 2026-01-01T01:00:00+00:00");
    }

    #[test]
    fn invalid_definitions_are_refused_with_the_reason() {
        assert!(matches!(Schedule::cron("0 0 * * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::cron("0 25 * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::cron("0 0 30 2 *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::cron("0 0 * * *", "Mars/Olympus"), Err(ScheduleError::TimeZone(_))));
        assert!(Schedule::interval(Duration::seconds(30), None).is_err());
        assert!(Schedule::interval(Duration::seconds(90), None).is_err());
        assert!(Schedule::interval(Duration::days(367), None).is_err());
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("1d12h").unwrap(), Duration::hours(36));
        assert_eq!(parse_duration("90m").unwrap(), Duration::minutes(90));
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5w").is_err());
        assert_eq!(format_duration(Duration::hours(36)), "1d12h");
    }
}
