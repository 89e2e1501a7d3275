//! SQL over the audit-svc schema, for SQLite and PostgreSQL alike (sqlx Any, `$n` placeholders,
//! times as fixed-width RFC 3339 text). Audit tables are only ever INSERTed and SELECTed here;
//! on PostgreSQL those writes run under `SET LOCAL ROLE snapkeeper_audit_writer` when the
//! connecting user may switch to it (the migration grants it to the migrating user).
//!
//! Production: run migrations as the schema owner, then connect the service as a login role that
//! is a member of `snapkeeper_audit_writer` and owns nothing (`CREATE ROLE audit_svc LOGIN
//! PASSWORD ...; GRANT snapkeeper_audit_writer TO audit_svc;` plus SELECT, INSERT, UPDATE,
//! DELETE on the `inventory_*` tables and USAGE on `inventory_stages_stage_seq` only). Then even a statement outside `SET LOCAL ROLE` cannot
//! change an audit row; the owner's rights stay with the migration job.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures::stream::{BoxStream, StreamExt as _};
use service_kit::db::{Backend, Database};
use snapkeeper_proto::audit::v1::{self as pb, EventKind, event::RunDetail};
use snapkeeper_proto::prost::Message as _;
use snapkeeper_proto::prost_types::Timestamp;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::AuditError;
use crate::compliance::{self, Attempt, Outcome, SnapshotStats};
use crate::events::{ValidEvent, is_run_kind, kind_name, kind_of, proto_name, stored_name};
use crate::inventory::{Header, enrollments, snapshot_meta};
use crate::webhooks::{self, AttemptResult, Crossing, NewDelivery};

/// The role audit writes run as on PostgreSQL.
pub const WRITER_ROLE: &str = "snapkeeper_audit_writer";

/// Bound parameters per multi-row INSERT on SQLite: it looks each `$n` up by a linear scan of the
/// statement's parameters, so a statement with thousands of them costs quadratic CPU. Each
/// connection keeps a full batch's statement prepared per table, and its program grows with its
/// parameters: at 999 they held 9.6 MB in a 10,000-volume run, at 240 1 MB, in no more time.
const SQLITE_PARAMS_PER_INSERT: usize = 240;

/// Bound parameters per multi-row INSERT on PostgreSQL: about 12 KB of values, so a statement
/// goes out in one TLS record. A larger one is two writes, and the second waits for the server's
/// delayed ACK (40 ms; the driver leaves Nagle's algorithm on): with 16,000 parameters that was a
/// third of a 10,000-volume sync. Each connection also keeps a full batch's statement prepared
/// with the types of all its parameters, which at 16,000 held 23 MB across the pool.
const POSTGRES_PARAMS_PER_INSERT: usize = 400;

/// Rows per multi-row INSERT of `columns` columns on the connection's database.
fn rows_per_insert(connection: &sqlx::AnyConnection, columns: usize) -> usize {
    let params = if connection.backend_name() == "SQLite" {
        SQLITE_PARAMS_PER_INSERT
    } else {
        POSTGRES_PARAMS_PER_INSERT
    };
    (params / columns.max(1)).max(1)
}

/// The staging tables of inventory syncs, keyed by `stage` (see migration 0003).
const STAGE_TABLES: [&str; 6] = [
    "inventory_stage_domains",
    "inventory_stage_projects",
    "inventory_stage_servers",
    "inventory_stage_volumes",
    "inventory_stage_enrollments",
    "inventory_stage_snapshots",
];

const STAGE_DOMAIN_COLUMNS: [&str; 4] = ["stage", "id", "name", "enabled"];
const STAGE_PROJECT_COLUMNS: [&str; 5] = ["stage", "id", "name", "domain_id", "enabled"];
const STAGE_SERVER_COLUMNS: [&str; 5] = ["stage", "id", "name", "project_id", "status"];
const STAGE_VOLUME_COLUMNS: [&str; 13] = [
    "stage",
    "id",
    "name",
    "project_id",
    "status",
    "size_gb",
    "volume_type",
    "bootable",
    "availability_zone",
    "vm_id",
    "metadata",
    "created_at",
    "updated_at",
];
const STAGE_ENROLLMENT_COLUMNS: [&str; 4] = ["stage", "volume_id", "policy_name", "retention_count"];
const STAGE_SNAPSHOT_COLUMNS: [&str; 13] = [
    "stage",
    "id",
    "name",
    "volume_id",
    "project_id",
    "original_project_id",
    "status",
    "size_gb",
    "created_by",
    "policy_name",
    "slot",
    "held",
    "created_at",
];

/// Staging skips a row whose key is staged already; the caller compares the count inserted.
const ON_CONFLICT_SKIP: &str = " ON CONFLICT DO NOTHING";

/// How long a stage may stay untouched before it counts as abandoned (its service stopped
/// mid-stream) and is deleted.
pub const ABANDONED_STAGE_HOURS: i64 = 1;

/// Staged volumes new to the region. $1: stage, $2: region.
const VOLUMES_ADDED_SQL: &str = "SELECT COUNT(*) AS n FROM inventory_stage_volumes s WHERE s.stage = $1 \
     AND NOT EXISTS (SELECT 1 FROM inventory_volumes v WHERE v.region = $2 AND v.id = s.id)";

/// Snapshots of the region's view that the stage no longer has. $1: stage, $2: region.
const SNAPSHOTS_GONE_SQL: &str = "SELECT COUNT(*) AS n FROM inventory_snapshots v WHERE v.region = $2 \
     AND NOT EXISTS (SELECT 1 FROM inventory_stage_snapshots s WHERE s.stage = $1 AND s.id = v.id)";

/// Records the volumes of the region's view that the stage no longer has (the caller appends
/// the ORDER BY). $1: stage, $2: region, $3: listed_at, $4: sync id.
const DISAPPEARED_SQL: &str = "INSERT INTO inventory_disappeared_volumes \
     (sync_id, region, volume_id, volume_name, project_id, last_seen_at, disappeared_at) \
     SELECT $4, v.region, v.id, v.name, v.project_id, v.last_seen_at, $3 FROM inventory_volumes v \
     WHERE v.region = $2 AND NOT EXISTS (SELECT 1 FROM inventory_stage_volumes s WHERE s.stage = $1 AND s.id = v.id)";

/// Tables of the region's view that a sync replaces whole (nothing in them outlives a sync).
const REPLACED_TABLES: [&str; 4] =
    ["inventory_domains", "inventory_projects", "inventory_servers", "inventory_snapshots"];

/// Volumes and enrolled pairs of the region's view that the stage no longer has, deleted before
/// the stage's are upserted. $1: stage, $2: region.
const GONE_SQL: [&str; 2] = [
    "DELETE FROM inventory_volumes WHERE region = $2 AND NOT EXISTS \
     (SELECT 1 FROM inventory_stage_volumes s WHERE s.stage = $1 AND s.id = inventory_volumes.id)",
    "DELETE FROM inventory_enrollments WHERE region = $2 AND NOT EXISTS \
     (SELECT 1 FROM inventory_stage_enrollments p WHERE p.stage = $1 \
     AND p.volume_id = inventory_enrollments.volume_id AND p.policy_name = inventory_enrollments.policy_name)",
];

/// Copies the stage into the region's view. $1: stage, $2: region, $3: listed_at. Volumes are
/// upserted so that `first_seen_at` survives.
const STAGED_INTO_VIEW_SQL: [&str; 5] = [
    "INSERT INTO inventory_domains (region, id, name, enabled, last_seen_at) \
     SELECT $2, id, name, enabled, $3 FROM inventory_stage_domains WHERE stage = $1",
    "INSERT INTO inventory_projects (region, id, name, domain_id, enabled, last_seen_at) \
     SELECT $2, id, name, domain_id, enabled, $3 FROM inventory_stage_projects WHERE stage = $1",
    "INSERT INTO inventory_servers (region, id, name, project_id, status, last_seen_at) \
     SELECT $2, id, name, project_id, status, $3 FROM inventory_stage_servers WHERE stage = $1",
    "INSERT INTO inventory_snapshots (region, id, name, volume_id, project_id, original_project_id, status, \
     size_gb, created_by, policy_name, slot, held, created_at, last_seen_at) \
     SELECT $2, id, name, volume_id, project_id, original_project_id, status, size_gb, created_by, \
     policy_name, slot, held, created_at, $3 FROM inventory_stage_snapshots WHERE stage = $1",
    "INSERT INTO inventory_volumes (region, id, name, project_id, status, size_gb, volume_type, bootable, \
     availability_zone, vm_id, metadata, created_at, updated_at, first_seen_at, last_seen_at) \
     SELECT $2, id, name, project_id, status, size_gb, volume_type, bootable, availability_zone, vm_id, \
     metadata, created_at, updated_at, $3, $3 FROM inventory_stage_volumes WHERE stage = $1 \
     ON CONFLICT (region, id) DO UPDATE SET name = excluded.name, project_id = excluded.project_id, \
     status = excluded.status, size_gb = excluded.size_gb, volume_type = excluded.volume_type, \
     bootable = excluded.bootable, availability_zone = excluded.availability_zone, vm_id = excluded.vm_id, \
     metadata = excluded.metadata, created_at = excluded.created_at, updated_at = excluded.updated_at, \
     last_seen_at = excluded.last_seen_at",
];

/// Upserts the stage's enrolled pairs, keeping `enrolled_at` of a pair seen before. A new pair
/// was enrolled no later than the oldest slot (else creation) a snapshot of ours stands for, nor
/// than listed_at: the old system's volumes were enrolled long before our first sync.
/// $1: stage, $2: region, $3: listed_at, $4, $5: the `created_by` values that are ours.
const ENROLLMENTS_SQL: &str = "INSERT INTO inventory_enrollments \
     (region, volume_id, policy_name, retention_count, enrolled_at) \
     SELECT $2, p.volume_id, p.policy_name, p.retention_count, \
     CASE WHEN e.earliest < $3 THEN e.earliest ELSE $3 END \
     FROM inventory_stage_enrollments p LEFT JOIN \
     (SELECT volume_id, policy_name, MIN(COALESCE(slot, created_at)) AS earliest FROM inventory_stage_snapshots \
      WHERE stage = $1 AND created_by IN ($4, $5) GROUP BY volume_id, policy_name) e \
     ON e.volume_id = p.volume_id AND e.policy_name = p.policy_name \
     WHERE p.stage = $1 \
     ON CONFLICT (region, volume_id, policy_name) DO UPDATE SET retention_count = excluded.retention_count";

