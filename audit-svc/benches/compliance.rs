//! GetCompliance at cloud scale on PostgreSQL: generates an inventory of N volumes x 3 policies
//! (daily_7, weekly_4, monthly_1st) with their snapshots, sent through SyncInventory, plus a year
//! of records generated inside PostgreSQL (generate_series, loaded before the indexes are built),
//! then times GetCompliance for the whole cloud and for one project over a real gRPC server and
//! prints p50/p95/p99, the data set size and the plans of the queries a judgement runs.
//!
//! Sizes come from the environment: AUDIT_BENCH_VOLUMES (default 2000; the issue's figure is
//! 100000), AUDIT_BENCH_RECORD_DAYS (default 365), AUDIT_BENCH_ITERATIONS (default 50).
//! AUDIT_BENCH_KEEP_DATABASE=1 keeps the generated database (named after the sizes) and reuses it
//! on the next run, so a change can be measured without generating again.
//! Run: `cargo bench -p audit-svc --bench compliance` (SNAPKEEPER_TEST_POSTGRES_URL names the
//! server). Without PostgreSQL it says so and exits.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_svc::directory::{CachedDirectory, Directory, PolicySource};
use audit_svc::grpc::AuditApi;
use audit_svc::report::ComplianceReport;
use audit_svc::store::{self, Store};
use audit_svc::{AuditError, MIGRATIONS, SCHEMA};
use chrono::{DateTime, Duration as Days, Utc};
use futures::future::BoxFuture;
use service_kit::clock::{Clock, ManualClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use service_kit::server::GrpcServer;
use service_kit::testing::TestPostgres;
use snapkeeper_proto::audit::v1 as pb;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use snapkeeper_proto::audit::v1::sync_inventory_request::Message;
use snapkeeper_proto::prost_types::Timestamp;
use snapkeeper_proto::tonic::Request;
use sqlx::{Connection, Executor};

const NOW: &str = "2026-11-25T12:00:00Z";
const VOLUMES_PER_PROJECT: usize = 20;

/// Legacy policy names need no catalog: an empty directory.
#[derive(Debug)]
struct NoCatalog;

impl PolicySource for NoCatalog {
    fn fetch(&self) -> BoxFuture<'_, Result<Directory, AuditError>> {
        Box::pin(async { Ok(Directory::default()) })
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn stamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: 0 }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Starts a new chunk when this one is near the 1000-item bound (a volume adds at most 13 items).
fn flush(chunks: &mut Vec<pb::InventoryChunk>, chunk: &mut pb::InventoryChunk) {
    let size = chunk.domains.len() + chunk.projects.len() + chunk.volumes.len() + chunk.snapshots.len();
    if size >= 980 {
        chunks.push(std::mem::take(chunk));
    }
}

fn inventory(volumes: usize, now: DateTime<Utc>) -> Vec<pb::SyncInventoryRequest> {
    let projects = volumes.div_ceil(VOLUMES_PER_PROJECT);
    let mut chunks = Vec::new();
    let mut chunk = pb::InventoryChunk::default();
    for d in 0..10 {
        chunk.domains.push(pb::InventoryDomain {
            id: format!("d{d}"),
            name: format!("domain-{d}"),
            enabled: true,
        });
    }
    for p in 0..projects {
        chunk.projects.push(pb::InventoryProject {
            id: format!("p{p}"),
            name: format!("project-{p}"),
            domain_id: format!("d{}", p % 10),
            enabled: true,
        });
        flush(&mut chunks, &mut chunk);
    }
    let today = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let mut snapshots = 0usize;
    for v in 0..volumes {
        let mut volume = pb::InventoryVolume {
            id: format!("vol-{v}"),
            name: format!("volume-{v}"),
            project_id: format!("p{}", v / VOLUMES_PER_PROJECT),
            status: "in-use".into(),
            size_gb: 10,
            ..Default::default()
        };
        volume.metadata.insert("auto_snapshot".into(), "true".into());
        volume.metadata.insert("snapshot_policies".into(), "daily_7,weekly_4,monthly_1st".into());
        chunk.volumes.push(volume);
        // Slots of ours: 7 daily (every 20th volume misses today's), 4 Sundays, November 1st.
        let mut slots: Vec<(&str, DateTime<Utc>)> =
            (0..7).filter(|d| *d > 0 || v % 20 != 0).map(|d| ("daily_7", today - Days::days(d))).collect();
        let sunday = "2026-11-22T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        slots.extend((0..4).map(|w| ("weekly_4", sunday - Days::weeks(w))));
        slots.push(("monthly_1st", "2026-11-01T00:00:00Z".parse().unwrap()));
        for (policy, slot) in slots {
            let mut s = pb::InventorySnapshot {
                id: format!("snap-{snapshots}"),
                volume_id: format!("vol-{v}"),
                project_id: format!("p{}", v / VOLUMES_PER_PROJECT),
                status: "available".into(),
                size_gb: 10,
                created_at: Some(stamp(slot + Days::minutes(3))),
                ..Default::default()
            };
            s.metadata.insert("created_by".into(), "snapkeeper".into());
            s.metadata.insert("policy".into(), policy.into());
            s.metadata.insert("slot".into(), slot.to_rfc3339());
            chunk.snapshots.push(s);
            snapshots += 1;
        }
        flush(&mut chunks, &mut chunk);
    }
    let end = pb::SyncEnd {
        domain_count: 10,
        project_count: projects as i64,
        volume_count: volumes as i64,
        snapshot_count: snapshots as i64,
        server_count: 0,
    };
    chunks.push(chunk);
    let header = pb::SyncHeader {
        sync_id: uuid::Uuid::now_v7().to_string(),
        region: "RegionOne".into(),
        listed_at: Some(stamp(now - Days::minutes(30))),
        source: "bench".into(),
        ..Default::default()
    };
    let mut messages = vec![pb::SyncInventoryRequest { message: Some(Message::Header(header)) }];
    messages
        .extend(chunks.into_iter().map(|c| pb::SyncInventoryRequest { message: Some(Message::Chunk(c)) }));
    messages.push(pb::SyncInventoryRequest { message: Some(Message::End(end)) });
    messages
}

/// Secondary indexes and the constraints on `snapshot_records.event_id`, dropped before the load
/// and rebuilt after it: one sorted build is far cheaper than maintaining them row by row.
struct Deferred {
    constraints: Vec<(String, String, String)>,
    indexes: Vec<String>,
}

async fn defer_indexes(connection: &mut sqlx::PgConnection) -> Deferred {
    // Unique constraint first (foreign keys need it when they come back).
    let constraints: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE (confrelid = 'snapshot_records'::regclass AND contype = 'f') \
         OR (conrelid = 'snapshot_records'::regclass AND contype = 'u') ORDER BY contype = 'f'",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'audit' \
         AND tablename = 'snapshot_records' AND indexname NOT IN \
         (SELECT conname FROM pg_constraint WHERE conrelid = 'snapshot_records'::regclass)",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    for (table, name, _) in constraints.iter().rev() {
        connection
            .execute(sqlx::AssertSqlSafe(format!("ALTER TABLE {table} DROP CONSTRAINT {name}")))
            .await
            .unwrap();
    }
    for (name, _) in &indexes {
        connection.execute(sqlx::AssertSqlSafe(format!("DROP INDEX {name}"))).await.unwrap();
    }
    Deferred { constraints, indexes: indexes.into_iter().map(|(_, def)| def).collect() }
}

async fn rebuild_indexes(connection: &mut sqlx::PgConnection, deferred: Deferred) {
    for (table, name, definition) in deferred.constraints {
        connection
            .execute(sqlx::AssertSqlSafe(format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")))
            .await
            .unwrap();
    }
    for definition in deferred.indexes {
        connection.execute(sqlx::AssertSqlSafe(definition)).await.unwrap();
    }
}

/// A year of records generated inside PostgreSQL: one created event per (volume, policy, slot),
/// plus quota blocks for today's daily slot of every 50th volume.
async fn generate_records(url: &str, volumes: usize, days: usize) {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    connection
        .execute(
            "SET search_path TO audit; SET synchronous_commit TO off; SET maintenance_work_mem TO '1GB'; \
             SET max_parallel_maintenance_workers TO 2",
        )
        .await
        .unwrap();
    let deferred = defer_indexes(&mut connection).await;
    let fmt = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;
    let insert = |policy: &str, step: &str| {
        format!(
            "INSERT INTO snapshot_records (event_id, kind, occurred_at, recorded_at, run_id, actor, dry_run, region, \
             volume_id, volume_name, project_id, project_name, domain_id, domain_name, vm_id, vm_name, policy_name, slot, \
             snapshot_id, snapshot_name, snapshot_project_id, size_gb, snapshot_created_at, retention_count, scope_mode, \
             cinder_request_id, error_message, skip_reason, dry_run_action, recovered, role_name, detail) \
             SELECT gen_random_uuid()::text, 'snapshot_created', to_char(d + interval '3 minutes', {fmt}), \
             to_char(d + interval '3 minutes', {fmt}), 'run', 'scheduler', 0, 'RegionOne', 'vol-' || v, 'volume-' || v, \
             'p' || (v / {VOLUMES_PER_PROJECT}), 'project', 'd' || ((v / {VOLUMES_PER_PROJECT}) % 10), 'domain', '', '', \
             '{policy}', to_char(d, {fmt}), 'snap', 'auto', 'p', 10, NULL, 7, 'service_user', 'req', '', '', '', 0, '', '' \
             FROM generate_series(timestamp '2026-11-25 00:00:00' - interval '{days} days', timestamp '2026-11-25 00:00:00', interval '{step}') d, \
             generate_series(0, {last}) v",
            last = volumes - 1,
        )
    };
    for (policy, step) in [("daily_7", "1 day"), ("weekly_4", "7 days"), ("monthly_1st", "1 month")] {
        let started = Instant::now();
        connection.execute(sqlx::AssertSqlSafe(insert(policy, step))).await.unwrap();
        println!("  {policy} records inserted in {:.1} s", started.elapsed().as_secs_f64());
    }
    let quota = format!(
        "INSERT INTO snapshot_records (event_id, kind, occurred_at, recorded_at, run_id, actor, dry_run, region, volume_id, \
         volume_name, project_id, project_name, domain_id, domain_name, vm_id, vm_name, policy_name, slot, snapshot_id, \
         snapshot_name, snapshot_project_id, size_gb, snapshot_created_at, retention_count, scope_mode, cinder_request_id, \
         error_message, skip_reason, dry_run_action, recovered, role_name, detail) \
         SELECT 'q-' || v, 'snapshot_quota_blocked', '2026-11-25T00:05:00.000000Z', '2026-11-25T00:05:00.000000Z', 'run', \
         'scheduler', 0, 'RegionOne', 'vol-' || v, '', 'p' || (v / {VOLUMES_PER_PROJECT}), '', '', '', '', '', 'daily_7', \
         '2026-11-25T00:00:00.000000Z', '', '', '', 10, NULL, 7, '', '', '', '', '', 0, '', '' \
         FROM generate_series(0, {last}, 50) v; \
         INSERT INTO snapshot_quota_blocks (event_id, occurred_at, run_id, region, volume_id, project_id, domain_id, \
         policy_name, block_reason, volume_type, quota_limit_gb, quota_used_gb, quota_needed_gb, snapshot_quota_limit, \
         snapshot_quota_used, snapshot_quota_needed) \
         SELECT 'q-' || v, '2026-11-25T00:05:00.000000Z', 'run', 'RegionOne', 'vol-' || v, 'p' || (v / {VOLUMES_PER_PROJECT}), \
         '', 'daily_7', 'gigabytes_exceeded', '', 1000, 995, 10, -1, 0, 1 FROM generate_series(0, {last}, 50) v",
        last = volumes - 1,
    );
    connection.execute(sqlx::AssertSqlSafe(quota)).await.unwrap();
    let started = Instant::now();
    rebuild_indexes(&mut connection, deferred).await;
    println!("  indexes rebuilt in {:.1} s", started.elapsed().as_secs_f64());
    connection.execute("ANALYZE").await.unwrap();
    connection.close().await.unwrap();
}

/// Row counts and on-disk size of the data set.
async fn describe_data_set(url: &str) {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    connection.execute("SET search_path TO audit").await.unwrap();
    for table in [
        "snapshot_records",
        "snapshot_quota_blocks",
        "inventory_volumes",
        "inventory_enrollments",
        "inventory_snapshots",
    ] {
        let (rows, bytes): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), pg_total_relation_size('{table}') FROM {table}"
        )))
        .fetch_one(&mut connection)
        .await
        .unwrap();
        println!("  {table:<24} {rows:>11} rows  {:>8.1} MiB with indexes", bytes as f64 / 1_048_576.0);
    }
    connection.close().await.unwrap();
}

