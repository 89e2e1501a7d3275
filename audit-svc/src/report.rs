//! Compliance over the stored facts: loads the enrolled pairs and their snapshot statistics from
//! the inventory, the windows from the policy directory, and the attempts that matter from the
//! records, then judges every pair with [`crate::compliance`]. Results are cached and reused
//! until an input changes (a sync is applied, a record appended, the directory refetched, or a
//! policy's judged slot moves), so a request usually only filters, counts and pages.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use service_kit::clock::Clock;
use tokio::sync::Mutex;

use crate::AuditError;
use crate::compliance::{
    Group, PairFacts, SnapshotStats, Status, Summary, Verdict, Window, judge, latest_attempt_for, tally,
};
use crate::directory::CachedDirectory;
use crate::store::{RollupRow, Store};

/// The seed's window in days for policies without a known schedule.
pub const DEFAULT_DAYS: u32 = 2;

/// What the inventory says about a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Region.
    pub region: String,
    /// Volume id.
    pub id: String,
    /// Volume name.
    pub name: String,
    /// Volume type.
    pub volume_type: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Domain id.
    pub domain_id: String,
    /// Domain name.
    pub domain_name: String,
    /// First attached server.
    pub vm_id: String,
    /// Its name.
    pub vm_name: String,
}

/// One enrolled pair as loaded from the inventory.
#[derive(Debug, Clone)]
struct Pair {
    volume: Arc<VolumeInfo>,
    policy: Arc<str>,
    retention_count: i64,
    enrolled_at: Option<DateTime<Utc>>,
    stats: SnapshotStats,
}

/// The inventory facts of one applied view.
#[derive(Debug)]
struct Facts {
    version: String,
    synced_at: DateTime<Utc>,
    pairs: Vec<Pair>,
    policies: BTreeSet<Arc<str>>,
}

/// One judged pair.
#[derive(Debug, Clone)]
pub struct JudgedRow {
    /// The volume.
    pub volume: Arc<VolumeInfo>,
    /// The policy.
    pub policy: Arc<str>,
    /// Retention named by the volume metadata (0: none).
    pub retention_count: i64,
    /// First seen enrolled.
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Its snapshots.
    pub stats: SnapshotStats,
    /// The policy's window.
    pub window: Arc<Window>,
    /// The judgement.
    pub verdict: Verdict,
}

/// Every pair judged, in the seed's severity order.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Rows: quota_blocked, missing, compliant, pending, excluded; then last snapshot (none
    /// first), then volume id.
    pub rows: Vec<JudgedRow>,
    /// Newest listed_at of the inventory judged; `None` before the first sync.
    pub synced_at: Option<DateTime<Utc>>,
}

/// What a cached judgement depended on.
#[derive(Debug, PartialEq)]
struct JudgementKey {
    inventory: String,
    records: i64,
    directory: u64,
    windows: Vec<Window>,
}

/// Compliance with its caches.
#[derive(Debug)]
pub struct ComplianceReport {
    store: Store,
    directory: CachedDirectory,
    clock: Arc<dyn Clock>,
    facts: Mutex<Option<Arc<Facts>>>,
    judged: Mutex<Option<(JudgementKey, Arc<Judgement>)>>,
}

impl ComplianceReport {
    /// A report over `store`, judging with policies from `directory` at the times `clock` gives.
    pub fn new(store: Store, directory: CachedDirectory, clock: Arc<dyn Clock>) -> Self {
        Self { store, directory, clock, facts: Mutex::new(None), judged: Mutex::new(None) }
    }

