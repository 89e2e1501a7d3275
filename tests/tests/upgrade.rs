//! Upgrading from the previous release: each service's database as release `27989a7` left it
//! (a dump in `tests/fixtures/upgrade/27989a7/`, made by `dump.sh` from that commit's migrations,
//! with representative rows) takes today's migrations on SQLite and on PostgreSQL, and every row
//! is still there with its values; columns added since then read their defaults.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use service_kit::db::{Backend, Database, Migrations};
use service_kit::testing::TestPostgres;
use sqlx::{AnyConnection, AssertSqlSafe, Connection as _, Executor as _};

/// The last released commit, whose dumps the test starts from.
const RELEASE: &str = "27989a7";

const SERVICES: [(&str, Migrations); 4] = [
    (policy_svc::SCHEMA, policy_svc::MIGRATIONS),
    (identity_svc::SCHEMA, identity_svc::MIGRATIONS),
    (snapshot_svc::SCHEMA, snapshot_svc::MIGRATIONS),
    (audit_svc::SCHEMA, audit_svc::MIGRATIONS),
];

fn dump(schema: &str, backend: Backend) -> String {
    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/upgrade")
        .join(RELEASE)
        .join(format!("{schema}.{dialect}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads a dump through a connection of its own (the PostgreSQL dump resets `search_path`).
async fn restore(url: &str, sql: String) {
    let mut connection = AnyConnection::connect(url).await.unwrap();
    connection.execute(AssertSqlSafe(sql)).await.unwrap();
    connection.close().await.unwrap();
}

async fn tables(database: &Database, schema: &str) -> Vec<String> {
    let query = match database.backend() {
        Backend::Sqlite => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        ),
        Backend::Postgres => sqlx::query_scalar(
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(schema),
    };
    query.fetch_all(database.pool()).await.unwrap()
}

/// Rows per table, the migration ledger excluded.
async fn row_counts(database: &Database, schema: &str) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for table in tables(database, schema).await {
        if table == "_sqlx_migrations" {
            continue;
        }
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(database.pool())
            .await
            .unwrap();
        counts.insert(table, count);
    }
    counts
}

async fn text(database: &Database, query: &'static str) -> String {
    sqlx::query_scalar::<_, String>(query).fetch_one(database.pool()).await.unwrap()
}

/// The representative rows of `tests/fixtures/upgrade/data`, read back field by field.
async fn check_values(schema: &str, database: &Database) {
    match schema {
        "policy" => {
            assert!(
                text(database, "SELECT document FROM rule_sets WHERE is_active").await.contains("daily_5")
            );
            assert_eq!(
                text(database, "SELECT schedule_timezone FROM policies WHERE name = 'daily_5'").await,
                "Europe/Berlin"
            );
            assert_eq!(
                text(database, "SELECT retention_map FROM snapshot_policy_sets WHERE name = 'gold'").await,
                r#"{"daily_5":5,"hourly_24":24}"#
            );
            assert_eq!(
                text(database, "SELECT matched_rules FROM snapshot_assignments WHERE volume_id = 'vol-0001'")
                    .await,
                r#"["prod"]"#
            );
            assert_eq!(
                text(
                    database,
                    "SELECT exclusion_reason FROM snapshot_exclusions WHERE project_id = 'proj-research'"
                )
                .await,
                "handled by its owners"
            );
        }
        "identity" => {
            assert_eq!(
                text(database, "SELECT project_id FROM role_grants WHERE revoked_at IS NULL").await,
                "proj-db"
            );
        }
        "snapshot" => {
            let finished = "SELECT status || ' ' || counters || ' ' || execution_host FROM snapshot_runs WHERE id = '0190b4a2-0000-7000-8000-000000000001'";
            assert_eq!(text(database, finished).await, r#"completed {"created":2} host-a"#);
            assert_eq!(
                text(database, "SELECT snapshot_id FROM run_work_items WHERE volume_id = 'vol-0001'").await,
                "snap-0001"
            );
            // The one-active-manual-run invariant still holds for the run that was active then.
            let second = sqlx::query(
                "INSERT INTO snapshot_runs (id, kind, status, triggered_by, created_at) VALUES ('x', 'manual', 'pending', 'admin', '2026-11-25T10:00:00Z')",
            )
            .execute(database.pool())
            .await;
            assert!(second.is_err(), "the run active before the upgrade still blocks a second manual run");
        }
        "audit" => {
            assert_eq!(
                text(database, "SELECT snapshot_id FROM snapshot_records WHERE kind = 'snapshot_created'")
                    .await,
                "snap-0001"
            );
            assert_eq!(
                text(database, "SELECT block_reason FROM snapshot_quota_blocks WHERE volume_id = 'vol-0003'")
                    .await,
                "snapshots_exceeded"
            );
            assert_eq!(
                text(database, "SELECT metadata FROM inventory_volumes WHERE id = 'vol-0001'").await,
                r#"{"auto_snapshot":"true"}"#
            );
        }
        other => panic!("no checks for schema {other}"),
    }
}

/// Columns added since the release read their defaults on rows from before the upgrade.
async fn check_new_columns(schema: &str, database: &Database) {
    if schema == "snapshot" {
        let empty: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_runs WHERE trace_parent = ''")
            .fetch_one(database.pool())
            .await
            .unwrap();
        assert_eq!(empty, 2, "runs from before the upgrade have no trace parent");
    }
}

async fn upgrade(url_of: impl Fn(&str) -> String, backend: Backend) -> usize {
    let mut rows = 0;
    for (schema, migrations) in SERVICES {
        let url = url_of(schema);
        restore(&url, dump(schema, backend)).await;
        let database = Database::connect(&url, schema, 2).await.unwrap();
        let before = row_counts(&database, schema).await;
        assert!(before.values().sum::<i64>() > 0, "the {schema} dump holds rows");

        database
            .migrate(migrations)
            .await
            .unwrap_or_else(|e| panic!("upgrading {schema} on {backend:?}: {e}"));

        let migrator = match backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(database.pool())
            .await
            .unwrap();
        assert_eq!(applied, migrator.iter().count() as i64, "every migration of {schema} is recorded");
        let after = row_counts(&database, schema).await;
        for (table, count) in &before {
            assert_eq!(after.get(table), Some(count), "{schema}.{table} keeps its rows on {backend:?}");
        }
        check_values(schema, &database).await;
        check_new_columns(schema, &database).await;
        rows += before.values().sum::<i64>() as usize;
        eprintln!(
            "{backend:?} {schema}: {} tables, {} rows kept",
            before.len(),
            before.values().sum::<i64>()
        );
        database.close().await;
    }
    rows
}

#[tokio::test]
async fn the_previous_release_upgrades_on_sqlite_with_every_row_kept() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let rows =
        upgrade(|schema| format!("sqlite://{}/{schema}.db?mode=rwc", dir.path().display()), Backend::Sqlite)
            .await;
    assert!(rows >= 20, "{rows} rows checked");
}

#[tokio::test]
async fn the_previous_release_upgrades_on_postgres_with_every_row_kept() {
    sqlx::any::install_default_drivers();
    let Some(pg) = TestPostgres::create().await else { return };
    let url = pg.url().to_owned();
    let rows = upgrade(|_| url.clone(), Backend::Postgres).await;
    assert!(rows >= 20, "{rows} rows checked");
    pg.drop_database().await;
}
