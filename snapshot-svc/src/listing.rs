//! The run's one listing of the cloud, reduced to what the domain needs: our snapshots (and the
//! old system's) with the volume, policy and slot they belong to, indexed by (volume, policy).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::naming;

/// One snapshot of ours as listed, reduced to what due-ness and retention read (a 50k-snapshot
/// region is held for a whole run); its volume and policy are the index's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurSnapshot {
    /// Cinder snapshot id.
    pub id: String,
    /// Cinder status (`creating`, `available`, `error`, ...).
    pub status: String,
    /// Cinder's created_at.
    pub created_at: Option<DateTime<Utc>>,
    /// Slot from the metadata; absent on the old system's snapshots.
    pub slot: Option<DateTime<Utc>>,
    /// `snapkeeper_hold=true`.
    pub held: bool,
    /// Size in GiB.
    pub size_gb: u64,
}

/// The (volume, policy) a snapshot of ours belongs to.
type PairKey = (String, String);

impl OurSnapshot {
    /// Reads a Cinder snapshot with the (volume, policy) it belongs to: the volume is
    /// `original_volume_id` when set, else Cinder's `volume_id`. `None` when it is not ours or
    /// names no policy.
    pub fn from_cinder(snapshot: &openstack::Snapshot) -> Option<(PairKey, Self)> {
        let metadata = &snapshot.metadata;
        if !naming::is_ours(metadata) {
            return None;
        }
        let policy = metadata.get(naming::POLICY_KEY).filter(|p| !p.is_empty())?.clone();
        let volume_id = metadata
            .get(naming::ORIGINAL_VOLUME_KEY)
            .filter(|v| !v.is_empty())
            .unwrap_or(&snapshot.volume_id)
            .clone();
        let ours = Self {
            id: snapshot.id.clone(),
            status: snapshot.status.clone(),
            created_at: snapshot.created_at,
            slot: naming::recorded_slot(metadata),
            held: naming::is_held(metadata),
            size_gb: snapshot.size,
        };
        Some(((volume_id, policy), ours))
    }

    /// Whether the snapshot is in an error state (`error`, `error_deleting`).
    pub fn is_error(&self) -> bool {
        self.status.starts_with("error")
    }
}

/// Our snapshots grouped by (volume id, policy). A B-tree, not a hash map: it grows node by node,
/// where a hash map of a big region doubles its table (and holds both while it moves).
#[derive(Debug, Clone, Default)]
pub struct SnapshotIndex {
    by_pair: BTreeMap<PairKey, Vec<OurSnapshot>>,
}

impl SnapshotIndex {
    /// Indexes the snapshots of a listing, keeping only ours.
    pub fn build(snapshots: &[openstack::Snapshot]) -> Self {
        let mut index = Self::default();
        for snapshot in snapshots {
            index.add(snapshot);
        }
        index
    }

    /// Indexes one listed snapshot when it is ours.
    pub fn add(&mut self, snapshot: &openstack::Snapshot) {
        if let Some((pair, ours)) = OurSnapshot::from_cinder(snapshot) {
            // A pair has one or two snapshots more often than more: a list grows from one
            // instead of starting at four.
            self.by_pair.entry(pair).or_insert_with(|| Vec::with_capacity(1)).push(ours);
        }
    }

    /// Our snapshots of one (volume, policy); empty when none.
    pub fn of(&self, volume_id: &str, policy: &str) -> &[OurSnapshot] {
        self.by_pair.get(&(volume_id.to_owned(), policy.to_owned())).map_or(&[], Vec::as_slice)
    }

    /// Available snapshot counts per (volume, policy), for the forecast.
    pub fn available_counts(&self) -> BTreeMap<(String, String), usize> {
        self.by_pair
            .iter()
            .map(|(pair, list)| (pair.clone(), list.iter().filter(|s| s.status == "available").count()))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A listed Cinder snapshot for tests.
    pub(crate) fn cinder(
        id: &str,
        volume: &str,
        metadata: &[(&str, &str)],
        status: &str,
    ) -> openstack::Snapshot {
        openstack::Snapshot {
            id: id.to_owned(),
            name: String::new(),
            description: None,
            volume_id: volume.to_owned(),
            status: status.to_owned(),
            size: 10,
            metadata: metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            created_at: DateTime::parse_from_rfc3339("2026-03-01T00:00:05Z").ok().map(|t| t.to_utc()),
            project_id: Some("p1".to_owned()),
        }
    }

    #[test]
    fn only_ours_and_the_old_systems_are_indexed_by_original_volume() {
        let listed = vec![
            cinder("s1", "v1", &[("created_by", "snapkeeper"), ("policy", "daily_5")], "available"),
            cinder("s2", "v1", &[("created_by", "p9_auto_snapshots"), ("policy", "daily_5")], "available"),
            cinder("s3", "v1", &[("created_by", "someone"), ("policy", "daily_5")], "available"),
            cinder("s4", "v1", &[], "available"),
            cinder(
                "s5",
                "other",
                &[("created_by", "snapkeeper"), ("policy", "daily_5"), ("original_volume_id", "v1")],
                "error",
            ),
        ];
        let index = SnapshotIndex::build(&listed);
        let ids: Vec<&str> = index.of("v1", "daily_5").iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2", "s5"]);
        assert!(index.of("v1", "weekly_4").is_empty());
        assert!(index.of("v1", "daily_5")[2].is_error());
    }
}
