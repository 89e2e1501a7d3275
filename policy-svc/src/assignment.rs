//! PlanAssignment and ApplyAssignment over the cloud: one inventory listing per run (volumes,
//! projects, domains), a decision and a metadata change per volume in scope, and for apply the
//! changed keys written with bounded concurrency. A run streams [`Event`]s: progress (at least
//! every 2 seconds while work goes on), one change per volume, and the summary last. Also the
//! volumes enrolled only through their Cinder metadata, for ListAssignments.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use service_kit::clock::Clock;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::PolicyError;
use crate::active_rules::ActiveRules;
use crate::cloud::{Cloud, CloudVolume};
use crate::decision::{self, Decision, DecisionSource, Overrides};
use crate::metadata::{self, ChangeKind, ChangeSet};
use crate::store::{AssignmentFilter, AssignmentRecord, ExclusionRecord};

/// Longest pause between two progress messages while a run works.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Most failures a summary lists (the count covers all).
const MAX_LISTED_FAILURES: usize = 1000;
/// `assignment_source` of rows derived from Cinder metadata (never stored).
pub const CINDER_METADATA_SOURCE: &str = "cinder-metadata";

/// Which volumes a run covers; an empty set does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Keystone project ids.
    pub project_ids: BTreeSet<String>,
    /// Keystone domain ids.
    pub domain_ids: BTreeSet<String>,
    /// Cinder volume ids.
    pub volume_ids: BTreeSet<String>,
    /// Cinder region; empty is identity-svc's default.
    pub region: String,
}

impl Scope {
    /// Whether `volume` is in scope.
    pub fn contains(&self, volume: &decision::Volume) -> bool {
        let admits = |set: &BTreeSet<String>, value: &String| set.is_empty() || set.contains(value);
        admits(&self.project_ids, &volume.project_id)
            && admits(&self.domain_ids, &volume.domain_id)
            && admits(&self.volume_ids, &volume.id)
    }

    /// Whether a volume could be in both scopes: only lists both restrict, and that share nothing,
    /// prove them apart (an empty region may be any region).
    pub fn overlaps(&self, other: &Self) -> bool {
        let apart =
            |a: &BTreeSet<String>, b: &BTreeSet<String>| !a.is_empty() && !b.is_empty() && a.is_disjoint(b);
        let same_region = self.region == other.region || self.region.is_empty() || other.region.is_empty();
        same_region
            && !apart(&self.project_ids, &other.project_ids)
            && !apart(&self.domain_ids, &other.domain_ids)
            && !apart(&self.volume_ids, &other.volume_ids)
    }
}

/// Phase of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Listing volumes, projects and domains.
    Listing,
    /// Deciding per volume.
    Evaluating,
    /// Writing changed metadata (apply only).
    Writing,
}

/// Progress of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Volumes in scope (0 while listing).
    pub listed: i64,
    /// Volumes done so far.
    pub processed: i64,
}

/// What happened to one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Plan: the change would be written.
    Planned,
    /// Apply: written and confirmed.
    Applied,
    /// Metadata already matches.
    Unchanged,
    /// Apply: the write failed.
    Failed,
}

/// The result for one volume.
#[derive(Debug, Clone)]
pub struct VolumeResult {
    /// The volume as listed.
    pub volume: CloudVolume,
    /// The decision (no explanation).
    pub decision: Decision,
    /// The metadata change.
    pub change: ChangeSet,
    /// What happened.
    pub outcome: Outcome,
    /// Why the write failed.
    pub error: String,
    /// Request id of the failed Cinder call, when there was a response.
    pub request_id: String,
    /// Rule set version decided with.
    pub rule_set_version: i64,
}

