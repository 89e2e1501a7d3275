//! Compliance over the stored facts: loads the enrolled pairs and their snapshot statistics from
//! the inventory, the windows from the policy directory, and the attempts that matter from the
//! records, then judges every pair with [`crate::compliance`]. Results are cached and reused
//! until an input changes (a sync is applied, a record appended, the directory refetched, or a
//! policy's judged slot moves), so a request usually only filters, counts and pages.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use service_kit::clock::Clock;
use tokio::sync::{Mutex, Notify};

use crate::AuditError;
use crate::compliance::{
    Attempt, Group, PairFacts, SnapshotStats, Status, Summary, Verdict, Window, judge, take_latest_for, tally,
};
use crate::directory::CachedDirectory;
use crate::store::{RollupRow, Store};
use crate::webhooks::{self, WebhookSettings};

/// The seed's window in days for policies without a known schedule.
pub const DEFAULT_DAYS: u32 = 2;

/// What the inventory says about a volume. Texts many volumes have in common (their region,
/// type, project and domain) are shared between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Region.
    pub region: Arc<str>,
    /// Volume id.
    pub id: String,
    /// Volume name.
    pub name: String,
    /// Volume type.
    pub volume_type: Arc<str>,
    /// Project id.
    pub project_id: Arc<str>,
    /// Project name.
    pub project_name: Arc<str>,
    /// Domain id.
    pub domain_id: Arc<str>,
    /// Domain name.
    pub domain_name: Arc<str>,
    /// First attached server.
    pub vm_id: String,
    /// Its name.
    pub vm_name: String,
}

/// One shared copy of each distinct text seen.
#[derive(Debug, Default)]
struct SharedTexts(HashSet<Arc<str>>);

impl SharedTexts {
    /// The shared copy of `text`.
    fn share(&mut self, text: String) -> Arc<str> {
        if let Some(shared) = self.0.get(text.as_str()) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(text);
        self.0.insert(Arc::clone(&shared));
        shared
    }
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

/// Counts over a set of judged rows, with roll-ups.
#[derive(Debug, Clone, Default)]
pub struct Tallies {
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

/// A judgement with what most listings need worked out once: the counts over every row and,
/// per project, the positions of its rows.
#[derive(Debug, Default)]
pub struct IndexedJudgement {
    /// The judgement.
    pub judgement: Arc<Judgement>,
    /// Counts and roll-ups over every row.
    pub overall: Tallies,
    /// Row positions per project id, in the judgement's order.
    pub project_rows: HashMap<Arc<str>, Vec<usize>>,
}

impl IndexedJudgement {
    /// Counts `judgement` once and indexes its rows by project.
    pub fn new(judgement: Arc<Judgement>) -> Self {
        let mut overall = Tallies::default();
        let mut policies: HashSet<&str> = HashSet::new();
        let mut project_rows: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (position, row) in judgement.rows.iter().enumerate() {
            let (v, status) = (&row.volume, row.verdict.status);
            overall.summary.add(status);
            policies.insert(&row.policy);
            tally(&mut overall.by_domain, &v.domain_id, &v.domain_name, status);
            tally(&mut overall.by_project, &v.project_id, &v.project_name, status);
            tally(&mut overall.by_policy, &row.policy, &row.policy, status);
            project_rows.entry(Arc::clone(&v.project_id)).or_default().push(position);
        }
        overall.policies = policies.len();
        Self { judgement, overall, project_rows }
    }
}

/// Per policy, then volume id: the latest attempt for the policy's judged slot.
type LatestAttempts = HashMap<Arc<str>, HashMap<String, Option<Attempt>>>;

/// What a cached judgement depended on, beside the records.
#[derive(Debug, PartialEq)]
struct JudgementKey {
    inventory: String,
    directory: u64,
    windows: Vec<Window>,
}

/// The cached judgement, its inputs, and the newest record it has accounted for.
#[derive(Debug)]
struct CachedJudgement {
    key: JudgementKey,
    records: i64,
    indexed: Arc<IndexedJudgement>,
}

/// Compliance with its caches.
#[derive(Debug)]
pub struct ComplianceReport {
    store: Store,
    directory: CachedDirectory,
    clock: Arc<dyn Clock>,
    facts: Mutex<Option<Arc<Facts>>>,
    judged: Mutex<Option<CachedJudgement>>,
    alerts: Option<Alerts>,
}

/// Compliance alerts: the settings and the sender to wake when a notification is stored.
#[derive(Debug)]
struct Alerts {
    settings: Arc<WebhookSettings>,
    wake: Arc<Notify>,
    // Checks run one at a time, so one crossing is stored once.
    checking: Mutex<()>,
}

impl ComplianceReport {
    /// A report over `store`, judging with policies from `directory` at the times `clock` gives.
    pub fn new(store: Store, directory: CachedDirectory, clock: Arc<dyn Clock>) -> Self {
        Self { store, directory, clock, facts: Mutex::new(None), judged: Mutex::new(None), alerts: None }
    }