/// The newest record id.
pub const RECORDS_HIGH_WATER_SQL: &str = "SELECT MAX(seq) AS seq FROM snapshot_records";

/// Every enrolled pair with its volume, project, domain and server names, and what its snapshots
/// of ours add up to (as [`SnapshotStats::add`] would count them; NULLs when it has none),
/// aggregated in the database: times are fixed-width text, so MAX is the newest. Ordered so that
/// the pairs of one volume come together. $1, $2: the `created_by` values that are ours.
pub const ENROLLED_PAIRS_SQL: &str = "SELECT e.region, e.volume_id, e.policy_name, e.retention_count, \
     e.enrolled_at, v.name AS volume_name, v.volume_type, v.project_id, p.name AS project_name, p.domain_id, \
     d.name AS domain_name, v.vm_id, s.name AS vm_name, st.available, st.last_any, st.last_good, st.good_for, \
     st.error_for, st.unsettled_for \
     FROM inventory_enrollments e \
     JOIN inventory_volumes v ON v.region = e.region AND v.id = e.volume_id \
     LEFT JOIN inventory_projects p ON p.region = v.region AND p.id = v.project_id \
     LEFT JOIN inventory_domains d ON d.region = p.region AND d.id = p.domain_id \
     LEFT JOIN inventory_servers s ON s.region = v.region AND s.id = v.vm_id \
     LEFT JOIN (SELECT region, volume_id, policy_name, \
       SUM(CASE WHEN status = 'available' THEN 1 ELSE 0 END) AS available, \
       MAX(created_at) AS last_any, \
       MAX(CASE WHEN status = 'available' THEN created_at END) AS last_good, \
       MAX(CASE WHEN status = 'available' THEN COALESCE(NULLIF(slot, ''), created_at) END) AS good_for, \
       MAX(CASE WHEN status = 'error' THEN COALESCE(NULLIF(slot, ''), created_at) END) AS error_for, \
       MAX(CASE WHEN status NOT IN ('available', 'error') THEN COALESCE(NULLIF(slot, ''), created_at) END) \
       AS unsettled_for \
       FROM inventory_snapshots WHERE created_by IN ($1, $2) GROUP BY region, volume_id, policy_name) st \
     ON st.region = e.region AND st.volume_id = e.volume_id AND st.policy_name = e.policy_name \
     ORDER BY e.region, e.volume_id, e.policy_name";

/// How many pairs [`ENROLLED_PAIRS_SQL`] lists, to size what holds them.
const ENROLLED_PAIRS_COUNT_SQL: &str = "SELECT COUNT(*) AS n FROM inventory_enrollments e \
     JOIN inventory_volumes v ON v.region = e.region AND v.id = e.volume_id";

/// Attempts since $1 of the pairs with a quota block since then, in append order. Starts from the
/// small quota table, then reads each pair's records through `snapshot_records_volume_policy`.
pub const ATTEMPTS_SQL: &str = "SELECT r.volume_id, r.policy_name, r.kind, r.occurred_at, r.slot, \
     q.block_reason, q.quota_limit_gb, q.quota_used_gb, q.quota_needed_gb, q.snapshot_quota_limit, \
     q.snapshot_quota_used \
     FROM (SELECT DISTINCT volume_id, policy_name FROM snapshot_quota_blocks \
           WHERE occurred_at >= $1 AND volume_id <> '') b \
     JOIN snapshot_records r ON r.volume_id = b.volume_id AND r.policy_name = b.policy_name \
          AND r.occurred_at >= $1 \
     LEFT JOIN snapshot_quota_blocks q ON q.event_id = r.event_id \
     WHERE r.dry_run = 0 \
     AND r.kind IN ('snapshot_created', 'snapshot_failed', 'snapshot_skipped', 'snapshot_quota_blocked') \
     ORDER BY r.seq";

/// One record after seq $1 that is an attempt of a pair with a quota block since $2, if any.
pub const RELEVANT_SINCE_SQL: &str = "SELECT r.seq FROM snapshot_records r \
     WHERE r.seq > $1 AND r.dry_run = 0 \
     AND r.kind IN ('snapshot_created', 'snapshot_failed', 'snapshot_skipped', 'snapshot_quota_blocked') \
     AND EXISTS (SELECT 1 FROM snapshot_quota_blocks b WHERE b.volume_id = r.volume_id \
          AND b.policy_name = r.policy_name AND b.occurred_at >= $2) \
     LIMIT 1";

/// Formats a time the way every time column stores it: fixed width, so text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses a stored time.
pub fn parse_ts(text: &str) -> Result<DateTime<Utc>, AuditError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|_| AuditError::Corrupt(format!("time {text:?} is not RFC 3339")))
}

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

fn opt_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, AuditError> {
    match row.try_get::<Option<String>, _>(column)? {
        Some(text) if !text.is_empty() => Ok(Some(parse_ts(&text)?)),
        _ => Ok(None),
    }
}

fn time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, AuditError> {
    parse_ts(&text(row, column)?)
}

fn text(row: &AnyRow, column: &str) -> Result<String, AuditError> {
    Ok(row.try_get::<Option<String>, _>(column)?.unwrap_or_default())
}

fn int(row: &AnyRow, column: &str) -> Result<i64, AuditError> {
    Ok(row.try_get::<Option<i64>, _>(column)?.unwrap_or_default())
}

/// One bound value.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Blob(Vec<u8>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<Option<DateTime<Utc>>> for Value {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Self::OptText(v.map(ts))
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

fn bind_all(mut query: AnyQuery<'_>, values: Vec<Value>) -> AnyQuery<'_> {
    for value in values {
        query = match value {
            Value::Text(v) => query.bind(v),
            Value::OptText(v) => query.bind(v),
            Value::Int(v) => query.bind(v),
            Value::Blob(v) => query.bind(v),
        };
    }
    query
}

/// `($1,$2),($3,$4)` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::new();
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push(',');
            }
            let _ = write!(out, "${}", r * columns + c + 1);
        }
        out.push(')');
    }
    out
}

/// Inserts `rows` (each `columns.len()` values) into `table`, in multi-row statements.
async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<(), AuditError> {
    insert_rows_then(tx, table, columns, rows, "").await.map(|_| ())
}

/// [`insert_rows`] with `suffix` (an ON CONFLICT clause) after each statement; the rows inserted.
async fn insert_rows_then(
    tx: &mut Transaction<'static, Any>,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
    suffix: &str,
) -> Result<u64, AuditError> {
    let per_statement = rows_per_insert(tx, columns.len());
    let mut inserted = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}{suffix}",
            columns.join(", "),
            placeholders(batch.len(), columns.len())
        );
        // Only a full batch's statement recurs; kept prepared, every other row count would be a
        // large statement held in each connection's cache for nothing.
        let recurs = batch.len() == per_statement;
        inserted += bind_all(
            sqlx::query(AssertSqlSafe(sql)).persistent(recurs),
            batch.into_iter().flatten().collect(),
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(inserted)
}

/// AND-ed conditions with their values; `?` in a clause becomes the next `$n`.
#[derive(Debug, Default, Clone)]
struct Where {
    clauses: Vec<String>,
    values: Vec<Value>,
}

impl Where {
    fn push(&mut self, clause: &str, values: Vec<Value>) {
        let mut out = String::new();
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                let _ = write!(out, "${}", self.values.len() + i);
            }
            out.push_str(part);
        }
        self.values.extend(values);
        self.clauses.push(out);
    }

    fn text(&mut self, clause: &str, value: Option<&String>) {
        if let Some(value) = value {
            self.push(clause, vec![Value::Text(value.clone())]);
        }
    }

    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.push(&format!("{column} IN ({marks})"), values.iter().map(|v| Value::Text(v.clone())).collect());
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!(" WHERE {}", self.clauses.join(" AND ")) }
    }
}

/// Outcome of an append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// Events stored by this call.
    pub inserted: usize,
    /// Ids already stored (or repeated within the batch), in request order.
    pub duplicates: Vec<String>,
}

/// Filters of record listings (ListRecords, ExportRecords, ListQuotaBlocks).
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    /// Only this run.
    pub run_id: Option<String>,
    /// Only this volume.
    pub volume_id: Option<String>,
    /// Only this domain.
    pub domain_id: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only these kinds (stored names); empty: every kind but the run-level ones.
    pub kinds: Vec<String>,
    /// Only this policy.
    pub policy_name: Option<String>,
    /// Occurred at or after.
    pub from: Option<DateTime<Utc>>,
    /// Occurred before.
    pub to: Option<DateTime<Utc>>,
    /// Only records of this actor.
    pub actor: Option<String>,
    /// Only this snapshot.
    pub snapshot_id: Option<String>,
    /// Only this region.
    pub region: Option<String>,
    /// Only dry runs, or only real runs.
    pub dry_run: Option<bool>,
    /// Only quota blocks for this reason (stored name).
    pub quota_reason: Option<String>,
}

/// Where a record listing continues: after (or before) this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// occurred_at as stored.
    pub occurred_at: String,
    /// Record id.
    pub seq: i64,
}

impl Cursor {
    /// The cursor as page-token position text.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.occurred_at, self.seq)
    }

    /// A cursor from its position text.
    pub fn decode(position: &str) -> Result<Self, AuditError> {
        let malformed = || AuditError::invalid("page_token", "malformed cursor");
        let (occurred_at, seq) = position.split_once('|').ok_or_else(malformed)?;
        parse_ts(occurred_at).map_err(|_| malformed())?;
        Ok(Self { occurred_at: occurred_at.to_owned(), seq: seq.parse().map_err(|_| malformed())? })
    }
}