/// A volume an apply could not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Project id.
    pub project_id: String,
    /// Why.
    pub reason: String,
    /// Request id of the failed call.
    pub request_id: String,
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// True for a plan.
    pub dry_run: bool,
    /// Volumes evaluated.
    pub processed: i64,
    /// Volumes changed (or that would change).
    pub changed: i64,
    /// Volumes already matching.
    pub unchanged: i64,
    /// Failed writes.
    pub failed: i64,
    /// Of changed: newly enrolled.
    pub enrolled: i64,
    /// Of changed: unenrolled.
    pub unenrolled: i64,
    /// The first failures.
    pub failures: Vec<Failure>,
    /// Rule set version decided with.
    pub rule_set_version: i64,
    /// When listing started.
    pub started_at: DateTime<Utc>,
    /// When the last volume was done.
    pub finished_at: DateTime<Utc>,
}

impl Summary {
    fn count(&mut self, result: &VolumeResult) {
        self.processed += 1;
        match result.outcome {
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Planned | Outcome::Applied => {
                self.changed += 1;
                match result.change.kind {
                    ChangeKind::Enroll => self.enrolled += 1,
                    ChangeKind::Unenroll => self.unenrolled += 1,
                    ChangeKind::Update | ChangeKind::None => {}
                }
            }
            Outcome::Failed => {
                self.failed += 1;
                if self.failures.len() < MAX_LISTED_FAILURES {
                    self.failures.push(Failure {
                        volume_id: result.volume.facts.id.clone(),
                        volume_name: result.volume.facts.name.clone(),
                        project_id: result.volume.facts.project_id.clone(),
                        reason: result.error.clone(),
                        request_id: result.request_id.clone(),
                    });
                }
            }
        }
    }
}

/// One message of a run's stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// Progress.
    Progress(Progress),
    /// One volume's result.
    Change(Box<VolumeResult>),
    /// Totals; always last.
    Summary(Summary),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Volumes covered.
    pub scope: Scope,
    /// Plan only (write nothing).
    pub dry_run: bool,
    /// Also stream volumes whose metadata does not change.
    pub include_unchanged: bool,
}

/// The sending half of a run's stream; the run ends with an error item when it fails.
pub type EventSender = mpsc::Sender<Result<Event, PolicyError>>;

/// Plans and applies assignments; at most one apply per overlapping scope at a time.
pub struct Assigner {
    cloud: Arc<Cloud>,
    active: Arc<ActiveRules>,
    clock: Arc<dyn Clock>,
    write_concurrency: usize,
    running: Arc<Mutex<HashMap<u64, Scope>>>,
    next_run: AtomicU64,
}

impl std::fmt::Debug for Assigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assigner").field("write_concurrency", &self.write_concurrency).finish_non_exhaustive()
    }
}

/// An apply's claim on its scope, released when dropped.
#[derive(Debug)]
pub struct ScopeClaim {
    running: Arc<Mutex<HashMap<u64, Scope>>>,
    id: u64,
}

impl Drop for ScopeClaim {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

impl Assigner {
    /// Runs over `cloud`, deciding with `active`'s rules and overrides, writing at most
    /// `write_concurrency` volumes at once.
    pub fn new(
        cloud: Arc<Cloud>,
        active: Arc<ActiveRules>,
        clock: Arc<dyn Clock>,
        write_concurrency: usize,
    ) -> Self {
        Self {
            cloud,
            active,
            clock,
            write_concurrency: write_concurrency.max(1),
            running: Arc::new(Mutex::new(HashMap::new())),
            next_run: AtomicU64::new(1),
        }
    }

    /// The cloud the runs use.
    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    /// Claims `scope` for an apply; refused while an overlapping apply runs in this process.
    pub fn claim(&self, scope: &Scope) -> Result<ScopeClaim, PolicyError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.values().any(|other| other.overlaps(scope)) {
            return Err(PolicyError::FailedPrecondition(
                "another ApplyAssignment overlapping this scope is running".to_owned(),
            ));
        }
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        running.insert(id, scope.clone());
        Ok(ScopeClaim { running: Arc::clone(&self.running), id })
    }

