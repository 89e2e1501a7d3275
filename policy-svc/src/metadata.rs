//! The Cinder volume metadata keys we own: what a decision wants written, what a volume carries
//! now (seed keys and legacy keys read), and the key-by-key change between the two. Keys we do
//! not own are never touched.

use std::collections::BTreeMap;

use crate::decision::{Decision, DecisionSource};

/// `"true"`/`"false"`: whether snapshot-svc acts on the volume.
pub const AUTO_SNAPSHOT: &str = "auto_snapshot";
/// Comma-separated policy names.
pub const SNAPSHOT_POLICIES: &str = "snapshot_policies";
/// Prefix of the per-policy retention keys (`retention_daily_5`).
pub const RETENTION_PREFIX: &str = "retention_";
/// Legacy single-policy key, read and migrated.
pub const LEGACY_POLICY: &str = "snapshot_policy";
/// Legacy per-policy retention prefix, read and migrated.
pub const LEGACY_RETENTION_PREFIX: &str = "snapshot_retention_";
/// Legacy global retention; read, never written or removed (the name is too generic to claim).
pub const LEGACY_GLOBAL_RETENTION: &str = "retention";

/// Whether we own `key`, so an assignment may set or remove it.
pub fn is_owned(key: &str) -> bool {
    key == AUTO_SNAPSHOT
        || key == SNAPSHOT_POLICIES
        || key == LEGACY_POLICY
        || key.starts_with(RETENTION_PREFIX)
        || key.starts_with(LEGACY_RETENTION_PREFIX)
}

/// The snapshot settings a volume's metadata carries now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentSettings {
    /// `auto_snapshot` (true/yes/1, case-insensitive, are true); `None` when absent.
    pub auto_snapshot: Option<bool>,
    /// `snapshot_policies`, else legacy `snapshot_policy`, split on `,` or `;`.
    pub policies: Vec<String>,
    /// Retention per listed policy: `retention_<p>`, else `snapshot_retention_<p>`, else `retention`.
    pub retention: BTreeMap<String, u32>,
}

/// Reads the settings from a volume's metadata, seed and legacy keys alike.
pub fn read_current(metadata: &BTreeMap<String, String>) -> CurrentSettings {
    let auto_snapshot = metadata
        .get(AUTO_SNAPSHOT)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
    let list = metadata.get(SNAPSHOT_POLICIES).or_else(|| metadata.get(LEGACY_POLICY));
    let mut policies: Vec<String> = Vec::new();
    for name in list.map(String::as_str).unwrap_or_default().split([',', ';']).map(str::trim) {
        if !name.is_empty() && !policies.iter().any(|p| p == name) {
            policies.push(name.to_owned());
        }
    }
    let global = metadata.get(LEGACY_GLOBAL_RETENTION).and_then(|v| count(v));
    let mut retention = BTreeMap::new();
    for name in &policies {
        let own = metadata.get(&format!("{RETENTION_PREFIX}{name}")).and_then(|v| count(v));
        let legacy = metadata.get(&format!("{LEGACY_RETENTION_PREFIX}{name}")).and_then(|v| count(v));
        if let Some(value) = own.or(legacy).or(global) {
            retention.insert(name.clone(), value);
        }
    }
    CurrentSettings { auto_snapshot, policies, retention }
}

/// A retention count as metadata holds it; "0" and garbage are ignored (the seed's "0" deleted
/// every snapshot).
fn count(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|n| *n >= 1)
}

/// The keys we own as the decision wants them; `None` when nothing decided (leave the volume).
pub fn desired(decision: &Decision) -> Option<BTreeMap<String, String>> {
    if decision.source == DecisionSource::None {
        return None;
    }
    let mut keys = BTreeMap::new();
    keys.insert(AUTO_SNAPSHOT.to_owned(), decision.auto_snapshot.to_string());
    if !decision.policies.is_empty() {
        let names: Vec<&str> = decision.policies.iter().map(|p| p.name.as_str()).collect();
        keys.insert(SNAPSHOT_POLICIES.to_owned(), names.join(","));
    }
    for policy in &decision.policies {
        keys.insert(format!("{RETENTION_PREFIX}{}", policy.name), policy.retention_count.to_string());
    }
    Some(keys)
}

/// A change of one metadata key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// Current value; `None` when the key is added.
    pub old: Option<String>,
    /// New value; `None` when the key is removed.
    pub new: Option<String>,
}

/// What an assignment does to one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The volume becomes enrolled.
    Enroll,
    /// The volume stays enrolled (or stays out); values change.
    Update,
    /// The volume stops being enrolled.
    Unenroll,
    /// Nothing changes.
    None,
}

/// The planned change of one volume's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// Key-by-key changes, ordered by key.
    pub changes: Vec<KeyChange>,
    /// What the change amounts to.
    pub kind: ChangeKind,
}

impl ChangeSet {
    /// Keys to set (add or change) with their values.
    pub fn to_set(&self) -> BTreeMap<String, String> {
        self.changes.iter().filter_map(|c| Some((c.key.clone(), c.new.clone()?))).collect()
    }

    /// Keys to remove.
    pub fn to_remove(&self) -> Vec<String> {
        self.changes.iter().filter(|c| c.new.is_none()).map(|c| c.key.clone()).collect()
    }

    /// The metadata after the change.
    pub fn apply_to(&self, current: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut next = current.clone();
        for change in &self.changes {
            match &change.new {
                Some(value) => next.insert(change.key.clone(), value.clone()),
                None => next.remove(&change.key),
            };
        }
        next
    }
}

/// The change that brings `current` to what `decision` wants: sets what differs, removes our
/// keys the decision does not want (legacy ones included), keeps every other key.
pub fn plan(current: &BTreeMap<String, String>, decision: &Decision) -> ChangeSet {
    let Some(wanted) = desired(decision) else {
        return ChangeSet { changes: Vec::new(), kind: ChangeKind::None };
    };
    let mut changes = Vec::new();
    for (key, value) in &wanted {
        let old = current.get(key);
        if old != Some(value) {
            changes.push(KeyChange { key: key.clone(), old: old.cloned(), new: Some(value.clone()) });
        }
    }
    for (key, value) in current {
        if is_owned(key) && !wanted.contains_key(key) {
            changes.push(KeyChange { key: key.clone(), old: Some(value.clone()), new: None });
        }
    }
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    let before = read_current(current);
    let was_enrolled = before.auto_snapshot == Some(true) && !before.policies.is_empty();
    let kind = match (changes.is_empty(), was_enrolled, decision.enrolled()) {
        (true, _, _) => ChangeKind::None,
        (false, false, true) => ChangeKind::Enroll,
        (false, _, false) => ChangeKind::Unenroll,
        (false, true, true) => ChangeKind::Update,
    };
    ChangeSet { changes, kind }
}
