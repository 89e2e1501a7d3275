//! The quota forecast (the seed's `snapshot_quota_forecast` runbook, done properly): per project,
//! whether the snapshots the policies will take within a horizon fit the quota read with usage,
//! net of what retention deletes in the same window, with a safety margin. Pure: slot counts,
//! quotas and existing snapshot counts come in as figures.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use policy_svc::schedule::Schedule;

use crate::quota::{ProjectQuota, QuotaFigure};

/// Most slots counted in one horizon: a 1-minute schedule over the longest horizon (31 days).
pub const MAX_SLOTS: u32 = 31 * 24 * 60;

/// How bad a forecast is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fits with the margin.
    Ok,
    /// Fits without the margin only.
    Warning,
    /// Does not fit even without the margin.
    Critical,
}

/// One enrolled (volume, policy) of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// Volume size in GiB.
    pub size_gb: i64,
    /// Volume type; empty when none.
    pub volume_type: String,
    /// Policy name.
    pub policy: String,
    /// Retention count in force.
    pub retention_count: u32,
    /// Available snapshots of the pair now.
    pub existing: u32,
}

/// Demand of one policy in the project within the horizon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDemand {
    /// Slots within the horizon.
    pub slots: u32,
    /// Enrolled volumes.
    pub volumes: i64,
    /// Snapshots the slots create.
    pub snapshots_needed: i64,
    /// GiB those need.
    pub gigabytes_needed: i64,
    /// Snapshots retention deletes in the window.
    pub snapshots_freed: i64,
    /// GiB retention frees.
    pub gigabytes_freed: i64,
}

/// The forecast of one quota resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceForecast {
    /// Resource name (`gigabytes`, `snapshots`, `gigabytes_<type>`, `snapshots_<type>`).
    pub resource: String,
    /// Limit; -1 unlimited.
    pub limit: i64,
    /// In use.
    pub used: i64,
    /// Net need within the horizon (never below 0).
    pub needed: i64,
    /// Need with the safety margin, rounded up.
    pub needed_with_margin: i64,
    /// Percent used now; 0 when unlimited.
    pub pct_used: f64,
    /// Percent after the snapshots; 0 when unlimited.
    pub pct_after: f64,
    /// How much is missing with the margin; 0 when it fits or is unlimited.
    pub shortfall: i64,
    /// Severity.
    pub severity: Severity,
}

/// The forecast of one project.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectForecast {
    /// Worst severity over the resources.
    pub severity: Severity,
    /// Resources checked.
    pub resources: Vec<ResourceForecast>,
    /// Demand per policy, by name.
    pub policies: BTreeMap<String, PolicyDemand>,
}

/// The slots of `schedule` in `(from, to]`: the snapshots one enrolled volume gets in the horizon.
pub fn slots_within(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    let mut count = 0;
    let mut cursor = from;
    while count < MAX_SLOTS {
        match schedule.next_after(cursor) {
            Some(slot) if slot <= to => {
                count += 1;
                cursor = slot;
            }
            _ => break,
        }
    }
    count
}

/// Forecasts one project. `slots_in_horizon` gives, per policy, the slots within the horizon.
pub fn forecast(
    enrolments: &[Enrolment],
    slots_in_horizon: &BTreeMap<String, u32>,
    quota: &ProjectQuota,
    safety_margin_pct: f64,
) -> ProjectForecast {
    let mut policies: BTreeMap<String, PolicyDemand> = BTreeMap::new();
    // Net change per resource: (snapshots, gigabytes), overall and per type.
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    for enrolment in enrolments {
        let slots = slots_in_horizon.get(&enrolment.policy).copied().unwrap_or(0);
        let keep = i64::from(enrolment.retention_count.max(1));
        let existing = i64::from(enrolment.existing);
        let created = i64::from(slots);
        // Retention trims the pair to `keep` within the window (the excess existing ones included).
        let after = (existing + created).min(keep);
        let freed = existing + created - after;
        let demand = policies.entry(enrolment.policy.clone()).or_default();
        demand.slots = slots;
        demand.volumes += 1;
        demand.snapshots_needed += created;
        demand.gigabytes_needed += created * enrolment.size_gb;
        demand.snapshots_freed += freed;
        demand.gigabytes_freed += freed * enrolment.size_gb;
        let delta = after - existing;
        *net.entry("snapshots".to_owned()).or_default() += delta;
        *net.entry("gigabytes".to_owned()).or_default() += delta * enrolment.size_gb;
        if !enrolment.volume_type.is_empty() {
            *net.entry(format!("snapshots_{}", enrolment.volume_type)).or_default() += delta;
            *net.entry(format!("gigabytes_{}", enrolment.volume_type)).or_default() +=
                delta * enrolment.size_gb;
        }
    }
    let mut resources = Vec::new();
    for (resource, needed) in net {
        let per_type = resource != "snapshots" && resource != "gigabytes";
        if per_type && !quota.resources.contains_key(&resource) {
            continue;
        }
        resources.push(resource_forecast(
            &resource,
            quota.figure(&resource),
            needed.max(0),
            safety_margin_pct,
        ));
    }
    let severity = resources.iter().map(|r| r.severity).max().unwrap_or(Severity::Ok);
    ProjectForecast { severity, resources, policies }
}

