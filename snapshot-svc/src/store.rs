//! SQL for runs, steps, batches, run events, quota blocks, work items, the outbox and the
//! scheduler lease. One query path serves SQLite and PostgreSQL (sqlx `Any`): times are RFC 3339
//! UTC text of fixed width (text order is time order), flags are 0/1 integers, lists are JSON text,
//! events are encoded protobuf. The one-active-run-per-kind rule is a partial unique index; its
//! violation comes back as [`SnapshotError::AlreadyExists`] naming the active run.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use service_kit::db::Database;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::prost::Message;
use snapkeeper_proto::snapshot::v1 as pb;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::SnapshotError;
use crate::run::{Batch, BatchStatus, Counters, Run, RunKind, RunStatus, Scope, Step, StepKey, StepStatus};

/// Formats a time the way the tables store it.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, SnapshotError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| SnapshotError::Corrupt(format!("stored time {text:?}: {e}")))
}

fn optional_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, SnapshotError> {
    row.try_get::<Option<String>, _>(column)?.filter(|t| !t.is_empty()).map(|t| parse_time(&t)).transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, SnapshotError> {
    serde_json::from_str(text).map_err(|e| SnapshotError::Corrupt(format!("stored {what}: {e}")))
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Serialising string lists and plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// A run to queue.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// UUID v7.
    pub id: String,
    /// Who starts it.
    pub kind: RunKind,
    /// Dry run.
    pub dry_run: bool,
    /// User or "scheduler".
    pub triggered_by: String,
    /// What it covers.
    pub scope: Scope,
    /// Batch size in force.
    pub batch_size: i64,
    /// Pause between batches.
    pub batch_delay: Duration,
    /// Queued at.
    pub created_at: DateTime<Utc>,
}

/// Filters of [`Store::list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this kind.
    pub kind: Option<RunKind>,
    /// Only these states (empty: all).
    pub statuses: Vec<RunStatus>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// Only dry or only real runs.
    pub dry_run: Option<bool>,
    /// Only runs triggered by this user.
    pub triggered_by: Option<String>,
}

/// Live figures the runner writes with each heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Counters so far.
    pub counters: Counters,
    /// Batches planned.
    pub total_batches: i64,
    /// Batches finished.
    pub completed_batches: i64,
    /// Batch in progress.
    pub current_batch: i64,
    /// Overall percent.
    pub progress_pct: f64,
    /// Observed rate.
    pub volumes_per_minute: f64,
    /// ETA.
    pub estimated_finish_at: Option<DateTime<Utc>>,
}

/// A work item's new state, written with the action's events.
#[derive(Debug, Clone)]
pub struct WorkItemUpdate {
    /// volume + policy + slot.
    pub key: String,
    /// `created`, `recovered` or `failed`.
    pub state: &'static str,
    /// Snapshot created or found.
    pub snapshot_id: Option<String>,
    /// Error text.
    pub error: Option<String>,
}

/// A create about to be sent, recorded first.
#[derive(Debug, Clone)]
pub struct WorkItem {
    /// volume + policy + slot.
    pub key: String,
    /// Run sending it.
    pub run_id: String,
    /// Volume.
    pub volume_id: String,
    /// Volume's project.
    pub project_id: String,
    /// Policy.
    pub policy: String,
    /// Slot (RFC 3339).
    pub slot: String,
    /// Region.
    pub region: String,
}

/// What one action writes, atomically: the work item, its audit events (outbox), its watch events
/// and, for blocks, the quota block.
#[derive(Debug, Clone, Default)]
pub struct Action {
    /// Work items to start (`creating`) before their Cinder calls.
    pub begin: Vec<WorkItem>,
    /// Work item state change.
    pub work_item: Option<WorkItemUpdate>,
    /// Audit events for audit-svc.
    pub audit: Vec<audit::Event>,
    /// Watch events: (is a per-volume event, event).
    pub watch: Vec<(bool, pb::watch_run_response::Event)>,
    /// Quota block to keep with the run.
    pub quota_block: Option<pb::QuotaBlock>,
}

/// An outbox entry due for delivery.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Event id.
    pub event_id: String,
    /// The event.
    pub event: audit::Event,
    /// Delivery attempts so far.
    pub attempts: i64,
}

/// The scheduler lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Replica holding it.
    pub holder: String,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// Last tick of the scheduler.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Last policy assignment pass.
    pub last_assign_at: Option<DateTime<Utc>>,
}

/// The snapshot-svc tables.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    writer: Arc<OnceLock<mpsc::Sender<QueuedAction>>>,
}

/// Watch event sequences one pruning statement deletes at most.
const EVENTS_PER_PRUNE: i64 = 5_000;

/// Ids bound into one `IN (...)` list at most: about 12 KB, one TLS record to PostgreSQL (a second
/// record waits for the server's delayed ACK, as the driver leaves Nagle's algorithm on).
const IDS_PER_STATEMENT: usize = 300;

