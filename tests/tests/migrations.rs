//! Every service's migrations apply on SQLite and on a fresh PostgreSQL database, twice, and the
//! invariants the design puts in the database hold there.
#![allow(clippy::unwrap_used)]

use service_kit::db::{Database, Migrations};
use service_kit::testing::TestPostgres;

const SERVICES: [(&str, Migrations); 4] = [
    (policy_svc::SCHEMA, policy_svc::MIGRATIONS),
    (identity_svc::SCHEMA, identity_svc::MIGRATIONS),
    (snapshot_svc::SCHEMA, snapshot_svc::MIGRATIONS),
    (audit_svc::SCHEMA, audit_svc::MIGRATIONS),
];

const NOW: &str = "2026-11-25T10:00:00.000000Z";

async fn open_all_sqlite(dir: &std::path::Path) -> Vec<Database> {
    let mut databases = Vec::new();
    for (schema, migrations) in SERVICES {
        let url = format!("sqlite://{}/{schema}.db?mode=rwc", dir.display());
        let database = Database::connect(&url, schema, 2).await.unwrap();
        database.migrate(migrations).await.unwrap();
        database.migrate(migrations).await.unwrap();
        databases.push(database);
    }
    databases
}

async fn open_all_postgres(url: &str) -> Vec<Database> {
    let mut databases = Vec::new();
    for (schema, migrations) in SERVICES {
        let database = Database::connect(url, schema, 2).await.unwrap();
        database.migrate(migrations).await.unwrap();
        database.migrate(migrations).await.unwrap();
        databases.push(database);
    }
    databases
}

/// The invariants each schema promises, exercised with real inserts.
async fn check_invariants(databases: &[Database]) {
    let [policy, _identity, snapshot, audit] = databases else { panic!("four databases") };

    let insert_set = "INSERT INTO snapshot_policy_sets (name, is_global, policies, retention_map, created_at, updated_at) \
                      VALUES ($1, TRUE, '[\"daily_5\"]', '{\"daily_5\":5}', $2, $2)";
    sqlx::query(insert_set).bind("prod").bind(NOW).execute(policy.pool()).await.unwrap();
    let duplicate = sqlx::query(insert_set).bind("prod").bind(NOW).execute(policy.pool()).await;
    assert!(duplicate.is_err(), "two global policy sets with one name must be refused");

    let insert_run = "INSERT INTO snapshot_runs (id, kind, status, triggered_by, created_at) VALUES ($1, 'manual', 'running', 'admin', $2)";
    sqlx::query(insert_run).bind("run-1").bind(NOW).execute(snapshot.pool()).await.unwrap();
    let second = sqlx::query(insert_run).bind("run-2").bind(NOW).execute(snapshot.pool()).await;
    assert!(second.is_err(), "a second active manual run must be refused by the database");
    sqlx::query("UPDATE snapshot_runs SET status = 'completed' WHERE id = 'run-1'")
        .execute(snapshot.pool())
        .await
        .unwrap();
    sqlx::query(insert_run).bind("run-3").bind(NOW).execute(snapshot.pool()).await.unwrap();

    // Every column the audit schema requires; the event id is what must stay unique.
    let insert_record = "INSERT INTO snapshot_records (event_id, kind, occurred_at, recorded_at, run_id, actor, region, volume_id, volume_name, project_id, project_name, domain_id, domain_name, vm_id, vm_name, policy_name, snapshot_id, snapshot_name, snapshot_project_id, scope_mode, cinder_request_id, error_message, skip_reason, dry_run_action, role_name, detail, dry_run, size_gb, retention_count, recovered) VALUES ($1, 'snapshot_created', $2, $2, 'run-1', 'scheduler', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', 0, 0, 0, 0)";
    sqlx::query(insert_record).bind("evt-1").bind(NOW).execute(audit.pool()).await.unwrap();
    let repeat = sqlx::query(insert_record).bind("evt-1").bind(NOW).execute(audit.pool()).await;
    assert!(repeat.is_err(), "an event id is stored once");
}

#[tokio::test]
async fn every_schema_migrates_on_sqlite_and_keeps_its_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let databases = open_all_sqlite(dir.path()).await;
    check_invariants(&databases).await;
}

#[tokio::test]
async fn every_schema_migrates_on_a_fresh_postgres_database_and_keeps_its_invariants() {
    let Some(pg) = TestPostgres::create().await else { return };
    let databases = open_all_postgres(pg.url()).await;
    check_invariants(&databases).await;
    for database in &databases {
        database.close().await;
    }
    pg.drop_database().await;
}