fn resource_forecast(resource: &str, figure: QuotaFigure, needed: i64, margin_pct: f64) -> ResourceForecast {
    let needed_with_margin = (needed as f64 * (1.0 + margin_pct / 100.0)).ceil() as i64;
    if figure.limit < 0 {
        return ResourceForecast {
            resource: resource.to_owned(),
            limit: figure.limit,
            used: figure.used,
            needed,
            needed_with_margin,
            pct_used: 0.0,
            pct_after: 0.0,
            shortfall: 0,
            severity: Severity::Ok,
        };
    }
    let pct = |value: i64| if figure.limit == 0 { 100.0 } else { value as f64 / figure.limit as f64 * 100.0 };
    let severity = if figure.used + needed > figure.limit {
        Severity::Critical
    } else if figure.used + needed_with_margin > figure.limit {
        Severity::Warning
    } else {
        Severity::Ok
    };
    ResourceForecast {
        resource: resource.to_owned(),
        limit: figure.limit,
        used: figure.used,
        needed,
        needed_with_margin,
        pct_used: pct(figure.used),
        pct_after: pct(figure.used + needed),
        shortfall: (figure.used + needed_with_margin - figure.limit).max(0),
        severity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(entries: &[(&str, i64, i64)]) -> ProjectQuota {
        ProjectQuota {
            resources: entries
                .iter()
                .map(|(k, limit, used)| ((*k).to_owned(), QuotaFigure { limit: *limit, used: *used }))
                .collect(),
        }
    }

    fn enrolment(size: i64, policy: &str, keep: u32, existing: u32) -> Enrolment {
        Enrolment {
            size_gb: size,
            volume_type: "ssd".to_owned(),
            policy: policy.to_owned(),
            retention_count: keep,
            existing,
        }
    }

    #[test]
    fn slots_are_counted_per_cadence_within_the_horizon() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().to_utc();
        let now = at("2026-03-20T10:00:00Z");
        let daily = Schedule::cron("0 0 * * *", "UTC").unwrap();
        assert_eq!(slots_within(&daily, now, now + chrono::Duration::hours(24)), 1);
        assert_eq!(slots_within(&daily, now, now + chrono::Duration::days(7)), 7);
        let hourly = Schedule::interval(chrono::Duration::hours(1), None).unwrap();
        assert_eq!(slots_within(&hourly, now, now + chrono::Duration::hours(24)), 24);
        let weekly = Schedule::cron("0 0 * * 0", "UTC").unwrap();
        assert_eq!(slots_within(&weekly, now, now + chrono::Duration::hours(24)), 0);
        let minutely = Schedule::interval(chrono::Duration::minutes(1), None).unwrap();
        assert_eq!(slots_within(&minutely, now, now + chrono::Duration::days(31)), MAX_SLOTS);
    }

    #[test]
    fn a_full_retention_window_needs_nothing_new() {
        // Keep 5, have 5: each new daily snapshot is matched by a delete.
        let list = vec![enrolment(10, "daily_5", 5, 5), enrolment(20, "daily_5", 5, 5)];
        let slots = BTreeMap::from([("daily_5".to_owned(), 1)]);
        let result = forecast(&list, &slots, &quota(&[("gigabytes", 100, 95), ("snapshots", 10, 10)]), 10.0);
        assert_eq!(result.severity, Severity::Ok);
        let demand = &result.policies["daily_5"];
        assert_eq!((demand.snapshots_needed, demand.snapshots_freed, demand.gigabytes_needed), (2, 2, 30));
    }

    #[test]
    fn growing_snapshots_are_critical_or_warning_by_margin() {
        let list = vec![enrolment(10, "daily_5", 5, 0), enrolment(10, "daily_5", 5, 0)];
        let slots = BTreeMap::from([("daily_5".to_owned(), 2), ("hourly_24".to_owned(), 24)]);
        // Needs 4 snapshots / 40 GiB.
        let critical = forecast(&list, &slots, &quota(&[("gigabytes", 100, 70)]), 10.0);
        assert_eq!(critical.severity, Severity::Critical);
        let gb = critical.resources.iter().find(|r| r.resource == "gigabytes").unwrap();
        assert_eq!((gb.needed, gb.needed_with_margin, gb.shortfall), (40, 44, 14));
        assert!((gb.pct_used - 70.0).abs() < 1e-9 && (gb.pct_after - 110.0).abs() < 1e-9);
        let warning = forecast(&list, &slots, &quota(&[("gigabytes", 100, 58)]), 10.0);
        assert_eq!(warning.severity, Severity::Warning);
        let ok = forecast(&list, &slots, &quota(&[("gigabytes", 100, 10)]), 10.0);
        assert_eq!(ok.severity, Severity::Ok);
    }

    #[test]
    fn per_type_quotas_are_checked_only_where_they_exist_and_unlimited_is_ok() {
        let list = vec![enrolment(10, "daily_5", 5, 0)];
        let slots = BTreeMap::from([("daily_5".to_owned(), 1)]);
        let result =
            forecast(&list, &slots, &quota(&[("snapshots_ssd", 0, 0), ("gigabytes", -1, 500)]), 10.0);
        let names: Vec<&str> = result.resources.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(names, ["gigabytes", "snapshots", "snapshots_ssd"]);
        assert_eq!(result.severity, Severity::Critical);
        assert_eq!(result.resources[0].severity, Severity::Ok);
    }
}
