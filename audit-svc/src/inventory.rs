//! The SyncInventory stream as a state machine (header, chunks, end) that validates every message
//! and item without keeping the items, and the facts derived from an item: which (volume, policy)
//! pairs are enrolled, and what a snapshot's metadata says about it. Pure: the store stages each
//! chunk and applies the sync at its end.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use policy_svc::metadata::read_current;
use snapkeeper_proto::audit::v1 as pb;
use snapkeeper_proto::audit::v1::sync_inventory_request::Message;

use crate::AuditError;
use crate::events::{check_uuid, time_of};

/// Most items one chunk may carry.
pub const MAX_CHUNK_ITEMS: usize = 1000;

/// The header of a sync, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Client-generated id.
    pub sync_id: String,
    /// Region described.
    pub region: String,
    /// When listing began.
    pub listed_at: DateTime<Utc>,
    /// Run that made it, or empty.
    pub run_id: String,
    /// Sender.
    pub source: String,
}

/// What one accepted message of the stream amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The header: the store starts staging the sync.
    Header(Header),
    /// A chunk (its 1-based number and its items), valid on its own: the store stages its items
    /// and refuses an id an earlier chunk already sent, which only it can tell.
    Chunk(usize, pb::InventoryChunk),
    /// The end message, agreeing with the counts received.
    End,
}

/// Follows a sync stream message by message. It keeps only counts, so its memory does not grow
/// with the inventory: the items go on to the store chunk by chunk.
#[derive(Debug, Default)]
pub struct Assembly {
    started: bool,
    received: pb::SyncEnd,
    chunks: usize,
    ended: bool,
}

/// Refuses an empty id or one sent twice within the chunk.
fn check_ids<'a>(field: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), AuditError> {
    let mut seen = HashSet::new();
    for (index, id) in ids.enumerate() {
        if id.is_empty() {
            return Err(AuditError::invalid(format!("{field}[{index}].id"), "required"));
        }
        if !seen.insert(id) {
            return Err(AuditError::invalid(format!("{field}[{index}].id"), format!("{id} sent twice")));
        }
    }
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Assembly {
    /// Takes the next message of the stream.
    pub fn accept(&mut self, message: pb::SyncInventoryRequest) -> Result<Step, AuditError> {
        if self.ended {
            return Err(AuditError::invalid("message", "a message after the end message"));
        }
        match message.message {
            None => Err(AuditError::invalid("message", "empty message: header, chunk or end")),
            Some(Message::Header(header)) if !self.started => {
                let header = header_of(&header)?;
                self.started = true;
                Ok(Step::Header(header))
            }
            Some(Message::Header(_)) => Err(AuditError::invalid("header", "a second header")),
            Some(_) if !self.started => {
                Err(AuditError::invalid("header", "the first message must be the header"))
            }
            Some(Message::Chunk(chunk)) => {
                self.chunks += 1;
                check_chunk(self.chunks, &chunk)?;
                let received = &mut self.received;
                received.domain_count += count(chunk.domains.len());
                received.project_count += count(chunk.projects.len());
                received.server_count += count(chunk.servers.len());
                received.volume_count += count(chunk.volumes.len());
                received.snapshot_count += count(chunk.snapshots.len());
                Ok(Step::Chunk(self.chunks, chunk))
            }
            Some(Message::End(end)) => {
                let received = &self.received;
                let pairs = [
                    ("end.domain_count", end.domain_count, received.domain_count),
                    ("end.project_count", end.project_count, received.project_count),
                    ("end.server_count", end.server_count, received.server_count),
                    ("end.volume_count", end.volume_count, received.volume_count),
                    ("end.snapshot_count", end.snapshot_count, received.snapshot_count),
                ];
                for (field, stated, got) in pairs {
                    if stated != got {
                        return Err(AuditError::invalid(field, format!("{stated} stated, {got} received")));
                    }
                }
                self.ended = true;
                Ok(Step::End)
            }
        }
    }

    /// The counts received, once the end message has arrived.
    pub fn finish(self) -> Result<pb::SyncEnd, AuditError> {
        match (self.started, self.ended) {
            (true, true) => Ok(self.received),
            (true, false) => Err(AuditError::invalid("end", "stream closed without the end message")),
            (false, _) => Err(AuditError::invalid("header", "stream closed without a header")),
        }
    }
}

