//! The policy catalog: named schedules with retention. Entries come from the database
//! (`UpsertPolicy`), from the active rules document (object form), or from the seed's legacy
//! names (`hourly_N`, `daily_N`, `weekly_N`, `monthly_1st`, `monthly_15th`), which resolve
//! without an entry. Resolution order: rules document, stored catalog, legacy name.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use crate::schedule::Schedule;

/// Longest allowed policy name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest retention count.
pub const MAX_RETENTION: u32 = 1000;
/// Shortest allowed `max_age`.
pub const MIN_MAX_AGE: Duration = Duration::hours(1);
/// Longest allowed compliance grace.
pub const MAX_GRACE: Duration = Duration::days(7);
/// Compliance grace when none is given.
pub const DEFAULT_GRACE: Duration = Duration::hours(2);
/// The seed's retention when nothing else gives a count.
pub const FALLBACK_RETENTION: u32 = 7;

/// Where a policy definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// Stored with `UpsertPolicy`.
    Catalog,
    /// Defined by the active rules document.
    RulesFile,
    /// A legacy name without a catalog entry.
    LegacyName,
}

/// How many snapshots of one (volume, policy) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest `count` available snapshots (1..=1000).
    pub count: u32,
    /// Also drop available snapshots older than this.
    pub max_age: Option<Duration>,
}

/// Audit fields of a stored catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// When the entry was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who last changed it.
    pub updated_by: String,
}

/// A snapshot policy: when snapshots are taken and how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Name, 1..=64 characters from `A-Za-z0-9_.-`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// When slots occur.
    pub schedule: Schedule,
    /// How many snapshots are kept.
    pub retention: Retention,
    /// How long after a slot a missing snapshot is not yet judged non-compliant.
    pub compliance_grace: Duration,
    /// Where the definition comes from.
    pub source: PolicySource,
    /// Audit fields, for stored entries only.
    pub stamp: Option<Stamp>,
}

/// Checks a policy name; the reason names the rule that failed.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("policy name must not be empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("policy name {name:?} is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!("policy name {name:?} contains {bad:?}; allowed are A-Z a-z 0-9 _ . -"));
    }
    Ok(())
}

/// Checks a retention definition.
pub fn check_retention(retention: Retention) -> Result<(), String> {
    if retention.count == 0 || retention.count > MAX_RETENTION {
        return Err(format!("retention count must be 1 to {MAX_RETENTION}, got {}", retention.count));
    }
    if let Some(max_age) = retention.max_age
        && max_age < MIN_MAX_AGE
    {
        return Err("max_age must be at least 1 hour".to_owned());
    }
    Ok(())
}

/// Checks a compliance grace.
pub fn check_grace(grace: Duration) -> Result<(), String> {
    if grace < Duration::zero() || grace > MAX_GRACE {
        return Err("compliance_grace must be from 0 to 7 days".to_owned());
    }
    Ok(())
}

/// The policy a legacy name stands for, if it is one. Monthly names keep 1 here; a rule's or an
/// assignment's retention overrides that.
pub fn legacy_policy(name: &str) -> Option<Policy> {
    let (expression, count) = legacy_definition(name)?;
    Some(Policy {
        name: name.to_owned(),
        description: format!("legacy name {name}"),
        schedule: Schedule::cron(expression, "UTC").ok()?,
        retention: Retention { count, max_age: None },
        compliance_grace: DEFAULT_GRACE,
        source: PolicySource::LegacyName,
        stamp: None,
    })
}

/// Whether `name` is a legacy name.
pub fn is_legacy_name(name: &str) -> bool {
    legacy_definition(name).is_some()
}

/// The cron expression (UTC) and retention of a legacy name, without building the schedule:
/// evaluation asks this for every volume.
fn legacy_definition(name: &str) -> Option<(&'static str, u32)> {
    if let Some(n) = name.strip_prefix("hourly_") {
        Some(("0 * * * *", legacy_count(n)?))
    } else if let Some(n) = name.strip_prefix("daily_") {
        Some(("0 0 * * *", legacy_count(n)?))
    } else if let Some(n) = name.strip_prefix("weekly_") {
        Some(("0 0 * * 0", legacy_count(n)?))
    } else if name == "monthly_1st" {
        Some(("0 0 1 * *", 1))
    } else if name == "monthly_15th" {
        Some(("0 0 15 * *", 1))
    } else {
        None
    }
}

fn legacy_count(digits: &str) -> Option<u32> {
    // "daily_05" or "daily_+5" are not the seed's names; only canonical decimal counts.
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| (1..=MAX_RETENTION).contains(n))
}

