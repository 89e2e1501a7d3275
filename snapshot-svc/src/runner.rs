//! Executes one run: the four steps in order with a heartbeat, and in the snapshots step per
//! region: one admin listing, decisions in bulk from policy-svc, slots per policy, the pure
//! due/retention plans, batches of whole projects processed with bounded concurrency, and per
//! project quota pre-check, credentials from identity-svc, creates (work item first), retention
//! deletes (verified). Every action is committed with its audit event (outbox) and watch event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use openstack::{AuthMethod, NewSnapshot, OpenStack, ProjectRef, Scope as TokenScope, SecretString};
use service_kit::client::ServiceChannel;
use service_kit::clock::Clock;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::identity::v1 as identity;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::watch_run_response::Event as WatchEvent;
use snapkeeper_proto::tonic;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument as _;

use crate::cloud::{Admin, Keep, Listing};
use crate::plan::{ProjectVolumes, ProjectWork, RegionPlan, Rules};
use crate::records::{Outcome, Pair, RunContext};
use crate::retention::Deletion;
use crate::run::{
    Batch, BatchStatus, Counters, Run, RunKind, RunStatus, Step, StepKey, StepStatus, from_timestamp,
};
use crate::store::{Action, Heartbeat, Progress, Store, WorkItem, WorkItemUpdate};
use crate::{SnapshotError, batches, metrics, naming, progress, quota, records};

/// Volumes per EvaluateVolumes call (the contract's maximum).
const EVALUATE_CHUNK: usize = 1000;
/// Run events kept after a run finishes.
const EVENTS_KEPT: i64 = 1000;

/// Tunables of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica's name.
    pub host: String,
    /// Volumes per batch.
    pub batch_size: usize,
    /// Pause between batches.
    pub batch_delay: std::time::Duration,
    /// Projects processed at once.
    pub concurrency: usize,
    /// How often the heartbeat (and a progress event) is written.
    pub heartbeat_interval: std::time::Duration,
    /// Volumes larger than this are skipped.
    pub max_size_gb: Option<u64>,
    /// Creates per run at most.
    pub max_new: Option<u64>,
    /// How long our error snapshots are kept.
    pub error_grace: Duration,
    /// How long a delete may take to be confirmed.
    pub delete_timeout: std::time::Duration,
}

/// gRPC clients of the services a run calls.
#[derive(Debug, Clone)]
pub struct Clients {
    /// policy-svc.
    pub policy: PolicyServiceClient<ServiceChannel>,
    /// identity-svc.
    pub identity: IdentityServiceClient<ServiceChannel>,
    /// audit-svc.
    pub audit: AuditServiceClient<ServiceChannel>,
}

/// Executes runs claimed by this replica.
#[derive(Debug, Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    clients: Clients,
    admin: Admin,
    settings: Settings,
}

/// What the heartbeat and the steps share while a run executes.
#[derive(Debug, Default)]
struct Live {
    counters: Counters,
    step: usize,
    total_batches: i64,
    completed_batches: i64,
    current_batch: i64,
    snapshots_started: Option<DateTime<Utc>>,
    creates: u64,
}

#[derive(Debug)]
struct Execution {
    run: Run,
    context: RunContext,
    live: Mutex<Live>,
    stop: AtomicBool,
    lost: AtomicBool,
}

impl Execution {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.lost.load(Ordering::SeqCst)
    }

    fn progress(&self, now: DateTime<Utc>) -> Progress {
        let live = self.live();
        let fraction = if live.step == StepKey::Snapshots.position() {
            progress::percent(live.counters.processed_volumes as u64, live.counters.total_volumes as u64)
                / 100.0
        } else {
            0.0
        };
        let estimate = live.snapshots_started.map(|started| {
            progress::estimate(
                started,
                now,
                live.counters.processed_volumes as u64,
                live.counters.total_volumes as u64,
            )
        });
        Progress {
            counters: live.counters,
            total_batches: live.total_batches,
            completed_batches: live.completed_batches,
            current_batch: live.current_batch,
            progress_pct: progress::overall_percent(live.step, fraction),
            volumes_per_minute: estimate.map_or(0.0, |e| e.volumes_per_minute),
            estimated_finish_at: estimate.and_then(|e| e.finish_at),
        }
    }
}

/// How a step ended.
enum StepEnd {
    Completed(String),
    Skipped(String),
}

/// A create's outcome, recorded with the next create's work item or after the last.
struct Created<'a> {
    pair: &'a Pair,
    outcome: Outcome,
    update: WorkItemUpdate,
}

/// A batch waiting to run: its row, its region's plan and its projects (indexes into the plan).
type Queued = (Batch, usize, Vec<usize>);

/// A batch while its projects run.
struct BatchState {
    batch: Batch,
    /// Projects not yet finished.
    left: usize,
    started: bool,
    /// Failures of its projects (a store that stopped taking actions).
    errors: Vec<String>,
}

/// Figures of one project's part of a batch.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    created: i64,
    failed: i64,
    skipped: i64,
    blocked: i64,
    deleted: i64,
}