    /// Runs `job`, streaming into `events`; a failure ends the stream with the error.
    pub async fn run(&self, job: Job, events: EventSender) {
        if let Err(err) = self.execute(&job, &events).await {
            tracing::warn!(error = %err, dry_run = job.dry_run, "assignment run failed");
            let _ = events.send(Err(err)).await;
        }
    }

    async fn execute(&self, job: &Job, events: &EventSender) -> Result<(), PolicyError> {
        // A client that went away drops the receiver; the run still finishes so an apply leaves
        // no volume half written, so send errors are ignored.
        let emit = |event: Event| async move {
            let _ = events.send(Ok(event)).await;
        };
        let started_at = self.clock.now();
        emit(Event::Progress(Progress { phase: Phase::Listing, listed: 0, processed: 0 })).await;
        let loaded = self.active.current().await?;
        let catalog = self.active.catalog(&loaded).await?;
        let store = self.active.store();
        let exclusions = store.all_exclusions().await?;
        let assignments = store.all_assignments().await?;
        let overrides = Overrides::new(
            exclusions.iter().map(ExclusionRecord::fact),
            assignments.iter().map(AssignmentRecord::fact),
        );
        let listing = self.cloud.inventory(&job.scope.region);
        tokio::pin!(listing);
        let mut ticker = tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let inventory = loop {
            tokio::select! {
                listed = &mut listing => break listed?,
                _ = ticker.tick() => {
                    emit(Event::Progress(Progress { phase: Phase::Listing, listed: 0, processed: 0 })).await;
                }
            }
        };
        let volumes: Vec<CloudVolume> =
            inventory.into_iter().filter(|v| job.scope.contains(&v.facts)).collect();
        let listed = i64::try_from(volumes.len()).unwrap_or(i64::MAX);
        let mut summary = Summary {
            dry_run: job.dry_run,
            processed: 0,
            changed: 0,
            unchanged: 0,
            failed: 0,
            enrolled: 0,
            unenrolled: 0,
            failures: Vec::new(),
            rule_set_version: loaded.version_number(),
            started_at,
            finished_at: started_at,
        };
        emit(Event::Progress(Progress { phase: Phase::Evaluating, listed, processed: 0 })).await;
        let now = self.clock.now();
        let mut last_progress = Instant::now();
        let mut writes = Vec::new();
        let mut verified = Vec::new();
        for volume in volumes {
            let decision = decision::decide(&volume.facts, &loaded.rules, &catalog, &overrides, now, false);
            let change = metadata::plan(&volume.facts.metadata, &decision);
            let outcome = match (change.kind, job.dry_run) {
                (ChangeKind::None, _) => Outcome::Unchanged,
                (_, true) => Outcome::Planned,
                (_, false) => {
                    writes.push((volume, decision, change));
                    continue;
                }
            };
            if outcome == Outcome::Unchanged && decision.source == DecisionSource::Assignment {
                verified.push(volume.facts.id.clone());
            }
            let result = VolumeResult {
                volume,
                decision,
                change,
                outcome,
                error: String::new(),
                request_id: String::new(),
                rule_set_version: summary.rule_set_version,
            };
            summary.count(&result);
            if outcome != Outcome::Unchanged || job.include_unchanged {
                emit(Event::Change(Box::new(result))).await;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let processed = summary.processed;
                emit(Event::Progress(Progress { phase: Phase::Evaluating, listed, processed })).await;
            }
        }
        if !writes.is_empty() {
            let processed = summary.processed;
            emit(Event::Progress(Progress { phase: Phase::Writing, listed, processed })).await;
            let (region, version) = (job.scope.region.as_str(), summary.rule_set_version);
            let mut results = futures::stream::iter(writes)
                .map(|(volume, decision, change)| self.write(region, version, volume, decision, change))
                .buffer_unordered(self.write_concurrency);
            ticker.reset();
            loop {
                tokio::select! {
                    next = results.next() => {
                        let Some(result) = next else { break };
                        if result.outcome == Outcome::Applied && result.decision.source == DecisionSource::Assignment {
                            verified.push(result.volume.facts.id.clone());
                        }
                        summary.count(&result);
                        emit(Event::Change(Box::new(result))).await;
                    }
                    _ = ticker.tick() => {
                        let processed = summary.processed;
                        emit(Event::Progress(Progress { phase: Phase::Writing, listed, processed })).await;
                    }
                }
            }
        }
        if !job.dry_run {
            store.mark_assignments_verified(&verified, self.clock.now()).await?;
        }
        summary.finished_at = self.clock.now();
        tracing::info!(
            dry_run = job.dry_run,
            processed = summary.processed,
            changed = summary.changed,
            unchanged = summary.unchanged,
            failed = summary.failed,
            "assignment run finished"
        );
        emit(Event::Summary(summary)).await;
        Ok(())
    }