    /// The clock judgements use.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn facts(&self, version: String, synced_at: DateTime<Utc>) -> Result<Arc<Facts>, AuditError> {
        let mut cached = self.facts.lock().await;
        if let Some(facts) = cached.as_ref()
            && facts.version == version
        {
            return Ok(Arc::clone(facts));
        }
        let rows = self.store.enrolled_pairs().await?;
        let mut stats = self.store.snapshot_stats().await?;
        let mut volumes: BTreeMap<(String, String), Arc<VolumeInfo>> = BTreeMap::new();
        let mut policies: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut pairs = Vec::with_capacity(rows.len());
        for row in rows {
            let volume =
                Arc::clone(volumes.entry((row.region.clone(), row.volume_id.clone())).or_insert_with(|| {
                    Arc::new(VolumeInfo {
                        region: row.region.clone(),
                        id: row.volume_id.clone(),
                        name: row.volume_name.clone(),
                        volume_type: row.volume_type.clone(),
                        project_id: row.project_id.clone(),
                        project_name: row.project_name.clone(),
                        domain_id: row.domain_id.clone(),
                        domain_name: row.domain_name.clone(),
                        vm_id: row.vm_id.clone(),
                        vm_name: row.vm_name.clone(),
                    })
                }));
            let policy = if let Some(p) = policies.get(row.policy_name.as_str()) {
                Arc::clone(p)
            } else {
                let p: Arc<str> = Arc::from(row.policy_name.as_str());
                policies.insert(Arc::clone(&p));
                p
            };
            let key = (row.region, row.volume_id, row.policy_name);
            pairs.push(Pair {
                volume,
                policy,
                retention_count: row.retention_count,
                enrolled_at: row.enrolled_at,
                stats: stats.remove(&key).unwrap_or_default(),
            });
        }
        let facts = Arc::new(Facts { version, synced_at, pairs, policies });
        *cached = Some(Arc::clone(&facts));
        Ok(facts)
    }

    /// Judges every enrolled pair now; `days` is the window of policies without a schedule.
    pub async fn judge(&self, days: u32) -> Result<Arc<Judgement>, AuditError> {
        let Some((version, synced_at)) = self.store.inventory_version().await? else {
            return Ok(Arc::new(Judgement::default()));
        };
        let (directory, generation) = self.directory.get().await?;
        let facts = self.facts(version.clone(), synced_at).await?;
        let now = self.clock.now();
        let windows: BTreeMap<Arc<str>, Arc<Window>> = facts
            .policies
            .iter()
            .map(|p| (Arc::clone(p), Arc::new(directory.window(p, now, days))))
            .collect();
        let key = JudgementKey {
            inventory: version,
            records: self.store.records_high_water().await?,
            directory: generation,
            windows: windows.values().map(|w| (**w).clone()).collect(),
        };
        let mut cached = self.judged.lock().await;
        if let Some((cached_key, judgement)) = cached.as_ref()
            && *cached_key == key
        {
            return Ok(Arc::clone(judgement));
        }
        let oldest_slot = windows.values().filter_map(|w| w.judged_slot).min();
        let attempts = match oldest_slot {
            Some(since) => self.store.attempts_since(since).await?,
            None => HashMap::default(),
        };
        let mut rows = Vec::with_capacity(facts.pairs.len());
        for pair in &facts.pairs {
            let Some(window) = windows.get(&pair.policy) else { continue };
            let exclusion = directory.exclusion_for(&pair.volume.id, &pair.volume.project_id, now);
            let attempt = match (
                window.judged_slot,
                attempts.get(&(pair.volume.id.clone(), pair.policy.to_string())),
            ) {
                (Some(slot), Some(list)) => latest_attempt_for(list, slot),
                _ => None,
            };
            let pair_facts = PairFacts {
                enrolled_at: pair.enrolled_at,
                exclusion: exclusion.as_ref(),
                snapshots: &pair.stats,
                attempt,
            };
            rows.push(JudgedRow {
                volume: Arc::clone(&pair.volume),
                policy: Arc::clone(&pair.policy),
                retention_count: pair.retention_count,
                enrolled_at: pair.enrolled_at,
                stats: pair.stats,
                window: Arc::clone(window),
                verdict: judge(&pair_facts, window),
            });
        }
        rows.sort_by(|a, b| {
            (a.verdict.status, a.stats.last_any, &a.volume.id, &a.policy).cmp(&(
                b.verdict.status,
                b.stats.last_any,
                &b.volume.id,
                &b.policy,
            ))
        });
        let judgement = Arc::new(Judgement { rows, synced_at: Some(facts.synced_at) });
        *cached = Some((key, Arc::clone(&judgement)));
        Ok(judgement)
    }

    /// Judges now and appends the roll-up per (domain, project, policy) to the daily history.
    /// Returns the day, the rows written and the overall counts.
    pub async fn record_snapshot(
        &self,
    ) -> Result<(String, Vec<RollupRow>, Summary, DateTime<Utc>), AuditError> {
        let judgement = self.judge(DEFAULT_DAYS).await?;
        if judgement.synced_at.is_none() {
            return Err(AuditError::FailedPrecondition("no inventory has been synced yet".to_owned()));
        }
        let recorded_at = self.clock.now();
        let day = recorded_at.format("%Y-%m-%d").to_string();
        let mut groups: BTreeMap<(String, String, String), RollupRow> = BTreeMap::new();
        let mut overall = Summary::default();
        for row in &judgement.rows {
            overall.add(row.verdict.status);
            let v = &row.volume;
            groups
                .entry((v.domain_id.clone(), v.project_id.clone(), row.policy.to_string()))
                .or_insert_with(|| RollupRow {
                    day: day.clone(),
                    recorded_at,
                    domain_id: v.domain_id.clone(),
                    domain_name: v.domain_name.clone(),
                    project_id: v.project_id.clone(),
                    project_name: v.project_name.clone(),
                    policy_name: row.policy.to_string(),
                    summary: Summary::default(),
                })
                .summary
                .add(row.verdict.status);
        }
        let rows: Vec<RollupRow> = groups.into_values().collect();
        self.store.append_rollup(&rows).await?;
        Ok((day, rows, overall, recorded_at))
    }

    /// Records today's roll-up unless one exists (or nothing was synced yet).
    async fn record_if_missing(&self) -> Result<(), AuditError> {
        let today = self.clock.now().format("%Y-%m-%d").to_string();
        if self.store.has_rollup(&today).await? || self.store.inventory_version().await?.is_none() {
            return Ok(());
        }
        let (day, rows, _, _) = self.record_snapshot().await?;
        tracing::info!(%day, rows = rows.len(), actor = "scheduler", "recorded the daily compliance roll-up");
        Ok(())
    }
}