impl Runner {
    /// A runner over the store, clock, clients and the cloud's admin access.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        clients: Clients,
        admin: Admin,
        settings: Settings,
    ) -> Self {
        Self { inner: Arc::new(Inner { store, clock, clients, admin, settings }) }
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Executes a run this replica has claimed, to its end.
    pub async fn execute(&self, run_id: &str) -> Result<RunStatus, SnapshotError> {
        let store = &self.inner.store;
        let run = store.run(run_id).await?.ok_or_else(|| SnapshotError::not_found("run", run_id))?;
        let context =
            RunContext { run_id: run.id.clone(), actor: run.triggered_by.clone(), dry_run: run.dry_run };
        let regions = match self.inner.admin.regions().await {
            Ok(names) => names
                .into_iter()
                .filter(|name| run.scope.region_names.is_empty() || run.scope.region_names.contains(name))
                .collect(),
            Err(error) => {
                // Without an admin session the region's name is unknown: the run goes on with the
                // default region so that each step fails and records why.
                tracing::warn!(run_id, error = %error, "regions unknown: no admin session");
                vec![String::new()]
            }
        };
        let scoped: BTreeMap<String, i64> = run.scope.policy_names.iter().map(|p| (p.clone(), 0)).collect();
        store.set_run_context(&run.id, &regions, &scoped, 0).await?;
        let run = Run { regions: regions.clone(), ..run };
        let started_at = run.started_at.unwrap_or_else(|| self.now());
        let execution = Arc::new(Execution {
            run,
            context,
            live: Mutex::new(Live::default()),
            stop: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        });
        let now = self.now();
        let start_event =
            records::run_started(&execution.context, &execution.run, &self.inner.settings.host, now);
        store
            .commit(&execution.run.id, Action { audit: vec![start_event], ..Action::default() }, now)
            .await?;
        let heartbeat = tokio::spawn(self.clone().heartbeat(Arc::clone(&execution)));
        let outcome = self.steps(&execution, &regions).await;
        let worth_forecasting = matches!(&outcome, Ok((status, _)) if *status != RunStatus::Cancelled);
        if execution.run.kind == RunKind::Scheduled && worth_forecasting && !execution.stopped() {
            self.record_quota_risks(&execution, &regions).await;
        }
        heartbeat.abort();
        let (status, summary) = match outcome {
            Ok((status, summary)) => (status, summary),
            Err(error) => {
                tracing::error!(run_id, error = %error, "run failed");
                (RunStatus::Failed, error.to_string())
            }
        };
        if execution.lost.load(Ordering::SeqCst) {
            tracing::warn!(run_id, "run lost its heartbeat slot; another replica marked it interrupted");
            return Ok(RunStatus::Interrupted);
        }
        let now = self.now();
        let progress = execution.progress(now);
        let finished = records::run_finished(
            &execution.context,
            status,
            &progress.counters,
            progress.total_batches,
            &summary,
            now - started_at,
            now,
        );
        store.finish_run(run_id, status, now, &summary, &progress).await?;
        let final_run = store.run(run_id).await?.ok_or_else(|| SnapshotError::not_found("run", run_id))?;
        let steps = store.steps(run_id).await?;
        let action = Action {
            audit: vec![finished],
            watch: vec![(false, WatchEvent::RunFinished(final_run.to_proto(&steps)))],
            ..Action::default()
        };
        store.commit(run_id, action, now).await?;
        metrics::run_finished(
            execution.run.kind,
            status,
            (now - started_at).to_std().unwrap_or_default(),
            now,
        );
        store.prune_events(run_id, EVENTS_KEPT).await?;
        tracing::info!(run_id, status = status.as_str(), "run finished");
        Ok(status)
    }

    /// After a scheduled run: the quota forecast of each region (default margin and horizon) and
    /// one audit event per project at risk, through the outbox. A forecast that cannot be made is
    /// logged; it does not change how the run ended.
    async fn record_quota_risks(&self, execution: &Execution, regions: &[String]) {
        for region in regions {
            let now = self.now();
            let forecast = crate::quota_outlook::forecast(
                &self.inner.admin,
                &self.inner.clients.policy,
                now,
                region,
                &execution.run.scope.project_ids,
                crate::quota_outlook::DEFAULT_MARGIN_PCT,
                crate::quota_outlook::DEFAULT_HORIZON,
            )
            .await;
            let forecast = match forecast {
                Ok(forecast) => forecast,
                Err(error) => {
                    tracing::warn!(run_id = %execution.run.id, region, error = %error, "quota forecast failed");
                    continue;
                }
            };
            let events: Vec<audit::Event> = forecast
                .alerts
                .iter()
                .map(|project| records::quota_forecast_risk(&execution.context, region, project, now))
                .collect();
            if events.is_empty() {
                continue;
            }
            let at_risk = events.len();
            let action = Action { audit: events, ..Action::default() };
            match self.inner.store.commit(&execution.run.id, action, now).await {
                Ok(()) => {
                    tracing::info!(run_id = %execution.run.id, region, at_risk, "projects at quota risk recorded");
                }
                Err(error) => {
                    tracing::warn!(run_id = %execution.run.id, region, error = %error, "quota risks not recorded");
                }
            }
        }
    }

    /// Renews the heartbeat, writes progress and watches for cancel until aborted.
    async fn heartbeat(self, execution: Arc<Execution>) {
        loop {
            tokio::time::sleep(self.inner.settings.heartbeat_interval).await;
            let now = self.now();
            let progress = execution.progress(now);
            match self.inner.store.heartbeat(&execution.run.id, now, &progress).await {
                Ok(Heartbeat::Alive) => {}
                Ok(Heartbeat::CancelRequested) => execution.stop.store(true, Ordering::SeqCst),
                Ok(Heartbeat::Lost) => {
                    execution.lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(error) => tracing::warn!(run_id = %execution.run.id, error = %error, "heartbeat failed"),
            }
            let event = WatchEvent::Progress(pb::RunProgress {
                progress_pct: progress.progress_pct,
                current_step: StepKey::ORDER.get(execution.live().step).map_or(0, |k| k.to_proto() as i32),
                counters: Some(progress.counters.to_proto()),
                completed_batches: progress.completed_batches as i32,
                total_batches: progress.total_batches as i32,
                current_batch: progress.current_batch as i32,
                volumes_per_minute: progress.volumes_per_minute,
                estimated_finish_at: progress.estimated_finish_at.map(crate::run::timestamp),
                elapsed: execution.run.started_at.map(|s| crate::run::duration(now - s)),
            });
            let action = Action { watch: vec![(false, event)], ..Action::default() };
            if let Err(error) = self.inner.store.commit(&execution.run.id, action, now).await {
                tracing::warn!(run_id = %execution.run.id, error = %error, "progress event not written");
            }
        }
    }

    /// Runs the steps in order; returns the final status and error summary.
    async fn steps(
        &self,
        execution: &Execution,
        regions: &[String],
    ) -> Result<(RunStatus, String), SnapshotError> {
        let mut errors = Vec::new();
        let mut listings: HashMap<String, Listing> = HashMap::new();
        let mut snapshots_failed = false;
        for key in StepKey::ORDER {
            execution.live().step = key.position();
            let mut step = Step {
                key,
                status: StepStatus::Running,
                started_at: None,
                finished_at: None,
                error: String::new(),
                detail: String::new(),
            };
            if execution.stopped() || snapshots_failed {
                step.status = StepStatus::Skipped;
                let reason = if snapshots_failed { "the snapshots step failed" } else { "run cancelled" };
                reason.clone_into(&mut step.error);
                self.record_step(execution, &step).await?;
                continue;
            }
            step.started_at = Some(self.now());
            self.record_step(execution, &step).await?;
            let result = match key {
                StepKey::PolicyAssign => self.policy_assign(execution, regions).await,
                StepKey::InventoryPre => self.inventory(execution, regions, Some(&mut listings)).await,
                StepKey::Snapshots => self.snapshots(execution, regions, &mut listings).await,
                StepKey::InventoryPost => self.inventory(execution, regions, None).await,
            };
            step.finished_at = Some(self.now());
            match result {
                Ok(StepEnd::Completed(detail)) => {
                    step.status = StepStatus::Completed;
                    step.detail = detail;
                }
                Ok(StepEnd::Skipped(reason)) => {
                    step.status = StepStatus::Skipped;
                    step.error = reason;
                }
                Err(error) => {
                    step.status = StepStatus::Failed;
                    step.error = error.to_string();
                    errors.push(format!("{}: {}", key.as_str(), step.error));
                    // Only the snapshots step is essential: without policy assignment the volumes keep
                    // their metadata, and without an inventory sync audit-svc keeps its last view
                    // (RunStatus::conclude).
                    snapshots_failed = key == StepKey::Snapshots;
                }
            }
            self.record_step(execution, &step).await?;
        }
        let counters = execution.live().counters;
        let other_step_failed = errors.len() > usize::from(snapshots_failed);
        let status = RunStatus::conclude(
            execution.stop.load(Ordering::SeqCst),
            snapshots_failed,
            other_step_failed,
            &counters,
        );
        Ok((status, errors.join("; ")))
    }

    async fn record_step(&self, execution: &Execution, step: &Step) -> Result<(), SnapshotError> {
        let now = self.now();
        self.inner.store.update_step(&execution.run.id, step).await?;
        let action = Action {
            audit: vec![records::step_changed(&execution.context, step, now)],
            watch: vec![(false, WatchEvent::StepChanged(step.to_proto()))],
            ..Action::default()
        };
        self.inner.store.commit(&execution.run.id, action, now).await
    }

    /// policy_assign: ApplyAssignment (PlanAssignment in a dry run) per region.
    async fn policy_assign(
        &self,
        execution: &Execution,
        regions: &[String],
    ) -> Result<StepEnd, SnapshotError> {
        let mut processed = 0;
        let mut changed = 0;
        let mut failed = 0;
        for region in regions {
            let scope = policy::VolumeScope {
                project_ids: execution.run.scope.project_ids.clone(),
                region: region.clone(),
                ..policy::VolumeScope::default()
            };
            let mut client = self.inner.clients.policy.clone();
            let summary = if execution.run.dry_run {
                let request = policy::PlanAssignmentRequest { scope: Some(scope), include_unchanged: false };
                match client.plan_assignment(request).await {
                    Ok(stream) => {
                        last_summary(stream.into_inner(), |m: policy::PlanAssignmentResponse| match m.event {
                            Some(policy::plan_assignment_response::Event::Summary(s)) => Some(s),
                            _ => None,
                        })
                        .await
                        .map_err(|s| SnapshotError::upstream("policy-svc", &s))?
                    }
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        return Ok(StepEnd::Skipped(
                            "policy-svc does not implement PlanAssignment yet".to_owned(),
                        ));
                    }
                    Err(status) => return Err(SnapshotError::upstream("policy-svc", &status)),
                }
            } else {
                match self.apply_assignment(scope, &execution.run.triggered_by, &execution.run.id).await {
                    Ok(summary) => summary,
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        return Ok(StepEnd::Skipped(
                            "policy-svc does not implement ApplyAssignment yet".to_owned(),
                        ));
                    }
                    Err(status) => return Err(SnapshotError::upstream("policy-svc", &status)),
                }
            };
            if let Some(summary) = summary {
                processed += summary.processed;
                changed += summary.changed;
                failed += summary.failed;
            }
        }
        // A scoped run tags only its projects: it does not stand for the scheduler's pass.
        if !execution.run.dry_run && execution.run.scope.project_ids.is_empty() {
            self.inner.store.record_assign(crate::worker::SCHEDULER_LEASE, self.now()).await?;
        }
        Ok(StepEnd::Completed(format!("{processed} volumes, {changed} changed, {failed} failed")))
    }

    /// ApplyAssignment over `scope`, read to its summary.
    async fn apply_assignment(
        &self,
        scope: policy::VolumeScope,
        actor: &str,
        run_id: &str,
    ) -> Result<Option<policy::AssignmentSummary>, tonic::Status> {
        let request = policy::ApplyAssignmentRequest {
            scope: Some(scope),
            include_unchanged: false,
            actor: actor.to_owned(),
            run_id: run_id.to_owned(),
        };
        let mut client = self.inner.clients.policy.clone();
        let stream = client.apply_assignment(request).await?.into_inner();
        last_summary(stream, |m: policy::ApplyAssignmentResponse| match m.event {
            Some(policy::apply_assignment_response::Event::Summary(s)) => Some(s),
            _ => None,
        })
        .await
    }

    /// A policy assignment pass outside any run (the scheduler's, every
    /// POLICY_ASSIGN_INTERVAL_MINUTES): ApplyAssignment over every region, recorded on the lease.
    /// Returns the volumes processed, changed and failed.
    pub async fn assign_pass(&self, actor: &str) -> Result<(i64, i64, i64), SnapshotError> {
        let mut totals = (0, 0, 0);
        for region in self.inner.admin.regions().await? {
            let scope = policy::VolumeScope { region, ..policy::VolumeScope::default() };
            let summary = self
                .apply_assignment(scope, actor, "")
                .await
                .map_err(|s| SnapshotError::upstream("policy-svc", &s))?;
            if let Some(summary) = summary {
                totals.0 += summary.processed;
                totals.1 += summary.changed;
                totals.2 += summary.failed;
            }
        }
        self.inner.store.record_assign(crate::worker::SCHEDULER_LEASE, self.now()).await?;
        Ok(totals)
    }

    /// inventory_pre / inventory_post: one listing per region streamed to audit-svc. The pre
    /// listing is kept for the snapshots step so the cloud is listed once for both.
    async fn inventory(
        &self,
        execution: &Execution,
        regions: &[String],
        mut keep: Option<&mut HashMap<String, Listing>>,
    ) -> Result<StepEnd, SnapshotError> {
        if execution.run.dry_run {
            return Ok(StepEnd::Skipped("dry run: nothing is sent".to_owned()));
        }
        let mut totals = (0, 0);
        for name in regions {
            let listed_at = self.now();
            let header = audit::SyncInventoryRequest {
                message: Some(audit::sync_inventory_request::Message::Header(audit::SyncHeader {
                    sync_id: records::event_id(),
                    region: name.clone(),
                    listed_at: Some(crate::run::timestamp(listed_at)),
                    run_id: execution.run.id.clone(),
                    source: "snapshot-svc".to_owned(),
                })),
            };
            // Pages go to audit-svc while later ones are listed; the end message (the counts)
            // follows once the listing is complete, and never after a failed one, so audit-svc
            // applies nothing of a partial listing.
            let (chunks, received) = mpsc::channel(2);
            let (end, ended) = oneshot::channel();
            let messages = futures::stream::iter([header])
                .chain(ReceiverStream::new(received).map(|chunk| audit::SyncInventoryRequest {
                    message: Some(audit::sync_inventory_request::Message::Chunk(chunk)),
                }))
                .chain(futures::stream::once(ended).filter_map(|end| {
                    std::future::ready(end.ok().map(|end| audit::SyncInventoryRequest {
                        message: Some(audit::sync_inventory_request::Message::End(end)),
                    }))
                }));
            let mut client = self.inner.clients.audit.clone();
            let list = async {
                let keeping = if keep.is_some() { Keep::Everything } else { Keep::Counts };
                let listing =
                    Listing::fetch(&self.inner.admin, name, listed_at, Some(&chunks), keeping).await;
                drop(chunks);
                if let Ok(listing) = &listing {
                    // Unheard only when audit-svc already answered; its answer says why.
                    let _ = end.send(listing.sync_end());
                }
                listing
            };
            let (synced, listing) = tokio::join!(client.sync_inventory(messages), list);
            let listing = listing?;
            totals.0 += listing.volume_count;
            totals.1 += listing.snapshot_count;
            // Kept even when audit-svc refused the sync: the snapshots step needs no second listing.
            if let Some(keep) = keep.as_mut() {
                keep.insert(name.clone(), listing);
            }
            synced.map_err(|s| SnapshotError::upstream("audit-svc", &s))?;
        }
        Ok(StepEnd::Completed(format!("{} volumes, {} snapshots synced", totals.0, totals.1)))
    }

    /// snapshots: plan and act per region.
    async fn snapshots(
        &self,
        execution: &Execution,
        regions: &[String],
        listings: &mut HashMap<String, Listing>,
    ) -> Result<StepEnd, SnapshotError> {
        execution.live().snapshots_started = Some(self.now());
        let mut planned: Vec<RegionPlan> = Vec::new();
        let mut members = Vec::new();
        let mut batch_rows = Vec::new();
        let mut policy_volumes: BTreeMap<String, i64> = BTreeMap::new();
        let mut rule_set_version = 0;
        for name in regions {
            let listing = match listings.remove(name) {
                Some(listing) => listing,
                None => Listing::fetch(&self.inner.admin, name, self.now(), None, Keep::Everything).await?,
            };
            let (plan, version, policies) = self.plan_region(execution, name, listing).await?;
            rule_set_version = rule_set_version.max(version);
            for (policy, volumes) in policies {
                *policy_volumes.entry(policy).or_default() += volumes;
            }
            let counts: Vec<usize> = plan.projects.iter().map(ProjectVolumes::volume_count).collect();
            for group in batches::group(&counts, self.inner.settings.batch_size) {
                let projects: Vec<&ProjectVolumes> =
                    group.projects.iter().filter_map(|index| plan.projects.get(*index)).collect();
                batch_rows.push(Batch {
                    number: batch_rows.len() as i64 + 1,
                    region: name.clone(),
                    project_ids: projects.iter().map(|p| p.project_id.clone()).collect(),
                    project_names: projects
                        .iter()
                        .map(|p| plan.listing.project_names(&p.project_id).0)
                        .collect(),
                    total_volumes: group.volumes as i64,
                    completed: 0,
                    failed: 0,
                    skipped: 0,
                    quota_blocked: 0,
                    deleted: 0,
                    status: BatchStatus::Pending,
                    started_at: None,
                    finished_at: None,
                    error_message: String::new(),
                });
                members.push((planned.len(), group.projects));
            }
            planned.push(plan);
        }
        self.inner
            .store
            .set_run_context(&execution.run.id, regions, &policy_volumes, rule_set_version)
            .await?;
        self.inner.store.insert_batches(&execution.run.id, &batch_rows).await?;
        execution.live().total_batches = batch_rows.len() as i64;
        let batches: Vec<Queued> = batch_rows.into_iter().zip(members).map(|(b, (r, p))| (b, r, p)).collect();
        let delay = self.inner.settings.batch_delay;
        if delay.is_zero() {
            self.run_batches(execution, &planned, batches).await?;
        } else {
            // A pause between batches is the operator's way of sparing Cinder: each batch ends,
            // then the pause, then the next.
            let total = batches.len();
            for (index, queued) in batches.into_iter().enumerate() {
                self.run_batches(execution, &planned, vec![queued]).await?;
                if index + 1 < total && !execution.stopped() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let counters = execution.live().counters;
        Ok(StepEnd::Completed(if execution.run.dry_run {
            format!(
                "{} volumes, {} due, {} would be created, {} would be deleted, {} quota-blocked",
                counters.total_volumes,
                counters.due,
                counters.would_create,
                counters.would_delete,
                counters.quota_blocked
            )
        } else {
            format!(
                "{} volumes, {} due, {} created, {} recovered, {} deleted, {} failed, {} skipped, {} quota-blocked",
                counters.total_volumes,
                counters.due,
                counters.snapshots_created,
                counters.snapshots_recovered,
                counters.snapshots_deleted,
                counters.snapshots_failed + counters.deletes_failed,
                counters.volumes_skipped,
                counters.quota_blocked
            )
        }))
    }

    /// The inputs of one region's plan (decisions, slots, unfinished creates) with the volumes
    /// enrolled in scope grouped by project; counts the volumes and due pairs into the run's
    /// progress. Returns the plan, the rule set version and the enrolled volumes per policy.
    async fn plan_region(
        &self,
        execution: &Execution,
        region: &str,
        mut listing: Listing,
    ) -> Result<(RegionPlan, i64, BTreeMap<String, i64>), SnapshotError> {
        let now = self.now();
        let scope = &execution.run.scope;
        let chosen: Vec<usize> = (0..listing.volumes.len())
            .filter(|&i| scope.has_project(listing.volumes[i].project_id.as_deref().unwrap_or_default()))
            .collect();
        let volumes: Vec<&openstack::Volume> = chosen.iter().map(|&i| &listing.volumes[i]).collect();
        let (decisions, rule_set_version) =
            decide(&self.inner.clients.policy, &listing, &volumes, now).await?;
        drop(volumes);
        listing.forget_rule_inputs();
        let mut enrolled: BTreeMap<String, i64> = BTreeMap::new();
        for decision in &decisions {
            if decision.enrolled {
                for policy in decision.policies.iter().filter(|p| p.known && scope.has_policy(&p.name)) {
                    *enrolled.entry(policy.name.clone()).or_default() += 1;
                }
            }
        }
        let wanted: BTreeSet<String> = enrolled.keys().cloned().collect();
        let slots = self.current_slots(&wanted, now).await?;
        // Creates a crash left unfinished, by pair; a dry run leaves them to the next real run.
        let mut unfinished: HashMap<(String, String), Vec<WorkItem>> = HashMap::new();
        if !execution.run.dry_run {
            for item in self.inner.store.unfinished_creates().await? {
                unfinished.entry((item.volume_id.clone(), item.policy.clone())).or_default().push(item);
            }
        }
        let projects = RegionPlan::group(&listing, chosen.into_iter().zip(decisions), scope);
        let settings = &self.inner.settings;
        let plan = RegionPlan {
            region: region.to_owned(),
            listing,
            now,
            slots,
            unfinished,
            rules: Rules { error_grace: settings.error_grace, max_size_gb: settings.max_size_gb },
            projects,
        };
        let volumes: usize = plan.projects.iter().map(ProjectVolumes::volume_count).sum();
        let due: i64 = plan.projects.iter().map(|project| plan.work(project).due).sum();
        let mut live = execution.live();
        live.counters.total_volumes += volumes as i64;
        live.counters.due += due;
        drop(live);
        Ok((plan, rule_set_version, enrolled))
    }

    /// The current slot of each policy (NextSlots); a policy policy-svc does not know is left out.
    async fn current_slots(
        &self,
        policies: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, Option<DateTime<Utc>>>, SnapshotError> {
        let mut slots = BTreeMap::new();
        for name in policies {
            let request = policy::NextSlotsRequest {
                target: Some(policy::next_slots_request::Target::PolicyName(name.clone())),
                after: Some(crate::run::timestamp(now)),
                count: 1,
            };
            let result = service_kit::client::retry_unavailable(4, || {
                let mut client = self.inner.clients.policy.clone();
                let request = request.clone();
                async move { client.next_slots(request).await }
            })
            .await;
            match result {
                Ok(response) => {
                    let slot = response.into_inner().current_slot.as_ref().and_then(from_timestamp);
                    slots.insert(name.clone(), slot);
                }
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => return Err(SnapshotError::upstream("policy-svc", &status)),
            }
        }
        Ok(slots)
    }

    /// Processes the projects of `batches` in order with bounded concurrency. A batch starts when
    /// its first project does, so the next batch's projects take up the workers its slowest
    /// projects leave idle, and ends when its last project does. After a failure no further
    /// project starts and the first error ends the step.
    async fn run_batches(
        &self,
        execution: &Execution,
        plans: &[RegionPlan],
        batches: Vec<Queued>,
    ) -> Result<(), SnapshotError> {
        let mut jobs = Vec::new();
        let mut states = Vec::with_capacity(batches.len());
        for (index, (batch, region, projects)) in batches.into_iter().enumerate() {
            jobs.extend(projects.iter().map(|project| (index, region, *project)));
            let left = projects.len();
            states.push(tokio::sync::Mutex::new(BatchState {
                batch,
                left,
                started: false,
                errors: Vec::new(),
            }));
        }
        let failed = AtomicBool::new(false);
        // Each project's pairs are built as it starts, so only the running ones are ever held.
        let projects = jobs.into_iter().filter_map(|(index, region, project)| {
            let (state, plan) = (states.get(index)?, plans.get(region)?);
            let work = plan.projects.get(project).map(|volumes| plan.work(volumes));
            Some(self.batch_project(execution, state, &plan.region, work, &failed))
        });
        let results: Vec<Result<(), SnapshotError>> = futures::stream::iter(projects)
            .buffer_unordered(self.inner.settings.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        let first = states.into_iter().find_map(|state| state.into_inner().errors.into_iter().next());
        match first {
            // A database failure mid-batch means actions may not be recorded: stop the run.
            Some(error) => Err(SnapshotError::Unavailable(error)),
            None => Ok(()),
        }
    }

    /// One project of a batch, starting the batch if it is the first and ending it if the last.
    async fn batch_project(
        &self,
        execution: &Execution,
        state: &tokio::sync::Mutex<BatchState>,
        region: &str,
        work: Option<ProjectWork>,
        failed: &AtomicBool,
    ) -> Result<(), SnapshotError> {
        let number = {
            let mut state = state.lock().await;
            if !state.started {
                if failed.load(Ordering::SeqCst) {
                    // Never started: the batch stays pending, as the ones after a failure do.
                    return Ok(());
                }
                if let Err(error) = self.start_batch(execution, &mut state.batch).await {
                    failed.store(true, Ordering::SeqCst);
                    return Err(error);
                }
                state.started = true;
            }
            state.batch.number as i32
        };
        let result = match work {
            Some(work) if !failed.load(Ordering::SeqCst) => {
                self.process_project(execution, region, work, number).await
            }
            _ => Ok(Tally::default()),
        };
        let mut state = state.lock().await;
        match result {
            Ok(tally) => {
                let batch = &mut state.batch;
                batch.completed += tally.created;
                batch.failed += tally.failed;
                batch.skipped += tally.skipped;
                batch.quota_blocked += tally.blocked;
                batch.deleted += tally.deleted;
            }
            Err(error) => {
                failed.store(true, Ordering::SeqCst);
                state.errors.push(error.to_string());
            }
        }
        state.left -= 1;
        if state.left == 0 {
            let BatchState { batch, errors, .. } = &mut *state;
            if let Err(error) = self.finish_batch(execution, batch, errors).await {
                failed.store(true, Ordering::SeqCst);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Marks a batch running and announces it.
    async fn start_batch(&self, execution: &Execution, batch: &mut Batch) -> Result<(), SnapshotError> {
        let store = &self.inner.store;
        let now = self.now();
        batch.started_at = Some(now);
        batch.status = BatchStatus::Running;
        store.update_batch(&execution.run.id, batch).await?;
        execution.live().current_batch = batch.number;
        let started =
            Action { watch: vec![(false, WatchEvent::BatchStarted(batch.to_proto()))], ..Action::default() };
        store.commit(&execution.run.id, started, now).await
    }

    /// Stores a batch's end with its status, audit record and watch event.
    async fn finish_batch(
        &self,
        execution: &Execution,
        batch: &mut Batch,
        errors: &[String],
    ) -> Result<(), SnapshotError> {
        let store = &self.inner.store;
        let now = self.now();
        batch.finished_at = Some(now);
        batch.status = if !errors.is_empty() {
            BatchStatus::Failed
        } else if execution.stopped() {
            BatchStatus::Cancelled
        } else if batch.failed + batch.quota_blocked > 0 {
            BatchStatus::Partial
        } else {
            BatchStatus::Completed
        };
        batch.error_message = errors.join("; ");
        store.update_batch(&execution.run.id, batch).await?;
        execution.live().completed_batches += 1;
        let finished = Action {
            audit: vec![records::batch_finished(&execution.context, batch, now)],
            watch: vec![(false, WatchEvent::BatchFinished(batch.to_proto()))],
            ..Action::default()
        };
        store.commit(&execution.run.id, finished, now).await
    }

    /// One project: recorded decisions, quota pre-check, credentials, creates, retention.
    #[tracing::instrument(name = "snapshot.project", skip_all, fields(run_id = %execution.run.id, project_id = %work.project_id))]
    async fn process_project(
        &self,
        execution: &Execution,
        region: &str,
        mut work: ProjectWork,
        batch: i32,
    ) -> Result<Tally, SnapshotError> {
        let mut tally = Tally::default();
        for (pair, _) in &mut work.creates {
            pair.batch = batch;
        }
        for (mut pair, outcome, key) in std::mem::take(&mut work.decided) {
            pair.batch = batch;
            let update = key.map(|key| WorkItemUpdate {
                key,
                state: "recovered",
                snapshot_id: match &outcome {
                    Outcome::Recovered { snapshot_id } => Some(snapshot_id.clone()),
                    _ => None,
                },
                error: None,
            });
            self.record(execution, &pair, outcome, update, &mut tally).await?;
        }
        for key in std::mem::take(&mut work.lost) {
            let update = WorkItemUpdate {
                key,
                state: "failed",
                snapshot_id: None,
                error: Some("interrupted before Cinder had the snapshot; its slot has passed".to_owned()),
            };
            let action = Action { work_item: Some(update), ..Action::default() };
            self.inner.store.commit(&execution.run.id, action, self.now()).await?;
        }
        if !work.creates.is_empty() {
            self.create_due(execution, region, &work, &mut tally).await?;
        }
        // Each delete's outcome is committed while the next delete runs.
        let mut previous: Option<(Pair, Outcome)> = None;
        for (mut pair, deletion) in std::mem::take(&mut work.deletes) {
            if execution.stopped() {
                break;
            }
            pair.batch = batch;
            let delete = async {
                if execution.run.dry_run {
                    return Outcome::WouldDelete {
                        snapshot_id: deletion.snapshot_id.clone(),
                        reason: deletion.reason.as_str().to_owned(),
                    };
                }
                let span = tracing::info_span!(
                    "snapshot.delete",
                    run_id = %execution.run.id,
                    volume_id = %pair.volume_id,
                    snapshot_id = %deletion.snapshot_id,
                );
                self.delete(region, &deletion).instrument(span).await
            };
            let outcome = match previous.take() {
                Some((done, outcome)) => {
                    let (recorded, next) =
                        tokio::join!(self.record(execution, &done, outcome, None, &mut tally), delete);
                    recorded?;
                    next
                }
                None => delete.await,
            };
            previous = Some((pair, outcome));
        }
        if let Some((done, outcome)) = previous {
            self.record(execution, &done, outcome, None, &mut tally).await?;
        }
        execution.live().counters.processed_volumes += work.volumes as i64;
        Ok(tally)
    }

    /// Deletes one snapshot and waits until Cinder no longer has it.
    async fn delete(&self, region: &str, deletion: &Deletion) -> Outcome {
        let id = deletion.snapshot_id.as_str();
        let timeout = self.inner.settings.delete_timeout;
        let result = self
            .inner
            .admin
            .call(region, |admin| async move {
                match admin.cinder().delete_snapshot(id).await {
                    // Gone already (e.g. a repeat after a renewed session): confirm and count it.
                    Ok(()) | Err(openstack::Error::NotFound(_)) => {
                        admin.cinder().wait_for_snapshot_deleted(id, timeout).await
                    }
                    Err(error) => Err(error),
                }
            })
            .await;
        match result {
            Ok(()) => Outcome::Deleted {
                snapshot_id: deletion.snapshot_id.clone(),
                reason: deletion.reason.as_str().to_owned(),
            },
            Err(error) => Outcome::DeleteFailed {
                snapshot_id: deletion.snapshot_id.clone(),
                request_id: request_id(&error),
                error: error.to_string(),
            },
        }
    }

    /// Quota pre-check, credentials and creates of one project's due pairs.
    async fn create_due(
        &self,
        execution: &Execution,
        region: &str,
        work: &ProjectWork,
        tally: &mut Tally,
    ) -> Result<(), SnapshotError> {
        let project_id = work.project_id.as_str();
        let quota_set = self
            .inner
            .admin
            .call(region, |admin| async move { admin.cinder().quota_set(project_id, true).await })
            .await;
        let quota = match quota_set {
            Ok(set) => quota::ProjectQuota::from_quota_set(&set),
            Err(error) => {
                // Fail open as the seed did: Cinder's own 413 still stops an over-quota create.
                tracing::warn!(project_id = %work.project_id, error = %error, "quota read failed");
                quota::ProjectQuota::default()
            }
        };
        let candidates: Vec<quota::Candidate> = work
            .creates
            .iter()
            .enumerate()
            .map(|(key, (pair, _))| quota::Candidate {
                key,
                size_gb: pair.size_gb,
                volume_type: pair.volume_type.clone(),
            })
            .collect();
        let admission = quota::admit(&quota, &candidates);
        for block in &admission.blocked {
            let (pair, _) = &work.creates[block.key];
            let message = records::quota_block(pair, block, self.now());
            self.record(execution, pair, Outcome::QuotaBlocked(Box::new(message)), None, tally).await?;
        }
        if admission.admitted.is_empty() {
            return Ok(());
        }
        let request = identity::GetProjectCredentialsRequest {
            project_id: work.project_id.clone(),
            dry_run: execution.run.dry_run,
            region: region.to_owned(),
            run_id: execution.run.id.clone(),
        };
        let credentials = service_kit::client::retry_unavailable(4, || {
            let mut client = self.inner.clients.identity.clone();
            let request = request.clone();
            async move { client.get_project_credentials(request).await }
        })
        .await
        .map(tonic::Response::into_inner);
        let credentials = match credentials {
            Ok(credentials) => Some(credentials),
            Err(status) => {
                tracing::warn!(project_id = %work.project_id, code = ?status.code(), error = status.message(), "no credentials");
                None
            }
        };
        if let Some(credentials) = &credentials {
            let grant = identity::RoleGrant::try_from(credentials.role_grant)
                .unwrap_or(identity::RoleGrant::Unspecified);
            if matches!(grant, identity::RoleGrant::Granted | identity::RoleGrant::WouldGrant) {
                let now = self.now();
                let event = records::role_grant(
                    &execution.context,
                    region,
                    &work.project_id,
                    &work.project_name,
                    &credentials.role_name,
                    now,
                );
                execution.live().counters.role_grants += 1;
                self.inner
                    .store
                    .commit(&execution.run.id, Action { audit: vec![event], ..Action::default() }, now)
                    .await?;
            }
        }
        if execution.run.dry_run {
            for key in &admission.admitted {
                let (pair, _) = &work.creates[*key];
                let name = snapshot_name(execution, pair, self.now());
                self.record(execution, pair, Outcome::WouldCreate { snapshot_name: name }, None, tally)
                    .await?;
            }
            return Ok(());
        }
        let client = match &credentials {
            Some(credentials) if !credentials.token.is_empty() => {
                // Scoped explicitly: Keystone gives a token re-issued without scope no catalog.
                let project = if credentials.token_project_id.is_empty() {
                    work.project_id.clone()
                } else {
                    credentials.token_project_id.clone()
                };
                let auth = AuthMethod::Token {
                    token: SecretString::from(credentials.token.clone()),
                    scope: TokenScope::Project(ProjectRef::Id(project)),
                };
                let tenant = self
                    .inner
                    .admin
                    .call(region, |admin| {
                        let auth = auth.clone();
                        async move { admin.with_auth(auth).await }
                    })
                    .await;
                match tenant {
                    Ok(client) => Some(client),
                    Err(error) => {
                        tracing::warn!(project_id = %work.project_id, error = %error, "project token rejected");
                        None
                    }
                }
            }
            _ => None,
        };
        let Some(client) = client else {
            for key in &admission.admitted {
                let (pair, _) = &work.creates[*key];
                self.record(execution, pair, Outcome::Skipped(pb::SkipReason::NoCredentials), None, tally)
                    .await?;
            }
            return Ok(());
        };
        let scope_mode = credentials.as_ref().map_or(audit::ScopeMode::Unspecified, |c| {
            match identity::ScopeMode::try_from(c.scope_mode).unwrap_or(identity::ScopeMode::Unspecified) {
                identity::ScopeMode::ServiceUser => audit::ScopeMode::ServiceUser,
                identity::ScopeMode::AdminFallback => audit::ScopeMode::AdminFallback,
                identity::ScopeMode::AdminOnly => audit::ScopeMode::AdminOnly,
                identity::ScopeMode::Unspecified => audit::ScopeMode::Unspecified,
            }
        });
        let mut sending = Vec::new();
        for key in &admission.admitted {
            let (pair, in_use) = &work.creates[*key];
            if execution.stopped() {
                self.record(execution, pair, Outcome::Skipped(pb::SkipReason::RunStopped), None, tally)
                    .await?;
                continue;
            }
            if self.take_create_slot(execution).is_none() {
                self.record(execution, pair, Outcome::Skipped(pb::SkipReason::MaxNewReached), None, tally)
                    .await?;
                continue;
            }
            sending.push((pair, *in_use, work_item(execution, pair, self.now())));
        }
        // The project's work items are durable in one commit before its first create, so each
        // create then waits only on Cinder. One never sent (a crash, a stop) is retried under the
        // same key while its slot lasts and recorded as lost after that (see `plan`).
        let items = sending.iter().map(|(_, _, item)| item.clone()).collect();
        self.inner.store.begin_creates(items, self.now()).await?;
        let mut previous = None;
        for (pair, in_use, item) in sending {
            if execution.stopped() {
                let update = WorkItemUpdate {
                    key: item.key,
                    state: "failed",
                    snapshot_id: None,
                    error: Some("not sent: the run was stopped".to_owned()),
                };
                let outcome = Outcome::Skipped(pb::SkipReason::RunStopped);
                self.record(execution, pair, outcome, Some(update), tally).await?;
                continue;
            }
            previous =
                Some(self.create(execution, &client, pair, item, in_use, scope_mode, previous, tally).await?);
        }
        if let Some(created) = previous {
            self.record(execution, created.pair, created.outcome, Some(created.update), tally).await?;
        }
        Ok(())
    }

    /// Counts a create against AUTO_SNAPSHOT_MAX_NEW; `None` when the limit is reached.
    fn take_create_slot(&self, execution: &Execution) -> Option<()> {
        let mut live = execution.live();
        if self.inner.settings.max_new.is_some_and(|max| live.creates >= max) {
            return None;
        }
        live.creates += 1;
        Some(())
    }

    /// One create of a begun work item; returns the outcome for the caller to record. The
    /// `previous` create's outcome is committed while this one's call is out, so a project's
    /// creates wait on Cinder alone.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "snapshot.create", skip_all, fields(run_id = %execution.run.id, volume_id = %pair.volume_id, project_id = %pair.project_id, policy = %pair.policy))]
    async fn create<'a>(
        &self,
        execution: &Execution,
        client: &OpenStack,
        pair: &'a Pair,
        item: WorkItem,
        in_use: bool,
        scope_mode: audit::ScopeMode,
        previous: Option<Created<'_>>,
        tally: &mut Tally,
    ) -> Result<Created<'a>, SnapshotError> {
        let slot = naming::parse_slot(&item.slot).unwrap_or_else(|| self.now());
        let target = naming::SnapshotFor {
            project_id: &pair.project_id,
            project_name: &pair.project_name,
            volume_id: &pair.volume_id,
            volume_name: &pair.volume_name,
            server_name: (!pair.vm_name.is_empty()).then_some(pair.vm_name.as_str()),
            policy: &pair.policy,
            slot,
            run_id: &execution.run.id,
        };
        let name = naming::snapshot_name(&target, self.now());
        let request = NewSnapshot {
            volume_id: pair.volume_id.clone(),
            name: name.clone(),
            description: Some(naming::snapshot_description(&pair.policy)),
            force: in_use,
            metadata: naming::snapshot_metadata(&target),
        };
        let cinder = client.cinder();
        let call = cinder.create_snapshot(&request);
        let response = match previous {
            Some(created) => {
                let record =
                    self.record(execution, created.pair, created.outcome, Some(created.update), tally);
                let (recorded, response) = tokio::join!(record, call);
                recorded?;
                response
            }
            None => call.await,
        };
        let (outcome, state, snapshot_id, error) = match response {
            Ok(snapshot) => (
                Outcome::Created {
                    snapshot_id: snapshot.id.clone(),
                    snapshot_name: name,
                    snapshot_project_id: snapshot.project_id.clone().unwrap_or_default(),
                    scope_mode,
                    created_at: snapshot.created_at,
                },
                "created",
                Some(snapshot.id),
                None,
            ),
            Err(openstack::Error::QuotaExceeded(failure)) => {
                let block = records::over_limit_block(pair, &failure.message, self.now());
                (Outcome::QuotaBlocked(Box::new(block)), "failed", None, Some(failure.to_string()))
            }
            Err(openstack::Error::NotFound(failure)) => {
                (Outcome::Skipped(pb::SkipReason::VolumeGone), "failed", None, Some(failure.to_string()))
            }
            Err(error) => {
                let text = error.to_string();
                let request_id = error.request_id().unwrap_or_default().to_owned();
                (Outcome::CreateFailed { error: text.clone(), request_id }, "failed", None, Some(text))
            }
        };
        Ok(Created { pair, outcome, update: WorkItemUpdate { key: item.key, state, snapshot_id, error } })
    }

    /// Commits one pair outcome with its records and counts it.
    async fn record(
        &self,
        execution: &Execution,
        pair: &Pair,
        outcome: Outcome,
        work_item: Option<WorkItemUpdate>,
        tally: &mut Tally,
    ) -> Result<(), SnapshotError> {
        let now = self.now();
        {
            let mut live = execution.live();
            let counters = &mut live.counters;
            match &outcome {
                Outcome::Created { .. } => {
                    counters.snapshots_created += 1;
                    tally.created += 1;
                }
                Outcome::Recovered { .. } => counters.snapshots_recovered += 1,
                Outcome::Deleted { .. } => {
                    counters.snapshots_deleted += 1;
                    tally.deleted += 1;
                }
                Outcome::CreateFailed { .. } => {
                    counters.snapshots_failed += 1;
                    tally.failed += 1;
                }
                Outcome::DeleteFailed { .. } => counters.deletes_failed += 1,
                Outcome::Skipped(_) => {
                    counters.volumes_skipped += 1;
                    tally.skipped += 1;
                }
                Outcome::QuotaBlocked(_) => {
                    counters.quota_blocked += 1;
                    tally.blocked += 1;
                }
                Outcome::WouldCreate { .. } => counters.would_create += 1,
                Outcome::WouldDelete { .. } => counters.would_delete += 1,
            }
        }
        let quota_block = match &outcome {
            Outcome::QuotaBlocked(block) => Some((**block).clone()),
            _ => None,
        };
        let (event, watch) = records::pair_records(&execution.context, pair, &outcome, now);
        let action = Action {
            work_item,
            audit: vec![event],
            watch: vec![(true, WatchEvent::VolumeProcessed(watch))],
            quota_block,
            ..Action::default()
        };
        self.inner.store.commit(&execution.run.id, action, now).await?;
        metrics::outcome_recorded(&pair.policy, &outcome);
        Ok(())
    }
}

/// The work item of a due pair's create, keyed by volume, policy and slot.
fn work_item(execution: &Execution, pair: &Pair, now: DateTime<Utc>) -> WorkItem {
    let slot = pair.slot.unwrap_or(now);
    WorkItem {
        key: naming::idempotency_key(&pair.volume_id, &pair.policy, slot),
        run_id: execution.run.id.clone(),
        volume_id: pair.volume_id.clone(),
        project_id: pair.project_id.clone(),
        policy: pair.policy.clone(),
        slot: naming::slot_text(slot),
        region: pair.region.clone(),
    }
}

fn snapshot_name(execution: &Execution, pair: &Pair, now: DateTime<Utc>) -> String {
    let target = naming::SnapshotFor {
        project_id: &pair.project_id,
        project_name: &pair.project_name,
        volume_id: &pair.volume_id,
        volume_name: &pair.volume_name,
        server_name: (!pair.vm_name.is_empty()).then_some(pair.vm_name.as_str()),
        policy: &pair.policy,
        slot: pair.slot.unwrap_or(now),
        run_id: &execution.run.id,
    };
    naming::snapshot_name(&target, now)
}

/// Decisions for the volumes, in order, from policy-svc (chunks of 1000), and the rule set version.
pub(crate) async fn decide(
    policy: &PolicyServiceClient<ServiceChannel>,
    listing: &Listing,
    volumes: &[&openstack::Volume],
    now: DateTime<Utc>,
) -> Result<(Vec<policy::Decision>, i64), SnapshotError> {
    let mut decisions = Vec::with_capacity(volumes.len());
    let mut version = 0;
    for chunk in volumes.chunks(EVALUATE_CHUNK) {
        let facts = chunk
            .iter()
            .map(|volume| {
                let project_id = volume.project_id.clone().unwrap_or_default();
                let (project_name, domain_id, domain_name) = listing.project_names(&project_id);
                policy::Volume {
                    id: volume.id.clone(),
                    name: volume.name.clone(),
                    project_id,
                    project_name,
                    domain_id,
                    domain_name,
                    volume_type: volume.volume_type.clone().unwrap_or_default(),
                    size_gb: volume.size as i64,
                    bootable: volume.bootable,
                    availability_zone: volume.availability_zone.clone().unwrap_or_default(),
                    status: volume.status.clone(),
                    metadata: volume.metadata.clone().into_iter().collect(),
                }
            })
            .collect();
        let request = policy::EvaluateVolumesRequest {
            volumes: facts,
            include_explanation: false,
            at: Some(crate::run::timestamp(now)),
        };
        let response = service_kit::client::retry_unavailable(4, || {
            let mut client = policy.clone();
            let request = request.clone();
            async move { client.evaluate_volumes(request).await }
        })
        .await
        .map_err(|s| SnapshotError::upstream("policy-svc", &s))?
        .into_inner();
        if response.decisions.len() != chunk.len() {
            return Err(SnapshotError::Unavailable(format!(
                "policy-svc returned {} decisions for {} volumes",
                response.decisions.len(),
                chunk.len()
            )));
        }
        version = version.max(response.rule_set_version);
        decisions.extend(response.decisions);
    }
    Ok((decisions, version))
}

/// Cinder's request id of a failed cloud call; empty for other failures.
fn request_id(error: &SnapshotError) -> String {
    match error {
        SnapshotError::OpenStack(error) => error.request_id().unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// Reads a plan/apply stream to its end and returns its summary.
async fn last_summary<M>(
    mut stream: tonic::Streaming<M>,
    summary: impl Fn(M) -> Option<policy::AssignmentSummary>,
) -> Result<Option<policy::AssignmentSummary>, tonic::Status> {
    let mut last = None;
    while let Some(message) = stream.message().await? {
        if let Some(found) = summary(message) {
            last = Some(found);
        }
    }
    Ok(last)
}