    /// The report, storing a webhook notification whenever compliance (overall or of a policy)
    /// falls below `settings.threshold`; `wake` is notified when one is stored.
    #[must_use]
    pub fn with_alerts(mut self, settings: Arc<WebhookSettings>, wake: Arc<Notify>) -> Self {
        self.alerts = Some(Alerts { settings, wake, checking: Mutex::new(()) });
        self
    }

    /// After an inventory sync: judges the new view (so the next listing finds it ready) and
    /// checks it against the alert threshold.
    pub async fn after_sync(&self) -> Result<(), AuditError> {
        let judgement = self.judge(DEFAULT_DAYS).await?;
        self.check_alerts(&judgement).await
    }

    /// Compares the overall and per-policy ratios of `judgement` with the alert threshold and
    /// stores the crossings, with a notification for each scope that fell below it.
    async fn check_alerts(&self, judgement: &Judgement) -> Result<(), AuditError> {
        let Some(alerts) = &self.alerts else { return Ok(()) };
        if judgement.synced_at.is_none() {
            return Ok(());
        }
        let mut summaries: BTreeMap<String, Summary> = BTreeMap::new();
        for row in &judgement.rows {
            summaries.entry(webhooks::OVERALL.to_owned()).or_default().add(row.verdict.status);
            summaries.entry(format!("policy:{}", row.policy)).or_default().add(row.verdict.status);
        }
        let ratios: BTreeMap<String, f64> =
            summaries.iter().map(|(scope, summary)| (scope.clone(), webhooks::ratio(summary))).collect();
        let _checking = alerts.checking.lock().await;
        let previous = self.store.alert_states().await?;
        let threshold = alerts.settings.threshold;
        let crossed = webhooks::crossings(&previous, &ratios, threshold);
        if crossed.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        for crossing in &crossed {
            tracing::info!(scope = %crossing.scope, ratio = crossing.ratio, threshold, below = crossing.below, "compliance crossed the alert threshold");
        }
        let cause = uuid::Uuid::now_v7().to_string();
        let deliveries = webhooks::compliance_notification(&crossed, threshold, &summaries, now, &cause)
            .map(|n| webhooks::delivery_rows(&n, &alerts.settings.urls, now))
            .unwrap_or_default();
        let notify = !deliveries.is_empty();
        self.store.append_crossings(&crossed, threshold, now, deliveries).await?;
        if notify {
            alerts.wake.notify_one();
        }
        Ok(())
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
        // The old view is stale: let it go before the new one is loaded, not after.
        *cached = None;
        let mut pairs = Vec::with_capacity(self.store.enrolled_pair_count().await?);
        let mut texts = SharedTexts::default();
        let mut policies: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut rows = self.store.enrolled_pairs();
        while let Some(row) = rows.try_next().await? {
            // The pairs of one volume come together, so its info is shared with the pair before.
            let volume = match pairs.last() {
                Some(Pair { volume, .. }) if *volume.region == row.region && volume.id == row.volume_id => {
                    Arc::clone(volume)
                }
                _ => Arc::new(VolumeInfo {
                    region: texts.share(row.region),
                    id: row.volume_id,
                    name: row.volume_name,
                    volume_type: texts.share(row.volume_type),
                    project_id: texts.share(row.project_id),
                    project_name: texts.share(row.project_name),
                    domain_id: texts.share(row.domain_id),
                    domain_name: texts.share(row.domain_name),
                    vm_id: row.vm_id,
                    vm_name: row.vm_name,
                }),
            };
            let policy = texts.share(row.policy_name);
            policies.insert(Arc::clone(&policy));
            pairs.push(Pair {
                volume,
                policy,
                retention_count: row.retention_count,
                enrolled_at: row.enrolled_at,
                stats: row.stats,
            });
        }
        drop(rows);
        pairs.shrink_to_fit();
        let facts = Arc::new(Facts { version, synced_at, pairs, policies });
        *cached = Some(Arc::clone(&facts));
        Ok(facts)
    }

