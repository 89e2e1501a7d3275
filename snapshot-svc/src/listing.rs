//! The run's one listing of the cloud, reduced to what the domain needs: our snapshots (and the
//! old system's) with the volume, policy and slot they belong to, indexed by (volume, policy).
//! A region's index is held for a whole run, so it is kept compact: Cinder's UUIDs as 16 bytes,
//! statuses as what due-ness and retention tell apart, all of it in two flat arrays.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::naming;

/// A Cinder id: 16 bytes when it is a lowercase hyphenated UUID (as Cinder makes them), else its
/// text. Both read back exactly as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CinderId {
    /// A UUID in its canonical form.
    Uuid(Uuid),
    /// Any other id.
    Text(Box<str>),
}

impl CinderId {
    /// Reads an id as listed.
    pub fn new(id: &str) -> Self {
        match Uuid::try_parse(id) {
            // Other spellings (braces, capitals, no hyphens) would not read back as listed.
            Ok(uuid) if uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == id => Self::Uuid(uuid),
            _ => Self::Text(id.into()),
        }
    }
}

impl fmt::Display for CinderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(uuid) => uuid.hyphenated().fmt(f),
            Self::Text(text) => f.write_str(text),
        }
    }
}

/// What due-ness and retention tell apart of a snapshot's Cinder status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `available`.
    Available,
    /// `error`.
    Error,
    /// `error_deleting`.
    ErrorDeleting,
    /// Any other (`creating`, `deleting`, `backing-up`, ...).
    Other,
}

impl Status {
    /// Reads Cinder's status text.
    pub fn new(status: &str) -> Self {
        match status {
            "available" => Self::Available,
            "error" => Self::Error,
            "error_deleting" => Self::ErrorDeleting,
            _ => Self::Other,
        }
    }
}

/// One snapshot of ours as listed, reduced to what due-ness and retention read (a 50k-snapshot
/// region is held for a whole run); its volume and policy are the index's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurSnapshot {
    /// Cinder snapshot id.
    pub id: CinderId,
    /// Cinder status.
    pub status: Status,
    /// Cinder's created_at.
    pub created_at: Option<DateTime<Utc>>,
    /// Slot from the metadata; absent on the old system's snapshots.
    pub slot: Option<DateTime<Utc>>,
    /// `snapkeeper_hold=true`.
    pub held: bool,
    /// Size in GiB.
    pub size_gb: u64,
}

impl OurSnapshot {
    /// Reads a Cinder snapshot with the volume and policy it belongs to: the volume is
    /// `original_volume_id` when set, else Cinder's `volume_id`. `None` when it is not ours or
    /// names no policy.
    pub fn from_cinder(snapshot: &openstack::Snapshot) -> Option<(&str, &str, Self)> {
        let metadata = &snapshot.metadata;
        if !naming::is_ours(metadata) {
            return None;
        }
        let policy = metadata.get(naming::POLICY_KEY).filter(|p| !p.is_empty())?;
        let volume_id = metadata
            .get(naming::ORIGINAL_VOLUME_KEY)
            .filter(|v| !v.is_empty())
            .unwrap_or(&snapshot.volume_id);
        let ours = Self {
            id: CinderId::new(&snapshot.id),
            status: Status::new(&snapshot.status),
            created_at: snapshot.created_at,
            slot: naming::recorded_slot(metadata),
            held: naming::is_held(metadata),
            size_gb: snapshot.size,
        };
        Some((volume_id, policy, ours))
    }

    /// Whether the snapshot is in an error state (`error`, `error_deleting`).
    pub fn is_error(&self) -> bool {
        matches!(self.status, Status::Error | Status::ErrorDeleting)
    }
}

/// The (volume, policy) a snapshot belongs to: the policy as its place in the index's names.
type PairKey = (CinderId, usize);

/// Our snapshots grouped by (volume id, policy), built with [`IndexBuilder`]: the keys and the
/// snapshots in two arrays sorted alike, so a pair's snapshots are one slice.
#[derive(Debug, Clone, Default)]
pub struct SnapshotIndex {
    policies: Vec<String>,
    keys: Vec<PairKey>,
    snapshots: Vec<OurSnapshot>,
}

/// Collects a listing's snapshots of ours, page by page, into a [`SnapshotIndex`].
#[derive(Debug, Default)]
pub struct IndexBuilder {
    policies: Vec<String>,
    entries: Vec<(PairKey, OurSnapshot)>,
}