/// Filters of ListRuns.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only this kind (stored name).
    pub kind: Option<String>,
    /// Only these states (stored names).
    pub statuses: Vec<String>,
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
    /// Only dry runs, or only real ones.
    pub dry_run: Option<bool>,
    /// Only runs triggered by this actor.
    pub triggered_by: Option<String>,
    /// Only this run.
    pub run_id: Option<String>,
}

/// The result of an applied (or earlier applied) sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    /// False when the sync had been applied before.
    pub applied: bool,
    /// The response.
    pub response: pb::SyncInventoryResponse,
}

/// A chunk's items of one kind: their staging table and its columns, their ids and rows.
type StagedKind<'a> = (&'static str, &'static [&'static str], Vec<&'a str>, Vec<Vec<Value>>);

/// A sync being received: its header and the stage its chunks go to.
#[derive(Debug, Clone)]
pub struct StagedSync {
    /// The header.
    pub header: Header,
    /// Key of its staged rows; `None` when its sync id was applied before (nothing is staged).
    stage: Option<i64>,
}

/// The error for a sync whose stage was deleted as abandoned.
fn abandoned(sync_id: &str) -> AuditError {
    AuditError::FailedPrecondition(format!(
        "sync {sync_id} idled for more than {ABANDONED_STAGE_HOURS} h and its chunks were discarded; send it again"
    ))
}

/// One enrolled pair with what the inventory says about its volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairRow {
    /// Region.
    pub region: String,
    /// Volume id.
    pub volume_id: String,
    /// Policy name.
    pub policy_name: String,
    /// Retention named by the metadata (0: none).
    pub retention_count: i64,
    /// First seen enrolled.
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Volume name.
    pub volume_name: String,
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
    /// What its snapshots of ours add up to.
    pub stats: SnapshotStats,
}

/// One stored roll-up row of compliance_daily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// UTC day.
    pub day: String,
    /// When recorded.
    pub recorded_at: DateTime<Utc>,
    /// Domain id.
    pub domain_id: String,
    /// Domain name.
    pub domain_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Policy.
    pub policy_name: String,
    /// Counts.
    pub summary: compliance::Summary,
}

const RECORD_COLUMNS: [&str; 32] = [
    "event_id",
    "kind",
    "occurred_at",
    "recorded_at",
    "run_id",
    "actor",
    "dry_run",
    "region",
    "volume_id",
    "volume_name",
    "project_id",
    "project_name",
    "domain_id",
    "domain_name",
    "vm_id",
    "vm_name",
    "policy_name",
    "slot",
    "snapshot_id",
    "snapshot_name",
    "snapshot_project_id",
    "size_gb",
    "snapshot_created_at",
    "retention_count",
    "scope_mode",
    "cinder_request_id",
    "error_message",
    "skip_reason",
    "dry_run_action",
    "recovered",
    "role_name",
    "detail",
];

const QUOTA_COLUMNS: [&str; 16] = [
    "event_id",
    "occurred_at",
    "run_id",
    "region",
    "volume_id",
    "project_id",
    "domain_id",
    "policy_name",
    "block_reason",
    "volume_type",
    "quota_limit_gb",
    "quota_used_gb",
    "quota_needed_gb",
    "snapshot_quota_limit",
    "snapshot_quota_used",
    "snapshot_quota_needed",
];

const RUN_COLUMNS: [&str; 9] =
    ["event_id", "run_id", "kind", "occurred_at", "run_kind", "status", "step", "batch_number", "payload"];

/// The SELECT of a full record (event row with its quota and run payload).
const RECORD_SELECT: &str = "SELECT r.*, q.block_reason, q.volume_type AS q_volume_type, q.quota_limit_gb, \
     q.quota_used_gb, q.quota_needed_gb, q.snapshot_quota_limit, q.snapshot_quota_used, q.snapshot_quota_needed, \
     s.payload FROM snapshot_records r \
     LEFT JOIN snapshot_quota_blocks q ON q.event_id = r.event_id \
     LEFT JOIN run_summaries s ON s.event_id = r.event_id";

fn record_values(valid: &ValidEvent, recorded_at: DateTime<Utc>) -> Vec<Value> {
    let e = &valid.event;
    vec![
        e.event_id.as_str().into(),
        kind_name(valid.kind).into(),
        ts(valid.occurred_at).into(),
        ts(recorded_at).into(),
        e.run_id.as_str().into(),
        e.actor.as_str().into(),
        e.dry_run.into(),
        e.region.as_str().into(),
        e.volume_id.as_str().into(),
        e.volume_name.as_str().into(),
        e.project_id.as_str().into(),
        e.project_name.as_str().into(),
        e.domain_id.as_str().into(),
        e.domain_name.as_str().into(),
        e.vm_id.as_str().into(),
        e.vm_name.as_str().into(),
        e.policy_name.as_str().into(),
        valid.slot.into(),
        e.snapshot_id.as_str().into(),
        e.snapshot_name.as_str().into(),
        e.snapshot_project_id.as_str().into(),
        e.size_gb.into(),
        valid.snapshot_created_at.into(),
        i64::from(e.retention_count).into(),
        stored_name(e.scope_mode().as_str_name(), "SCOPE_MODE_").into(),
        e.cinder_request_id.as_str().into(),
        e.error.as_str().into(),
        stored_name(e.skip_reason().as_str_name(), "SKIP_REASON_").into(),
        stored_name(e.dry_run_action().as_str_name(), "DRY_RUN_ACTION_").into(),
        e.recovered.into(),
        e.role_name.as_str().into(),
        e.detail.as_str().into(),
    ]
}

fn quota_values(valid: &ValidEvent, quota: &pb::QuotaFigures) -> Vec<Value> {
    let e = &valid.event;
    vec![
        e.event_id.as_str().into(),
        ts(valid.occurred_at).into(),
        e.run_id.as_str().into(),
        e.region.as_str().into(),
        e.volume_id.as_str().into(),
        e.project_id.as_str().into(),
        e.domain_id.as_str().into(),
        e.policy_name.as_str().into(),
        stored_name(quota.reason().as_str_name(), "QUOTA_BLOCK_REASON_").into(),
        quota.volume_type.as_str().into(),
        quota.quota_limit_gb.into(),
        quota.quota_used_gb.into(),
        quota.quota_needed_gb.into(),
        quota.snapshot_quota_limit.into(),
        quota.snapshot_quota_used.into(),
        quota.snapshot_quota_needed.into(),
    ]
}

fn run_values(valid: &ValidEvent, detail: &RunDetail) -> Vec<Value> {
    let e = &valid.event;
    let (run_kind, status, step, batch, payload) = match detail {
        RunDetail::RunStarted(s) => (
            stored_name(s.kind().as_str_name(), "RUN_KIND_"),
            "running".to_owned(),
            String::new(),
            0,
            s.encode_to_vec(),
        ),
        RunDetail::RunStep(s) => (
            String::new(),
            stored_name(s.status().as_str_name(), "PHASE_STATUS_"),
            stored_name(s.step().as_str_name(), "STEP_KEY_"),
            0,
            s.encode_to_vec(),
        ),
        RunDetail::RunBatch(b) => (
            String::new(),
            stored_name(b.status().as_str_name(), "PHASE_STATUS_"),
            String::new(),
            i64::from(b.batch_number),
            b.encode_to_vec(),
        ),
        RunDetail::RunFinished(f) => (
            String::new(),
            stored_name(f.status().as_str_name(), "RUN_STATUS_"),
            String::new(),
            0,
            f.encode_to_vec(),
        ),
    };
    vec![
        e.event_id.as_str().into(),
        e.run_id.as_str().into(),
        kind_name(valid.kind).into(),
        ts(valid.occurred_at).into(),
        run_kind.into(),
        status.into(),
        step.into(),
        batch.into(),
        Value::Blob(payload),
    ]
}

fn enum_value<E: Into<i32>>(stored: &str, prefix: &str, from_name: fn(&str) -> Option<E>) -> i32 {
    from_name(&proto_name(stored, prefix)).map_or(0, Into::into)
}

fn run_detail(kind: EventKind, payload: &[u8]) -> Result<Option<RunDetail>, AuditError> {
    let corrupt = |e: snapkeeper_proto::prost::DecodeError| AuditError::Corrupt(format!("run payload: {e}"));
    Ok(match kind {
        EventKind::RunStarted => {
            Some(RunDetail::RunStarted(pb::RunStarted::decode(payload).map_err(corrupt)?))
        }
        EventKind::RunStep => Some(RunDetail::RunStep(pb::RunStepChange::decode(payload).map_err(corrupt)?)),
        EventKind::RunBatch => Some(RunDetail::RunBatch(pb::RunBatch::decode(payload).map_err(corrupt)?)),
        EventKind::RunFinished => {
            Some(RunDetail::RunFinished(pb::RunFinished::decode(payload).map_err(corrupt)?))
        }
        _ => None,
    })
}