    /// Judges every enrolled pair now; `days` is the window of policies without a schedule.
    pub async fn judge(&self, days: u32) -> Result<Arc<Judgement>, AuditError> {
        Ok(Arc::clone(&self.judge_indexed(days).await?.judgement))
    }

    /// [`Self::judge`], with the counts and project index listings use. A judgement is reused
    /// while the inventory, the directory and the judged slots stay the same and no record
    /// appended since can change a verdict (see [`Store::changes_judgement`]).
    pub async fn judge_indexed(&self, days: u32) -> Result<Arc<IndexedJudgement>, AuditError> {
        let Some((version, synced_at)) = self.store.inventory_version().await? else {
            return Ok(Arc::new(IndexedJudgement::default()));
        };
        let (directory, generation) = self.directory.get().await?;
        {
            let mut cached = self.judged.lock().await;
            if cached.as_ref().is_some_and(|entry| entry.key.inventory != version) {
                // A judgement of another view is never reused: let it go before the new view
                // is loaded, so the two are not held at once.
                *cached = None;
            }
        }
        let facts = self.facts(version.clone(), synced_at).await?;
        let now = self.clock.now();
        let windows: BTreeMap<Arc<str>, Arc<Window>> = facts
            .policies
            .iter()
            .map(|p| (Arc::clone(p), Arc::new(directory.window(p, now, days))))
            .collect();
        let key = JudgementKey {
            inventory: version,
            directory: generation,
            windows: windows.values().map(|w| (**w).clone()).collect(),
        };
        let records = self.store.records_high_water().await?;
        let oldest_slot = windows.values().filter_map(|w| w.judged_slot).min();
        let mut cached = self.judged.lock().await;
        if let Some(entry) = cached.as_mut()
            && entry.key == key
        {
            let unchanged = entry.records == records
                || match oldest_slot {
                    Some(since) => !self.store.changes_judgement(entry.records, since).await?,
                    None => true,
                };
            if unchanged {
                entry.records = records;
                return Ok(Arc::clone(&entry.indexed));
            }
        }
        // Stale: let it go before its successor is built, not after.
        *cached = None;
        let attempts = match oldest_slot {
            Some(since) => self.latest_attempts(since, &windows).await?,
            None => HashMap::default(),
        };
        let mut rows = Vec::with_capacity(facts.pairs.len());
        for pair in &facts.pairs {
            let Some(window) = windows.get(&pair.policy) else { continue };
            let exclusion = directory.exclusion_for(&pair.volume.id, &pair.volume.project_id, now);
            let attempt = attempts
                .get(&pair.policy)
                .and_then(|latest| latest.get(pair.volume.id.as_str()))
                .and_then(Option::as_ref);
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
        // In place: a stable sort would take a copy of every row on the side. The region ends
        // ties (one volume id in two regions), so the order is total and needs no stability.
        rows.sort_unstable_by(|a, b| {
            (a.verdict.status, a.stats.last_any, &a.volume.id, &a.policy, &a.volume.region).cmp(&(
                b.verdict.status,
                b.stats.last_any,
                &b.volume.id,
                &b.policy,
                &b.volume.region,
            ))
        });
        let judgement = Arc::new(Judgement { rows, synced_at: Some(facts.synced_at) });
        let indexed = Arc::new(IndexedJudgement::new(judgement));
        *cached = Some(CachedJudgement { key, records, indexed: Arc::clone(&indexed) });
        Ok(indexed)
    }

    /// Per policy and volume id, the latest attempt since `since` for the policy's judged slot in
    /// `windows`, of the pairs with a quota block since then: all that judging needs of them.
    async fn latest_attempts(
        &self,
        since: DateTime<Utc>,
        windows: &BTreeMap<Arc<str>, Arc<Window>>,
    ) -> Result<LatestAttempts, AuditError> {
        let mut latest = LatestAttempts::new();
        let mut attempts = self.store.attempts_since(since);
        while let Some((volume_id, policy_name, attempt)) = attempts.try_next().await? {
            let Some((policy, window)) = windows.get_key_value(policy_name.as_str()) else { continue };
            // Checked first so that a pair gets an entry only for an attempt that counts.
            let Some(slot) = window.judged_slot.filter(|&slot| attempt.is_for(slot)) else { continue };
            let kept = latest.entry(Arc::clone(policy)).or_default().entry(volume_id).or_default();
            take_latest_for(kept, attempt, slot);
        }
        Ok(latest)
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
                .entry((v.domain_id.to_string(), v.project_id.to_string(), row.policy.to_string()))
                .or_insert_with(|| RollupRow {
                    day: day.clone(),
                    recorded_at,
                    domain_id: v.domain_id.to_string(),
                    domain_name: v.domain_name.to_string(),
                    project_id: v.project_id.to_string(),
                    project_name: v.project_name.to_string(),
                    policy_name: row.policy.to_string(),
                    summary: Summary::default(),
                })
                .summary
                .add(row.verdict.status);
        }
        let rows: Vec<RollupRow> = groups.into_values().collect();
        self.store.append_rollup(&rows).await?;
        self.check_alerts(&judgement).await?;
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

    /// Whether the query keeps every row.
    fn keeps_all(&self) -> bool {
        self.tenant_id.is_none()
            && self.project_id.is_none()
            && self.policy.is_none()
            && self.statuses.is_empty()
            && self.volume_id.is_none()
            && self.good_from.is_none()
            && self.good_to.is_none()
            && self.region.is_none()
    }

    /// [`Self::select`] over an indexed judgement: a query that keeps every row takes the
    /// precomputed counts, and a project's query reads only that project's rows.
    pub fn select_indexed<'a>(&self, indexed: &'a IndexedJudgement, rollups: bool) -> Selection<'a> {
        let judgement = indexed.judgement.as_ref();
        if self.keeps_all() {
            let overall = &indexed.overall;
            let mut selection = Selection {
                rows: judgement.rows.iter().collect(),
                summary: overall.summary,
                policies: overall.policies,
                ..Selection::default()
            };
            if rollups {
                selection.by_domain.clone_from(&overall.by_domain);
                selection.by_project.clone_from(&overall.by_project);
                selection.by_policy.clone_from(&overall.by_policy);
            }
            self.order(&mut selection);
            return selection;
        }
        match &self.project_id {
            Some(project) => {
                let positions = indexed.project_rows.get(project.as_str()).map_or(&[][..], Vec::as_slice);
                self.select_from(positions.iter().map(|&p| &judgement.rows[p]), rollups)
            }
            None => self.select_from(judgement.rows.iter(), rollups),
        }
    }