/// The plans (with actual times) of the queries a judgement runs, and the indexes they use.
async fn explain_queries(url: &str, oldest_slot: &str) {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    connection.execute("SET search_path TO audit").await.unwrap();
    let high_water =
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) - 1000 FROM snapshot_records")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    let literal = |sql: &str, values: &[&str]| {
        values
            .iter()
            .enumerate()
            .rev()
            .fold(sql.to_owned(), |sql, (i, v)| sql.replace(&format!("${}", i + 1), v))
    };
    let queries = [
        ("records high water", literal(store::RECORDS_HIGH_WATER_SQL, &[])),
        (
            "enrolled pairs with their snapshot stats",
            literal(store::ENROLLED_PAIRS_SQL, &["'snapkeeper'", "'p9_auto_snapshots'"]),
        ),
        (
            "attempts since the oldest judged slot",
            literal(store::ATTEMPTS_SQL, &[&format!("'{oldest_slot}'")]),
        ),
        (
            "records since the judgement that can change it",
            literal(store::RELEVANT_SINCE_SQL, &[&high_water.to_string(), &format!("'{oldest_slot}'")]),
        ),
    ];
    for (name, sql) in queries {
        println!("  plan of {name}:");
        let lines: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}")))
                .fetch_all(&mut connection)
                .await
                .unwrap();
        for line in lines {
            println!("    {line}");
        }
    }
    connection.close().await.unwrap();
}