fn record_of(row: &AnyRow) -> Result<pb::Record, AuditError> {
    let kind = kind_of(&text(row, "kind")?);
    let quota = if matches!(kind, EventKind::SnapshotQuotaBlocked | EventKind::QuotaForecastRisk) {
        Some(pb::QuotaFigures {
            reason: enum_value(
                &text(row, "block_reason")?,
                "QUOTA_BLOCK_REASON_",
                pb::QuotaBlockReason::from_str_name,
            ),
            volume_type: text(row, "q_volume_type")?,
            quota_limit_gb: int(row, "quota_limit_gb")?,
            quota_used_gb: int(row, "quota_used_gb")?,
            quota_needed_gb: int(row, "quota_needed_gb")?,
            snapshot_quota_limit: int(row, "snapshot_quota_limit")?,
            snapshot_quota_used: int(row, "snapshot_quota_used")?,
            snapshot_quota_needed: int(row, "snapshot_quota_needed")?,
        })
    } else {
        None
    };
    let run_detail = if is_run_kind(kind) {
        let payload: Option<Vec<u8>> = row.try_get("payload")?;
        run_detail(kind, &payload.unwrap_or_default())?
    } else {
        None
    };
    let event = pb::Event {
        event_id: text(row, "event_id")?,
        occurred_at: Some(timestamp(time(row, "occurred_at")?)),
        kind: kind.into(),
        run_id: text(row, "run_id")?,
        actor: text(row, "actor")?,
        dry_run: int(row, "dry_run")? != 0,
        region: text(row, "region")?,
        volume_id: text(row, "volume_id")?,
        volume_name: text(row, "volume_name")?,
        project_id: text(row, "project_id")?,
        project_name: text(row, "project_name")?,
        domain_id: text(row, "domain_id")?,
        domain_name: text(row, "domain_name")?,
        vm_id: text(row, "vm_id")?,
        vm_name: text(row, "vm_name")?,
        policy_name: text(row, "policy_name")?,
        slot: opt_time(row, "slot")?.map(timestamp),
        snapshot_id: text(row, "snapshot_id")?,
        snapshot_name: text(row, "snapshot_name")?,
        snapshot_project_id: text(row, "snapshot_project_id")?,
        size_gb: int(row, "size_gb")?,
        snapshot_created_at: opt_time(row, "snapshot_created_at")?.map(timestamp),
        retention_count: i32::try_from(int(row, "retention_count")?).unwrap_or(i32::MAX),
        scope_mode: enum_value(&text(row, "scope_mode")?, "SCOPE_MODE_", pb::ScopeMode::from_str_name),
        cinder_request_id: text(row, "cinder_request_id")?,
        error: text(row, "error_message")?,
        skip_reason: enum_value(&text(row, "skip_reason")?, "SKIP_REASON_", pb::SkipReason::from_str_name),
        quota,
        dry_run_action: enum_value(
            &text(row, "dry_run_action")?,
            "DRY_RUN_ACTION_",
            pb::DryRunAction::from_str_name,
        ),
        recovered: int(row, "recovered")? != 0,
        role_name: text(row, "role_name")?,
        detail: text(row, "detail")?,
        run_detail,
    };
    Ok(pb::Record {
        id: int(row, "seq")?,
        recorded_at: Some(timestamp(time(row, "recorded_at")?)),
        event: Some(event),
    })
}

/// The audit-svc tables.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    writer_role: bool,
    webhook_urls: Arc<[String]>,
}

/// A delivery with no final attempt yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// Its id.
    pub delivery_id: String,
    /// Receiver.
    pub url: String,
    /// Notification type.
    pub kind: String,
    /// JSON body.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
}

const DELIVERY_COLUMNS: [&str; 6] = ["delivery_id", "url", "source", "kind", "body", "created_at"];

fn delivery_values(rows: Vec<NewDelivery>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|d| {
            vec![
                d.delivery_id.into(),
                d.url.into(),
                d.source.into(),
                d.kind.into(),
                d.body.into(),
                d.created_at.into(),
            ]
        })
        .collect()
}

