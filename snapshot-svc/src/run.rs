//! A run as snapshot-svc keeps it: kinds, states, steps, batches, counters and scope, with their
//! text forms for the tables and their mapping to the `snapkeeper.snapshot.v1` contract.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use snapkeeper_proto::prost_types::Timestamp;
use snapkeeper_proto::snapshot::v1 as pb;

use crate::SnapshotError;

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunKind {
    /// A person or a script.
    Manual,
    /// The scheduler.
    Scheduled,
}

impl RunKind {
    /// Text form in the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
        }
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        match text {
            "manual" => Ok(Self::Manual),
            "scheduled" => Ok(Self::Scheduled),
            other => Err(SnapshotError::Corrupt(format!("run kind {other:?}"))),
        }
    }

    /// From the contract; `None` for UNSPECIFIED.
    pub fn from_proto(kind: pb::RunKind) -> Option<Self> {
        match kind {
            pb::RunKind::Manual => Some(Self::Manual),
            pb::RunKind::Scheduled => Some(Self::Scheduled),
            pb::RunKind::Unspecified => None,
        }
    }

    /// To the contract.
    pub fn to_proto(self) -> pb::RunKind {
        match self {
            Self::Manual => pb::RunKind::Manual,
            Self::Scheduled => pb::RunKind::Scheduled,
        }
    }
}

/// Lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Queued.
    Pending,
    /// Executing with a heartbeat.
    Running,
    /// Done, nothing failed.
    Completed,
    /// Done, some volume actions failed or were blocked, or a non-essential step failed.
    Partial,
    /// The snapshots step failed.
    Failed,
    /// Stopped by CancelRun.
    Cancelled,
    /// Its heartbeat stopped.
    Interrupted,
}

impl RunStatus {
    /// Every state, for parsing.
    const ALL: [Self; 7] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Partial,
        Self::Failed,
        Self::Cancelled,
        Self::Interrupted,
    ];

    /// Text form in the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| SnapshotError::Corrupt(format!("run status {text:?}")))
    }

    /// Pending or running.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// To the contract.
    pub fn to_proto(self) -> pb::RunStatus {
        match self {
            Self::Pending => pb::RunStatus::Pending,
            Self::Running => pb::RunStatus::Running,
            Self::Completed => pb::RunStatus::Completed,
            Self::Partial => pb::RunStatus::Partial,
            Self::Failed => pb::RunStatus::Failed,
            Self::Cancelled => pb::RunStatus::Cancelled,
            Self::Interrupted => pb::RunStatus::Interrupted,
        }
    }

    /// From the contract; `None` for UNSPECIFIED.
    pub fn from_proto(status: pb::RunStatus) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_proto() == status)
    }

    /// How a run that went through its steps ends. Only the snapshots step is essential: when
    /// policy_assign or an inventory step fails, the snapshots step still works from the volumes'
    /// current metadata and its own listing, so the run did its job in part (partial); when the
    /// snapshots step fails, due snapshots may be missing (failed).
    pub fn conclude(
        cancelled: bool,
        snapshots_failed: bool,
        other_step_failed: bool,
        counters: &Counters,
    ) -> Self {
        if cancelled {
            Self::Cancelled
        } else if snapshots_failed {
            Self::Failed
        } else if other_step_failed || counters.has_problems() {
            Self::Partial
        } else {
            Self::Completed
        }
    }
}

/// The four steps of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKey {
    /// policy-svc ApplyAssignment.
    PolicyAssign,
    /// Inventory sync before snapshots.
    InventoryPre,
    /// Create due snapshots, then retention.
    Snapshots,
    /// Inventory sync after snapshots.
    InventoryPost,
}

impl StepKey {
    /// The steps in run order.
    pub const ORDER: [Self; 4] =
        [Self::PolicyAssign, Self::InventoryPre, Self::Snapshots, Self::InventoryPost];

