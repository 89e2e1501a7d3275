//! The records of a run: the audit events (for audit-svc, through the outbox) and the watch events
//! (for WatchRun) that each step, batch and (volume, policy) action produces. Pure builders.

use chrono::{DateTime, Utc};
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::snapshot::v1 as pb;

use crate::quota::{Block, BlockReason};
use crate::run::{Batch, BatchStatus, Counters, Run, RunStatus, Step, StepStatus, timestamp};

/// Who and what every event of a run carries.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Run id.
    pub run_id: String,
    /// User or "scheduler".
    pub actor: String,
    /// Dry run.
    pub dry_run: bool,
}

/// The facts of one (volume, policy) pair that records carry.
#[derive(Debug, Clone, Default)]
pub struct Pair {
    /// Region.
    pub region: String,
    /// Volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Domain id.
    pub domain_id: String,
    /// Domain name.
    pub domain_name: String,
    /// First attached server id.
    pub vm_id: String,
    /// First attached server name.
    pub vm_name: String,
    /// Volume size, GiB.
    pub size_gb: i64,
    /// Volume type.
    pub volume_type: String,
    /// Cinder volume status.
    pub volume_status: String,
    /// Policy.
    pub policy: String,
    /// Slot, when known.
    pub slot: Option<DateTime<Utc>>,
    /// Retention count in force.
    pub retention_count: i32,
    /// Batch number.
    pub batch: i32,
}

/// What happened to a pair, with the details each outcome carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Created.
    Created {
        /// Snapshot id.
        snapshot_id: String,
        /// Snapshot name.
        snapshot_name: String,
        /// Project the snapshot lives in.
        snapshot_project_id: String,
        /// Identity used.
        scope_mode: audit::ScopeMode,
        /// Cinder's created_at.
        created_at: Option<DateTime<Utc>>,
    },
    /// Found created by an interrupted run.
    Recovered {
        /// Snapshot id.
        snapshot_id: String,
    },
    /// Deleted by retention, verified.
    Deleted {
        /// Snapshot id.
        snapshot_id: String,
        /// Why.
        reason: String,
    },
    /// Create failed.
    CreateFailed {
        /// Error text.
        error: String,
        /// Request id.
        request_id: String,
    },
    /// Delete failed.
    DeleteFailed {
        /// Snapshot id.
        snapshot_id: String,
        /// Error text.
        error: String,
        /// Request id.
        request_id: String,
    },
    /// Not attempted.
    Skipped(pb::SkipReason),
    /// Not attempted because of quota.
    QuotaBlocked(Box<pb::QuotaBlock>),
    /// Dry run: would create.
    WouldCreate {
        /// Name it would get.
        snapshot_name: String,
    },
    /// Dry run: would delete.
    WouldDelete {
        /// Snapshot id.
        snapshot_id: String,
        /// Why.
        reason: String,
    },
}

/// A fresh UUID v7 event id.
pub fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn base(context: &RunContext, kind: audit::EventKind, now: DateTime<Utc>) -> audit::Event {
    audit::Event {
        event_id: event_id(),
        occurred_at: Some(timestamp(now)),
        kind: kind.into(),
        run_id: context.run_id.clone(),
        actor: context.actor.clone(),
        dry_run: context.dry_run,
        ..audit::Event::default()
    }
}

/// The quota block message of a pre-check block.
pub fn quota_block(pair: &Pair, block: &Block, now: DateTime<Utc>) -> pb::QuotaBlock {
    let reason = match block.reason {
        BlockReason::Gigabytes => pb::QuotaBlockReason::GigabytesExceeded,
        BlockReason::Snapshots => pb::QuotaBlockReason::SnapshotsExceeded,
        BlockReason::VolumeTypeGigabytes => pb::QuotaBlockReason::VolumeTypeGigabytesExceeded,
        BlockReason::VolumeTypeSnapshots => pb::QuotaBlockReason::VolumeTypeSnapshotsExceeded,
    };
    pb::QuotaBlock {
        occurred_at: Some(timestamp(now)),
        batch_number: pair.batch,
        region: pair.region.clone(),
        volume_id: pair.volume_id.clone(),
        volume_name: pair.volume_name.clone(),
        volume_size_gb: pair.size_gb,
        volume_type: pair.volume_type.clone(),
        project_id: pair.project_id.clone(),
        project_name: pair.project_name.clone(),
        domain_name: pair.domain_name.clone(),
        policy_name: pair.policy.clone(),
        reason: reason.into(),
        quota_limit_gb: block.limit_gb,
        quota_used_gb: block.used_gb,
        quota_needed_gb: block.needed_gb,
        snapshot_quota_limit: block.snapshot_limit,
        snapshot_quota_used: block.snapshot_used,
        snapshot_quota_needed: 1,
        detail: block.detail.clone(),
    }
}