    /// Writes one volume's change: sets what differs in one merge call, then removes our keys
    /// the decision no longer wants (a key already gone counts as removed).
    async fn write(
        &self,
        region: &str,
        rule_set_version: i64,
        volume: CloudVolume,
        decision: Decision,
        change: ChangeSet,
    ) -> VolumeResult {
        let id = volume.facts.id.as_str();
        let set = change.to_set();
        let remove = change.to_remove();
        let written = self
            .cloud
            .with_admin(region, |admin| {
                let (set, remove) = (&set, &remove);
                async move {
                    if !set.is_empty() {
                        let after = admin.cinder().set_volume_metadata(id, set).await?;
                        if let Some((key, _)) = set.iter().find(|(k, v)| after.get(*k) != Some(*v)) {
                            return Err(openstack::Error::Decode {
                                operation: "cinder.volumes.metadata.set".to_owned(),
                                message: format!("metadata key {key} does not hold the written value"),
                            });
                        }
                    }
                    for key in remove {
                        match admin.cinder().delete_volume_metadata(id, key).await {
                            Err(e) if e.is_not_found() => {}
                            other => other?,
                        }
                    }
                    Ok(())
                }
            })
            .await;
        let (outcome, error, request_id) = match written {
            Ok(()) => (Outcome::Applied, String::new(), String::new()),
            Err(err) => {
                let request_id = match &err {
                    PolicyError::Cloud(cloud) => cloud.request_id().unwrap_or_default().to_owned(),
                    _ => String::new(),
                };
                tracing::warn!(volume_id = %id, error = %err, "volume metadata write failed");
                (Outcome::Failed, err.to_string(), request_id)
            }
        };
        VolumeResult { volume, decision, change, outcome, error, request_id, rule_set_version }
    }
}

