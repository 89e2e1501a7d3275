//! The quota pre-check: before creating, a project's quota is read with usage, and the snapshots
//! that would exceed it are not attempted. Candidates are admitted smallest first so the most
//! snapshots fit; each refused one becomes a block with limit, used and needed figures. Checked:
//! `snapshots`, `gigabytes`, and the per-volume-type `snapshots_<type>` and `gigabytes_<type>`.

use std::collections::BTreeMap;

/// Limit and use of one quota resource; a negative limit means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaFigure {
    /// Limit; -1 means unlimited.
    pub limit: i64,
    /// In use plus reserved.
    pub used: i64,
}

impl QuotaFigure {
    /// Whether `used + extra` still fits.
    fn fits(self, extra: i64) -> bool {
        self.limit < 0 || self.used + extra <= self.limit
    }
}

/// A project's quota, keyed by resource name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectQuota {
    /// Resources (`snapshots`, `gigabytes`, `snapshots_<type>`, ...).
    pub resources: BTreeMap<String, QuotaFigure>,
}

impl ProjectQuota {
    /// From the openstack client's quota set (dict form with usage, or flat limits with use 0).
    pub fn from_quota_set(set: &openstack::QuotaSet) -> Self {
        let resources = set
            .resources
            .iter()
            .map(|(name, usage)| {
                (name.clone(), QuotaFigure { limit: usage.limit, used: usage.in_use + usage.reserved })
            })
            .collect();
        Self { resources }
    }

    /// One resource; an absent one is unlimited.
    pub fn figure(&self, resource: &str) -> QuotaFigure {
        self.resources.get(resource).copied().unwrap_or(QuotaFigure { limit: -1, used: 0 })
    }
}

/// One snapshot the run wants to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Caller's handle (e.g. the position in its own list).
    pub key: usize,
    /// Volume size in GiB (a snapshot needs about as much).
    pub size_gb: i64,
    /// Volume type; empty when none.
    pub volume_type: String,
}

/// Which quota refused a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// `gigabytes`.
    Gigabytes,
    /// `snapshots`.
    Snapshots,
    /// `gigabytes_<type>`.
    VolumeTypeGigabytes,
    /// `snapshots_<type>`.
    VolumeTypeSnapshots,
}

/// A refused candidate with the figures at the moment it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The candidate's key.
    pub key: usize,
    /// Which quota.
    pub reason: BlockReason,
    /// Gigabytes limit (of the type for the per-type reasons).
    pub limit_gb: i64,
    /// Gigabytes used before this candidate, snapshots admitted earlier included.
    pub used_gb: i64,
    /// Gigabytes needed.
    pub needed_gb: i64,
    /// Snapshot count limit (of the type for the per-type reasons).
    pub snapshot_limit: i64,
    /// Snapshots used before this candidate.
    pub snapshot_used: i64,
    /// Human-readable figures.
    pub detail: String,
}

/// The outcome of the pre-check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Keys of admitted candidates, smallest first.
    pub admitted: Vec<usize>,
    /// Refused candidates in decision order.
    pub blocked: Vec<Block>,
}

/// Admits candidates smallest first while the project's quota has room.
pub fn admit(quota: &ProjectQuota, candidates: &[Candidate]) -> Admission {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by_key(|c| (c.size_gb, c.key));
    let mut extra_snapshots: BTreeMap<String, i64> = BTreeMap::new();
    let mut extra_gigabytes: BTreeMap<String, i64> = BTreeMap::new();
    let mut admission = Admission::default();
    for candidate in order {
        let mut checks = vec![("snapshots".to_owned(), "gigabytes".to_owned(), false)];
        if !candidate.volume_type.is_empty() {
            checks.push((
                format!("snapshots_{}", candidate.volume_type),
                format!("gigabytes_{}", candidate.volume_type),
                true,
            ));
        }
        let mut refused = None;
        for (snap_key, gb_key, per_type) in &checks {
            let snapshots = figure_with(quota, snap_key, &extra_snapshots);
            let gigabytes = figure_with(quota, gb_key, &extra_gigabytes);
            let reason = if !snapshots.fits(1) {
                Some(if *per_type { BlockReason::VolumeTypeSnapshots } else { BlockReason::Snapshots })
            } else if !gigabytes.fits(candidate.size_gb) {
                Some(if *per_type { BlockReason::VolumeTypeGigabytes } else { BlockReason::Gigabytes })
            } else {
                None
            };
            if let Some(reason) = reason {
                refused = Some(block(candidate, reason, snapshots, gigabytes));
                break;
            }
        }
        if let Some(blocked) = refused {
            admission.blocked.push(blocked);
            continue;
        }
        for (snap_key, gb_key, _) in checks {
            *extra_snapshots.entry(snap_key).or_default() += 1;
            *extra_gigabytes.entry(gb_key).or_default() += candidate.size_gb;
        }
        admission.admitted.push(candidate.key);
    }
    admission
}

fn figure_with(quota: &ProjectQuota, resource: &str, extra: &BTreeMap<String, i64>) -> QuotaFigure {
    let figure = quota.figure(resource);
    QuotaFigure { limit: figure.limit, used: figure.used + extra.get(resource).copied().unwrap_or(0) }
}