/// Validates chunk `number` on its own.
fn check_chunk(number: usize, chunk: &pb::InventoryChunk) -> Result<(), AuditError> {
    let at = format!("chunk {number}");
    let items = chunk.domains.len()
        + chunk.projects.len()
        + chunk.servers.len()
        + chunk.volumes.len()
        + chunk.snapshots.len();
    if items > MAX_CHUNK_ITEMS {
        return Err(AuditError::invalid(at, format!("{items} items; at most {MAX_CHUNK_ITEMS}")));
    }
    check_ids(&format!("{at} domains"), chunk.domains.iter().map(|d| d.id.as_str()))?;
    check_ids(&format!("{at} projects"), chunk.projects.iter().map(|p| p.id.as_str()))?;
    check_ids(&format!("{at} servers"), chunk.servers.iter().map(|s| s.id.as_str()))?;
    check_ids(&format!("{at} volumes"), chunk.volumes.iter().map(|v| v.id.as_str()))?;
    check_ids(&format!("{at} snapshots"), chunk.snapshots.iter().map(|s| s.id.as_str()))?;
    for (index, volume) in chunk.volumes.iter().enumerate() {
        if volume.size_gb < 0 {
            return Err(AuditError::invalid(format!("{at} volumes[{index}].size_gb"), "negative"));
        }
        for (name, t) in [("created_at", &volume.created_at), ("updated_at", &volume.updated_at)] {
            if let Some(t) = t {
                time_of(&format!("{at} volumes[{index}].{name}"), t)?;
            }
        }
    }
    for (index, snapshot) in chunk.snapshots.iter().enumerate() {
        let field = format!("{at} snapshots[{index}]");
        if snapshot.volume_id.is_empty() {
            return Err(AuditError::invalid(format!("{field}.volume_id"), "required"));
        }
        match &snapshot.created_at {
            Some(t) => time_of(&format!("{field}.created_at"), t)?,
            None => return Err(AuditError::invalid(format!("{field}.created_at"), "required")),
        };
    }
    Ok(())
}

fn header_of(header: &pb::SyncHeader) -> Result<Header, AuditError> {
    check_uuid("header.sync_id", &header.sync_id, None)?;
    if header.region.trim().is_empty() {
        return Err(AuditError::invalid("header.region", "required"));
    }
    let listed_at = match &header.listed_at {
        Some(t) => time_of("header.listed_at", t)?,
        None => return Err(AuditError::invalid("header.listed_at", "required")),
    };
    Ok(Header {
        sync_id: header.sync_id.clone(),
        region: header.region.clone(),
        listed_at,
        run_id: header.run_id.clone(),
        source: header.source.clone(),
    })
}

/// The policies a volume is enrolled in with the retention its metadata names (0: none), read
/// with policy-svc's reader of our metadata keys (seed and legacy keys alike).
pub fn enrollments(volume: &pb::InventoryVolume) -> Vec<(String, u32)> {
    let metadata: BTreeMap<String, String> =
        volume.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let settings = read_current(&metadata);
    if settings.auto_snapshot != Some(true) {
        return Vec::new();
    }
    settings
        .policies
        .into_iter()
        .map(|name| {
            let retention = settings.retention.get(&name).copied().unwrap_or(0);
            (name, retention)
        })
        .collect()
}

/// What a snapshot's metadata says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// `created_by`, or empty.
    pub created_by: String,
    /// `policy`, or empty.
    pub policy: String,
    /// `slot`, when present and an RFC 3339 time.
    pub slot: Option<DateTime<Utc>>,
    /// `original_volume_id`, else the snapshot's volume.
    pub volume_id: String,
    /// `original_project_id`, else the project the snapshot lives in.
    pub project_id: String,
    /// `snapkeeper_hold=true`.
    pub held: bool,
}

