//! Prometheus series of audit-svc, taken from the compliance judgement: the compliance ratio and
//! verdict counts per policy, and how old each volume's last good snapshot is.
//!
//! Cardinality stays bounded: the age is a histogram per policy (rebuilt from each judgement, so
//! it is the current distribution, not a running total), and a per-volume gauge exists only for
//! volumes out of compliance, at most [`MAX_VOLUME_SERIES`] of them (the oldest first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use service_kit::metrics::prometheus_client::metrics::family::Family;
use service_kit::metrics::prometheus_client::metrics::gauge::Gauge;
use service_kit::metrics::prometheus_client::metrics::histogram::Histogram;
use service_kit::metrics::prometheus_client::registry::{Registry, Unit};

use crate::compliance::Status;
use crate::report::{ComplianceReport, DEFAULT_DAYS, Judgement};

/// Most volumes given their own age series; the rest are only in the per-policy histogram.
pub const MAX_VOLUME_SERIES: usize = 200;

/// Age buckets (seconds): an hour up to a month.
const AGE_BUCKETS: [f64; 10] = [
    3600.0,
    6.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
    2.0 * 86_400.0,
    3.0 * 86_400.0,
    7.0 * 86_400.0,
    14.0 * 86_400.0,
    30.0 * 86_400.0,
    90.0 * 86_400.0,
];

type Labels<const N: usize> = [(&'static str, String); N];
type FloatGauge = Gauge<f64, AtomicU64>;

struct Series {
    ratio: Family<Labels<1>, FloatGauge>,
    volumes: Family<Labels<2>, Gauge>,
    age: Family<Labels<1>, Histogram, fn() -> Histogram>,
    volume_age: Family<Labels<3>, FloatGauge>,
}

fn age_histogram() -> Histogram {
    Histogram::new(AGE_BUCKETS)
}

static SERIES: LazyLock<Series> = LazyLock::new(|| Series {
    ratio: Family::default(),
    volumes: Family::default(),
    age: Family::new_with_constructor(age_histogram as fn() -> Histogram),
    volume_age: Family::default(),
});

/// Adds audit-svc's series to `registry`.
pub fn register(registry: &mut Registry) {
    let series = &*SERIES;
    registry.register(
        "compliance_ratio",
        "Share of volumes owing a snapshot that have a good one for the judged slot, by policy \
         (1 when none is owed)",
        series.ratio.clone(),
    );
    registry.register(
        "compliance_volumes",
        "Enrolled volumes by policy and verdict (compliant, missing, quota_blocked, pending, excluded)",
        series.volumes.clone(),
    );
    registry.register_with_unit(
        "last_good_snapshot_age",
        "Age of each enrolled volume's newest available snapshot, by policy (the current \
         distribution, rebuilt on each judgement; volumes without one are left out)",
        Unit::Seconds,
        series.age.clone(),
    );
    registry.register_with_unit(
        "volume_last_good_snapshot_age",
        "Age of the newest available snapshot of a volume out of compliance (+Inf: none), \
         for the oldest volumes up to a cap",
        Unit::Seconds,
        series.volume_age.clone(),
    );
}

/// The figures of one policy.
#[derive(Debug, Default, PartialEq)]
pub struct PolicyFigures {
    /// Volumes per verdict.
    pub counts: BTreeMap<&'static str, i64>,
    /// Ages (seconds) of the volumes that have a good snapshot.
    pub ages: Vec<f64>,
}

impl PolicyFigures {
    /// Compliant over owed (compliant, missing, quota blocked); 1 when nothing is owed.
    pub fn ratio(&self) -> f64 {
        let count = |status: &str| self.counts.get(status).copied().unwrap_or(0);
        let compliant = count(status_label(Status::Compliant));
        let owed =
            compliant + count(status_label(Status::Missing)) + count(status_label(Status::QuotaBlocked));
        if owed == 0 { 1.0 } else { compliant as f64 / owed as f64 }
    }
}

/// One out-of-compliance volume's age series.
#[derive(Debug, PartialEq)]
pub struct LateVolume {
    /// Policy.
    pub policy: String,
    /// Volume id.
    pub volume_id: String,
    /// Project id.
    pub project_id: String,
    /// Seconds since its last good snapshot; infinite when it has none.
    pub age: f64,
}

/// The label of a verdict.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::QuotaBlocked => "quota_blocked",
        Status::Missing => "missing",
        Status::Compliant => "compliant",
        Status::Pending => "pending",
        Status::Excluded => "excluded",
    }
}

