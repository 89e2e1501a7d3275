//! The background loops of a replica: the worker (interrupts runs whose heartbeat stopped, claims
//! pending runs and executes them), the outbox relay (delivers audit events to audit-svc with
//! retries), and the scheduler (one leader, by lease row, queues a scheduled run every interval and
//! makes a policy assignment pass every POLICY_ASSIGN_INTERVAL_MINUTES between runs).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Duration;
use service_kit::client::ServiceChannel;
use service_kit::clock::Clock;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use tracing::Instrument as _;

use crate::SnapshotError;
use crate::run::{RunKind, Scope};
use crate::runner::Runner;
use crate::store::{NewRun, Store};

/// Lease row the scheduling replica holds.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// Claims and executes runs; marks dead ones interrupted.
#[derive(Debug, Clone)]
pub struct Worker {
    store: Store,
    clock: Arc<dyn Clock>,
    runner: Runner,
    host: String,
    heartbeat_timeout: Duration,
    executing: Arc<Mutex<HashSet<String>>>,
}

impl Worker {
    /// A worker for this replica.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        runner: Runner,
        host: String,
        heartbeat_timeout: Duration,
    ) -> Self {
        Self { store, clock, runner, host, heartbeat_timeout, executing: Arc::default() }
    }

    /// One pass: interrupt stale runs, then claim and start every pending run. Returns the
    /// handles of the runs started.
    pub async fn tick(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, SnapshotError> {
        let now = self.clock.now();
        for id in self.store.interrupt_stale(now, self.heartbeat_timeout).await? {
            tracing::warn!(run_id = %id, "run interrupted: heartbeat stopped");
        }
        let mut started = Vec::new();
        for id in self.store.pending_runs().await? {
            if !self.store.claim_run(&id, &self.host, self.clock.now()).await? {
                continue;
            }
            self.executing.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone());
            let runner = self.runner.clone();
            let executing = Arc::clone(&self.executing);
            let span = tracing::info_span!("snapshot.run", otel.name = "snapshot run", run_id = %id);
            if let Some(traceparent) = self.store.trace_parent(&id).await? {
                service_kit::telemetry::set_parent_from_traceparent(&span, &traceparent);
            }
            let execute = async move {
                if let Err(error) = runner.execute(&id).await {
                    tracing::error!(run_id = %id, error = %error, "run could not be finished");
                }
                executing.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            };
            started.push(tokio::spawn(execute.instrument(span)));
        }
        Ok(started)
    }

    /// Ticks every `every` until the task is dropped.
    pub async fn run(self, every: std::time::Duration) {
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(error = %error, "worker tick failed");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// How long a relay holds the outbox entries it is delivering (longer than one AppendEvents call
/// may take), so the relays of several replicas share the outbox instead of sending it twice.
const OUTBOX_HOLD: Duration = Duration::minutes(1);

/// Delivers the outbox to audit-svc.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Store,
    clock: Arc<dyn Clock>,
    audit: AuditServiceClient<ServiceChannel>,
}

impl Relay {
    /// A relay over the store and audit-svc.
    pub fn new(store: Store, clock: Arc<dyn Clock>, audit: AuditServiceClient<ServiceChannel>) -> Self {
        Self { store, clock, audit }
    }

    /// Delivers what is due, in chunks of up to 500; returns the number delivered. A failed
    /// chunk is retried later with a growing delay (nothing is dropped).
    pub async fn deliver(&self) -> Result<usize, SnapshotError> {
        let mut delivered = 0;
        loop {
            let now = self.clock.now();
            let entries = self.store.claim_outbox(now, OUTBOX_HOLD, 500).await?;
            if entries.is_empty() {
                return Ok(delivered);
            }
            let ids: Vec<String> = entries.iter().map(|e| e.event_id.clone()).collect();
            let attempts = entries.iter().map(|e| e.attempts).max().unwrap_or(0);
            let request =
                audit::AppendEventsRequest { events: entries.into_iter().map(|e| e.event).collect() };
            let mut client = self.audit.clone();
            match client.append_events(request).await {
                Ok(_) => {
                    self.store.ack_outbox(&ids).await?;
                    delivered += ids.len();
                }
                Err(status) => {
                    let backoff =
                        Duration::seconds(2_i64.saturating_pow(attempts.clamp(0, 8) as u32).min(300));
                    tracing::warn!(events = ids.len(), code = ?status.code(), error = status.message(), "audit delivery failed; will retry");
                    self.store.defer_outbox(&ids, now + backoff, status.message()).await?;
                    return Ok(delivered);
                }
            }
        }
    }