fn block(
    candidate: &Candidate,
    reason: BlockReason,
    snapshots: QuotaFigure,
    gigabytes: QuotaFigure,
) -> Block {
    let detail = match reason {
        BlockReason::Snapshots | BlockReason::VolumeTypeSnapshots => format!(
            "{} {}/{}, needs 1",
            resource_name(reason, &candidate.volume_type),
            snapshots.used,
            snapshots.limit
        ),
        BlockReason::Gigabytes | BlockReason::VolumeTypeGigabytes => format!(
            "{} {}/{} GiB, needs {} GiB",
            resource_name(reason, &candidate.volume_type),
            gigabytes.used,
            gigabytes.limit,
            candidate.size_gb
        ),
    };
    Block {
        key: candidate.key,
        reason,
        limit_gb: gigabytes.limit,
        used_gb: gigabytes.used,
        needed_gb: candidate.size_gb,
        snapshot_limit: snapshots.limit,
        snapshot_used: snapshots.used,
        detail,
    }
}

/// The quota resource a reason refers to, e.g. `gigabytes_ssd`.
pub fn resource_name(reason: BlockReason, volume_type: &str) -> String {
    match reason {
        BlockReason::Snapshots => "snapshots".to_owned(),
        BlockReason::Gigabytes => "gigabytes".to_owned(),
        BlockReason::VolumeTypeSnapshots => format!("snapshots_{volume_type}"),
        BlockReason::VolumeTypeGigabytes => format!("gigabytes_{volume_type}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(entries: &[(&str, i64, i64)]) -> ProjectQuota {
        ProjectQuota {
            resources: entries
                .iter()
                .map(|(k, limit, used)| ((*k).to_owned(), QuotaFigure { limit: *limit, used: *used }))
                .collect(),
        }
    }

    fn candidates(sizes: &[i64], volume_type: &str) -> Vec<Candidate> {
        sizes
            .iter()
            .enumerate()
            .map(|(key, size)| Candidate { key, size_gb: *size, volume_type: volume_type.to_owned() })
            .collect()
    }

    #[test]
    fn smallest_first_get_the_snapshot_room() {
        let admission = admit(&quota(&[("snapshots", 10, 8)]), &candidates(&[50, 5, 20], ""));
        assert_eq!(admission.admitted, [1, 2]);
        assert_eq!(admission.blocked.len(), 1);
        let block = &admission.blocked[0];
        assert_eq!((block.key, block.reason), (0, BlockReason::Snapshots));
        assert_eq!((block.snapshot_limit, block.snapshot_used), (10, 10));
        assert_eq!(block.detail, "snapshots 10/10, needs 1");
    }

    #[test]
    fn gigabytes_count_snapshots_admitted_earlier() {
        let admission =
            admit(&quota(&[("gigabytes", 100, 70), ("snapshots", -1, 0)]), &candidates(&[10, 10, 15], ""));
        assert_eq!(admission.admitted, [0, 1]);
        let block = &admission.blocked[0];
        assert_eq!(block.reason, BlockReason::Gigabytes);
        assert_eq!((block.limit_gb, block.used_gb, block.needed_gb), (100, 90, 15));
        assert_eq!(block.detail, "gigabytes 90/100 GiB, needs 15 GiB");
    }

    #[test]
    fn per_volume_type_keys_are_checked() {
        let q = quota(&[
            ("snapshots", -1, 0),
            ("gigabytes", -1, 0),
            ("snapshots_ssd", 1, 0),
            ("gigabytes_hdd", 5, 0),
        ]);
        let mut list = candidates(&[1, 2], "ssd");
        list.push(Candidate { key: 2, size_gb: 10, volume_type: "hdd".to_owned() });
        let admission = admit(&q, &list);
        assert_eq!(admission.admitted, [0]);
        let reasons: Vec<_> = admission.blocked.iter().map(|b| (b.key, b.reason)).collect();
        assert_eq!(reasons, [(1, BlockReason::VolumeTypeSnapshots), (2, BlockReason::VolumeTypeGigabytes)]);
        assert_eq!(admission.blocked[1].detail, "gigabytes_hdd 0/5 GiB, needs 10 GiB");
    }

    #[test]
    fn unlimited_and_flat_quotas_admit_everything_they_can() {
        assert_eq!(admit(&ProjectQuota::default(), &candidates(&[1, 2, 3], "")).admitted.len(), 3);
        let flat = openstack::QuotaSet::parse(&serde_json::json!({"snapshots": 2, "gigabytes": 1000}));
        let admission = admit(&ProjectQuota::from_quota_set(&flat), &candidates(&[1, 2, 3], ""));
        assert_eq!((admission.admitted.len(), admission.blocked.len()), (2, 1));
        let with_usage = openstack::QuotaSet::parse(&serde_json::json!({
            "snapshots": {"limit": 3, "in_use": 1, "reserved": 1}
        }));
        assert_eq!(admit(&ProjectQuota::from_quota_set(&with_usage), &candidates(&[1, 2], "")).admitted, [0]);
    }
}