/// Inserts deliveries, skipping a (url, source) already stored: a cause notifies once.
async fn insert_deliveries(
    tx: &mut Transaction<'static, Any>,
    rows: Vec<NewDelivery>,
) -> Result<(), AuditError> {
    for row in delivery_values(rows) {
        let sql = format!(
            "INSERT INTO webhook_deliveries ({}) VALUES {} ON CONFLICT (url, source) DO NOTHING",
            DELIVERY_COLUMNS.join(", "),
            placeholders(1, DELIVERY_COLUMNS.len())
        );
        bind_all(sqlx::query(AssertSqlSafe(sql)), row).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// A store over an opened, migrated database. On PostgreSQL it checks whether the connecting
    /// user may switch to the writer role, and says so when it may not.
    pub async fn open(database: Database) -> Result<Self, AuditError> {
        let writer_role = match database.backend() {
            Backend::Sqlite => false,
            Backend::Postgres => {
                let row = sqlx::query(
                    "SELECT CAST(CASE WHEN pg_has_role(current_user, 'snapkeeper_audit_writer', 'MEMBER') \
                     THEN 1 ELSE 0 END AS BIGINT) AS member",
                )
                .fetch_one(database.pool())
                .await?;
                let member = int(&row, "member")? != 0;
                if !member {
                    tracing::warn!(
                        role = WRITER_ROLE,
                        "the database user cannot switch to the audit writer role; audit writes run as the user itself"
                    );
                }
                member
            }
        };
        Ok(Self { database, writer_role, webhook_urls: Arc::from(Vec::new()) })
    }

    /// The store, notifying `urls` of the events that call for a webhook: each notification is
    /// stored with the event that causes it, in one transaction.
    #[must_use]
    pub fn with_webhook_urls(mut self, urls: &[String]) -> Self {
        self.webhook_urls = Arc::from(urls);
        self
    }

    /// Deliveries without a final attempt whose next attempt is due at `now`, oldest first.
    pub async fn pending_deliveries(&self, now: DateTime<Utc>) -> Result<Vec<PendingDelivery>, AuditError> {
        let rows = sqlx::query(
            "SELECT d.delivery_id, d.url, d.kind, d.body, \
             (SELECT COUNT(*) FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id) AS attempts, \
             (SELECT MAX(a.next_attempt_at) FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id) AS next_at \
             FROM webhook_deliveries d \
             WHERE NOT EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id \
                               AND a.outcome <> 'retry') \
             ORDER BY d.seq LIMIT 100",
        )
        .fetch_all(self.pool())
        .await?;
        let now = ts(now);
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            if text(row, "next_at")?.as_str() > now.as_str() {
                continue;
            }
            due.push(PendingDelivery {
                delivery_id: text(row, "delivery_id")?,
                url: text(row, "url")?,
                kind: text(row, "kind")?,
                body: text(row, "body")?,
                attempts: u32::try_from(int(row, "attempts")?).unwrap_or(u32::MAX),
            });
        }
        Ok(due)
    }

    /// Appends one attempt of a delivery: `outcome` is delivered, retry (with `next`) or gave_up.
    pub async fn append_attempt(
        &self,
        delivery_id: &str,
        at: DateTime<Utc>,
        result: &AttemptResult,
        outcome: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), AuditError> {
        let mut tx = self.begin_audit_write().await?;
        let row = vec![
            delivery_id.into(),
            ts(at).into(),
            i64::from(result.status_code).into(),
            result.error.as_str().into(),
            outcome.into(),
            next.into(),
        ];
        insert_rows(
            &mut tx,
            "webhook_attempts",
            &["delivery_id", "attempted_at", "status_code", "error", "outcome", "next_attempt_at"],
            vec![row],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every attempt's (delivery id, status code, error, outcome), in order.
    pub async fn delivery_attempts(&self) -> Result<Vec<(String, i64, String, String)>, AuditError> {
        let rows =
            sqlx::query("SELECT delivery_id, status_code, error, outcome FROM webhook_attempts ORDER BY seq")
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| {
                Ok((text(r, "delivery_id")?, int(r, "status_code")?, text(r, "error")?, text(r, "outcome")?))
            })
            .collect()
    }

    /// Whether each compliance alert scope is below the threshold now, by its latest row.
    pub async fn alert_states(&self) -> Result<BTreeMap<String, bool>, AuditError> {
        let rows = sqlx::query(
            "SELECT a.scope, a.below FROM compliance_alerts a \
             WHERE a.seq = (SELECT MAX(b.seq) FROM compliance_alerts b WHERE b.scope = a.scope)",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((text(r, "scope")?, int(r, "below")? != 0))).collect()
    }

    /// Appends the crossings (as of `at`, against `threshold`) and the deliveries they cause,
    /// in one transaction.
    pub async fn append_crossings(
        &self,
        crossings: &[Crossing],
        threshold: f64,
        at: DateTime<Utc>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), AuditError> {
        let mut tx = self.begin_audit_write().await?;
        for crossing in crossings {
            sqlx::query(
                "INSERT INTO compliance_alerts (scope, below, ratio, threshold, observed_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(crossing.scope.as_str())
            .bind(i64::from(crossing.below))
            .bind(crossing.ratio)
            .bind(threshold)
            .bind(ts(at))
            .execute(&mut *tx)
            .await?;
        }
        insert_deliveries(&mut tx, deliveries).await?;
        tx.commit().await?;
        Ok(())
    }

    fn pool(&self) -> &AnyPool {
        self.database.pool()
    }

    /// A transaction for audit writes: on PostgreSQL it runs as the writer role, which may only
    /// SELECT and INSERT the audit tables.
    /// A transaction that will write. On SQLite it takes the write lock up front: a deferred
    /// transaction that read first fails at once (busy, no waiting) when another connection wrote
    /// meanwhile, which the background webhook sender makes likely.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, AuditError> {
        Ok(match self.database.backend() {
            Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool().begin().await?,
        })
    }

    async fn begin_audit_write(&self) -> Result<Transaction<'static, Any>, AuditError> {
        let mut tx = self.begin_write().await?;
        if self.writer_role {
            sqlx::query("SET LOCAL ROLE snapkeeper_audit_writer").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Appends `events` in one transaction; ids already stored are counted as duplicates.
    pub async fn append(
        &self,
        events: &[ValidEvent],
        recorded_at: DateTime<Utc>,
    ) -> Result<Appended, AuditError> {
        let mut tx = self.begin_audit_write().await?;
        let mut inserted: HashSet<String> = HashSet::new();
        let per_statement = rows_per_insert(&tx, RECORD_COLUMNS.len());
        for batch in events.chunks(per_statement) {
            let sql = format!(
                "INSERT INTO snapshot_records ({}) VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                RECORD_COLUMNS.join(", "),
                placeholders(batch.len(), RECORD_COLUMNS.len())
            );
            let values = batch.iter().flat_map(|e| record_values(e, recorded_at)).collect();
            let query = sqlx::query(AssertSqlSafe(sql)).persistent(batch.len() == per_statement);
            for row in bind_all(query, values).fetch_all(&mut *tx).await? {
                inserted.insert(text(&row, "event_id")?);
            }
        }
        let mut outcome = Appended::default();
        let mut quota_rows = Vec::new();
        let mut run_rows = Vec::new();
        let mut deliveries = Vec::new();
        for valid in events {
            // Removing marks the id written, so a repeat later in the batch counts as a duplicate.
            if !inserted.remove(&valid.event.event_id) {
                outcome.duplicates.push(valid.event.event_id.clone());
                continue;
            }
            outcome.inserted += 1;
            if let Some(quota) = &valid.event.quota
                && matches!(valid.kind, EventKind::SnapshotQuotaBlocked | EventKind::QuotaForecastRisk)
            {
                quota_rows.push(quota_values(valid, quota));
            }
            if let Some(detail) = &valid.event.run_detail {
                run_rows.push(run_values(valid, detail));
            }
            if !self.webhook_urls.is_empty()
                && let Some(notification) = webhooks::event_notification(valid)
            {
                deliveries.extend(webhooks::delivery_rows(&notification, &self.webhook_urls, recorded_at));
            }
        }
        insert_rows(&mut tx, "snapshot_quota_blocks", &QUOTA_COLUMNS, quota_rows).await?;
        insert_rows(&mut tx, "run_summaries", &RUN_COLUMNS, run_rows).await?;
        insert_deliveries(&mut tx, deliveries).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    fn record_where(query: &RecordQuery) -> Where {
        let mut w = Where::default();
        w.text("r.run_id = ?", query.run_id.as_ref());
        w.text("r.volume_id = ?", query.volume_id.as_ref());
        w.text("r.domain_id = ?", query.domain_id.as_ref());
        w.text("r.project_id = ?", query.project_id.as_ref());
        w.text("r.policy_name = ?", query.policy_name.as_ref());
        w.text("r.actor = ?", query.actor.as_ref());
        w.text("r.snapshot_id = ?", query.snapshot_id.as_ref());
        w.text("r.region = ?", query.region.as_ref());
        w.text("q.block_reason = ?", query.quota_reason.as_ref());
        if let Some(dry_run) = query.dry_run {
            w.push("r.dry_run = ?", vec![dry_run.into()]);
        }
        if let Some(from) = query.from {
            w.push("r.occurred_at >= ?", vec![ts(from).into()]);
        }
        if let Some(to) = query.to {
            w.push("r.occurred_at < ?", vec![ts(to).into()]);
        }
        if query.kinds.is_empty() {
            w.push("r.kind NOT LIKE 'run\\_%' ESCAPE '\\'", vec![]);
        } else {
            w.any_of("r.kind", &query.kinds);
        }
        w
    }

    /// Records matching `query`, newest first (or oldest first), continuing after `cursor`, and
    /// never newer than the record `up_to` when given (a consistent export).
    pub async fn list_records(
        &self,
        query: &RecordQuery,
        oldest_first: bool,
        cursor: Option<&Cursor>,
        up_to: Option<i64>,
        limit: usize,
    ) -> Result<Vec<pb::Record>, AuditError> {
        let mut w = Self::record_where(query);
        if let Some(cursor) = cursor {
            let op = if oldest_first { ">" } else { "<" };
            w.push(
                &format!("(r.occurred_at {op} ? OR (r.occurred_at = ? AND r.seq {op} ?))"),
                vec![cursor.occurred_at.clone().into(), cursor.occurred_at.clone().into(), cursor.seq.into()],
            );
        }
        if let Some(up_to) = up_to {
            w.push("r.seq <= ?", vec![up_to.into()]);
        }
        let direction = if oldest_first { "ASC" } else { "DESC" };
        let sql = format!(
            "{RECORD_SELECT}{} ORDER BY r.occurred_at {direction}, r.seq {direction} LIMIT {}",
            w.sql(),
            limit
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), w.values).fetch_all(self.pool()).await?;
        rows.iter().map(record_of).collect()
    }

    /// The newest record id (0 when none): bounds an export and versions compliance caches.
    pub async fn records_high_water(&self) -> Result<i64, AuditError> {
        let row = sqlx::query(RECORDS_HIGH_WATER_SQL).fetch_one(self.pool()).await?;
        int(&row, "seq")
    }

    /// Whether a record appended after `after` can change a judgement whose oldest judged slot
    /// is `since`: an attempt (not a dry run) of a pair with a quota block since then. Any other
    /// record leaves every verdict as it was.
    pub async fn changes_judgement(&self, after: i64, since: DateTime<Utc>) -> Result<bool, AuditError> {
        let row =
            sqlx::query(RELEVANT_SINCE_SQL).bind(after).bind(ts(since)).fetch_optional(self.pool()).await?;
        Ok(row.is_some())
    }

    /// Runs matching `query`, newest first: the page at `offset`, and how many match in all.
    pub async fn list_runs(
        &self,
        query: &RunQuery,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<pb::RunSummary>, usize), AuditError> {
        let mut w = Where::default();
        w.text("run_kind = ?", query.kind.as_ref());
        w.text("actor = ?", query.triggered_by.as_ref());
        w.text("run_id = ?", query.run_id.as_ref());
        w.any_of("status", &query.statuses);
        if let Some(dry_run) = query.dry_run {
            w.push("dry_run = ?", vec![dry_run.into()]);
        }
        if let Some(from) = query.from {
            w.push("started_at >= ?", vec![ts(from).into()]);
        }
        if let Some(to) = query.to {
            w.push("started_at < ?", vec![ts(to).into()]);
        }
        // A run's state is its first finish event's, else running.
        let runs = "SELECT s.run_id, s.seq, s.run_kind, r.occurred_at AS started_at, r.actor, r.dry_run, \
             COALESCE((SELECT f.status FROM run_summaries f WHERE f.run_id = s.run_id AND f.kind = 'run_finished' \
             ORDER BY f.seq LIMIT 1), 'running') AS status \
             FROM run_summaries s JOIN snapshot_records r ON r.event_id = s.event_id WHERE s.kind = 'run_started'";
        let count_sql = format!("SELECT COUNT(*) AS n FROM ({runs}) runs{}", w.sql());
        let total = int(
            &bind_all(sqlx::query(AssertSqlSafe(count_sql)), w.values.clone()).fetch_one(self.pool()).await?,
            "n",
        )?;
        let page_sql = format!(
            "SELECT run_id FROM ({runs}) runs{} ORDER BY started_at DESC, seq DESC LIMIT {limit} OFFSET {offset}",
            w.sql()
        );
        let ids: Vec<String> = bind_all(sqlx::query(AssertSqlSafe(page_sql)), w.values)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| text(row, "run_id"))
            .collect::<Result<_, _>>()?;
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            runs.push(self.run_summary(&id).await?);
        }
        Ok((runs, usize::try_from(total).unwrap_or(0)))
    }

    /// A run as its events tell it.
    async fn run_summary(&self, run_id: &str) -> Result<pb::RunSummary, AuditError> {
        let sql = format!("{RECORD_SELECT} WHERE r.run_id = $1 ORDER BY r.seq");
        let records = sqlx::query(AssertSqlSafe(sql)).bind(run_id.to_owned()).fetch_all(self.pool()).await?;
        let mut summary = pb::RunSummary { run_id: run_id.to_owned(), ..pb::RunSummary::default() };
        let mut counters = pb::RunCounters::default();
        let mut finished = None;
        for row in &records {
            let record = record_of(row)?;
            let Some(event) = record.event else { continue };
            summary.last_event_at = event.occurred_at;
            match (event.kind(), &event.run_detail) {
                (EventKind::RunStarted, Some(RunDetail::RunStarted(started)))
                    if summary.started_at.is_none() =>
                {
                    summary.kind = started.kind;
                    summary.dry_run = event.dry_run;
                    summary.triggered_by.clone_from(&event.actor);
                    summary.execution_host.clone_from(&started.execution_host);
                    summary.regions.clone_from(&started.regions);
                    summary.started_at = event.occurred_at;
                    summary.rule_set_version = started.rule_set_version;
                }
                (EventKind::RunBatch, _) => summary.total_batches += 1,
                (EventKind::RunFinished, Some(RunDetail::RunFinished(f))) if finished.is_none() => {
                    finished = Some((f.clone(), event.occurred_at));
                }
                (EventKind::SnapshotCreated, _) if event.recovered => counters.snapshots_recovered += 1,
                (EventKind::SnapshotCreated, _) => counters.snapshots_created += 1,
                (EventKind::SnapshotDeleted, _) => counters.snapshots_deleted += 1,
                (EventKind::SnapshotFailed, _) => counters.snapshots_failed += 1,
                (EventKind::SnapshotDeleteFailed, _) => counters.deletes_failed += 1,
                (EventKind::SnapshotSkipped, _) => counters.volumes_skipped += 1,
                (EventKind::SnapshotQuotaBlocked, _) => counters.quota_blocked += 1,
                (EventKind::SnapshotDryRun, _) => match event.dry_run_action() {
                    pb::DryRunAction::Create => counters.would_create += 1,
                    pb::DryRunAction::Delete => counters.would_delete += 1,
                    _ => counters.role_grants += 1,
                },
                (EventKind::RoleGranted, _) => counters.role_grants += 1,
                _ => {}
            }
        }
        if let Some((f, at)) = finished {
            summary.status = f.status;
            summary.finished_at = at;
            summary.counters = f.counters.or(Some(counters));
            summary.total_batches = f.total_batches.max(summary.total_batches);
            summary.error_summary = f.error_summary;
        } else {
            summary.status = pb::RunStatus::Running.into();
            summary.counters = Some(counters);
        }
        Ok(summary)
    }

    /// The disappeared volumes `sync_id` recorded, the first 1000 in id order.
    async fn disappeared_volumes(
        tx: &mut Transaction<'static, Any>,
        sync_id: &str,
    ) -> Result<Vec<pb::DisappearedVolume>, AuditError> {
        let disappeared = sqlx::query(
            "SELECT volume_id, volume_name, project_id, last_seen_at FROM inventory_disappeared_volumes \
             WHERE sync_id = $1 ORDER BY seq LIMIT 1000",
        )
        .bind(sync_id.to_owned())
        .fetch_all(&mut **tx)
        .await?;
        let mut volumes = Vec::with_capacity(disappeared.len());
        for d in &disappeared {
            volumes.push(pb::DisappearedVolume {
                volume_id: text(d, "volume_id")?,
                volume_name: text(d, "volume_name")?,
                project_id: text(d, "project_id")?,
                last_seen_at: Some(timestamp(time(d, "last_seen_at")?)),
            });
        }
        Ok(volumes)
    }

    /// The earlier result of `sync_id`, if it was applied.
    async fn earlier_sync(
        tx: &mut Transaction<'static, Any>,
        sync_id: &str,
    ) -> Result<Option<pb::SyncInventoryResponse>, AuditError> {
        let Some(row) = sqlx::query("SELECT * FROM inventory_syncs WHERE sync_id = $1")
            .bind(sync_id.to_owned())
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(pb::SyncInventoryResponse {
            sync_id: sync_id.to_owned(),
            applied: true,
            applied_at: Some(timestamp(time(&row, "applied_at")?)),
            received: Some(pb::SyncEnd {
                domain_count: int(&row, "domain_count")?,
                project_count: int(&row, "project_count")?,
                server_count: int(&row, "server_count")?,
                volume_count: int(&row, "volume_count")?,
                snapshot_count: int(&row, "snapshot_count")?,
            }),
            volumes_added: int(&row, "volumes_added")?,
            volumes_disappeared: int(&row, "volumes_disappeared")?,
            snapshots_disappeared: int(&row, "snapshots_disappeared")?,
            disappeared_volumes: Self::disappeared_volumes(tx, sync_id).await?,
        }))
    }

    /// Starts receiving a sync: a stage for its chunks, or none when its sync id was applied
    /// before (the end then answers the earlier result). Deletes abandoned stages first.
    pub async fn begin_sync(&self, header: Header, now: DateTime<Utc>) -> Result<StagedSync, AuditError> {
        self.discard_abandoned_syncs(now).await?;
        let applied = sqlx::query("SELECT sync_id FROM inventory_syncs WHERE sync_id = $1")
            .bind(header.sync_id.clone())
            .fetch_optional(self.pool())
            .await?;
        if applied.is_some() {
            return Ok(StagedSync { header, stage: None });
        }
        let row = sqlx::query(
            "INSERT INTO inventory_stages (sync_id, region, started_at, touched_at) VALUES ($1, $2, $3, $3) \
             RETURNING stage",
        )
        .bind(header.sync_id.clone())
        .bind(header.region.clone())
        .bind(ts(now))
        .fetch_one(self.pool())
        .await?;
        let stage = int(&row, "stage")?;
        Ok(StagedSync { header, stage: Some(stage) })
    }

    /// Stages chunk `number` of `sync` in one short transaction, refusing an id that an earlier
    /// chunk sent (the staging tables' keys hold every id received so far).
    pub async fn stage_chunk(
        &self,
        sync: &StagedSync,
        number: usize,
        chunk: &pb::InventoryChunk,
        now: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        let Some(stage) = sync.stage else {
            return Ok(());
        };
        let st = || Value::Int(stage);
        let domains: Vec<Vec<Value>> = chunk
            .domains
            .iter()
            .map(|d| vec![st(), d.id.clone().into(), d.name.clone().into(), d.enabled.into()])
            .collect();
        let projects = chunk
            .projects
            .iter()
            .map(|p| {
                vec![
                    st(),
                    p.id.clone().into(),
                    p.name.clone().into(),
                    p.domain_id.clone().into(),
                    p.enabled.into(),
                ]
            })
            .collect();
        let servers = chunk
            .servers
            .iter()
            .map(|s| {
                vec![
                    st(),
                    s.id.clone().into(),
                    s.name.clone().into(),
                    s.project_id.clone().into(),
                    s.status.clone().into(),
                ]
            })
            .collect();
        let mut volumes = Vec::with_capacity(chunk.volumes.len());
        let mut pairs = Vec::new();
        for v in &chunk.volumes {
            let metadata: BTreeMap<&String, &String> = v.metadata.iter().collect();
            let created = v.created_at.as_ref().and_then(|t| DateTime::from_timestamp(t.seconds, 0));
            let updated = v.updated_at.as_ref().and_then(|t| DateTime::from_timestamp(t.seconds, 0));
            volumes.push(vec![
                st(),
                v.id.clone().into(),
                v.name.clone().into(),
                v.project_id.clone().into(),
                v.status.clone().into(),
                v.size_gb.into(),
                v.volume_type.clone().into(),
                v.bootable.into(),
                v.availability_zone.clone().into(),
                v.attached_server_ids.first().cloned().unwrap_or_default().into(),
                serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".to_owned()).into(),
                created.into(),
                updated.into(),
            ]);
            for (policy, retention) in enrollments(v) {
                pairs.push(vec![st(), v.id.clone().into(), policy.into(), i64::from(retention).into()]);
            }
        }
        let mut snapshots = Vec::with_capacity(chunk.snapshots.len());
        for s in &chunk.snapshots {
            let meta = snapshot_meta(s);
            let created = s.created_at.as_ref().and_then(|t| DateTime::from_timestamp(t.seconds, 0));
            snapshots.push(vec![
                st(),
                s.id.clone().into(),
                s.name.clone().into(),
                meta.volume_id.into(),
                s.project_id.clone().into(),
                meta.project_id.into(),
                s.status.clone().into(),
                s.size_gb.into(),
                meta.created_by.into(),
                meta.policy.into(),
                meta.slot.into(),
                meta.held.into(),
                ts(created.unwrap_or(sync.header.listed_at)).into(),
            ]);
        }
        let kinds: [StagedKind<'_>; 5] = [
            (
                "inventory_stage_domains",
                &STAGE_DOMAIN_COLUMNS,
                chunk.domains.iter().map(|d| d.id.as_str()).collect(),
                domains,
            ),
            (
                "inventory_stage_projects",
                &STAGE_PROJECT_COLUMNS,
                chunk.projects.iter().map(|p| p.id.as_str()).collect(),
                projects,
            ),
            (
                "inventory_stage_servers",
                &STAGE_SERVER_COLUMNS,
                chunk.servers.iter().map(|s| s.id.as_str()).collect(),
                servers,
            ),
            (
                "inventory_stage_volumes",
                &STAGE_VOLUME_COLUMNS,
                chunk.volumes.iter().map(|v| v.id.as_str()).collect(),
                volumes,
            ),
            (
                "inventory_stage_snapshots",
                &STAGE_SNAPSHOT_COLUMNS,
                chunk.snapshots.iter().map(|s| s.id.as_str()).collect(),
                snapshots,
            ),
        ];
        let mut tx = self.begin_write().await?;
        Self::touch_stage(&mut tx, sync, stage, now).await?;
        for (table, columns, ids, rows) in kinds {
            let inserted = insert_rows_then(&mut tx, table, columns, rows, ON_CONFLICT_SKIP).await?;
            if usize::try_from(inserted).unwrap_or(usize::MAX) < ids.len() {
                tx.rollback().await?;
                return Err(self.repeated_id(stage, number, table, &ids).await?);
            }
        }
        insert_rows(&mut tx, "inventory_stage_enrollments", &STAGE_ENROLLMENT_COLUMNS, pairs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the stage of `sync` as alive, or fails when it was deleted as abandoned.
    async fn touch_stage(
        tx: &mut Transaction<'static, Any>,
        sync: &StagedSync,
        stage: i64,
        now: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        let touched = sqlx::query("UPDATE inventory_stages SET touched_at = $2 WHERE stage = $1")
            .bind(stage)
            .bind(ts(now))
            .execute(&mut **tx)
            .await?;
        if touched.rows_affected() == 0 {
            return Err(abandoned(&sync.header.sync_id));
        }
        Ok(())
    }

    /// The error for chunk `number`, whose ids for `table` include one an earlier chunk staged:
    /// the first such id, by its index in the chunk (the chunk's own rows were rolled back).
    async fn repeated_id(
        &self,
        stage: i64,
        number: usize,
        table: &str,
        ids: &[&str],
    ) -> Result<AuditError, AuditError> {
        let kind = table.trim_start_matches("inventory_stage_");
        let sql = format!("SELECT id FROM {table} WHERE stage = $1 AND id = $2");
        for (index, id) in ids.iter().enumerate() {
            let staged = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(stage)
                .bind((*id).to_owned())
                .fetch_optional(self.pool())
                .await?;
            if staged.is_some() {
                return Ok(AuditError::invalid(
                    format!("chunk {number} {kind}[{index}].id"),
                    format!("{id} sent twice"),
                ));
            }
        }
        Err(AuditError::Corrupt(format!(
            "chunk {number} {kind}: a staged id was refused, yet none is staged"
        )))
    }

    /// Deletes what `sync` staged (a stream that broke off or was refused).
    pub async fn discard_sync(&self, sync: &StagedSync) -> Result<(), AuditError> {
        let Some(stage) = sync.stage else {
            return Ok(());
        };
        let mut tx = self.begin_write().await?;
        Self::claim_stage(&mut tx, stage).await?;
        Self::delete_staged_rows(&mut tx, stage).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the stages untouched for [`ABANDONED_STAGE_HOURS`] (their service stopped
    /// mid-stream) with their rows; the number deleted.
    pub async fn discard_abandoned_syncs(&self, now: DateTime<Utc>) -> Result<usize, AuditError> {
        let cutoff = ts(now - TimeDelta::hours(ABANDONED_STAGE_HOURS));
        let mut tx = self.begin_write().await?;
        // Deleting the stage rows first locks out a stream that would still apply one.
        let stages = sqlx::query("DELETE FROM inventory_stages WHERE touched_at < $1 RETURNING stage")
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
        for row in &stages {
            Self::delete_staged_rows(&mut tx, int(row, "stage")?).await?;
        }
        tx.commit().await?;
        if !stages.is_empty() {
            tracing::info!(stages = stages.len(), "discarded abandoned inventory syncs");
        }
        Ok(stages.len())
    }

    /// Deletes the row of `stage`, which no other stream may then use; false when it was gone.
    async fn claim_stage(tx: &mut Transaction<'static, Any>, stage: i64) -> Result<bool, AuditError> {
        let deleted = sqlx::query("DELETE FROM inventory_stages WHERE stage = $1")
            .bind(stage)
            .execute(&mut **tx)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Deletes the rows staged under `stage`.
    async fn delete_staged_rows(tx: &mut Transaction<'static, Any>, stage: i64) -> Result<(), AuditError> {
        for table in STAGE_TABLES {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE stage = $1")))
                .bind(stage)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Replaces the stored view of the sync's region with what it staged, in one transaction of
    /// set-based statements, and deletes the stage (or returns the earlier result of its sync
    /// id). A sync listed before the stored view is refused. `received`: the counts of the stream.
    pub async fn apply_sync(
        &self,
        sync: &StagedSync,
        received: pb::SyncEnd,
        applied_at: DateTime<Utc>,
    ) -> Result<SyncResult, AuditError> {
        let header = &sync.header;
        let region = header.region.clone();
        let listed_at = ts(header.listed_at);
        let mut tx = self.begin_write().await?;
        if let Some(mut response) = Self::earlier_sync(&mut tx, &header.sync_id).await? {
            // The same sync id may have been applied by another stream while this one was staged.
            if let Some(stage) = sync.stage {
                Self::claim_stage(&mut tx, stage).await?;
                Self::delete_staged_rows(&mut tx, stage).await?;
            }
            tx.commit().await?;
            response.applied = false;
            return Ok(SyncResult { applied: false, response });
        }
        let Some(stage) = sync.stage else {
            return Err(AuditError::Corrupt(format!(
                "sync {} was applied when its stream began, and is gone now",
                header.sync_id
            )));
        };
        if !Self::claim_stage(&mut tx, stage).await? {
            return Err(abandoned(&header.sync_id));
        }
        // Taking the region row first serializes syncs of one region and refuses a stale one.
        let claimed = sqlx::query(
            "INSERT INTO inventory_regions (region, sync_id, listed_at, applied_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (region) DO UPDATE SET sync_id = excluded.sync_id, listed_at = excluded.listed_at, \
             applied_at = excluded.applied_at WHERE inventory_regions.listed_at <= excluded.listed_at",
        )
        .bind(region.clone())
        .bind(header.sync_id.clone())
        .bind(listed_at.clone())
        .bind(ts(applied_at))
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Err(AuditError::FailedPrecondition(format!(
                "header.listed_at {listed_at} is older than the stored view of region {region}: stale sync rejected"
            )));
        }
        let volumes_added = int(
            &sqlx::query(VOLUMES_ADDED_SQL).bind(stage).bind(region.clone()).fetch_one(&mut *tx).await?,
            "n",
        )?;
        let snapshots_disappeared = int(
            &sqlx::query(SNAPSHOTS_GONE_SQL).bind(stage).bind(region.clone()).fetch_one(&mut *tx).await?,
            "n",
        )?;
        // Rust's string order (bytes): SQLite's default; PostgreSQL's only under the C collation.
        let by_id = match self.database.backend() {
            Backend::Sqlite => "v.id",
            Backend::Postgres => "v.id COLLATE \"C\"",
        };
        let volumes_disappeared = sqlx::query(AssertSqlSafe(format!("{DISAPPEARED_SQL} ORDER BY {by_id}")))
            .bind(stage)
            .bind(region.clone())
            .bind(listed_at.clone())
            .bind(header.sync_id.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for table in REPLACED_TABLES {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE region = $1")))
                .bind(region.clone())
                .execute(&mut *tx)
                .await?;
        }
        for sql in GONE_SQL {
            sqlx::query(sql).bind(stage).bind(region.clone()).execute(&mut *tx).await?;
        }
        for sql in STAGED_INTO_VIEW_SQL {
            sqlx::query(sql)
                .bind(stage)
                .bind(region.clone())
                .bind(listed_at.clone())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(ENROLLMENTS_SQL)
            .bind(stage)
            .bind(region.clone())
            .bind(listed_at.clone())
            .bind(compliance::CREATED_BY_SNAPKEEPER)
            .bind(compliance::CREATED_BY_SEED)
            .execute(&mut *tx)
            .await?;
        Self::delete_staged_rows(&mut tx, stage).await?;
        let response = pb::SyncInventoryResponse {
            sync_id: header.sync_id.clone(),
            applied: true,
            applied_at: Some(timestamp(applied_at)),
            received: Some(received),
            volumes_added,
            volumes_disappeared: i64::try_from(volumes_disappeared).unwrap_or(i64::MAX),
            snapshots_disappeared,
            disappeared_volumes: Self::disappeared_volumes(&mut tx, &header.sync_id).await?,
        };
        let sync_row = vec![vec![
            header.sync_id.clone().into(),
            region.into(),
            listed_at.into(),
            ts(applied_at).into(),
            header.run_id.clone().into(),
            header.source.clone().into(),
            received.domain_count.into(),
            received.project_count.into(),
            received.server_count.into(),
            received.volume_count.into(),
            received.snapshot_count.into(),
            response.volumes_added.into(),
            response.volumes_disappeared.into(),
            response.snapshots_disappeared.into(),
        ]];
        insert_rows(
            &mut tx,
            "inventory_syncs",
            &[
                "sync_id",
                "region",
                "listed_at",
                "applied_at",
                "run_id",
                "source",
                "domain_count",
                "project_count",
                "server_count",
                "volume_count",
                "snapshot_count",
                "volumes_added",
                "volumes_disappeared",
                "snapshots_disappeared",
            ],
            sync_row,
        )
        .await?;
        tx.commit().await?;
        Ok(SyncResult { applied: true, response })
    }

    /// A text naming the applied view of every region (changes with every applied sync), and the
    /// newest listed_at; `None` before the first sync.
    pub async fn inventory_version(&self) -> Result<Option<(String, DateTime<Utc>)>, AuditError> {
        let rows = sqlx::query("SELECT region, sync_id, listed_at FROM inventory_regions ORDER BY region")
            .fetch_all(self.pool())
            .await?;
        let mut marker = String::new();
        let mut newest: Option<DateTime<Utc>> = None;
        for row in &rows {
            let _ = write!(marker, "{}={};", text(row, "region")?, text(row, "sync_id")?);
            newest = newest.max(Some(time(row, "listed_at")?));
        }
        Ok(newest.map(|t| (marker, t)))
    }

    /// How many pairs [`Self::enrolled_pairs`] lists right now.
    pub async fn enrolled_pair_count(&self) -> Result<usize, AuditError> {
        let row = sqlx::query(ENROLLED_PAIRS_COUNT_SQL).fetch_one(self.pool()).await?;
        Ok(usize::try_from(int(&row, "n")?).unwrap_or_default())
    }

    /// Every enrolled pair with its volume, project, domain and server names and its snapshot
    /// statistics, the pairs of one volume together. A stream, so that a large view is never
    /// held as rows beside what the caller builds from them.
    pub fn enrolled_pairs(&self) -> BoxStream<'_, Result<PairRow, AuditError>> {
        sqlx::query(ENROLLED_PAIRS_SQL)
            .bind(compliance::CREATED_BY_SNAPKEEPER)
            .bind(compliance::CREATED_BY_SEED)
            .fetch(self.pool())
            .map(|row| pair_row(&row?))
            .boxed()
    }

    /// Attempts since `since` of the (volume, policy) pairs that had a quota block since then,
    /// in append order, each with its volume id and policy name: the only attempts that can make
    /// a pair quota-blocked. A stream, so the caller keeps only the attempts it needs.
    pub fn attempts_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxStream<'_, Result<(String, String, Attempt), AuditError>> {
        sqlx::query(ATTEMPTS_SQL).bind(ts(since)).fetch(self.pool()).map(|row| attempt_row(&row?)).boxed()
    }

    /// Manual snapshots (not ours) of the projects in `projects` (all when `None`) created since
    /// `since`, newest first: at most `limit`, and how many there are.
    pub async fn manual_snapshots(
        &self,
        projects: Option<&HashSet<String>>,
        region: Option<&String>,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<pb::ManualSnapshot>, usize), AuditError> {
        let mut w = Where::default();
        w.push(
            "s.created_by NOT IN (?, ?)",
            vec![compliance::CREATED_BY_SNAPKEEPER.into(), compliance::CREATED_BY_SEED.into()],
        );
        w.push("s.created_at >= ?", vec![ts(since).into()]);
        w.push("s.status IN ('available', 'in-use')", vec![]);
        w.text("s.region = ?", region);
        let sql = format!(
            "SELECT s.id, s.name, s.volume_id, s.original_project_id AS project_id, s.size_gb, s.status, s.created_at, \
             v.name AS volume_name, p.name AS project_name, p.domain_id, d.name AS domain_name \
             FROM inventory_snapshots s \
             LEFT JOIN inventory_volumes v ON v.region = s.region AND v.id = s.volume_id \
             LEFT JOIN inventory_projects p ON p.region = s.region AND p.id = s.original_project_id \
             LEFT JOIN inventory_domains d ON d.region = p.region AND d.id = p.domain_id{} \
             ORDER BY s.created_at DESC, s.id",
            w.sql()
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), w.values).fetch_all(self.pool()).await?;
        let mut total = 0;
        let mut out = Vec::new();
        for row in &rows {
            let project_id = text(row, "project_id")?;
            if projects.is_some_and(|set| !set.contains(&project_id)) {
                continue;
            }
            total += 1;
            if out.len() < limit {
                out.push(pb::ManualSnapshot {
                    snapshot_id: text(row, "id")?,
                    snapshot_name: text(row, "name")?,
                    volume_id: text(row, "volume_id")?,
                    volume_name: text(row, "volume_name")?,
                    project_id,
                    project_name: text(row, "project_name")?,
                    tenant_id: text(row, "domain_id")?,
                    tenant_name: text(row, "domain_name")?,
                    size_gb: int(row, "size_gb")?,
                    status: text(row, "status")?,
                    created_at: Some(timestamp(time(row, "created_at")?)),
                });
            }
        }
        Ok((out, total))
    }

    /// Orphans of the latest inventory: our snapshots whose volume is gone, or whose policy no
    /// enrolled volume has. Filters: project, domain, region, reason (stored name).
    pub async fn orphans(
        &self,
        project_id: Option<&String>,
        domain_id: Option<&String>,
        region: Option<&String>,
        reason: Option<&String>,
    ) -> Result<Vec<pb::Orphan>, AuditError> {
        let mut w = Where::default();
        w.text("o.project_id = ?", project_id);
        w.text("o.domain_id = ?", domain_id);
        w.text("o.region = ?", region);
        w.text("o.reason = ?", reason);
        let sql = format!(
            "SELECT * FROM (SELECT s.region, s.id, s.name, s.project_id AS snapshot_project_id, s.volume_id, \
             s.original_project_id AS project_id, s.policy_name, s.size_gb, s.status, s.created_at, s.created_by, \
             s.held, p.name AS project_name, COALESCE(p.domain_id, '') AS domain_id, d.name AS domain_name, \
             (SELECT g.volume_name FROM inventory_disappeared_volumes g WHERE g.region = s.region AND g.volume_id = s.volume_id ORDER BY g.seq DESC LIMIT 1) AS gone_name, \
             (SELECT g.last_seen_at FROM inventory_disappeared_volumes g WHERE g.region = s.region AND g.volume_id = s.volume_id ORDER BY g.seq DESC LIMIT 1) AS gone_seen, \
             v.name AS volume_name, \
             CASE WHEN v.id IS NULL THEN 'volume_gone' ELSE 'policy_unused' END AS reason \
             FROM inventory_snapshots s \
             LEFT JOIN inventory_volumes v ON v.region = s.region AND v.id = s.volume_id \
             LEFT JOIN inventory_projects p ON p.region = s.region AND p.id = s.original_project_id \
             LEFT JOIN inventory_domains d ON d.region = p.region AND d.id = p.domain_id \
             WHERE s.created_by IN ('{}', '{}') AND (v.id IS NULL OR NOT EXISTS \
             (SELECT 1 FROM inventory_enrollments e WHERE e.policy_name = s.policy_name))) o{} \
             ORDER BY o.created_at, o.id",
            compliance::CREATED_BY_SNAPKEEPER,
            compliance::CREATED_BY_SEED,
            w.sql()
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), w.values).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let gone = text(row, "reason")? == "volume_gone";
                let volume_name = if gone { text(row, "gone_name")? } else { text(row, "volume_name")? };
                Ok(pb::Orphan {
                    reason: if gone { pb::OrphanReason::VolumeGone } else { pb::OrphanReason::PolicyUnused }
                        .into(),
                    snapshot_id: text(row, "id")?,
                    snapshot_name: text(row, "name")?,
                    snapshot_project_id: text(row, "snapshot_project_id")?,
                    volume_id: text(row, "volume_id")?,
                    volume_name,
                    project_id: text(row, "project_id")?,
                    project_name: text(row, "project_name")?,
                    domain_id: text(row, "domain_id")?,
                    domain_name: text(row, "domain_name")?,
                    policy_name: text(row, "policy_name")?,
                    size_gb: int(row, "size_gb")?,
                    status: text(row, "status")?,
                    created_at: Some(timestamp(time(row, "created_at")?)),
                    created_by: text(row, "created_by")?,
                    held: int(row, "held")? != 0,
                    volume_last_seen_at: if gone { opt_time(row, "gone_seen")?.map(timestamp) } else { None },
                    region: text(row, "region")?,
                })
            })
            .collect()
    }

    /// Appends one roll-up (all rows share `recorded_at`).
    pub async fn append_rollup(&self, rows: &[RollupRow]) -> Result<(), AuditError> {
        let mut tx = self.begin_audit_write().await?;
        let values = rows
            .iter()
            .map(|r| {
                vec![
                    r.day.clone().into(),
                    ts(r.recorded_at).into(),
                    r.domain_id.clone().into(),
                    r.domain_name.clone().into(),
                    r.project_id.clone().into(),
                    r.project_name.clone().into(),
                    r.policy_name.clone().into(),
                    i64::from(r.summary.compliant).into(),
                    i64::from(r.summary.missing).into(),
                    i64::from(r.summary.pending).into(),
                    i64::from(r.summary.quota_blocked).into(),
                    i64::from(r.summary.excluded).into(),
                ]
            })
            .collect();
        insert_rows(
            &mut tx,
            "compliance_daily",
            &[
                "day",
                "recorded_at",
                "domain_id",
                "domain_name",
                "project_id",
                "project_name",
                "policy_name",
                "compliant",
                "missing",
                "pending",
                "quota_blocked",
                "excluded",
            ],
            values,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a roll-up was recorded on `day`.
    pub async fn has_rollup(&self, day: &str) -> Result<bool, AuditError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM compliance_daily WHERE day = $1")
            .bind(day.to_owned())
            .fetch_one(self.pool())
            .await?;
        Ok(int(&row, "n")? > 0)
    }

    /// The rows of the latest roll-up of each day since `first_day`, filtered.
    pub async fn rollups_since(
        &self,
        first_day: &str,
        domain_id: Option<&String>,
        project_id: Option<&String>,
        policy: Option<&String>,
    ) -> Result<Vec<RollupRow>, AuditError> {
        let mut w = Where::default();
        w.push("c.day >= ?", vec![first_day.into()]);
        w.push(
            "c.recorded_at = (SELECT MAX(m.recorded_at) FROM compliance_daily m WHERE m.day = c.day)",
            vec![],
        );
        w.text("c.domain_id = ?", domain_id);
        w.text("c.project_id = ?", project_id);
        w.text("c.policy_name = ?", policy);
        let sql = format!("SELECT * FROM compliance_daily c{} ORDER BY c.day, c.seq", w.sql());
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), w.values).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let n = |column: &str| int(row, column).map(|v| u32::try_from(v).unwrap_or(u32::MAX));
                Ok(RollupRow {
                    day: text(row, "day")?,
                    recorded_at: time(row, "recorded_at")?,
                    domain_id: text(row, "domain_id")?,
                    domain_name: text(row, "domain_name")?,
                    project_id: text(row, "project_id")?,
                    project_name: text(row, "project_name")?,
                    policy_name: text(row, "policy_name")?,
                    summary: compliance::Summary {
                        compliant: n("compliant")?,
                        missing: n("missing")?,
                        pending: n("pending")?,
                        quota_blocked: n("quota_blocked")?,
                        excluded: n("excluded")?,
                    },
                })
            })
            .collect()
    }
}

