//! The pool and migrations on both backends, against real SQLite files and a real PostgreSQL.
#![allow(clippy::unwrap_used)]

use service_kit::db::{Backend, Database, Migrations};
use service_kit::testing::TestPostgres;
use sqlx::Row;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations/postgres");
const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

async fn insert_and_count(db: &Database) -> i64 {
    sqlx::query("INSERT INTO probe (note) VALUES ($1)").bind("first").execute(db.pool()).await.unwrap();
    let duplicate =
        sqlx::query("INSERT INTO probe (note) VALUES ($1)").bind("first").execute(db.pool()).await;
    assert!(duplicate.is_err(), "the unique constraint must be enforced by the database");
    sqlx::query("SELECT COUNT(*) AS n FROM probe").fetch_one(db.pool()).await.unwrap().get::<i64, _>("n")
}

#[tokio::test]
async fn sqlite_file_is_created_migrated_and_reopened_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/svc.db?mode=rwc", dir.path().display());
    let db = Database::connect(&url, "svc", 4).await.unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    db.migrate(MIGRATIONS).await.unwrap();
    assert_eq!(insert_and_count(&db).await, 1);
    db.close().await;

    let reopened = Database::connect(&url, "svc", 4).await.unwrap();
    reopened.migrate(MIGRATIONS).await.unwrap();
    let mode: String =
        sqlx::query("PRAGMA journal_mode").fetch_one(reopened.pool()).await.unwrap().get::<String, _>(0);
    assert_eq!(mode, "wal");
    assert!(reopened.ping().await);
}

#[tokio::test]
async fn postgres_database_is_created_migrated_into_its_schema_and_dropped() {
    let Some(pg) = TestPostgres::create().await else { return };
    let db = Database::connect(pg.url(), "probe_svc", 4).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    db.migrate(MIGRATIONS).await.unwrap();
    db.migrate(MIGRATIONS).await.unwrap();
    assert_eq!(insert_and_count(&db).await, 1);
    let schema: String =
        sqlx::query("SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'probe'")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get::<String, _>(0);
    assert_eq!(schema, "probe_svc", "each service keeps its tables in its own schema");
    db.close().await;
    let name = pg.name().to_owned();
    pg.drop_database().await;

    let admin = Database::connect(&service_kit::testing::postgres_admin_url(), "public", 1).await.unwrap();
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(admin.pool())
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(left, 0, "the per-test database must be gone");
}

#[tokio::test]
async fn a_url_that_is_neither_sqlite_nor_postgres_is_refused_by_name() {
    let err = Database::connect("mysql://root@localhost/x", "svc", 1).await.unwrap_err();
    assert!(err.to_string().contains("DATABASE_URL"), "{err}");
}

#[tokio::test]
async fn a_locked_sqlite_database_is_transient_and_a_broken_statement_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/locked.db?mode=rwc", dir.path().display());
    let db = Database::connect(&url, "svc", 2).await.unwrap();
    db.migrate(MIGRATIONS).await.unwrap();
    let mut holder = db.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO probe (note) VALUES ($1)").bind("held").execute(&mut *holder).await.unwrap();
    let mut other = db.pool().acquire().await.unwrap();
    sqlx::query("PRAGMA busy_timeout = 0").execute(&mut *other).await.unwrap();
    let locked =
        sqlx::query("INSERT INTO probe (note) VALUES ($1)").bind("blocked").execute(&mut *other).await;
    let error = locked.expect_err("a second writer must find the database locked");
    assert!(service_kit::db::is_transient(&error), "{error}");
    let broken = sqlx::query("SELECT * FROM no_such_table").execute(&mut *other).await.unwrap_err();
    assert!(!service_kit::db::is_transient(&broken), "{broken}");
    holder.rollback().await.unwrap();
}