/// Records the daily roll-up once a day, checking every `every`; runs until aborted.
pub async fn record_daily(report: Arc<ComplianceReport>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(err) = report.record_if_missing().await {
            tracing::warn!(error = %err, "daily compliance roll-up failed; retrying later");
        }
    }
}

/// Row order of a compliance listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The seed's order (the judgement's own).
    #[default]
    Severity,
    /// Volume name, volume id, policy.
    VolumeName,
    /// Project name, volume name.
    ProjectName,
    /// Policy, volume name.
    PolicyName,
    /// Newest good snapshot (none first), volume id.
    LastSnapshotAt,
}

/// Filters and order of a compliance listing.
#[derive(Debug, Clone, Default)]
pub struct ComplianceQuery {
    /// Only this domain.
    pub tenant_id: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only this policy.
    pub policy: Option<String>,
    /// Only these states; empty: all.
    pub statuses: Vec<Status>,
    /// Only this volume.
    pub volume_id: Option<String>,
    /// Newest good snapshot at or after.
    pub good_from: Option<DateTime<Utc>>,
    /// Newest good snapshot before.
    pub good_to: Option<DateTime<Utc>>,
    /// Only this region.
    pub region: Option<String>,
    /// Order.
    pub order: Order,
    /// Reverse the order.
    pub descending: bool,
}

/// The rows a query selects, with counts over all of them.
#[derive(Debug, Default)]
pub struct Selection<'a> {
    /// Matching rows, ordered.
    pub rows: Vec<&'a JudgedRow>,
    /// Counts.
    pub summary: Summary,
    /// Distinct policies among the rows.
    pub policies: usize,
    /// Counts per domain id.
    pub by_domain: BTreeMap<String, Group>,
    /// Counts per project id.
    pub by_project: BTreeMap<String, Group>,
    /// Counts per policy.
    pub by_policy: BTreeMap<String, Group>,
}

impl ComplianceQuery {
    fn matches(&self, row: &JudgedRow) -> bool {
        let v = &row.volume;
        let equals = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
        equals(&self.tenant_id, &v.domain_id)
            && equals(&self.project_id, &v.project_id)
            && equals(&self.policy, &row.policy)
            && equals(&self.volume_id, &v.id)
            && equals(&self.region, &v.region)
            && (self.statuses.is_empty() || self.statuses.contains(&row.verdict.status))
            && match row.stats.last_good {
                Some(good) => {
                    self.good_from.is_none_or(|from| good >= from) && self.good_to.is_none_or(|to| good < to)
                }
                None => self.good_from.is_none(),
            }
    }

    /// Selects, orders and counts the rows of `judgement`; roll-ups only when asked.
    pub fn select<'a>(&self, judgement: &'a Judgement, rollups: bool) -> Selection<'a> {
        let mut selection = Selection::default();
        let mut policies: HashSet<&str> = HashSet::new();
        for row in judgement.rows.iter().filter(|row| self.matches(row)) {
            let status = row.verdict.status;
            selection.summary.add(status);
            policies.insert(&row.policy);
            if rollups {
                let v = &row.volume;
                tally(&mut selection.by_domain, &v.domain_id, &v.domain_name, status);
                tally(&mut selection.by_project, &v.project_id, &v.project_name, status);
                tally(&mut selection.by_policy, &row.policy, &row.policy, status);
            }
            selection.rows.push(row);
        }
        selection.policies = policies.len();
        let name = |row: &JudgedRow| {
            if row.volume.name.is_empty() { row.volume.id.clone() } else { row.volume.name.clone() }
        };
        match self.order {
            Order::Severity => {}
            Order::VolumeName => {
                selection.rows.sort_by_cached_key(|r| (name(r), r.volume.id.clone(), Arc::clone(&r.policy)));
            }
            Order::ProjectName => {
                selection.rows.sort_by_cached_key(|r| (r.volume.project_name.clone(), name(r)));
            }
            Order::PolicyName => selection.rows.sort_by_cached_key(|r| (Arc::clone(&r.policy), name(r))),
            Order::LastSnapshotAt => {
                selection.rows.sort_by_cached_key(|r| (r.stats.last_good, r.volume.id.clone()));
            }
        }
        if self.descending {
            selection.rows.reverse();
        }
        selection
    }
}