/// Volumes enrolled only through their Cinder metadata (auto_snapshot true with policies, no
/// stored assignment) that pass `filter`, as assignment rows with id 0, ordered by volume id.
pub fn metadata_assignments(
    inventory: Vec<CloudVolume>,
    stored: &BTreeSet<String>,
    filter: &AssignmentFilter,
) -> Vec<AssignmentRecord> {
    // Metadata rows reference no policy set.
    if filter.policy_set_id.is_some() {
        return Vec::new();
    }
    let wanted = |want: Option<&String>, value: &String| want.is_none_or(|w| w == value);
    let mut rows: Vec<AssignmentRecord> = inventory
        .into_iter()
        .filter(|v| !stored.contains(&v.facts.id))
        .filter(|v| {
            wanted(filter.volume_id.as_ref(), &v.facts.id)
                && wanted(filter.tenant_id.as_ref(), &v.facts.domain_id)
                && wanted(filter.project_id.as_ref(), &v.facts.project_id)
                && wanted(filter.vm_id.as_ref(), &v.server_id)
        })
        .filter_map(|v| {
            let current = metadata::read_current(&v.facts.metadata);
            let enrolled = current.auto_snapshot == Some(true) && !current.policies.is_empty();
            if !enrolled || filter.auto_snapshot == Some(false) {
                return None;
            }
            Some(AssignmentRecord {
                volume_id: v.facts.id,
                volume_name: v.facts.name,
                tenant_id: v.facts.domain_id,
                tenant_name: v.facts.domain_name,
                project_id: v.facts.project_id,
                project_name: v.facts.project_name,
                vm_id: v.server_id,
                auto_snapshot: true,
                policies: current.policies,
                retention_map: current.retention,
                assignment_source: CINDER_METADATA_SOURCE.to_owned(),
                ..AssignmentRecord::default()
            })
        })
        .collect();
    rows.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(projects: &[&str], volumes: &[&str]) -> Scope {
        Scope {
            project_ids: projects.iter().map(|s| (*s).to_owned()).collect(),
            volume_ids: volumes.iter().map(|s| (*s).to_owned()).collect(),
            ..Scope::default()
        }
    }

    #[test]
    fn scopes_overlap_unless_a_list_both_restrict_shares_nothing() {
        assert!(scope(&[], &[]).overlaps(&scope(&["p1"], &[])));
        assert!(scope(&["p1", "p2"], &[]).overlaps(&scope(&["p2"], &[])));
        assert!(!scope(&["p1"], &[]).overlaps(&scope(&["p2"], &[])));
        assert!(!scope(&[], &["v1"]).overlaps(&scope(&["p1"], &["v2"])));
        let other_region = Scope { region: "RegionTwo".to_owned(), ..scope(&[], &[]) };
        let this_region = Scope { region: "RegionOne".to_owned(), ..scope(&[], &[]) };
        assert!(!other_region.overlaps(&this_region));
        assert!(other_region.overlaps(&scope(&[], &[])));
    }

    #[test]
    fn scope_admits_volumes_on_every_list() {
        let volume = decision::Volume {
            id: "v1".to_owned(),
            project_id: "p1".to_owned(),
            domain_id: "d1".to_owned(),
            ..decision::Volume::default()
        };
        assert!(Scope::default().contains(&volume));
        assert!(scope(&["p1"], &["v1"]).contains(&volume));
        assert!(!scope(&["p1"], &["v2"]).contains(&volume));
        let other_domain = Scope { domain_ids: BTreeSet::from(["d2".to_owned()]), ..Scope::default() };
        assert!(!other_domain.contains(&volume));
    }

    #[test]
    fn metadata_rows_are_enrolled_volumes_without_a_stored_assignment() {
        let volume = |id: &str, metadata: &[(&str, &str)]| CloudVolume {
            facts: decision::Volume {
                id: id.to_owned(),
                project_id: "p1".to_owned(),
                metadata: metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                ..decision::Volume::default()
            },
            server_id: String::new(),
        };
        let inventory = vec![
            volume("v3", &[("auto_snapshot", "true"), ("snapshot_policy", "daily_5"), ("retention", "4")]),
            volume("v1", &[("auto_snapshot", "true"), ("snapshot_policies", "daily_5")]),
            volume("v2", &[("auto_snapshot", "false")]),
            volume("v4", &[("auto_snapshot", "true"), ("snapshot_policies", "daily_5")]),
        ];
        let stored = BTreeSet::from(["v4".to_owned()]);
        let rows = metadata_assignments(inventory.clone(), &stored, &AssignmentFilter::default());
        let ids: Vec<&str> = rows.iter().map(|r| r.volume_id.as_str()).collect();
        assert_eq!(ids, ["v1", "v3"]);
        assert_eq!(rows[1].retention_map.get("daily_5"), Some(&4));
        assert_eq!(rows[0].assignment_source, CINDER_METADATA_SOURCE);
        let none = AssignmentFilter { auto_snapshot: Some(false), ..AssignmentFilter::default() };
        assert!(metadata_assignments(inventory, &stored, &none).is_empty());
    }
}