    /// Text form (the seed's step keys where they still fit).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PolicyAssign => "policy_assign",
            Self::InventoryPre => "inventory_pre",
            Self::Snapshots => "snapshots",
            Self::InventoryPost => "inventory_post",
        }
    }

    /// The seed's display label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PolicyAssign => "Policy Assignment",
            Self::InventoryPre => "Inventory Sync (pre-snapshot)",
            Self::Snapshots => "Auto Snapshots",
            Self::InventoryPost => "Inventory Sync (post-snapshot)",
        }
    }

    /// 0-based position.
    pub fn position(self) -> usize {
        Self::ORDER.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        Self::ORDER
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| SnapshotError::Corrupt(format!("step key {text:?}")))
    }

    /// To the contract.
    pub fn to_proto(self) -> pb::StepKey {
        match self {
            Self::PolicyAssign => pb::StepKey::PolicyAssign,
            Self::InventoryPre => pb::StepKey::InventoryPre,
            Self::Snapshots => pb::StepKey::Snapshots,
            Self::InventoryPost => pb::StepKey::InventoryPost,
        }
    }
}

/// State of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Executing.
    Running,
    /// Finished.
    Completed,
    /// Failed as a whole.
    Failed,
    /// Not run.
    Skipped,
}

impl StepStatus {
    const ALL: [Self; 5] = [Self::Pending, Self::Running, Self::Completed, Self::Failed, Self::Skipped];

    /// Text form in the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| SnapshotError::Corrupt(format!("step status {text:?}")))
    }

    /// To the contract.
    pub fn to_proto(self) -> pb::StepStatus {
        match self {
            Self::Pending => pb::StepStatus::Pending,
            Self::Running => pb::StepStatus::Running,
            Self::Completed => pb::StepStatus::Completed,
            Self::Failed => pb::StepStatus::Failed,
            Self::Skipped => pb::StepStatus::Skipped,
        }
    }
}

/// State of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    /// Not started.
    Pending,
    /// Executing.
    Running,
    /// Done without failures.
    Completed,
    /// Done with failures or blocks.
    Partial,
    /// Could not be processed.
    Failed,
    /// Stopped by cancel or interruption.
    Cancelled,
}

impl BatchStatus {
    const ALL: [Self; 6] =
        [Self::Pending, Self::Running, Self::Completed, Self::Partial, Self::Failed, Self::Cancelled];

    /// Text form in the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| SnapshotError::Corrupt(format!("batch status {text:?}")))
    }

    /// To the contract.
    pub fn to_proto(self) -> pb::BatchStatus {
        match self {
            Self::Pending => pb::BatchStatus::Pending,
            Self::Running => pb::BatchStatus::Running,
            Self::Completed => pb::BatchStatus::Completed,
            Self::Partial => pb::BatchStatus::Partial,
            Self::Failed => pb::BatchStatus::Failed,
            Self::Cancelled => pb::BatchStatus::Cancelled,
        }
    }
}

/// Which part of the cloud a run covers; empty lists do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Only these projects.
    #[serde(default)]
    pub project_ids: Vec<String>,
    /// Only these policies.
    #[serde(default)]
    pub policy_names: Vec<String>,
    /// Only these regions.
    #[serde(default)]
    pub region_names: Vec<String>,
}

impl Scope {
    /// From the contract.
    pub fn from_proto(scope: Option<&pb::RunScope>) -> Self {
        scope.map_or_else(Self::default, |s| Self {
            project_ids: s.project_ids.clone(),
            policy_names: s.policy_names.clone(),
            region_names: s.region_names.clone(),
        })
    }

    /// To the contract.
    pub fn to_proto(&self) -> pb::RunScope {
        pb::RunScope {
            project_ids: self.project_ids.clone(),
            policy_names: self.policy_names.clone(),
            region_names: self.region_names.clone(),
        }
    }

    /// Whether a project is in scope.
    pub fn has_project(&self, project_id: &str) -> bool {
        self.project_ids.is_empty() || self.project_ids.iter().any(|p| p == project_id)
    }

    /// Whether a policy is in scope.
    pub fn has_policy(&self, policy: &str) -> bool {
        self.policy_names.is_empty() || self.policy_names.iter().any(|p| p == policy)
    }
}

/// Volume and snapshot counters of a run; snapshot counters count (volume, policy) pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Enrolled volumes in scope.
    pub total_volumes: i64,
    /// Volumes finished in the snapshots step.
    pub processed_volumes: i64,
    /// Pairs due for their current slot.
    pub due: i64,
    /// Snapshots created.
    pub snapshots_created: i64,
    /// Snapshots found created by an interrupted run.
    pub snapshots_recovered: i64,
    /// Snapshots deleted by retention (verified).
    pub snapshots_deleted: i64,
    /// Creates that failed.
    pub snapshots_failed: i64,
    /// Deletes that failed.
    pub deletes_failed: i64,
    /// Due pairs skipped for a reason other than quota.
    pub volumes_skipped: i64,
    /// Due pairs quota-blocked.
    pub quota_blocked: i64,
    /// Dry run: creates planned.
    pub would_create: i64,
    /// Dry run: deletes planned.
    pub would_delete: i64,
    /// Role grants made (or planned in a dry run).
    pub role_grants: i64,
}