/// The quota block of a create Cinder refused with 413.
pub fn over_limit_block(pair: &Pair, message: &str, now: DateTime<Utc>) -> pb::QuotaBlock {
    pb::QuotaBlock {
        occurred_at: Some(timestamp(now)),
        batch_number: pair.batch,
        region: pair.region.clone(),
        volume_id: pair.volume_id.clone(),
        volume_name: pair.volume_name.clone(),
        volume_size_gb: pair.size_gb,
        volume_type: pair.volume_type.clone(),
        project_id: pair.project_id.clone(),
        project_name: pair.project_name.clone(),
        domain_name: pair.domain_name.clone(),
        policy_name: pair.policy.clone(),
        reason: pb::QuotaBlockReason::CinderOverLimit.into(),
        quota_limit_gb: -1,
        quota_used_gb: 0,
        quota_needed_gb: pair.size_gb,
        snapshot_quota_limit: -1,
        snapshot_quota_used: 0,
        snapshot_quota_needed: 1,
        detail: format!("cinder refused the create with 413: {message}"),
    }
}

/// The audit event and the watch event of one pair outcome.
pub fn pair_records(
    context: &RunContext,
    pair: &Pair,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> (audit::Event, pb::VolumeProcessed) {
    let kind = match outcome {
        Outcome::Created { .. } | Outcome::Recovered { .. } => audit::EventKind::SnapshotCreated,
        Outcome::Deleted { .. } => audit::EventKind::SnapshotDeleted,
        Outcome::CreateFailed { .. } => audit::EventKind::SnapshotFailed,
        Outcome::DeleteFailed { .. } => audit::EventKind::SnapshotDeleteFailed,
        Outcome::Skipped(_) => audit::EventKind::SnapshotSkipped,
        Outcome::QuotaBlocked(_) => audit::EventKind::SnapshotQuotaBlocked,
        Outcome::WouldCreate { .. } | Outcome::WouldDelete { .. } => audit::EventKind::SnapshotDryRun,
    };
    let mut event = audit::Event {
        region: pair.region.clone(),
        volume_id: pair.volume_id.clone(),
        volume_name: pair.volume_name.clone(),
        project_id: pair.project_id.clone(),
        project_name: pair.project_name.clone(),
        domain_id: pair.domain_id.clone(),
        domain_name: pair.domain_name.clone(),
        vm_id: pair.vm_id.clone(),
        vm_name: pair.vm_name.clone(),
        policy_name: pair.policy.clone(),
        slot: pair.slot.map(timestamp),
        size_gb: pair.size_gb,
        retention_count: pair.retention_count,
        ..base(context, kind, now)
    };
    let mut watch = pb::VolumeProcessed {
        batch_number: pair.batch,
        region: pair.region.clone(),
        volume_id: pair.volume_id.clone(),
        volume_name: pair.volume_name.clone(),
        project_id: pair.project_id.clone(),
        project_name: pair.project_name.clone(),
        policy_name: pair.policy.clone(),
        slot: pair.slot.map(timestamp),
        ..pb::VolumeProcessed::default()
    };
    let action = match outcome {
        Outcome::Created { snapshot_id, snapshot_name, snapshot_project_id, scope_mode, created_at } => {
            event.snapshot_id.clone_from(snapshot_id);
            event.snapshot_name.clone_from(snapshot_name);
            event.snapshot_project_id.clone_from(snapshot_project_id);
            event.scope_mode = (*scope_mode).into();
            event.snapshot_created_at = created_at.map(timestamp);
            watch.snapshot_id.clone_from(snapshot_id);
            watch.snapshot_name.clone_from(snapshot_name);
            pb::VolumeAction::Created
        }
        Outcome::Recovered { snapshot_id } => {
            event.snapshot_id.clone_from(snapshot_id);
            event.recovered = true;
            watch.snapshot_id.clone_from(snapshot_id);
            pb::VolumeAction::Recovered
        }
        Outcome::Deleted { snapshot_id, reason } => {
            event.snapshot_id.clone_from(snapshot_id);
            event.detail.clone_from(reason);
            watch.snapshot_id.clone_from(snapshot_id);
            pb::VolumeAction::Deleted
        }
        Outcome::CreateFailed { error, request_id } => {
            event.error.clone_from(error);
            event.cinder_request_id.clone_from(request_id);
            watch.error.clone_from(error);
            watch.cinder_request_id.clone_from(request_id);
            pb::VolumeAction::CreateFailed
        }
        Outcome::DeleteFailed { snapshot_id, error, request_id } => {
            event.snapshot_id.clone_from(snapshot_id);
            event.error.clone_from(error);
            event.cinder_request_id.clone_from(request_id);
            watch.snapshot_id.clone_from(snapshot_id);
            watch.error.clone_from(error);
            pb::VolumeAction::DeleteFailed
        }
        Outcome::Skipped(reason) => {
            event.skip_reason = skip_reason(*reason).into();
            watch.skip_reason = (*reason).into();
            pb::VolumeAction::Skipped
        }
        Outcome::QuotaBlocked(block) => {
            event.quota = Some(audit::QuotaFigures {
                reason: block.reason,
                volume_type: block.volume_type.clone(),
                quota_limit_gb: block.quota_limit_gb,
                quota_used_gb: block.quota_used_gb,
                quota_needed_gb: block.quota_needed_gb,
                snapshot_quota_limit: block.snapshot_quota_limit,
                snapshot_quota_used: block.snapshot_quota_used,
                snapshot_quota_needed: block.snapshot_quota_needed,
            });
            event.detail.clone_from(&block.detail);
            watch.quota_block = Some((**block).clone());
            pb::VolumeAction::QuotaBlocked
        }
        Outcome::WouldCreate { snapshot_name } => {
            event.dry_run_action = audit::DryRunAction::Create.into();
            event.snapshot_name.clone_from(snapshot_name);
            watch.snapshot_name.clone_from(snapshot_name);
            pb::VolumeAction::WouldCreate
        }
        Outcome::WouldDelete { snapshot_id, reason } => {
            event.dry_run_action = audit::DryRunAction::Delete.into();
            event.snapshot_id.clone_from(snapshot_id);
            event.detail.clone_from(reason);
            watch.snapshot_id.clone_from(snapshot_id);
            pb::VolumeAction::WouldDelete
        }
    };
    watch.action = action.into();
    (event, watch)
}

fn skip_reason(reason: pb::SkipReason) -> audit::SkipReason {
    match reason {
        pb::SkipReason::Unspecified => audit::SkipReason::Unspecified,
        pb::SkipReason::VolumeStatus => audit::SkipReason::VolumeStatus,
        pb::SkipReason::SizeLimit => audit::SkipReason::SizeLimit,
        pb::SkipReason::UnknownPolicy => audit::SkipReason::UnknownPolicy,
        pb::SkipReason::VolumeGone => audit::SkipReason::VolumeGone,
        pb::SkipReason::NoCredentials => audit::SkipReason::NoCredentials,
        pb::SkipReason::RunStopped => audit::SkipReason::RunStopped,
        pb::SkipReason::MaxNewReached => audit::SkipReason::MaxNewReached,
    }
}

/// The audit event of a role grant made (or planned) for the service user.
pub fn role_grant(
    context: &RunContext,
    region: &str,
    project_id: &str,
    project_name: &str,
    role: &str,
    now: DateTime<Utc>,
) -> audit::Event {
    let kind = if context.dry_run { audit::EventKind::SnapshotDryRun } else { audit::EventKind::RoleGranted };
    let dry_run_action =
        if context.dry_run { audit::DryRunAction::GrantRole } else { audit::DryRunAction::Unspecified };
    audit::Event {
        region: region.to_owned(),
        project_id: project_id.to_owned(),
        project_name: project_name.to_owned(),
        role_name: role.to_owned(),
        dry_run_action: dry_run_action.into(),
        ..base(context, kind, now)
    }
}

/// The audit event of a project the forecast after a scheduled run finds at quota risk: the
/// project's policies, and the figures of its gigabytes and snapshots quotas (limit, used, and
/// what the next slots within the horizon need); the reason is its worst resource.
pub fn quota_forecast_risk(
    context: &RunContext,
    region: &str,
    project: &pb::ProjectForecast,
    now: DateTime<Utc>,
) -> audit::Event {
    let flat = |kind: pb::QuotaResource| {
        project.resources.iter().find(|r| r.resource == kind as i32 && r.volume_type.is_empty())
    };
    let gigabytes = flat(pb::QuotaResource::Gigabytes);
    let snapshots = flat(pb::QuotaResource::Snapshots);
    let worst = project.resources.iter().max_by_key(|r| (r.severity, r.shortfall));
    let reason = match worst.and_then(|r| pb::QuotaResource::try_from(r.resource).ok()) {
        Some(pb::QuotaResource::Gigabytes) => audit::QuotaBlockReason::GigabytesExceeded,
        Some(pb::QuotaResource::Snapshots) => audit::QuotaBlockReason::SnapshotsExceeded,
        Some(pb::QuotaResource::VolumeTypeGigabytes) => audit::QuotaBlockReason::VolumeTypeGigabytesExceeded,
        Some(pb::QuotaResource::VolumeTypeSnapshots) => audit::QuotaBlockReason::VolumeTypeSnapshotsExceeded,
        _ => audit::QuotaBlockReason::Unspecified,
    };
    let severity =
        pb::ForecastSeverity::try_from(project.severity).unwrap_or(pb::ForecastSeverity::Unspecified);
    let detail = match worst {
        Some(r) => format!(
            "{}: {} used {} of {}, the next slots need {} ({} with margin), short by {}",
            severity.as_str_name().trim_start_matches("FORECAST_SEVERITY_").to_lowercase(),
            pb::QuotaResource::try_from(r.resource)
                .map_or("quota", |k| k.as_str_name())
                .trim_start_matches("QUOTA_RESOURCE_")
                .to_lowercase(),
            r.used,
            r.limit,
            r.needed,
            r.needed_with_margin,
            r.shortfall
        ),
        None => project.error.clone(),
    };
    let policies: Vec<&str> = project.policies.iter().map(|p| p.policy_name.as_str()).collect();
    audit::Event {
        region: region.to_owned(),
        project_id: project.project_id.clone(),
        project_name: project.project_name.clone(),
        domain_id: project.domain_id.clone(),
        domain_name: project.domain_name.clone(),
        policy_name: policies.join(","),
        quota: Some(audit::QuotaFigures {
            reason: reason.into(),
            volume_type: worst.map(|r| r.volume_type.clone()).unwrap_or_default(),
            quota_limit_gb: gigabytes.map_or(-1, |r| r.limit),
            quota_used_gb: gigabytes.map_or(0, |r| r.used),
            quota_needed_gb: gigabytes.map_or(0, |r| r.needed),
            snapshot_quota_limit: snapshots.map_or(-1, |r| r.limit),
            snapshot_quota_used: snapshots.map_or(0, |r| r.used),
            snapshot_quota_needed: snapshots.map_or(0, |r| r.needed),
        }),
        error: project.error.clone(),
        detail,
        ..base(context, audit::EventKind::QuotaForecastRisk, now)
    }
}

/// The audit event of a run start.
pub fn run_started(context: &RunContext, run: &Run, host: &str, now: DateTime<Utc>) -> audit::Event {
    let mut event = base(context, audit::EventKind::RunStarted, now);
    event.run_detail = Some(audit::event::RunDetail::RunStarted(audit::RunStarted {
        kind: match run.kind {
            crate::run::RunKind::Manual => audit::RunKind::Manual,
            crate::run::RunKind::Scheduled => audit::RunKind::Scheduled,
        }
        .into(),
        execution_host: host.to_owned(),
        regions: run.regions.clone(),
        scope_project_ids: run.scope.project_ids.clone(),
        scope_policy_names: run.scope.policy_names.clone(),
        rule_set_version: run.rule_set_version,
        batch_size: run.batch_size as i32,
    }));
    event
}

/// The audit event of a step change.
pub fn step_changed(context: &RunContext, step: &Step, now: DateTime<Utc>) -> audit::Event {
    let mut event = base(context, audit::EventKind::RunStep, now);
    let status = match step.status {
        StepStatus::Pending | StepStatus::Running => audit::PhaseStatus::Running,
        StepStatus::Completed => audit::PhaseStatus::Completed,
        StepStatus::Failed => audit::PhaseStatus::Failed,
        StepStatus::Skipped => audit::PhaseStatus::Skipped,
    };
    event.run_detail = Some(audit::event::RunDetail::RunStep(audit::RunStepChange {
        step: audit::StepKey::try_from(step.key.to_proto() as i32)
            .unwrap_or(audit::StepKey::Unspecified)
            .into(),
        status: status.into(),
        error: step.error.clone(),
        detail: step.detail.clone(),
    }));
    event
}

/// The audit event of a finished batch.
pub fn batch_finished(context: &RunContext, batch: &Batch, now: DateTime<Utc>) -> audit::Event {
    let mut event =
        audit::Event { region: batch.region.clone(), ..base(context, audit::EventKind::RunBatch, now) };
    let status = match batch.status {
        BatchStatus::Completed => audit::PhaseStatus::Completed,
        BatchStatus::Partial => audit::PhaseStatus::Partial,
        BatchStatus::Failed => audit::PhaseStatus::Failed,
        BatchStatus::Pending | BatchStatus::Running | BatchStatus::Cancelled => audit::PhaseStatus::Skipped,
    };
    event.run_detail = Some(audit::event::RunDetail::RunBatch(audit::RunBatch {
        batch_number: batch.number as i32,
        project_ids: batch.project_ids.clone(),
        project_names: batch.project_names.clone(),
        total_volumes: batch.total_volumes as i32,
        completed: batch.completed as i32,
        failed: batch.failed as i32,
        skipped: batch.skipped as i32,
        quota_blocked: batch.quota_blocked as i32,
        deleted: batch.deleted as i32,
        status: status.into(),
        started_at: batch.started_at.map(timestamp),
    }));
    event
}

/// The audit event of a finished run.
pub fn run_finished(
    context: &RunContext,
    status: RunStatus,
    counters: &Counters,
    total_batches: i64,
    error_summary: &str,
    duration: chrono::Duration,
    now: DateTime<Utc>,
) -> audit::Event {
    let mut event = base(context, audit::EventKind::RunFinished, now);
    event.detail = format!(
        "snapshot run completed: {} created, {} deleted, {} skipped, {} quota-blocked, {} errors | {} batches",
        counters.snapshots_created,
        counters.snapshots_deleted,
        counters.volumes_skipped,
        counters.quota_blocked,
        counters.snapshots_failed + counters.deletes_failed,
        total_batches
    );
    event.run_detail = Some(audit::event::RunDetail::RunFinished(audit::RunFinished {
        status: audit::RunStatus::try_from(status.to_proto() as i32)
            .unwrap_or(audit::RunStatus::Unspecified)
            .into(),
        counters: Some(audit::RunCounters {
            total_volumes: counters.total_volumes,
            due: counters.due,
            snapshots_created: counters.snapshots_created,
            snapshots_recovered: counters.snapshots_recovered,
            snapshots_deleted: counters.snapshots_deleted,
            snapshots_failed: counters.snapshots_failed,
            deletes_failed: counters.deletes_failed,
            volumes_skipped: counters.volumes_skipped,
            quota_blocked: counters.quota_blocked,
            would_create: counters.would_create,
            would_delete: counters.would_delete,
            role_grants: counters.role_grants,
        }),
        total_batches: total_batches as i32,
        error_summary: error_summary.to_owned(),
        duration: Some(crate::run::duration(duration)),
    }));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RunContext {
        RunContext { run_id: "r1".to_owned(), actor: "alice".to_owned(), dry_run: false }
    }

    #[test]
    fn a_quota_block_carries_its_figures_to_audit_and_watch() {
        let pair = Pair {
            volume_id: "v1".to_owned(),
            policy: "daily_5".to_owned(),
            size_gb: 40,
            batch: 2,
            ..Pair::default()
        };
        let block = Block {
            key: 0,
            reason: BlockReason::Gigabytes,
            limit_gb: 1000,
            used_gb: 980,
            needed_gb: 40,
            snapshot_limit: -1,
            snapshot_used: 3,
            detail: "gigabytes 980/1000 GiB, needs 40 GiB".to_owned(),
        };
        let now = Utc::now();
        let message = quota_block(&pair, &block, now);
        let (event, watch) = pair_records(&context(), &pair, &Outcome::QuotaBlocked(Box::new(message)), now);
        assert_eq!(event.kind, audit::EventKind::SnapshotQuotaBlocked as i32);
        let figures = event.quota.unwrap();
        assert_eq!((figures.quota_limit_gb, figures.quota_used_gb, figures.quota_needed_gb), (1000, 980, 40));
        assert_eq!(watch.action, pb::VolumeAction::QuotaBlocked as i32);
        assert_eq!(watch.quota_block.unwrap().batch_number, 2);
        assert_eq!(event.event_id.len(), 36);
    }

    #[test]
    fn recovered_snapshots_are_created_records_marked_recovered() {
        let (event, watch) = pair_records(
            &context(),
            &Pair::default(),
            &Outcome::Recovered { snapshot_id: "s1".to_owned() },
            Utc::now(),
        );
        assert_eq!(event.kind, audit::EventKind::SnapshotCreated as i32);
        assert!(event.recovered);
        assert_eq!(watch.action, pb::VolumeAction::Recovered as i32);
    }
}