impl IndexBuilder {
    /// Keeps one listed snapshot when it is ours.
    pub fn add(&mut self, snapshot: &openstack::Snapshot) {
        let Some((volume_id, policy, ours)) = OurSnapshot::from_cinder(snapshot) else { return };
        let policy = self.policies.iter().position(|known| known == policy).unwrap_or_else(|| {
            self.policies.push(policy.to_owned());
            self.policies.len() - 1
        });
        self.entries.push(((CinderId::new(volume_id), policy), ours));
    }

    /// The index: sorted by pair, each pair's snapshots in listing order.
    pub fn build(mut self) -> SnapshotIndex {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let keys = self.entries.iter().map(|(key, _)| key.clone()).collect();
        // Collected in place: the snapshots take over the entries' allocation, then give back what
        // the smaller items and the growth left over.
        let mut snapshots: Vec<OurSnapshot> =
            self.entries.into_iter().map(|(_, snapshot)| snapshot).collect();
        snapshots.shrink_to_fit();
        SnapshotIndex { policies: self.policies, keys, snapshots }
    }
}

impl SnapshotIndex {
    /// Indexes the snapshots of a listing, keeping only ours.
    pub fn build(snapshots: &[openstack::Snapshot]) -> Self {
        let mut index = IndexBuilder::default();
        for snapshot in snapshots {
            index.add(snapshot);
        }
        index.build()
    }

    /// Our snapshots of one (volume, policy); empty when none.
    pub fn of(&self, volume_id: &str, policy: &str) -> &[OurSnapshot] {
        let Some(policy) = self.policies.iter().position(|known| known == policy) else { return &[] };
        let key = (CinderId::new(volume_id), policy);
        let start = self.keys.partition_point(|k| *k < key);
        let end = start + self.keys[start..].partition_point(|k| *k == key);
        &self.snapshots[start..end]
    }

    /// Available snapshot counts per (volume, policy), for the forecast.
    pub fn available_counts(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for ((volume, policy), snapshot) in self.keys.iter().zip(&self.snapshots) {
            let name = self.policies.get(*policy).cloned().unwrap_or_default();
            let count = counts.entry((volume.to_string(), name)).or_default();
            if snapshot.status == Status::Available {
                *count += 1;
            }
        }
        counts
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
        let ids: Vec<String> = index.of("v1", "daily_5").iter().map(|s| s.id.to_string()).collect();
        assert_eq!(ids, ["s1", "s2", "s5"]);
        assert!(index.of("v1", "weekly_4").is_empty());
        assert!(index.of("v1", "daily_5")[2].is_error());
    }

    #[test]
    fn cinder_ids_read_back_as_listed() {
        let uuid = "0b8e6a34-3f0a-4c55-9a57-2f1d3c4b5a69";
        assert!(matches!(CinderId::new(uuid), CinderId::Uuid(_)));
        for id in [uuid, "0B8E6A34-3F0A-4C55-9A57-2F1D3C4B5A69", "0b8e6a343f0a4c559a572f1d3c4b5a69", "s1", ""]
        {
            assert_eq!(CinderId::new(id).to_string(), id);
        }
        assert!(matches!(CinderId::new("0b8e6a343f0a4c559a572f1d3c4b5a69"), CinderId::Text(_)));
    }

    #[test]
    fn pairs_are_found_among_many_in_listing_order() {
        let volume = |n: usize| format!("{n:08x}-0000-4000-8000-000000000000");
        let mut listed = Vec::new();
        for n in (0..50).rev() {
            for (policy, copies) in [("daily", 2), ("weekly", 1)] {
                for copy in 0..copies {
                    let metadata = [("created_by", "snapkeeper"), ("policy", policy)];
                    listed.push(cinder(&format!("{n}-{policy}-{copy}"), &volume(n), &metadata, "available"));
                }
            }
        }
        let index = SnapshotIndex::build(&listed);
        for n in [0, 17, 49] {
            let ids: Vec<String> = index.of(&volume(n), "daily").iter().map(|s| s.id.to_string()).collect();
            assert_eq!(ids, [format!("{n}-daily-0"), format!("{n}-daily-1")]);
            assert_eq!(index.of(&volume(n), "weekly").len(), 1);
        }
        assert!(index.of(&volume(50), "daily").is_empty());
        assert!(index.of(&volume(3), "monthly").is_empty());
        let counts = index.available_counts();
        assert_eq!(counts.len(), 100);
        assert_eq!(counts.get(&(volume(17), "daily".to_owned())), Some(&2));
    }
}