async fn time_calls(
    client: &mut AuditServiceClient<snapkeeper_proto::tonic::transport::Channel>,
    request: &pb::GetComplianceRequest,
    iterations: usize,
) -> (Vec<Duration>, pb::GetComplianceResponse) {
    let mut times = Vec::with_capacity(iterations);
    let mut last = None;
    for _ in 0..iterations {
        let started = Instant::now();
        last = Some(client.get_compliance(request.clone()).await.unwrap().into_inner());
        times.push(started.elapsed());
    }
    times.sort();
    (times, last.unwrap())
}

fn report(name: &str, times: &[Duration], response: &pb::GetComplianceResponse) {
    let s = response.summary.unwrap_or_default();
    let ms = |p: f64| percentile(times, p).as_secs_f64() * 1e3;
    println!(
        "{name:<30} p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  (n={}, rows matching {}, compliant {}, missing {}, quota_blocked {})",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        times.len(),
        response.total_count,
        s.compliant,
        s.noncompliant,
        s.quota_blocked
    );
}

/// The database to use: a fresh one, or with AUDIT_BENCH_KEEP_DATABASE=1 one named after the
/// sizes, kept afterwards. Returns its URL, whether it already holds the data set, and the test
/// database to drop at the end.
async fn database(volumes: usize, days: usize) -> Option<(String, bool, Option<TestPostgres>)> {
    if std::env::var("AUDIT_BENCH_KEEP_DATABASE").is_ok_and(|v| v == "1") {
        let admin_url = service_kit::testing::postgres_admin_url();
        let name = format!("snapkeeper_bench_audit_{volumes}_{days}");
        let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
            println!("compliance bench skipped: no PostgreSQL");
            return None;
        };
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if !exists {
            admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
        }
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => unreachable!("the admin URL names a database"),
        };
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('audit.snapshot_quota_blocks') IS NOT NULL")
                .fetch_one(&mut connection)
                .await
                .unwrap();
        let loaded = migrated
            && sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM audit.snapshot_quota_blocks)")
                .fetch_one(&mut connection)
                .await
                .unwrap();
        return Some((url, loaded, None));
    }
    let pg = TestPostgres::create().await?;
    Some((pg.url().to_owned(), false, Some(pg)))
}