    /// Selects, orders and counts the rows of `judgement`; roll-ups only when asked.
    pub fn select<'a>(&self, judgement: &'a Judgement, rollups: bool) -> Selection<'a> {
        self.select_from(judgement.rows.iter(), rollups)
    }

    fn select_from<'a>(&self, rows: impl Iterator<Item = &'a JudgedRow>, rollups: bool) -> Selection<'a> {
        let mut selection = Selection::default();
        let mut policies: HashSet<&str> = HashSet::new();
        for row in rows.filter(|row| self.matches(row)) {
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
        self.order(&mut selection);
        selection
    }

    fn order(&self, selection: &mut Selection<'_>) {
        let name = |row: &JudgedRow| {
            if row.volume.name.is_empty() { row.volume.id.clone() } else { row.volume.name.clone() }
        };
        match self.order {
            Order::Severity => {}
            Order::VolumeName => {
                selection.rows.sort_by_cached_key(|r| (name(r), r.volume.id.clone(), Arc::clone(&r.policy)));
            }
            Order::ProjectName => {
                selection.rows.sort_by_cached_key(|r| (Arc::clone(&r.volume.project_name), name(r)));
            }
            Order::PolicyName => selection.rows.sort_by_cached_key(|r| (Arc::clone(&r.policy), name(r))),
            Order::LastSnapshotAt => {
                selection.rows.sort_by_cached_key(|r| (r.stats.last_good, r.volume.id.clone()));
            }
        }
        if self.descending {
            selection.rows.reverse();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_copy() {
        let mut texts = SharedTexts::default();
        let first = texts.share("project-1".to_owned());
        let again = texts.share("project-1".to_owned());
        let other = texts.share("project-2".to_owned());
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!((&*first, &*other), ("project-1", "project-2"));
        assert_eq!(texts.0.len(), 2);
    }
}