/// The per-policy figures and the oldest late volumes (at most `cap`) of `judgement` at `now`.
pub fn summarize(
    judgement: &Judgement,
    now: DateTime<Utc>,
    cap: usize,
) -> (BTreeMap<String, PolicyFigures>, Vec<LateVolume>) {
    let mut policies: BTreeMap<String, PolicyFigures> = BTreeMap::new();
    let mut late = Vec::new();
    for row in &judgement.rows {
        let figures = policies.entry(row.policy.to_string()).or_default();
        *figures.counts.entry(status_label(row.verdict.status)).or_default() += 1;
        let age = row.stats.last_good.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        if let Some(age) = age {
            figures.ages.push(age);
        }
        if matches!(row.verdict.status, Status::Missing | Status::QuotaBlocked) {
            late.push((age.unwrap_or(f64::INFINITY), row));
        }
    }
    // Sorted by reference, so only the `cap` kept are copied out.
    late.sort_by(|(a, a_row), (b, b_row)| b.total_cmp(a).then_with(|| a_row.volume.id.cmp(&b_row.volume.id)));
    let late = late
        .into_iter()
        .take(cap)
        .map(|(age, row)| LateVolume {
            policy: row.policy.to_string(),
            volume_id: row.volume.id.clone(),
            project_id: row.volume.project_id.to_string(),
            age,
        })
        .collect();
    (policies, late)
}

/// Replaces the series with those of `judgement` at `now`.
pub fn observe(judgement: &Judgement, now: DateTime<Utc>) {
    let (policies, late) = summarize(judgement, now, MAX_VOLUME_SERIES);
    let series = &*SERIES;
    // Cleared first: a policy or volume that is gone (or back in compliance) loses its series.
    series.ratio.clear();
    series.volumes.clear();
    series.age.clear();
    series.volume_age.clear();
    for (policy, figures) in &policies {
        series.ratio.get_or_create(&[("policy", policy.clone())]).set(figures.ratio());
        for (status, count) in &figures.counts {
            series
                .volumes
                .get_or_create(&[("policy", policy.clone()), ("status", (*status).to_owned())])
                .set(*count);
        }
        let histogram = series.age.get_or_create(&[("policy", policy.clone())]);
        for age in &figures.ages {
            histogram.observe(*age);
        }
    }
    for volume in late {
        let labels =
            [("policy", volume.policy), ("volume_id", volume.volume_id), ("project_id", volume.project_id)];
        series.volume_age.get_or_create(&labels).set(volume.age);
    }
}

/// Judges compliance every `every` and publishes it; runs until aborted.
pub async fn track(report: Arc<ComplianceReport>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match report.judge(DEFAULT_DAYS).await {
            Ok(judgement) => observe(&judgement, report.now()),
            Err(err) => tracing::warn!(error = %err, "compliance metrics not refreshed; retrying later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::{SnapshotStats, Verdict, Window};
    use crate::report::{JudgedRow, VolumeInfo};

    fn row(
        policy: &str,
        volume: &str,
        status: Status,
        last_good_hours_ago: Option<i64>,
        now: DateTime<Utc>,
    ) -> JudgedRow {
        JudgedRow {
            volume: Arc::new(VolumeInfo {
                id: volume.to_owned(),
                project_id: Arc::from("p1"),
                ..VolumeInfo::default()
            }),
            policy: Arc::from(policy),
            retention_count: 0,
            enrolled_at: None,
            stats: SnapshotStats {
                last_good: last_good_hours_ago.map(|h| now - chrono::Duration::hours(h)),
                ..SnapshotStats::default()
            },
            window: Arc::new(Window::of_days(2, now)),
            verdict: Verdict { status, reason: String::new() },
        }
    }

    #[test]
    fn ratio_counts_only_owed_volumes_and_late_volumes_are_capped_oldest_first() {
        let now = Utc::now();
        let judgement = Judgement {
            rows: vec![
                row("daily", "v1", Status::Compliant, Some(2), now),
                row("daily", "v2", Status::Missing, Some(50), now),
                row("daily", "v3", Status::QuotaBlocked, None, now),
                row("daily", "v4", Status::Excluded, Some(500), now),
                row("daily", "v5", Status::Missing, Some(30), now),
                row("weekly", "w1", Status::Pending, None, now),
            ],
            synced_at: Some(now),
        };
        let (policies, late) = summarize(&judgement, now, 2);
        let daily = &policies["daily"];
        assert!((daily.ratio() - 0.25).abs() < 1e-9, "1 compliant of 4 owed: {}", daily.ratio());
        assert_eq!(daily.counts["missing"], 2);
        assert_eq!(daily.ages.len(), 4, "v3 has no good snapshot");
        assert!((daily.ages[0] - 7200.0).abs() < 1.0);
        assert!((policies["weekly"].ratio() - 1.0).abs() < 1e-9, "nothing owed yet");
        let ids: Vec<&str> = late.iter().map(|v| v.volume_id.as_str()).collect();
        assert_eq!(ids, ["v3", "v2"], "never snapshotted first, then the oldest; capped at 2");
        assert!(late[0].age.is_infinite());
    }
}