#[tokio::main]
async fn main() {
    // cargo bench passes --bench; cargo test runs bench targets with no such flag: do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let volumes = env("AUDIT_BENCH_VOLUMES", 2000);
    let record_days = env("AUDIT_BENCH_RECORD_DAYS", 365);
    let iterations = env("AUDIT_BENCH_ITERATIONS", 50);
    let Some((url, loaded, pg)) = database(volumes, record_days).await else {
        println!("compliance bench skipped: no PostgreSQL");
        return;
    };
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let database = Database::connect(&url, SCHEMA, 8).await.unwrap();
    database.migrate(MIGRATIONS).await.unwrap();
    let store = Store::open(database).await.unwrap();
    let clock = ManualClock::new(now);
    let directory = CachedDirectory::new(Arc::new(NoCatalog), Duration::from_hours(1));
    let report_engine =
        Arc::new(ComplianceReport::new(store.clone(), directory, Arc::new(clock) as Arc<dyn Clock>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let api = AuditApi::new(store, report_engine);
    let served = api.clone();
    let server = tokio::spawn(async move {
        GrpcServer::new(SecurityArgs::default())
            .add_service(AuditServiceServer::new(served))
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let mut client = AuditServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);

    println!("volumes {volumes} x 3 policies, {record_days} days of records, {iterations} iterations");
    if loaded {
        println!("reusing the data set of the kept database");
    } else {
        let started = Instant::now();
        let messages = inventory(volumes, now);
        let synced = client.sync_inventory(futures::stream::iter(messages)).await.unwrap().into_inner();
        println!(
            "SyncInventory applied {} volumes, {} snapshots in {:.1} s",
            synced.volumes_added,
            synced.received.unwrap().snapshot_count,
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        generate_records(&url, volumes, record_days).await;
        println!("generated records in {:.1} s", started.elapsed().as_secs_f64());
    }
    println!("data set:");
    describe_data_set(&url).await;

    let whole = pb::GetComplianceRequest { include_rollups: true, ..Default::default() };
    let project = pb::GetComplianceRequest {
        project_id: Some("p7".into()),
        include_rollups: true,
        ..Default::default()
    };
    let (cold, response) = time_calls(&mut client, &whole, 1).await;
    report("whole cloud, cold", &cold, &response);
    let (times, response) = time_calls(&mut client, &whole, iterations).await;
    report("whole cloud, warm", &times, &response);
    let (times, response) = time_calls(&mut client, &project, iterations).await;
    report("one project, warm", &times, &response);
    // The handler itself, without the network hop (the gRPC figures include it).
    for (name, request) in [("whole cloud, handler only", &whole), ("one project, handler only", &project)] {
        let mut times = Vec::with_capacity(iterations);
        let mut last = None;
        for _ in 0..iterations {
            let started = Instant::now();
            last = Some(api.get_compliance(Request::new(request.clone())).await.unwrap().into_inner());
            times.push(started.elapsed());
        }
        times.sort();
        report(name, &times, &last.unwrap());
    }
    // An append invalidates the judgement (not the inventory facts): re-judge timings.
    let mut rejudge = Vec::new();
    for n in 0..5u32 {
        let event = pb::Event {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(stamp(now)),
            kind: pb::EventKind::SnapshotDeleted.into(),
            run_id: uuid::Uuid::now_v7().to_string(),
            actor: "bench".into(),
            volume_id: format!("vol-{n}"),
            ..Default::default()
        };
        client.append_events(pb::AppendEventsRequest { events: vec![event] }).await.unwrap();
        let (times, _) = time_calls(&mut client, &project, 1).await;
        rejudge.extend(times);
    }
    rejudge.sort();
    report("one project, after append", &rejudge, &response);
    // A new sync of the same view: the first call after it reloads the inventory facts.
    let messages = inventory(volumes, now);
    let started = Instant::now();
    client.sync_inventory(futures::stream::iter(messages)).await.unwrap();
    println!("SyncInventory again in {:.1} s", started.elapsed().as_secs_f64());
    let (times, response) = time_calls(&mut client, &whole, 1).await;
    report("whole cloud, first after sync", &times, &response);
    println!("queries of a judgement (oldest judged slot 2026-11-01, the monthly policy's):");
    explain_queries(&url, "2026-11-01T00:00:00.000000Z").await;
    let _ = tx.send(());
    let _ = server.await;
    if let Some(pg) = pg {
        pg.drop_database().await;
    }
}