impl Counters {
    /// To the contract.
    pub fn to_proto(self) -> pb::RunCounters {
        pb::RunCounters {
            total_volumes: self.total_volumes,
            processed_volumes: self.processed_volumes,
            due: self.due,
            snapshots_created: self.snapshots_created,
            snapshots_recovered: self.snapshots_recovered,
            snapshots_deleted: self.snapshots_deleted,
            snapshots_failed: self.snapshots_failed,
            deletes_failed: self.deletes_failed,
            volumes_skipped: self.volumes_skipped,
            quota_blocked: self.quota_blocked,
            would_create: self.would_create,
            would_delete: self.would_delete,
            role_grants: self.role_grants,
        }
    }

    /// Whether anything failed or was blocked (the run then ends partial).
    pub fn has_problems(self) -> bool {
        self.snapshots_failed + self.deletes_failed + self.quota_blocked > 0
    }
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// UUID v7.
    pub id: String,
    /// Who started it.
    pub kind: RunKind,
    /// State.
    pub status: RunStatus,
    /// Dry run.
    pub dry_run: bool,
    /// User or "scheduler".
    pub triggered_by: String,
    /// What it covers.
    pub scope: Scope,
    /// Regions processed.
    pub regions: Vec<String>,
    /// Policies considered.
    pub policies: Vec<String>,
    /// Enrolled volumes per policy, as the snapshots step found them.
    pub policy_volumes: BTreeMap<String, i64>,
    /// Replica executing it.
    pub execution_host: Option<String>,
    /// Queued at.
    pub created_at: DateTime<Utc>,
    /// Picked up at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When CancelRun was called.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Who called CancelRun.
    pub cancel_requested_by: Option<String>,
    /// Counters.
    pub counters: Counters,
    /// Batches planned.
    pub total_batches: i64,
    /// Batches finished.
    pub completed_batches: i64,
    /// 1-based batch in progress.
    pub current_batch: i64,
    /// Batch size in force.
    pub batch_size: i64,
    /// Pause between batches.
    pub batch_delay: Duration,
    /// Overall percent.
    pub progress_pct: f64,
    /// Observed rate.
    pub volumes_per_minute: f64,
    /// ETA.
    pub estimated_finish_at: Option<DateTime<Utc>>,
    /// Rule set version of the decisions.
    pub rule_set_version: i64,
    /// What went wrong, "; "-separated.
    pub error_summary: String,
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which.
    pub key: StepKey,
    /// State.
    pub status: StepStatus,
    /// Started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Error or skip reason.
    pub error: String,
    /// One line of figures.
    pub detail: String,
}