/// The policies a decision can name: the active document's entries, stored entries, and legacy
/// names.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    document: BTreeMap<String, Policy>,
    stored: BTreeMap<String, Policy>,
}

impl Catalog {
    /// A catalog of the document's entries over the stored ones.
    pub fn new(document: impl IntoIterator<Item = Policy>, stored: impl IntoIterator<Item = Policy>) -> Self {
        Self {
            document: document.into_iter().map(|p| (p.name.clone(), p)).collect(),
            stored: stored.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    /// The definition of `name`, resolving legacy names last.
    pub fn resolve(&self, name: &str) -> Option<Policy> {
        self.document.get(name).or_else(|| self.stored.get(name)).cloned().or_else(|| legacy_policy(name))
    }

    /// Whether `name` resolves.
    pub fn knows(&self, name: &str) -> bool {
        self.document.contains_key(name) || self.stored.contains_key(name) || is_legacy_name(name)
    }

    /// The retention `name` keeps when nothing more specific says, and where that comes from.
    pub fn default_retention(&self, name: &str) -> Option<(Retention, PolicySource)> {
        self.document.get(name).or_else(|| self.stored.get(name)).map(|p| (p.retention, p.source)).or_else(
            || {
                legacy_definition(name)
                    .map(|(_, count)| (Retention { count, max_age: None }, PolicySource::LegacyName))
            },
        )
    }

    /// Entries defined by the document.
    pub fn document_entries(&self) -> impl Iterator<Item = &Policy> {
        self.document.values()
    }

    /// Whether the document defines `name`.
    pub fn defined_by_document(&self, name: &str) -> bool {
        self.document.contains_key(name)
    }

    /// All defined entries by name, document entries shadowing stored ones.
    pub fn entries(&self) -> Vec<Policy> {
        let mut merged = self.stored.clone();
        merged.extend(self.document.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_resolve_to_utc_midnight_schedules_keeping_n() {
        let daily = legacy_policy("daily_5").unwrap();
        assert_eq!(daily.retention.count, 5);
        assert_eq!(daily.schedule.cadence(), "cron '0 0 * * *' UTC");
        assert_eq!(legacy_policy("weekly_4").unwrap().schedule.cadence(), "cron '0 0 * * 0' UTC");
        assert_eq!(legacy_policy("hourly_24").unwrap().retention.count, 24);
        assert_eq!(legacy_policy("monthly_1st").unwrap().retention.count, 1);
        assert_eq!(legacy_policy("monthly_15th").unwrap().schedule.cadence(), "cron '0 0 15 * *' UTC");
        for not_legacy in
            ["daily", "daily_", "daily_0", "daily_05", "daily_x", "monthly_2nd", "yearly_1", "daily_1001"]
        {
            assert!(legacy_policy(not_legacy).is_none(), "{not_legacy}");
        }
    }

    #[test]
    fn names_are_checked_for_length_and_characters() {
        assert!(check_name("gold.daily-7_x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a,b").unwrap_err().contains("','"));
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn document_entries_shadow_stored_ones_and_legacy_names() {
        let mut stored = legacy_policy("daily_5").unwrap();
        stored.retention.count = 9;
        stored.source = PolicySource::Catalog;
        let mut from_document = legacy_policy("daily_5").unwrap();
        from_document.retention.count = 3;
        from_document.source = PolicySource::RulesFile;
        let catalog = Catalog::new([from_document], [stored.clone()]);
        assert_eq!(catalog.resolve("daily_5").unwrap().retention.count, 3);
        let catalog = Catalog::new([], [stored]);
        assert_eq!(
            catalog.default_retention("daily_5").unwrap(),
            (Retention { count: 9, max_age: None }, PolicySource::Catalog)
        );
        assert_eq!(catalog.default_retention("weekly_2").unwrap().1, PolicySource::LegacyName);
        assert!(!catalog.knows("gold"));
    }

    #[test]
    fn retention_and_grace_ranges() {
        assert!(check_retention(Retention { count: 0, max_age: None }).is_err());
        assert!(check_retention(Retention { count: 1001, max_age: None }).is_err());
        assert!(check_retention(Retention { count: 1, max_age: Some(Duration::minutes(59)) }).is_err());
        assert!(check_retention(Retention { count: 1000, max_age: Some(Duration::hours(1)) }).is_ok());
        assert!(check_grace(Duration::days(8)).is_err());
        assert!(check_grace(Duration::zero()).is_ok());
    }
}
