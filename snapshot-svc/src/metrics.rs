//! Prometheus series of snapshot-svc: runs by kind and result with their duration, the snapshot
//! actions per policy (counted after their audit event is committed, so they agree with the
//! audit records), quota blocks, the outbox waiting for audit-svc, and the OpenStack calls.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use service_kit::metrics::prometheus_client::metrics::counter::Counter;
use service_kit::metrics::prometheus_client::metrics::family::Family;
use service_kit::metrics::prometheus_client::metrics::gauge::Gauge;
use service_kit::metrics::prometheus_client::metrics::histogram::Histogram;
use service_kit::metrics::prometheus_client::registry::{Registry, Unit};

use crate::Config;
use crate::records::Outcome;
use crate::run::{RunKind, RunStatus};

/// Run duration buckets (seconds): a small cloud in seconds, a large one in an hour or more.
const RUN_BUCKETS: [f64; 12] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0];

/// The states a run ends in.
const FINAL_STATUSES: [RunStatus; 5] = [
    RunStatus::Completed,
    RunStatus::Partial,
    RunStatus::Failed,
    RunStatus::Cancelled,
    RunStatus::Interrupted,
];

type Labels<const N: usize> = [(&'static str, String); N];
type SecondsGauge = Gauge<f64, AtomicU64>;

struct Series {
    runs: Family<Labels<2>, Counter>,
    run_duration: Family<Labels<1>, Histogram, fn() -> Histogram>,
    last_success: Family<Labels<1>, SecondsGauge>,
    scheduler_interval: SecondsGauge,
    created: Family<Labels<1>, Counter>,
    deleted: Family<Labels<1>, Counter>,
    failed: Family<Labels<2>, Counter>,
    quota_blocks: Family<Labels<1>, Counter>,
    outbox: Gauge,
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

static SERIES: LazyLock<Series> = LazyLock::new(|| Series {
    runs: Family::default(),
    run_duration: Family::new_with_constructor(run_histogram as fn() -> Histogram),
    last_success: Family::default(),
    scheduler_interval: Gauge::default(),
    created: Family::default(),
    deleted: Family::default(),
    failed: Family::default(),
    quota_blocks: Family::default(),
    outbox: Gauge::default(),
});

/// Adds snapshot-svc's series and the OpenStack call series to `registry`. The last-success
/// time starts at `now`, so that a fresh process gets the same grace as one that just ran.
pub fn register(registry: &mut Registry, config: &Config, now: DateTime<Utc>) {
    let series = &*SERIES;
    let started = now.timestamp() as f64;
    for kind in [RunKind::Scheduled, RunKind::Manual] {
        let labels = [("kind", kind.as_str().to_owned())];
        let gauge = series.last_success.get_or_create(&labels);
        if gauge.get() == 0.0 {
            gauge.set(started);
        }
        // Every result from zero, so that the first failed run shows as an increase.
        for status in FINAL_STATUSES {
            series.runs.get_or_create_owned(&[
                ("kind", kind.as_str().to_owned()),
                ("result", status.as_str().to_owned()),
            ]);
        }
    }
    if config.scheduler_enabled {
        series.scheduler_interval.set(f64::from(config.snapshot_interval_minutes) * 60.0);
    }
    registry.register("runs", "Runs finished, by kind (scheduled, manual) and result", series.runs.clone());
    registry.register_with_unit(
        "run_duration",
        "How long finished runs took, by kind",
        Unit::Seconds,
        series.run_duration.clone(),
    );
    registry.register(
        "run_last_success_timestamp_seconds",
        "When a run of this kind last finished completed or partial (or this process started, if later)",
        series.last_success.clone(),
    );
    if config.scheduler_enabled {
        registry.register_with_unit(
            "scheduler_interval",
            "How often the scheduler queues a run (AUTO_SNAPSHOT_INTERVAL_MINUTES)",
            Unit::Seconds,
            series.scheduler_interval.clone(),
        );
    }
    registry.register("snapshots_created", "Snapshots created, by policy", series.created.clone());
    registry.register(
        "snapshots_deleted",
        "Snapshots deleted by retention, by policy",
        series.deleted.clone(),
    );
    registry.register(
        "snapshots_failed",
        "Snapshot creates or deletes that failed, by policy and action",
        series.failed.clone(),
    );
    registry.register(
        "quota_blocks",
        "Snapshots not taken because the project's quota would be exceeded, by policy",
        series.quota_blocks.clone(),
    );
    registry.register(
        "outbox_events",
        "Audit events waiting in the outbox for audit-svc",
        series.outbox.clone(),
    );
    openstack::register_metrics(registry);
}

/// A run this replica executed ended with `status` after `took`.
pub(crate) fn run_finished(kind: RunKind, status: RunStatus, took: Duration, now: DateTime<Utc>) {
    let kind_label = [("kind", kind.as_str().to_owned())];
    SERIES
        .runs
        .get_or_create(&[("kind", kind.as_str().to_owned()), ("result", status.as_str().to_owned())])
        .inc();
    SERIES.run_duration.get_or_create(&kind_label).observe(took.as_secs_f64());
    if matches!(status, RunStatus::Completed | RunStatus::Partial) {
        SERIES.last_success.get_or_create(&kind_label).set(now.timestamp() as f64);
    }
}

/// One volume's outcome, committed with its audit event.
pub(crate) fn outcome_recorded(policy: &str, outcome: &Outcome) {
    let policy_label = || [("policy", policy.to_owned())];
    let failed = |action: &str| [("policy", policy.to_owned()), ("action", action.to_owned())];
    // A policy's series exist from its first outcome on, so that its first failure or quota
    // block shows as an increase.
    SERIES.created.get_or_create_owned(&policy_label());
    SERIES.deleted.get_or_create_owned(&policy_label());
    SERIES.failed.get_or_create_owned(&failed("create"));
    SERIES.failed.get_or_create_owned(&failed("delete"));
    SERIES.quota_blocks.get_or_create_owned(&policy_label());
    match outcome {
        Outcome::Created { .. } | Outcome::Recovered { .. } => {
            SERIES.created.get_or_create(&policy_label()).inc();
        }
        Outcome::Deleted { .. } => {
            SERIES.deleted.get_or_create(&policy_label()).inc();
        }
        Outcome::CreateFailed { .. } => {
            SERIES.failed.get_or_create(&failed("create")).inc();
        }
        Outcome::DeleteFailed { .. } => {
            SERIES.failed.get_or_create(&failed("delete")).inc();
        }
        Outcome::QuotaBlocked(_) => {
            SERIES.quota_blocks.get_or_create(&policy_label()).inc();
        }
        Outcome::Skipped(_) | Outcome::WouldCreate { .. } | Outcome::WouldDelete { .. } => {}
    }
}

/// The outbox holds `waiting` events.
pub(crate) fn outbox_depth(waiting: i64) {
    SERIES.outbox.set(waiting);
}