/// One row of [`ENROLLED_PAIRS_SQL`].
fn pair_row(row: &AnyRow) -> Result<PairRow, AuditError> {
    Ok(PairRow {
        region: text(row, "region")?,
        volume_id: text(row, "volume_id")?,
        policy_name: text(row, "policy_name")?,
        retention_count: int(row, "retention_count")?,
        enrolled_at: opt_time(row, "enrolled_at")?,
        volume_name: text(row, "volume_name")?,
        volume_type: text(row, "volume_type")?,
        project_id: text(row, "project_id")?,
        project_name: text(row, "project_name")?,
        domain_id: text(row, "domain_id")?,
        domain_name: text(row, "domain_name")?,
        vm_id: text(row, "vm_id")?,
        vm_name: text(row, "vm_name")?,
        stats: SnapshotStats {
            available: u32::try_from(int(row, "available")?).unwrap_or(u32::MAX),
            last_any: opt_time(row, "last_any")?,
            last_good: opt_time(row, "last_good")?,
            good_for: opt_time(row, "good_for")?,
            error_for: opt_time(row, "error_for")?,
            unsettled_for: opt_time(row, "unsettled_for")?,
        },
    })
}

/// One row of [`ATTEMPTS_SQL`]: volume id, policy name and the attempt.
fn attempt_row(row: &AnyRow) -> Result<(String, String, Attempt), AuditError> {
    let outcome = match kind_of(&text(row, "kind")?) {
        EventKind::SnapshotCreated => Outcome::Created,
        EventKind::SnapshotFailed => Outcome::Failed,
        EventKind::SnapshotSkipped => Outcome::Skipped,
        _ => Outcome::QuotaBlocked { detail: quota_detail(row)? },
    };
    let attempt = Attempt { occurred_at: time(row, "occurred_at")?, slot: opt_time(row, "slot")?, outcome };
    Ok((text(row, "volume_id")?, text(row, "policy_name")?, attempt))
}

/// The seed-style detail of a quota block, e.g. "gigabytes quota 980/1000 GiB, needs 40 GiB".
fn quota_detail(row: &AnyRow) -> Result<String, AuditError> {
    let reason = text(row, "block_reason")?;
    Ok(if reason.contains("snapshots") {
        format!(
            "snapshot count quota {}/{}",
            int(row, "snapshot_quota_used")?,
            int(row, "snapshot_quota_limit")?
        )
    } else if reason == "cinder_over_limit" {
        "cinder refused the create: over limit (413)".to_owned()
    } else {
        format!(
            "gigabytes quota {}/{} GiB, needs {} GiB",
            int(row, "quota_used_gb")?,
            int(row, "quota_limit_gb")?,
            int(row, "quota_needed_gb")?
        )
    })
}