/// Reads a snapshot's metadata.
pub fn snapshot_meta(snapshot: &pb::InventorySnapshot) -> SnapshotMeta {
    let get = |key: &str| snapshot.metadata.get(key).map(|v| v.trim().to_owned()).unwrap_or_default();
    let or = |value: String, fallback: &str| if value.is_empty() { fallback.to_owned() } else { value };
    SnapshotMeta {
        created_by: get("created_by"),
        policy: get("policy"),
        slot: DateTime::parse_from_rfc3339(&get("slot")).ok().map(|t| t.to_utc()),
        volume_id: or(get("original_volume_id"), &snapshot.volume_id),
        project_id: or(get("original_project_id"), &snapshot.project_id),
        held: get("snapkeeper_hold").eq_ignore_ascii_case("true"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapkeeper_proto::prost_types::Timestamp;

    fn header() -> pb::SyncInventoryRequest {
        pb::SyncInventoryRequest {
            message: Some(Message::Header(pb::SyncHeader {
                sync_id: "01932c07-5a3e-7b4c-9d2e-1f0a2b3c4d5e".to_owned(),
                region: "RegionOne".to_owned(),
                listed_at: Some(Timestamp { seconds: 1_790_000_000, nanos: 0 }),
                ..pb::SyncHeader::default()
            })),
        }
    }

    fn chunk_of(volumes: Vec<pb::InventoryVolume>) -> pb::InventoryChunk {
        pb::InventoryChunk { volumes, ..pb::InventoryChunk::default() }
    }

    fn chunk(volumes: Vec<pb::InventoryVolume>) -> pb::SyncInventoryRequest {
        pb::SyncInventoryRequest { message: Some(Message::Chunk(chunk_of(volumes))) }
    }

    fn end(volume_count: i64) -> pb::SyncInventoryRequest {
        pb::SyncInventoryRequest {
            message: Some(Message::End(pb::SyncEnd { volume_count, ..pb::SyncEnd::default() })),
        }
    }

    fn volume(id: &str) -> pb::InventoryVolume {
        pb::InventoryVolume { id: id.to_owned(), ..pb::InventoryVolume::default() }
    }

    fn field(result: Result<Step, AuditError>) -> String {
        match result {
            Err(AuditError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_stream_passes_chunks_on_and_counts_them() {
        let mut assembly = Assembly::default();
        assert!(matches!(assembly.accept(header()).unwrap(), Step::Header(h) if h.region == "RegionOne"));
        assert_eq!(
            assembly.accept(chunk(vec![volume("a")])).unwrap(),
            Step::Chunk(1, chunk_of(vec![volume("a")]))
        );
        assert!(matches!(assembly.accept(chunk(vec![volume("b")])).unwrap(), Step::Chunk(2, _)));
        assert_eq!(assembly.accept(end(2)).unwrap(), Step::End);
        assert_eq!(assembly.finish().unwrap(), pb::SyncEnd { volume_count: 2, ..pb::SyncEnd::default() });
    }

    #[test]
    fn protocol_errors_name_the_problem() {
        assert_eq!(field(Assembly::default().accept(chunk(vec![]))), "header");
        let mut assembly = Assembly::default();
        assembly.accept(header()).unwrap();
        assert_eq!(field(assembly.accept(header())), "header");
        assembly.accept(chunk(vec![volume("a")])).unwrap();
        assert_eq!(field(assembly.accept(chunk(vec![volume("b"), volume("")]))), "chunk 2 volumes[1].id");
        assert_eq!(field(assembly.accept(chunk(vec![volume("c"), volume("c")]))), "chunk 3 volumes[1].id");
        assert_eq!(field(assembly.accept(end(5))), "end.volume_count");
        assembly.accept(end(1)).unwrap();
        assert_eq!(field(assembly.accept(end(1))), "message");
        let mut unfinished = Assembly::default();
        unfinished.accept(header()).unwrap();
        assert!(matches!(unfinished.finish(), Err(AuditError::Invalid { field, .. }) if field == "end"));
        assert!(
            matches!(Assembly::default().finish(), Err(AuditError::Invalid { field, .. }) if field == "header")
        );
    }

    #[test]
    fn enrollment_follows_the_seed_metadata_keys() {
        let mut v = volume("a");
        v.metadata.insert("auto_snapshot".into(), "Yes".into());
        v.metadata.insert("snapshot_policies".into(), "daily_5, monthly_1st".into());
        v.metadata.insert("retention_daily_5".into(), "5".into());
        assert_eq!(enrollments(&v), vec![("daily_5".to_owned(), 5), ("monthly_1st".to_owned(), 0)]);
        v.metadata.insert("auto_snapshot".into(), "false".into());
        assert!(enrollments(&v).is_empty());
    }

    #[test]
    fn snapshot_metadata_is_read_with_fallbacks() {
        let mut s = pb::InventorySnapshot {
            id: "s".into(),
            volume_id: "v".into(),
            project_id: "admin".into(),
            ..pb::InventorySnapshot::default()
        };
        s.metadata.insert("created_by".into(), "snapkeeper".into());
        s.metadata.insert("slot".into(), "2026-11-25T00:00:00Z".into());
        s.metadata.insert("original_project_id".into(), "p1".into());
        let meta = snapshot_meta(&s);
        assert_eq!(meta.project_id, "p1");
        assert_eq!(meta.volume_id, "v");
        assert!(meta.slot.is_some());
        assert!(!meta.held);
    }
}
