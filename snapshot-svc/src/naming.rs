//! What our snapshots are called and which metadata marks them as ours: the seed's name format
//! `auto-<project>-<policy>-<server>-<volume>-<UTC YYYYMMDD-HHMMSS>` and metadata keys, so retention
//! and compliance interoperate with the snapshots the old system made.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

/// `created_by` value on snapshots we create.
pub const CREATED_BY: &str = "snapkeeper";
/// `created_by` value of the system we replace; its snapshots count as ours.
pub const LEGACY_CREATED_BY: &str = "p9_auto_snapshots";
/// Metadata key that names the creator.
pub const CREATED_BY_KEY: &str = "created_by";
/// Metadata key holding the policy name.
pub const POLICY_KEY: &str = "policy";
/// Metadata key holding the schedule slot (RFC 3339 UTC) a snapshot is for.
pub const SLOT_KEY: &str = "slot";
/// Metadata key holding the run that created the snapshot.
pub const RUN_ID_KEY: &str = "run_id";
/// Metadata key holding the volume's project.
pub const ORIGINAL_PROJECT_KEY: &str = "original_project_id";
/// Metadata key holding the volume id.
pub const ORIGINAL_VOLUME_KEY: &str = "original_volume_id";
/// Metadata key that, set to `true`, keeps a snapshot from retention forever.
pub const HOLD_KEY: &str = "snapkeeper_hold";
/// Longest a sanitised name part may be (seed: 40 characters).
pub const MAX_PART_LEN: usize = 40;

/// What a snapshot is for: one (volume, policy, slot) of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFor<'a> {
    /// Keystone project id of the volume.
    pub project_id: &'a str,
    /// Keystone project name of the volume (empty when unknown).
    pub project_name: &'a str,
    /// Cinder volume id.
    pub volume_id: &'a str,
    /// Volume name (empty when it has none).
    pub volume_name: &'a str,
    /// Name of the first attached server, if any.
    pub server_name: Option<&'a str>,
    /// Policy name.
    pub policy: &'a str,
    /// Schedule slot.
    pub slot: DateTime<Utc>,
    /// Run creating it.
    pub run_id: &'a str,
}

/// One name part as the seed sanitised it: trimmed, whitespace to `_`, anything outside
/// `A-Za-z0-9_.-` to `-`, at most 40 characters.
pub fn sanitise(part: &str) -> String {
    part.trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() {
                '_'
            } else if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_PART_LEN)
        .collect()
}

/// The snapshot name; empty project and server parts are left out, the volume part falls back to
/// the id. `at` is the creation time (the seed's name carries when, not which slot).
pub fn snapshot_name(target: &SnapshotFor<'_>, at: DateTime<Utc>) -> String {
    let volume = if target.volume_name.trim().is_empty() { target.volume_id } else { target.volume_name };
    let mut parts = vec!["auto".to_owned()];
    for part in [Some(target.project_name), Some(target.policy), target.server_name, Some(volume)] {
        let Some(part) = part else { continue };
        let clean = sanitise(part);
        if !clean.is_empty() {
            parts.push(clean);
        }
    }
    parts.push(at.format("%Y%m%d-%H%M%S").to_string());
    parts.join("-")
}

/// The snapshot description, as the seed wrote it with our name.
pub fn snapshot_description(policy: &str) -> String {
    format!("Auto snapshot ({policy}) created by snapkeeper")
}

/// Slot as stored in metadata and work items: RFC 3339 UTC, whole seconds.
pub fn slot_text(slot: DateTime<Utc>) -> String {
    slot.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The metadata of a snapshot we create (the openstack client adds its own idempotency key).
pub fn snapshot_metadata(target: &SnapshotFor<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CREATED_BY_KEY.to_owned(), CREATED_BY.to_owned()),
        (POLICY_KEY.to_owned(), target.policy.to_owned()),
        (SLOT_KEY.to_owned(), slot_text(target.slot)),
        (RUN_ID_KEY.to_owned(), target.run_id.to_owned()),
        (ORIGINAL_PROJECT_KEY.to_owned(), target.project_id.to_owned()),
        (ORIGINAL_VOLUME_KEY.to_owned(), target.volume_id.to_owned()),
    ])
}

/// The key that makes a create idempotent across runs and crashes: volume + policy + slot.
pub fn idempotency_key(volume_id: &str, policy: &str, slot: DateTime<Utc>) -> String {
    format!("{volume_id}/{policy}/{}", slot_text(slot))
}

/// Whether snapshot metadata marks a snapshot as ours (or the old system's).
pub fn is_ours(metadata: &BTreeMap<String, String>) -> bool {
    matches!(metadata.get(CREATED_BY_KEY).map(String::as_str), Some(CREATED_BY | LEGACY_CREATED_BY))
}

/// Whether a snapshot is held (`snapkeeper_hold=true`, any case).
pub fn is_held(metadata: &BTreeMap<String, String>) -> bool {
    metadata.get(HOLD_KEY).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The slot recorded in metadata, if present and readable.
pub fn recorded_slot(metadata: &BTreeMap<String, String>) -> Option<DateTime<Utc>> {
    parse_slot(metadata.get(SLOT_KEY)?)
}

/// Reads a slot written by [`slot_text`] (or any RFC 3339 time).
pub fn parse_slot(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn parts_are_sanitised_like_the_seed() {
        assert_eq!(sanitise("  my vm\t1 "), "my_vm_1");
        assert_eq!(sanitise("db/primary:éx"), "db-primary--x");
        assert_eq!(sanitise(&"x".repeat(60)).len(), 40);
    }

    #[test]
    fn name_has_every_part_and_omits_empty_ones() {
        let slot = at("2026-03-01T00:00:00Z");
        let target = SnapshotFor {
            project_id: "p1",
            project_name: "web shop",
            volume_id: "v-1",
            volume_name: "data",
            server_name: Some("web-01"),
            policy: "daily_5",
            slot,
            run_id: "r1",
        };
        let now = at("2026-03-01T00:05:09Z");
        assert_eq!(snapshot_name(&target, now), "auto-web_shop-daily_5-web-01-data-20260301-000509");
        let bare = SnapshotFor { project_name: "", volume_name: " ", server_name: None, ..target };
        assert_eq!(snapshot_name(&bare, now), "auto-daily_5-v-1-20260301-000509");
    }

    #[test]
    fn metadata_identifies_the_slot_and_marks_ours() {
        let slot = at("2026-03-01T00:00:00Z");
        let target = SnapshotFor {
            project_id: "p1",
            project_name: "web",
            volume_id: "v-1",
            volume_name: "data",
            server_name: None,
            policy: "daily_5",
            slot,
            run_id: "r1",
        };
        let metadata = snapshot_metadata(&target);
        assert_eq!(metadata["created_by"], "snapkeeper");
        assert_eq!(metadata["slot"], "2026-03-01T00:00:00Z");
        assert_eq!(metadata["original_volume_id"], "v-1");
        assert_eq!(metadata["original_project_id"], "p1");
        assert_eq!(metadata["run_id"], "r1");
        assert!(is_ours(&metadata));
        assert_eq!(recorded_slot(&metadata), Some(slot));
        let legacy = BTreeMap::from([("created_by".to_owned(), "p9_auto_snapshots".to_owned())]);
        assert!(is_ours(&legacy));
        assert!(!is_ours(&BTreeMap::new()));
        assert!(is_held(&BTreeMap::from([("snapkeeper_hold".to_owned(), "TRUE".to_owned())])));
        assert_eq!(idempotency_key("v-1", "daily_5", slot), "v-1/daily_5/2026-03-01T00:00:00Z");
    }
}