impl Step {
    /// To the contract.
    pub fn to_proto(&self) -> pb::RunStep {
        pb::RunStep {
            key: self.key.to_proto().into(),
            label: self.key.label().to_owned(),
            status: self.status.to_proto().into(),
            started_at: self.started_at.map(timestamp),
            finished_at: self.finished_at.map(timestamp),
            error: self.error.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// 1-based position.
    pub number: i64,
    /// Region.
    pub region: String,
    /// Project ids.
    pub project_ids: Vec<String>,
    /// Project names, same order.
    pub project_names: Vec<String>,
    /// Volumes.
    pub total_volumes: i64,
    /// Snapshots created.
    pub completed: i64,
    /// Creates failed.
    pub failed: i64,
    /// Pairs skipped.
    pub skipped: i64,
    /// Pairs quota-blocked.
    pub quota_blocked: i64,
    /// Snapshots deleted.
    pub deleted: i64,
    /// State.
    pub status: BatchStatus,
    /// Started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error_message: String,
}

impl Batch {
    /// To the contract.
    pub fn to_proto(&self) -> pb::Batch {
        pb::Batch {
            batch_number: self.number as i32,
            region: self.region.clone(),
            project_ids: self.project_ids.clone(),
            project_names: self.project_names.clone(),
            total_volumes: self.total_volumes as i32,
            completed: self.completed as i32,
            failed: self.failed as i32,
            skipped: self.skipped as i32,
            quota_blocked: self.quota_blocked as i32,
            deleted: self.deleted as i32,
            status: self.status.to_proto().into(),
            started_at: self.started_at.map(timestamp),
            finished_at: self.finished_at.map(timestamp),
            error_message: self.error_message.clone(),
        }
    }
}

impl Run {
    /// To the contract, with its steps.
    pub fn to_proto(&self, steps: &[Step]) -> pb::Run {
        pb::Run {
            run_id: self.id.clone(),
            kind: self.kind.to_proto().into(),
            status: self.status.to_proto().into(),
            dry_run: self.dry_run,
            triggered_by: self.triggered_by.clone(),
            execution_host: self.execution_host.clone().unwrap_or_default(),
            scope: Some(self.scope.to_proto()),
            regions: self.regions.clone(),
            policies: self.policies.clone(),
            created_at: Some(timestamp(self.created_at)),
            started_at: self.started_at.map(timestamp),
            finished_at: self.finished_at.map(timestamp),
            heartbeat_at: self.heartbeat_at.map(timestamp),
            steps: steps.iter().map(Step::to_proto).collect(),
            counters: Some(self.counters.to_proto()),
            total_batches: self.total_batches as i32,
            completed_batches: self.completed_batches as i32,
            current_batch: self.current_batch as i32,
            batch_size: self.batch_size as i32,
            batch_delay: Some(duration(self.batch_delay)),
            progress_pct: if self.status.is_active() { self.progress_pct } else { 100.0 },
            volumes_per_minute: self.volumes_per_minute,
            estimated_finish_at: if self.status.is_active() {
                self.estimated_finish_at.map(timestamp)
            } else {
                None
            },
            error_summary: self.error_summary.clone(),
            rule_set_version: self.rule_set_version,
            cancel_requested_at: self.cancel_requested_at.map(timestamp),
            cancel_requested_by: self.cancel_requested_by.clone().unwrap_or_default(),
        }
    }
}

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A protobuf duration.
pub fn duration(d: Duration) -> snapkeeper_proto::prost_types::Duration {
    snapkeeper_proto::prost_types::Duration {
        seconds: d.num_seconds(),
        nanos: (d - Duration::seconds(d.num_seconds())).subsec_nanos(),
    }
}

/// A UTC time from a protobuf timestamp; `None` when out of range.
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// A duration from a protobuf duration; `None` when negative or malformed.
pub fn from_duration(d: &snapkeeper_proto::prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Duration::try_seconds(d.seconds)?.checked_add(&Duration::nanoseconds(i64::from(d.nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_pre_step_the_snapshots_step_survived_is_partial_and_a_failed_snapshots_step_fails() {
        let clean = Counters::default();
        let blocked = Counters { quota_blocked: 1, ..Counters::default() };
        assert_eq!(RunStatus::conclude(false, false, false, &clean), RunStatus::Completed);
        assert_eq!(RunStatus::conclude(false, false, false, &blocked), RunStatus::Partial);
        assert_eq!(RunStatus::conclude(false, false, true, &clean), RunStatus::Partial);
        assert_eq!(RunStatus::conclude(false, true, true, &clean), RunStatus::Failed);
        assert_eq!(RunStatus::conclude(false, true, false, &blocked), RunStatus::Failed);
        assert_eq!(RunStatus::conclude(true, true, true, &blocked), RunStatus::Cancelled);
    }

    #[test]
    fn text_forms_round_trip() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()).unwrap(), status);
            assert_eq!(RunStatus::from_proto(status.to_proto()), Some(status));
        }
        for key in StepKey::ORDER {
            assert_eq!(StepKey::parse(key.as_str()).unwrap(), key);
        }
        assert!(RunKind::parse("weekly").is_err());
        assert_eq!(StepKey::Snapshots.label(), "Auto Snapshots");
    }

    #[test]
    fn times_convert_both_ways() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T10:00:00.5Z").unwrap().to_utc();
        assert_eq!(from_timestamp(&timestamp(t)), Some(t));
        let d = Duration::milliseconds(2500);
        assert_eq!(from_duration(&duration(d)), Some(d));
    }
}
