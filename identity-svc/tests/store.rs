#![allow(clippy::unwrap_used)]
//! The `role_grants` table on both backends: SQLite always, PostgreSQL when the test server is
//! reachable (required in CI).

use chrono::{DateTime, Duration, Utc};
use identity_svc::store::{Grant, GrantSelector, GrantStore};
use identity_svc::{MIGRATIONS, SCHEMA};
use service_kit::db::Database;
use service_kit::testing::TestPostgres;

fn grant(project: &str, run: Option<&str>, at: DateTime<Utc>) -> Grant {
    Grant {
        project_id: project.into(),
        user_id: "svc-user".into(),
        role_id: "role-member".into(),
        role_name: "member".into(),
        run_id: run.map(Into::into),
        granted_at: at,
    }
}

async fn grants_are_recorded_listed_and_revoked(database: Database) {
    database.migrate(MIGRATIONS).await.unwrap();
    let store = GrantStore::new(database);
    let t0 = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123456Z").unwrap().to_utc();
    let a = grant("project-a", Some("run-1"), t0);
    let b = grant("project-b", Some("run-2"), t0 + Duration::seconds(1));
    let c = grant("project-c", None, t0 + Duration::seconds(2));
    let refused = grant("project-d", Some("run-1"), t0 + Duration::seconds(3));
    for g in [&a, &b, &c, &refused] {
        store.record(g).await.unwrap();
    }
    store.forget(&refused).await.unwrap();
    assert_eq!(store.outstanding().await.unwrap(), 3);
    assert_eq!(store.open_grants(&GrantSelector::Run("run-1".into())).await.unwrap(), vec![a.clone()]);
    assert_eq!(store.open_grants(&GrantSelector::All).await.unwrap(), vec![a.clone(), b.clone(), c.clone()]);
    store.mark_revoked(&a, t0 + Duration::minutes(5)).await.unwrap();
    assert!(store.open_grants(&GrantSelector::Run("run-1".into())).await.unwrap().is_empty());
    assert_eq!(store.outstanding().await.unwrap(), 2);
    // The same role granted again later is a new record.
    let again = grant("project-a", Some("run-3"), t0 + Duration::minutes(10));
    store.record(&again).await.unwrap();
    assert_eq!(store.open_grants(&GrantSelector::All).await.unwrap(), vec![b, c, again]);
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("identity.db").display());
    grants_are_recorded_listed_and_revoked(Database::connect(&url, SCHEMA, 2).await.unwrap()).await;
}

#[tokio::test]
async fn on_postgres() {
    let Some(postgres) = TestPostgres::create().await else {
        return;
    };
    let database = Database::connect(postgres.url(), SCHEMA, 2).await.unwrap();
    grants_are_recorded_listed_and_revoked(database.clone()).await;
    database.close().await;
    postgres.drop_database().await;
}
