//! The store on SQLite (temp file) and on a fresh PostgreSQL database: rule set versions with one
//! active, catalog entries, and the unique constraints the database enforces.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use policy_svc::catalog::{Policy, PolicySource, Retention};
use policy_svc::schedule::Schedule;
use policy_svc::store::{
    AssignmentRecord, ExclusionFilter, ExclusionRecord, ExclusionSelector, NewRuleSet, PolicySetFilter,
    PolicySetRecord, RuleSetSource, Store,
};
use policy_svc::{PolicyError, rules};
use service_kit::db::Database;
use service_kit::testing::TestPostgres;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

fn new_rule_set<'a>(document: &'a str, checksum: &'a str, expected: Option<i64>) -> NewRuleSet<'a> {
    NewRuleSet {
        document,
        checksum,
        source: RuleSetSource::Api,
        created_by: "alice",
        comment: "test",
        rule_count: 1,
        policy_count: 0,
        expected_version: expected,
        now: now(),
    }
}

async fn exercise(store: &Store) {
    // Rule sets: versions count up, one is active, identical documents create nothing.
    assert_eq!(store.active_version().await.unwrap(), 0);
    let a = r#"[{"name": "a"}]"#;
    let b = r#"[{"name": "b"}]"#;
    let (sum_a, sum_b) = (rules::checksum(a), rules::checksum(b));
    let (v1, created) = store.store_rule_set(&new_rule_set(a, &sum_a, Some(0))).await.unwrap();
    assert!(created && v1.version == 1 && v1.active);
    let (same, created) = store.store_rule_set(&new_rule_set(a, &sum_a, None)).await.unwrap();
    assert!(!created && same.version == 1);
    let stale = store.store_rule_set(&new_rule_set(b, &sum_b, Some(0))).await.unwrap_err();
    assert!(matches!(stale, PolicyError::FailedPrecondition(_)));
    let (v2, _) = store.store_rule_set(&new_rule_set(b, &sum_b, Some(1))).await.unwrap();
    assert_eq!(v2.version, 2);
    let (active, document) = store.active_rule_set().await.unwrap().unwrap();
    assert_eq!((active.version, document.as_str()), (2, b));
    let versions = store.list_rule_set_versions(0, 10).await.unwrap();
    assert_eq!(versions.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(), [(2, true), (1, false)]);
    assert_eq!(versions[0].created_at, now());

    // Catalog entries round-trip, interval schedules included.
    let policy = Policy {
        name: "six-hourly".into(),
        description: "every 6h".into(),
        schedule: Schedule::interval(Duration::hours(6), Some(now())).unwrap(),
        retention: Retention { count: 4, max_age: Some(Duration::days(2)) },
        compliance_grace: Duration::minutes(30),
        source: PolicySource::Catalog,
        stamp: None,
    };
    assert!(store.upsert_policy(&policy, "alice", now()).await.unwrap());
    assert!(!store.upsert_policy(&policy, "bob", now()).await.unwrap());
    let stored = store.get_policy("six-hourly").await.unwrap().unwrap();
    assert_eq!(
        (stored.schedule.clone(), stored.retention, stored.compliance_grace),
        (policy.schedule.clone(), policy.retention, policy.compliance_grace)
    );
    assert_eq!(stored.stamp.unwrap().updated_by, "bob");

    // Policy sets: unique per (name, scope), a global and a scoped set may share a name.
    let set = PolicySetRecord {
        name: "gold".into(),
        is_global: true,
        policies: vec!["daily_5".into()],
        retention_map: BTreeMap::from([("daily_5".into(), 5)]),
        ..PolicySetRecord::default()
    };
    let global = store.create_policy_set(&set, "alice", now()).await.unwrap();
    let clash = store.create_policy_set(&set, "alice", now()).await.unwrap_err();
    assert!(matches!(clash, PolicyError::AlreadyExists(_)), "{clash:?}");
    let scoped = PolicySetRecord { is_global: false, tenant_id: "p-1".into(), ..set.clone() };
    store.create_policy_set(&scoped, "alice", now()).await.unwrap();
    let (sets, total) = store
        .list_policy_sets(&PolicySetFilter { is_global: Some(true), ..Default::default() }, 0, 10)
        .await
        .unwrap();
    assert_eq!((sets.len(), total), (1, 1));

    // Assignments: one per volume; a set in use cannot be deleted.
    let assignment = AssignmentRecord {
        volume_id: "vol-1".into(),
        project_id: "p-1".into(),
        policy_set_id: Some(global.id),
        auto_snapshot: true,
        policies: vec!["daily_5".into()],
        assignment_source: "manual".into(),
        ..AssignmentRecord::default()
    };
    store.create_assignment(&assignment, "alice", now()).await.unwrap();
    let clash = store.create_assignment(&assignment, "alice", now()).await.unwrap_err();
    assert!(matches!(clash, PolicyError::AlreadyExists(_)), "{clash:?}");
    let in_use = store.delete_policy_set(global.id).await.unwrap_err();
    assert!(matches!(in_use, PolicyError::FailedPrecondition(_)));
    assert_eq!(store.policy_referrers("daily_5", 3).await.unwrap().len(), 3);

    // Exclusions: one per volume and one per project; expiry hides them from the default list.
    let volume = ExclusionRecord {
        volume_id: "vol-1".into(),
        project_id: "p-1".into(),
        exclusion_source: "manual".into(),
        expires_at: Some(now() + Duration::hours(1)),
        ..ExclusionRecord::default()
    };
    let project = ExclusionRecord { volume_id: String::new(), expires_at: None, ..volume.clone() };
    let created = store.create_exclusion(&volume, "alice", now()).await.unwrap();
    store.create_exclusion(&project, "alice", now()).await.unwrap();
    for twice in [&volume, &project] {
        let clash = store.create_exclusion(twice, "alice", now()).await.unwrap_err();
        assert!(matches!(clash, PolicyError::AlreadyExists(_)), "{clash:?}");
    }
    let later = now() + Duration::hours(2);
    let (active, _) = store.list_exclusions(&ExclusionFilter::default(), later, 0, 10).await.unwrap();
    assert_eq!(active.len(), 1);
    let all = ExclusionFilter { include_expired: true, ..Default::default() };
    assert_eq!(store.list_exclusions(&all, later, 0, 10).await.unwrap().1, 2);
    assert_eq!(store.exclusions_for("vol-1", "p-1").await.unwrap().len(), 2);
    let found = store.find_exclusion(&ExclusionSelector::Volume("vol-1".into())).await.unwrap().unwrap();
    assert_eq!(found.id, created.id);
    assert_eq!(found.expires_at, volume.expires_at);
    store.delete_exclusion(found.id).await.unwrap();
    assert!(matches!(store.delete_exclusion(found.id).await.unwrap_err(), PolicyError::NotFound(_)));
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/policy.db?mode=rwc", dir.path().display());
    let database = Database::connect(&url, policy_svc::SCHEMA, 4).await.unwrap();
    database.migrate(policy_svc::MIGRATIONS).await.unwrap();
    exercise(&Store::new(database)).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let Some(pg) = TestPostgres::create().await else { return };
    let database = Database::connect(pg.url(), policy_svc::SCHEMA, 4).await.unwrap();
    database.migrate(policy_svc::MIGRATIONS).await.unwrap();
    exercise(&Store::new(database.clone())).await;
    database.close().await;
    pg.drop_database().await;
}