/// Pending watch events numbered per transaction.
const EVENTS_PER_NUMBERING: usize = 500;

const RUN_COLUMNS: &str = "id, kind, status, dry_run, triggered_by, scope, regions, policies, policy_volumes, execution_host, \
     created_at, started_at, finished_at, heartbeat_at, cancel_requested_at, cancel_requested_by, counters, \
     total_batches, completed_batches, current_batch, batch_size_config, batch_delay_ms, progress_pct, \
     volumes_per_minute, estimated_finish_at, rule_set_version, error_summary";

impl Store {
    /// Wraps a migrated database.
    pub fn new(database: Database) -> Self {
        Self { database, writer: Arc::default() }
    }

    fn pool(&self) -> &AnyPool {
        self.database.pool()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.database.ping().await
    }

    /// Queues a run with its four pending steps. A run of the same kind already pending or running
    /// makes this fail with `AlreadyExists` naming that run (the partial unique index decides).
    pub async fn create_run(&self, new: &NewRun) -> Result<Run, SnapshotError> {
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO snapshot_runs (id, kind, status, dry_run, triggered_by, scope, created_at, \
             batch_size_config, batch_delay_ms) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.id)
        .bind(new.kind.as_str())
        .bind(i64::from(new.dry_run))
        .bind(&new.triggered_by)
        .bind(to_json(&new.scope))
        .bind(time_text(new.created_at))
        .bind(new.batch_size)
        .bind(new.batch_delay.num_milliseconds())
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(db)) = &inserted
            && db.is_unique_violation()
        {
            drop(tx);
            let active = self.active_run(Some(new.kind)).await?;
            let id = active.map(|r| r.id).unwrap_or_default();
            return Err(SnapshotError::AlreadyExists(format!(
                "a {} run is already pending or running: {id}",
                new.kind.as_str()
            )));
        }
        inserted?;
        for key in StepKey::ORDER {
            sqlx::query(
                "INSERT INTO snapshot_run_steps (run_id, position, key, label) VALUES ($1, $2, $3, $4)",
            )
            .bind(&new.id)
            .bind(key.position() as i64)
            .bind(key.as_str())
            .bind(key.label())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.run(&new.id).await?.ok_or_else(|| SnapshotError::Corrupt(format!("run {} vanished", new.id)))
    }

    /// One run.
    pub async fn run(&self, id: &str) -> Result<Option<Run>, SnapshotError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM snapshot_runs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// The active run of a kind (or of any kind, manual first).
    pub async fn active_run(&self, kind: Option<RunKind>) -> Result<Option<Run>, SnapshotError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM snapshot_runs WHERE status IN ('pending', 'running') \
             AND ($1 = '' OR kind = $1) ORDER BY CASE WHEN kind = 'manual' THEN 0 ELSE 1 END, created_at LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind.map_or("", RunKind::as_str))
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// The most recent finished run of a kind (or of any kind).
    pub async fn latest_finished(&self, kind: Option<RunKind>) -> Result<Option<Run>, SnapshotError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM snapshot_runs WHERE status NOT IN ('pending', 'running') \
             AND ($1 = '' OR kind = $1) ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind.map_or("", RunKind::as_str))
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| run_from_row(&r)).transpose()
    }

    /// Runs matching `filter`, newest first, from `offset`; plus the total count.
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Run>, i64), SnapshotError> {
        let mut clauses = vec![
            "($1 = '' OR kind = $1)".to_owned(),
            "($2 = '' OR created_at >= $2)".to_owned(),
            "($3 = '' OR created_at < $3)".to_owned(),
            "($4 < 0 OR dry_run = $4)".to_owned(),
            "($5 = '' OR triggered_by = $5)".to_owned(),
        ];
        // Status lists are short; spell them out rather than depend on JSON functions per dialect.
        let mut status_list = Vec::new();
        for status in &filter.statuses {
            status_list.push(format!("'{}'", status.as_str()));
        }
        if !status_list.is_empty() {
            clauses.push(format!("status IN ({})", status_list.join(", ")));
        }
        let where_clause = clauses.join(" AND ");
        let bind = |sql: String| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.kind.map_or("", RunKind::as_str).to_owned())
                .bind(filter.created_from.map(time_text).unwrap_or_default())
                .bind(filter.created_to.map(time_text).unwrap_or_default())
                .bind(filter.dry_run.map_or(-1, i64::from))
                .bind(filter.triggered_by.clone().unwrap_or_default())
        };
        let total: i64 = bind(format!("SELECT COUNT(*) AS n FROM snapshot_runs WHERE {where_clause}"))
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let rows = bind(format!(
            "SELECT {RUN_COLUMNS} FROM snapshot_runs WHERE {where_clause} ORDER BY created_at DESC, id DESC \
             LIMIT {limit} OFFSET {offset}"
        ))
        .fetch_all(self.pool())
        .await?;
        let runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok((runs, total))
    }

    /// Ids of pending runs, oldest first.
    pub async fn pending_runs(&self) -> Result<Vec<String>, SnapshotError> {
        let rows = sqlx::query("SELECT id FROM snapshot_runs WHERE status = 'pending' ORDER BY created_at")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| r.try_get::<String, _>("id").map_err(Into::into)).collect()
    }

    /// Takes a pending run for this replica; false when another replica was faster.
    pub async fn claim_run(&self, id: &str, host: &str, now: DateTime<Utc>) -> Result<bool, SnapshotError> {
        let result = sqlx::query(
            "UPDATE snapshot_runs SET status = 'running', execution_host = $2, started_at = $3, heartbeat_at = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(host)
        .bind(time_text(now))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores the trace context of the request that queued a run.
    pub async fn set_trace_parent(&self, id: &str, traceparent: &str) -> Result<(), SnapshotError> {
        sqlx::query("UPDATE snapshot_runs SET trace_parent = $1 WHERE id = $2")
            .bind(traceparent)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The trace context a run was queued with, if any.
    pub async fn trace_parent(&self, id: &str) -> Result<Option<String>, SnapshotError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT trace_parent FROM snapshot_runs WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(stored.filter(|value| !value.is_empty()))
    }

    /// Records the regions, policies (with their enrolled volumes) and rule set version a run
    /// works with.
    pub async fn set_run_context(
        &self,
        id: &str,
        regions: &[String],
        policy_volumes: &BTreeMap<String, i64>,
        rule_set_version: i64,
    ) -> Result<(), SnapshotError> {
        let policies: Vec<&String> = policy_volumes.keys().collect();
        sqlx::query(
            "UPDATE snapshot_runs SET regions = $2, policies = $3, policy_volumes = $4, rule_set_version = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(to_json(&regions))
        .bind(to_json(&policies))
        .bind(to_json(policy_volumes))
        .bind(rule_set_version)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Renews the heartbeat and writes the live figures; says whether cancel was requested or the
    /// run is no longer running here.
    pub async fn heartbeat(
        &self,
        id: &str,
        now: DateTime<Utc>,
        progress: &Progress,
    ) -> Result<Heartbeat, SnapshotError> {
        let result = sqlx::query(
            "UPDATE snapshot_runs SET heartbeat_at = $2, counters = $3, total_batches = $4, completed_batches = $5, \
             current_batch = $6, progress_pct = $7, volumes_per_minute = $8, estimated_finish_at = $9 \
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(time_text(now))
        .bind(to_json(&progress.counters))
        .bind(progress.total_batches)
        .bind(progress.completed_batches)
        .bind(progress.current_batch)
        .bind(progress.progress_pct)
        .bind(progress.volumes_per_minute)
        .bind(progress.estimated_finish_at.map(time_text))
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Ok(Heartbeat::Lost);
        }
        let row = sqlx::query("SELECT cancel_requested_at FROM snapshot_runs WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await?;
        Ok(if optional_time(&row, "cancel_requested_at")?.is_some() {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Alive
        })
    }

    /// Asks an active run to stop; returns the run, or `FailedPrecondition` when it has finished.
    pub async fn request_cancel(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Run, SnapshotError> {
        let run = self.run(id).await?.ok_or_else(|| SnapshotError::not_found("run", id))?;
        if !run.status.is_active() {
            return Err(SnapshotError::FailedPrecondition(format!(
                "run {id} has already finished ({})",
                run.status.as_str()
            )));
        }
        if run.cancel_requested_at.is_some() {
            return Ok(run);
        }
        let note = if reason.is_empty() {
            format!("cancelled by {actor}")
        } else {
            format!("cancelled by {actor}: {reason}")
        };
        sqlx::query(
            "UPDATE snapshot_runs SET cancel_requested_at = $2, cancel_requested_by = $3, \
             error_summary = CASE WHEN error_summary = '' THEN $4 ELSE error_summary || '; ' || $4 END \
             WHERE id = $1 AND cancel_requested_at IS NULL",
        )
        .bind(id)
        .bind(time_text(now))
        .bind(actor)
        .bind(note)
        .execute(self.pool())
        .await?;
        // A pending run nobody picked up yet stops right here.
        sqlx::query("UPDATE snapshot_runs SET status = 'cancelled', finished_at = $2 WHERE id = $1 AND status = 'pending'")
            .bind(id)
            .bind(time_text(now))
            .execute(self.pool())
            .await?;
        self.run(id).await?.ok_or_else(|| SnapshotError::not_found("run", id))
    }

    /// Finishes an active run; false when it was no longer active (e.g. already interrupted).
    pub async fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        now: DateTime<Utc>,
        error_summary: &str,
        progress: &Progress,
    ) -> Result<bool, SnapshotError> {
        let result = sqlx::query(
            "UPDATE snapshot_runs SET status = $2, finished_at = $3, heartbeat_at = $3, \
             error_summary = CASE WHEN $4 = '' THEN error_summary WHEN error_summary = '' THEN $4 \
             ELSE error_summary || '; ' || $4 END, counters = $5, total_batches = $6, completed_batches = $7, \
             current_batch = $8, progress_pct = 100, volumes_per_minute = $9, estimated_finish_at = NULL \
             WHERE id = $1 AND status IN ('pending', 'running')",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(time_text(now))
        .bind(error_summary)
        .bind(to_json(&progress.counters))
        .bind(progress.total_batches)
        .bind(progress.completed_batches)
        .bind(progress.current_batch)
        .bind(progress.volumes_per_minute)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Marks runs whose heartbeat stopped more than `timeout` ago (and pending runs nobody claimed
    /// for that long) as interrupted, freeing their kind's slot; returns their ids.
    pub async fn interrupt_stale(
        &self,
        now: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Vec<String>, SnapshotError> {
        let cutoff = time_text(now - timeout);
        let rows = sqlx::query(
            "SELECT id FROM snapshot_runs WHERE (status = 'running' AND heartbeat_at < $1) \
             OR (status = 'pending' AND created_at < $1)",
        )
        .bind(&cutoff)
        .fetch_all(self.pool())
        .await?;
        let mut interrupted = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let result = sqlx::query(
                "UPDATE snapshot_runs SET status = 'interrupted', finished_at = $2, \
                 error_summary = CASE WHEN error_summary = '' THEN $3 ELSE error_summary || '; ' || $3 END \
                 WHERE id = $1 AND ((status = 'running' AND heartbeat_at < $4) OR (status = 'pending' AND created_at < $4))",
            )
            .bind(&id)
            .bind(time_text(now))
            .bind(format!("interrupted: no heartbeat for {} s", timeout.num_seconds()))
            .bind(&cutoff)
            .execute(self.pool())
            .await?;
            if result.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE snapshot_run_steps SET status = 'skipped', error = 'run interrupted' \
                     WHERE run_id = $1 AND status IN ('pending', 'running')",
                )
                .bind(&id)
                .execute(self.pool())
                .await?;
                sqlx::query(
                    "UPDATE snapshot_run_batches SET status = 'cancelled' WHERE run_id = $1 AND status IN ('pending', 'running')",
                )
                .bind(&id)
                .execute(self.pool())
                .await?;
                interrupted.push(id);
            }
        }
        Ok(interrupted)
    }

    /// The steps of a run, in order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<Step>, SnapshotError> {
        let rows = sqlx::query(
            "SELECT key, status, started_at, finished_at, error, detail FROM snapshot_run_steps \
             WHERE run_id = $1 ORDER BY position",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Step {
                    key: StepKey::parse(&row.try_get::<String, _>("key")?)?,
                    status: StepStatus::parse(&row.try_get::<String, _>("status")?)?,
                    started_at: optional_time(row, "started_at")?,
                    finished_at: optional_time(row, "finished_at")?,
                    error: row.try_get("error")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Writes a step's state.
    pub async fn update_step(&self, run_id: &str, step: &Step) -> Result<(), SnapshotError> {
        sqlx::query(
            "UPDATE snapshot_run_steps SET status = $3, started_at = $4, finished_at = $5, error = $6, detail = $7 \
             WHERE run_id = $1 AND key = $2",
        )
        .bind(run_id)
        .bind(step.key.as_str())
        .bind(step.status.as_str())
        .bind(step.started_at.map(time_text))
        .bind(step.finished_at.map(time_text))
        .bind(&step.error)
        .bind(&step.detail)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores the planned batches of a run.
    pub async fn insert_batches(&self, run_id: &str, batches: &[Batch]) -> Result<(), SnapshotError> {
        let mut tx = self.pool().begin().await?;
        for batch in batches {
            sqlx::query(
                "INSERT INTO snapshot_run_batches (run_id, batch_number, region, tenant_ids, tenant_names, total_volumes) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run_id)
            .bind(batch.number)
            .bind(&batch.region)
            .bind(to_json(&batch.project_ids))
            .bind(to_json(&batch.project_names))
            .bind(batch.total_volumes)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes a batch's state and figures.
    pub async fn update_batch(&self, run_id: &str, batch: &Batch) -> Result<(), SnapshotError> {
        sqlx::query(
            "UPDATE snapshot_run_batches SET completed = $3, failed = $4, skipped = $5, quota_blocked = $6, deleted = $7, \
             status = $8, started_at = $9, finished_at = $10, error_message = $11 WHERE run_id = $1 AND batch_number = $2",
        )
        .bind(run_id)
        .bind(batch.number)
        .bind(batch.completed)
        .bind(batch.failed)
        .bind(batch.skipped)
        .bind(batch.quota_blocked)
        .bind(batch.deleted)
        .bind(batch.status.as_str())
        .bind(batch.started_at.map(time_text))
        .bind(batch.finished_at.map(time_text))
        .bind(&batch.error_message)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The batches of a run by number.
    pub async fn batches(&self, run_id: &str) -> Result<Vec<Batch>, SnapshotError> {
        let rows = sqlx::query(
            "SELECT batch_number, region, tenant_ids, tenant_names, total_volumes, completed, failed, skipped, \
             quota_blocked, deleted, status, started_at, finished_at, error_message FROM snapshot_run_batches \
             WHERE run_id = $1 ORDER BY batch_number",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Batch {
                    number: row.try_get("batch_number")?,
                    region: row.try_get("region")?,
                    project_ids: from_json(&row.try_get::<String, _>("tenant_ids")?, "tenant_ids")?,
                    project_names: from_json(&row.try_get::<String, _>("tenant_names")?, "tenant_names")?,
                    total_volumes: row.try_get("total_volumes")?,
                    completed: row.try_get("completed")?,
                    failed: row.try_get("failed")?,
                    skipped: row.try_get("skipped")?,
                    quota_blocked: row.try_get("quota_blocked")?,
                    deleted: row.try_get("deleted")?,
                    status: BatchStatus::parse(&row.try_get::<String, _>("status")?)?,
                    started_at: optional_time(row, "started_at")?,
                    finished_at: optional_time(row, "finished_at")?,
                    error_message: row.try_get("error_message")?,
                })
            })
            .collect()
    }

    /// The quota blocks of a run in decision order (at most `limit`).
    pub async fn quota_blocks(&self, run_id: &str, limit: i64) -> Result<Vec<pb::QuotaBlock>, SnapshotError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT payload FROM snapshot_quota_blocks WHERE run_id = $1 ORDER BY position LIMIT {limit}"
        )))
        .bind(run_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let payload: Vec<u8> = row.try_get("payload")?;
                pb::QuotaBlock::decode(payload.as_slice())
                    .map_err(|e| SnapshotError::Corrupt(format!("quota block: {e}")))
            })
            .collect()
    }

    /// Records creates about to be sent (before their calls), taking over keys an earlier run
    /// left.
    pub async fn begin_creates(&self, items: Vec<WorkItem>, now: DateTime<Utc>) -> Result<(), SnapshotError> {
        let Some(run_id) = items.first().map(|item| item.run_id.clone()) else { return Ok(()) };
        self.commit(&run_id, Action { begin: items, ..Action::default() }, now).await
    }

    /// Work items left `creating` by runs that did not finish them.
    pub async fn unfinished_creates(&self) -> Result<Vec<WorkItem>, SnapshotError> {
        let rows = sqlx::query(
            "SELECT idempotency_key, run_id, volume_id, project_id, policy, slot, region FROM run_work_items \
             WHERE state = 'creating'",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkItem {
                    key: row.try_get("idempotency_key")?,
                    run_id: row.try_get("run_id")?,
                    volume_id: row.try_get("volume_id")?,
                    project_id: row.try_get("project_id")?,
                    policy: row.try_get("policy")?,
                    slot: row.try_get("slot")?,
                    region: row.try_get("region")?,
                })
            })
            .collect()
    }

    /// Writes one action atomically: the work item state, the audit events into the outbox, the
    /// watch events (numbered later), the quota block. Returns once the action is durable.
    /// Actions committed at the same time from different projects share one transaction (a
    /// group commit), so concurrent workers wait on one commit between them instead of one
    /// each; a failed transaction fails every action in it.
    pub async fn commit(
        &self,
        run_id: &str,
        action: Action,
        now: DateTime<Utc>,
    ) -> Result<(), SnapshotError> {
        let (done, written) = oneshot::channel();
        let queued = QueuedAction { run_id: run_id.to_owned(), action, now, done };
        let stopped = || SnapshotError::Unavailable("recording actions: the writer has stopped".to_owned());
        self.writer().send(queued).await.map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?.map_err(SnapshotError::Unavailable)
    }

    /// The group-commit writer, started with the first commit (it needs the caller's runtime).
    fn writer(&self) -> &mpsc::Sender<QueuedAction> {
        self.writer.get_or_init(|| {
            let (queue, waiting) = mpsc::channel(GROUP_MAX * 4);
            tokio::spawn(write_groups(self.database.clone(), waiting));
            queue
        })
    }

    /// Gives a run's committed pending events the next sequence numbers, in the order they were
    /// written. Only this takes the run row's lock for numbering, and only briefly, so a number is
    /// handed out after its event is visible and a reader resuming after it misses nothing.
    async fn number_events(&self, run_id: &str) -> Result<(), SnapshotError> {
        loop {
            let waiting = sqlx::query("SELECT id FROM snapshot_run_pending_events WHERE run_id = $1 LIMIT 1")
                .bind(run_id)
                .fetch_optional(self.pool())
                .await?;
            if waiting.is_none() {
                return Ok(());
            }
            let mut tx = self.pool().begin().await?;
            sqlx::query("UPDATE snapshot_runs SET last_sequence = last_sequence WHERE id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            let last: i64 = sqlx::query("SELECT last_sequence FROM snapshot_runs WHERE id = $1")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("last_sequence")?;
            let ids: Vec<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM snapshot_run_pending_events WHERE run_id = $1 ORDER BY id LIMIT {EVENTS_PER_NUMBERING}"
            )))
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
            // The ids read, not a range: on PostgreSQL an older id may commit after a newer one.
            // The statements' text varies with the count, so they are not kept prepared.
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO snapshot_run_events (run_id, sequence, volume, payload) \
                 SELECT run_id, $2 + ROW_NUMBER() OVER (ORDER BY id), volume, payload \
                 FROM snapshot_run_pending_events WHERE run_id = $1 AND id IN ({})",
                parameters(3, ids.len())
            )))
            .persistent(false)
            .bind(run_id)
            .bind(last);
            let mut delete = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM snapshot_run_pending_events WHERE run_id = $1 AND id IN ({})",
                parameters(2, ids.len())
            )))
            .persistent(false)
            .bind(run_id);
            for id in &ids {
                insert = insert.bind(*id);
                delete = delete.bind(*id);
            }
            let numbered = insert.execute(&mut *tx).await?.rows_affected();
            delete.execute(&mut *tx).await?;
            let numbered = i64::try_from(numbered).unwrap_or(i64::MAX);
            sqlx::query("UPDATE snapshot_runs SET last_sequence = last_sequence + $2 WHERE id = $1")
                .bind(run_id)
                .bind(numbered)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if ids.len() < EVENTS_PER_NUMBERING {
                return Ok(());
            }
        }
    }

    /// Events of a run after `after`, oldest first, at most `limit`; per-volume ones only when asked.
    pub async fn events_after(
        &self,
        run_id: &str,
        after: i64,
        include_volume: bool,
        limit: i64,
    ) -> Result<Vec<pb::WatchRunResponse>, SnapshotError> {
        self.number_events(run_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT sequence, payload FROM snapshot_run_events WHERE run_id = $1 AND sequence > $2 AND (volume = 0 OR $3 = 1) \
             ORDER BY sequence LIMIT {limit}"
        )))
        .bind(run_id)
        .bind(after)
        .bind(i64::from(include_volume))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let payload: Vec<u8> = row.try_get("payload")?;
                let mut event = pb::WatchRunResponse::decode(payload.as_slice())
                    .map_err(|e| SnapshotError::Corrupt(format!("run event: {e}")))?;
                event.sequence = row.try_get("sequence")?;
                Ok(event)
            })
            .collect()
    }

    /// The sequence of a run's latest event, and the oldest one still kept.
    pub async fn event_bounds(&self, run_id: &str) -> Result<(i64, i64), SnapshotError> {
        self.number_events(run_id).await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(sequence), 0) AS newest, COALESCE(MIN(sequence), 0) AS oldest \
             FROM snapshot_run_events WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get("newest")?, row.try_get("oldest")?))
    }

    /// Keeps the last `keep` events of a finished run (and every run-level event). Deletes a
    /// range of sequences per statement, so the relay and other runs' writers are not kept
    /// waiting on SQLite's one write lock for the whole of a large run's events.
    pub async fn prune_events(&self, run_id: &str, keep: i64) -> Result<(), SnapshotError> {
        let (newest, oldest) = self.event_bounds(run_id).await?;
        let last = newest - keep;
        let mut from = oldest;
        while from <= last {
            let to = (from + EVENTS_PER_PRUNE - 1).min(last);
            sqlx::query(
                "DELETE FROM snapshot_run_events WHERE run_id = $1 AND volume = 1 AND sequence >= $2 AND sequence <= $3",
            )
            .bind(run_id)
            .bind(from)
            .bind(to)
            .execute(self.pool())
            .await?;
            from = to + 1;
        }
        Ok(())
    }

    /// Outbox entries due for delivery, oldest first.
    pub async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, SnapshotError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT event_id, payload, attempts FROM outbox WHERE next_attempt_at <= $1 \
             ORDER BY created_at, event_id LIMIT {limit}"
        )))
        .bind(time_text(now))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(outbox_entry).collect()
    }

    /// Takes up to `limit` due entries for this replica's relay, oldest first: one statement
    /// puts them off until `now + hold` and returns them (on PostgreSQL skipping rows another
    /// relay has locked), so another relay passes them by while this one delivers. A relay that
    /// dies holding entries leaves them due again after `hold`. Being a single write, the claim
    /// waits its turn on a busy SQLite database instead of failing as a read-then-write would.
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        hold: Duration,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, SnapshotError> {
        let lock = match self.database.backend() {
            service_kit::db::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            service_kit::db::Backend::Sqlite => "",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET next_attempt_at = $2 WHERE event_id IN (SELECT event_id FROM outbox \
             WHERE next_attempt_at <= $1 ORDER BY created_at, event_id LIMIT {limit}{lock}) \
             RETURNING event_id, payload, attempts, created_at"
        )))
        .bind(time_text(now))
        .bind(time_text(now + hold))
        .fetch_all(self.pool())
        .await?;
        let mut claimed = rows
            .iter()
            .map(|row| Ok((row.try_get::<String, _>("created_at")?, outbox_entry(row)?)))
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        claimed.sort_by(|(a, x), (b, y)| (a, &x.event_id).cmp(&(b, &y.event_id)));
        Ok(claimed.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Removes delivered entries.
    pub async fn ack_outbox(&self, event_ids: &[String]) -> Result<(), SnapshotError> {
        for ids in event_ids.chunks(IDS_PER_STATEMENT) {
            // The text varies with the count, so it is not kept prepared.
            let listed = parameters(1, ids.len());
            let mut delete =
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM outbox WHERE event_id IN ({listed})")))
                    .persistent(false);
            for id in ids {
                delete = delete.bind(id);
            }
            delete.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Puts entries off until `next_attempt_at` after a failed delivery.
    pub async fn defer_outbox(
        &self,
        event_ids: &[String],
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), SnapshotError> {
        let mut tx = self.pool().begin().await?;
        for id in event_ids {
            sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE event_id = $1")
                .bind(id)
                .bind(time_text(next_attempt_at))
                .bind(error)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Entries waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<i64, SnapshotError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM outbox").fetch_one(self.pool()).await?.try_get("n")?)
    }

    /// Takes or renews the lease `name` for `holder` until `now + ttl`; false when another holder's
    /// lease has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, SnapshotError> {
        let result = sqlx::query(
            "INSERT INTO scheduler_lease (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE scheduler_lease.holder = excluded.holder OR scheduler_lease.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(time_text(now + ttl))
        .bind(time_text(now))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records a scheduler tick on the lease.
    pub async fn record_tick(&self, name: &str, now: DateTime<Utc>) -> Result<(), SnapshotError> {
        sqlx::query("UPDATE scheduler_lease SET last_tick_at = $2 WHERE name = $1")
            .bind(name)
            .bind(time_text(now))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a policy assignment pass on the lease (nothing when no scheduler holds one).
    pub async fn record_assign(&self, name: &str, now: DateTime<Utc>) -> Result<(), SnapshotError> {
        sqlx::query("UPDATE scheduler_lease SET last_assign_at = $2 WHERE name = $1")
            .bind(name)
            .bind(time_text(now))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The lease `name`, if any.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, SnapshotError> {
        let row = sqlx::query(
            "SELECT holder, expires_at, last_tick_at, last_assign_at FROM scheduler_lease WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Lease {
                holder: row.try_get("holder")?,
                expires_at: parse_time(&row.try_get::<String, _>("expires_at")?)?,
                last_tick_at: optional_time(&row, "last_tick_at")?,
                last_assign_at: optional_time(&row, "last_assign_at")?,
            })
        })
        .transpose()
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still running, no cancel.
    Alive,
    /// CancelRun was called: stop between volumes.
    CancelRequested,
    /// The run is no longer running here (interrupted by another replica): stop at once.
    Lost,
}

fn outbox_entry(row: &AnyRow) -> Result<OutboxEntry, SnapshotError> {
    let payload: Vec<u8> = row.try_get("payload")?;
    Ok(OutboxEntry {
        event_id: row.try_get("event_id")?,
        event: audit::Event::decode(payload.as_slice())
            .map_err(|e| SnapshotError::Corrupt(format!("outbox event: {e}")))?,
        attempts: row.try_get("attempts")?,
    })
}

/// `count` numbered parameters from `$first`, comma-separated, for an `IN (...)` list.
fn parameters(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// An action waiting for the group-commit writer, with the one waiting for it.
struct QueuedAction {
    run_id: String,
    action: Action,
    now: DateTime<Utc>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Actions one group-commit transaction holds at most.
const GROUP_MAX: usize = 64;

/// Writes queued actions until every sender is gone: whatever is waiting when a transaction
/// starts goes into it, up to [`GROUP_MAX`].
async fn write_groups(database: Database, mut waiting: mpsc::Receiver<QueuedAction>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while waiting.recv_many(&mut group, GROUP_MAX).await > 0 {
        let result =
            write_group(database.pool(), &group).await.map_err(|error| format!("recording actions: {error}"));
        for queued in group.drain(..) {
            // The caller may have gone (a cancelled run); its action is written all the same.
            let _ = queued.done.send(result.clone());
        }
    }
}

/// Writes a group of actions in one transaction.
async fn write_group(pool: &AnyPool, group: &[QueuedAction]) -> Result<(), SnapshotError> {
    let mut tx = pool.begin().await?;
    for QueuedAction { run_id, action, now, .. } in group {
        write_action(&mut tx, run_id, action, *now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One action's rows: work item state, outbox events, pending watch events, quota block.
async fn write_action(
    tx: &mut Transaction<'_, Any>,
    run_id: &str,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<(), SnapshotError> {
    for item in &action.begin {
        sqlx::query(
            "INSERT INTO run_work_items (idempotency_key, run_id, volume_id, project_id, policy, slot, region, state, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'creating', $8, $8) \
             ON CONFLICT (idempotency_key) DO UPDATE SET run_id = excluded.run_id, state = 'creating', \
             updated_at = excluded.updated_at, error = NULL",
        )
        .bind(&item.key)
        .bind(&item.run_id)
        .bind(&item.volume_id)
        .bind(&item.project_id)
        .bind(&item.policy)
        .bind(&item.slot)
        .bind(&item.region)
        .bind(time_text(now))
        .execute(&mut **tx)
        .await?;
    }
    if let Some(update) = &action.work_item {
        sqlx::query(
            "UPDATE run_work_items SET state = $2, snapshot_id = $3, error = $4, updated_at = $5 WHERE idempotency_key = $1",
        )
        .bind(&update.key)
        .bind(update.state)
        .bind(update.snapshot_id.clone())
        .bind(update.error.clone())
        .bind(time_text(now))
        .execute(&mut **tx)
        .await?;
    }
    for event in &action.audit {
        enqueue(tx, event, now).await?;
    }
    for (volume, event) in &action.watch {
        append_watch_event(tx, run_id, *volume, event.clone(), now).await?;
    }
    if let Some(block) = &action.quota_block {
        sqlx::query(
            "INSERT INTO snapshot_quota_blocks (run_id, position, payload) VALUES ($1, \
             (SELECT COALESCE(MAX(position), 0) + 1 FROM snapshot_quota_blocks WHERE run_id = $1), $2)",
        )
        .bind(run_id)
        .bind(block.encode_to_vec())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    event: &audit::Event,
    now: DateTime<Utc>,
) -> Result<(), SnapshotError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, run_id, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.run_id)
    .bind(event.encode_to_vec())
    .bind(time_text(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn append_watch_event(
    tx: &mut Transaction<'_, Any>,
    run_id: &str,
    volume: bool,
    event: pb::watch_run_response::Event,
    now: DateTime<Utc>,
) -> Result<(), SnapshotError> {
    // `sequence` is the number `Store::number_events` gives the row later.
    let message = pb::WatchRunResponse {
        sequence: 0,
        time: Some(crate::run::timestamp(now)),
        run_id: run_id.to_owned(),
        event: Some(event),
    };
    sqlx::query("INSERT INTO snapshot_run_pending_events (run_id, volume, payload) VALUES ($1, $2, $3)")
        .bind(run_id)
        .bind(i64::from(volume))
        .bind(message.encode_to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn run_from_row(row: &AnyRow) -> Result<Run, SnapshotError> {
    Ok(Run {
        id: row.try_get("id")?,
        kind: RunKind::parse(&row.try_get::<String, _>("kind")?)?,
        status: RunStatus::parse(&row.try_get::<String, _>("status")?)?,
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        triggered_by: row.try_get("triggered_by")?,
        scope: from_json(&row.try_get::<String, _>("scope")?, "scope")?,
        regions: from_json(&row.try_get::<String, _>("regions")?, "regions")?,
        policies: from_json(&row.try_get::<String, _>("policies")?, "policies")?,
        policy_volumes: from_json(&row.try_get::<String, _>("policy_volumes")?, "policy_volumes")?,
        execution_host: row.try_get("execution_host")?,
        created_at: parse_time(&row.try_get::<String, _>("created_at")?)?,
        started_at: optional_time(row, "started_at")?,
        finished_at: optional_time(row, "finished_at")?,
        heartbeat_at: optional_time(row, "heartbeat_at")?,
        cancel_requested_at: optional_time(row, "cancel_requested_at")?,
        cancel_requested_by: row.try_get("cancel_requested_by")?,
        counters: from_json(&row.try_get::<String, _>("counters")?, "counters")?,
        total_batches: row.try_get("total_batches")?,
        completed_batches: row.try_get("completed_batches")?,
        current_batch: row.try_get("current_batch")?,
        batch_size: row.try_get("batch_size_config")?,
        batch_delay: Duration::milliseconds(row.try_get("batch_delay_ms")?),
        progress_pct: row.try_get("progress_pct")?,
        volumes_per_minute: row.try_get("volumes_per_minute")?,
        estimated_finish_at: optional_time(row, "estimated_finish_at")?,
        rule_set_version: row.try_get("rule_set_version")?,
        error_summary: row.try_get("error_summary")?,
    })
}