    /// Delivers every `every` until the task is dropped.
    pub async fn run(self, every: std::time::Duration) {
        loop {
            if let Err(error) = self.deliver().await {
                tracing::warn!(error = %error, "outbox relay failed");
            }
            if let Ok(waiting) = self.store.outbox_len().await {
                crate::metrics::outbox_depth(waiting);
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Queues scheduled runs on the replica that holds the lease.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    clock: Arc<dyn Clock>,
    host: String,
    interval: Duration,
    /// Scheduled runs are dry runs (AUTO_SNAPSHOT_DRY_RUN).
    dry_run: bool,
    batch_size: i64,
    batch_delay: Duration,
    /// POLICY_ASSIGN_INTERVAL_MINUTES and the runner that makes the pass.
    policy_assign: Option<(Duration, Runner)>,
}

impl Scheduler {
    /// A scheduler ticking every `interval`.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        host: String,
        interval: Duration,
        dry_run: bool,
        batch_size: i64,
        batch_delay: Duration,
    ) -> Self {
        Self { store, clock, host, interval, dry_run, batch_size, batch_delay, policy_assign: None }
    }

    /// Also makes a policy assignment pass whenever `every` has passed since the last one (a
    /// run's policy_assign step counts) and no run is active.
    pub fn with_policy_assign(mut self, every: Duration, runner: Runner) -> Self {
        self.policy_assign = Some((every, runner));
        self
    }

    /// One tick: take or renew the lease; when leader and the interval has passed since the
    /// last scheduled tick, queue a scheduled run. Returns the queued run id.
    pub async fn tick(&self, lease_ttl: Duration) -> Result<Option<String>, SnapshotError> {
        let now = self.clock.now();
        if !self.store.acquire_lease(SCHEDULER_LEASE, &self.host, now, lease_ttl).await? {
            return Ok(None);
        }
        let lease = self.store.lease(SCHEDULER_LEASE).await?;
        let last_tick = lease.as_ref().and_then(|l| l.last_tick_at);
        if let Some(last) = last_tick
            && now - last < self.interval
        {
            let last_assign = lease.as_ref().and_then(|l| l.last_assign_at).or(last_tick);
            self.assign_if_due(now, last_assign).await?;
            return Ok(None);
        }
        self.store.record_tick(SCHEDULER_LEASE, now).await?;
        let new = NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            kind: RunKind::Scheduled,
            dry_run: self.dry_run,
            triggered_by: "scheduler".to_owned(),
            scope: Scope::default(),
            batch_size: self.batch_size,
            batch_delay: self.batch_delay,
            created_at: now,
        };
        match self.store.create_run(&new).await {
            Ok(run) => Ok(Some(run.id)),
            Err(SnapshotError::AlreadyExists(message)) => {
                tracing::info!(message, "scheduled run still active; tick skipped");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The scheduler's own policy assignment pass, when POLICY_ASSIGN_INTERVAL_MINUTES has passed
    /// since `last` and no run is active (an active run's policy_assign step does the work, and
    /// policy-svc refuses a second apply over the same volumes meanwhile).
    async fn assign_if_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        last: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), SnapshotError> {
        let Some((every, runner)) = &self.policy_assign else { return Ok(()) };
        // A dry-run deployment (AUTO_SNAPSHOT_DRY_RUN) changes no volume metadata either.
        if self.dry_run
            || last.is_some_and(|last| now - last < *every)
            || self.store.active_run(None).await?.is_some()
        {
            return Ok(());
        }
        let (processed, changed, failed) = runner.assign_pass("scheduler").await?;
        tracing::info!(processed, changed, failed, "policy assignment pass");
        Ok(())
    }

    /// Ticks every `every` until the task is dropped.
    pub async fn run(self, every: std::time::Duration) {
        let ttl = Duration::from_std(every * 3).unwrap_or(Duration::minutes(1));
        loop {
            match self.tick(ttl).await {
                Ok(Some(run_id)) => tracing::info!(run_id, "scheduled run queued"),
                Ok(None) => {}
                Err(error) => tracing::warn!(error = %error, "scheduler tick failed"),
            }
            tokio::time::sleep(every).await;
        }
    }
}
