//! The store on SQLite and on a fresh PostgreSQL database: one active run per kind (AlreadyExists
//! naming the run), claim, heartbeat, cancel, interruption freeing the slot, events with sequence
//! numbers, work items, the outbox and the scheduler lease.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use service_kit::db::Database;
use service_kit::testing::TestPostgres;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::snapshot::v1 as pb;
use snapshot_svc::SnapshotError;
use snapshot_svc::run::{RunKind, RunStatus, Scope};
use snapshot_svc::store::{Action, Heartbeat, NewRun, Progress, RunFilter, Store, WorkItem, WorkItemUpdate};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn new_run(kind: RunKind, created_at: DateTime<Utc>) -> NewRun {
    NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        kind,
        dry_run: false,
        triggered_by: "alice".to_owned(),
        scope: Scope { project_ids: vec!["p1".to_owned()], ..Scope::default() },
        batch_size: 20,
        batch_delay: Duration::zero(),
        created_at,
    }
}

async fn exercise(store: Store) {
    let t0 = at("2026-03-01T10:00:00Z");
    let manual = store.create_run(&new_run(RunKind::Manual, t0)).await.unwrap();
    assert_eq!(manual.status, RunStatus::Pending);
    assert_eq!(store.steps(&manual.id).await.unwrap().len(), 4);
    // A second manual run is refused by the database, naming the active one; a scheduled one is not.
    let refused = store.create_run(&new_run(RunKind::Manual, t0)).await.unwrap_err();
    assert!(matches!(&refused, SnapshotError::AlreadyExists(m) if m.contains(&manual.id)), "{refused}");
    let scheduled = store.create_run(&new_run(RunKind::Scheduled, t0)).await.unwrap();

    // Claim is a compare-and-set: only one replica wins.
    assert!(store.claim_run(&manual.id, "host-a", t0).await.unwrap());
    assert!(!store.claim_run(&manual.id, "host-b", t0).await.unwrap());
    let progress = Progress { progress_pct: 12.5, ..Progress::default() };
    assert_eq!(
        store.heartbeat(&manual.id, t0 + Duration::seconds(5), &progress).await.unwrap(),
        Heartbeat::Alive
    );

    // Events get increasing sequence numbers; volume events are only read on request.
    let step = pb::RunStep { label: "Policy Assignment".to_owned(), ..pb::RunStep::default() };
    let event = audit::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        run_id: manual.id.clone(),
        ..audit::Event::default()
    };
    let action = Action {
        audit: vec![event.clone()],
        watch: vec![
            (false, pb::watch_run_response::Event::StepChanged(step)),
            (true, pb::watch_run_response::Event::VolumeProcessed(pb::VolumeProcessed::default())),
        ],
        quota_block: Some(pb::QuotaBlock {
            volume_id: "v1".to_owned(),
            quota_limit_gb: 100,
            ..pb::QuotaBlock::default()
        }),
        ..Action::default()
    };
    store.commit(&manual.id, action, t0).await.unwrap();
    let all = store.events_after(&manual.id, 0, true, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.events_after(&manual.id, 0, false, 100).await.unwrap().len(), 1);

    // Actions committed at once get the next numbers without gaps, and a reader resuming after a
    // number it saw gets exactly the events after it.
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let run_id = manual.id.clone();
            tokio::spawn(async move {
                let processed =
                    pb::watch_run_response::Event::VolumeProcessed(pb::VolumeProcessed::default());
                store
                    .commit(&run_id, Action { watch: vec![(true, processed)], ..Action::default() }, t0)
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(store.event_bounds(&manual.id).await.unwrap(), (10, 1));
    let resumed = store.events_after(&manual.id, 2, true, 100).await.unwrap();
    assert_eq!(resumed.iter().map(|e| e.sequence).collect::<Vec<_>>(), (3..=10).collect::<Vec<i64>>());
    assert!(resumed.iter().all(|e| e.run_id == manual.id));
    assert_eq!(store.quota_blocks(&manual.id, 10).await.unwrap()[0].quota_limit_gb, 100);

    // Work items: written before the create, taken over by a later run, finished with the outbox.
    let item = WorkItem {
        key: "v1/daily_5/2026-03-01T00:00:00Z".to_owned(),
        run_id: manual.id.clone(),
        volume_id: "v1".to_owned(),
        project_id: "p1".to_owned(),
        policy: "daily_5".to_owned(),
        slot: "2026-03-01T00:00:00Z".to_owned(),
        region: "RegionOne".to_owned(),
    };
    store.begin_creates(vec![item.clone()], t0).await.unwrap();
    store.begin_creates(vec![item.clone()], t0).await.unwrap();
    let unfinished = store.unfinished_creates().await.unwrap();
    assert_eq!(
        unfinished.iter().map(|i| (i.key.as_str(), i.run_id.as_str())).collect::<Vec<_>>(),
        [(item.key.as_str(), manual.id.as_str())]
    );
    assert_eq!(
        (unfinished[0].volume_id.as_str(), unfinished[0].slot.as_str()),
        (item.volume_id.as_str(), item.slot.as_str())
    );
    let finish = Action {
        work_item: Some(WorkItemUpdate {
            key: item.key.clone(),
            state: "created",
            snapshot_id: Some("s1".to_owned()),
            error: None,
        }),
        audit: vec![audit::Event { event_id: uuid::Uuid::now_v7().to_string(), ..event.clone() }],
        ..Action::default()
    };
    store.commit(&manual.id, finish, t0).await.unwrap();
    assert!(store.unfinished_creates().await.unwrap().is_empty());

    // Outbox: due entries, deferral, acknowledgement; a repeated event id is stored once.
    store.commit(&manual.id, Action { audit: vec![event.clone()], ..Action::default() }, t0).await.unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 2);
    let due = store.due_outbox(t0, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    let ids: Vec<String> = due.iter().map(|e| e.event_id.clone()).collect();
    store.defer_outbox(&ids, t0 + Duration::minutes(1), "audit-svc down").await.unwrap();
    assert!(store.due_outbox(t0, 10).await.unwrap().is_empty());
    let later = store.due_outbox(t0 + Duration::minutes(2), 10).await.unwrap();
    assert_eq!(later[0].attempts, 1);
    // A relay's claim holds the entries: a second relay finds nothing until the hold ends.
    let t2 = t0 + Duration::minutes(2);
    assert_eq!(store.claim_outbox(t2, Duration::minutes(1), 10).await.unwrap().len(), 2);
    assert!(store.claim_outbox(t2, Duration::minutes(1), 10).await.unwrap().is_empty());
    assert_eq!(
        store.claim_outbox(t2 + Duration::minutes(2), Duration::minutes(1), 1).await.unwrap().len(),
        1
    );
    store.ack_outbox(&ids).await.unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 0);
    // The relay takes the oldest entries first, whatever order they were written in.
    for (minute, id) in [(3, "e-late"), (1, "e-early"), (2, "e-middle")] {
        let event = audit::Event { event_id: id.to_owned(), ..event.clone() };
        let written = t0 + Duration::minutes(minute);
        store.commit(&manual.id, Action { audit: vec![event], ..Action::default() }, written).await.unwrap();
    }
    let claimed = store.claim_outbox(t0 + Duration::minutes(5), Duration::minutes(1), 10).await.unwrap();
    let claimed: Vec<String> = claimed.into_iter().map(|e| e.event_id).collect();
    assert_eq!(claimed, ["e-early", "e-middle", "e-late"]);
    store.ack_outbox(&claimed).await.unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 0);

    // Cancel: recorded once; a pending run stops at once.
    let cancelled = store.request_cancel(&scheduled.id, "bob", "maintenance", t0).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(cancelled.error_summary.contains("maintenance"));
    assert!(matches!(
        store.request_cancel(&scheduled.id, "bob", "", t0).await.unwrap_err(),
        SnapshotError::FailedPrecondition(_)
    ));
    let stopping = store.request_cancel(&manual.id, "bob", "", t0).await.unwrap();
    assert_eq!(stopping.status, RunStatus::Running);
    assert_eq!(store.heartbeat(&manual.id, t0, &progress).await.unwrap(), Heartbeat::CancelRequested);

    // A run whose heartbeat stopped becomes interrupted and frees the manual slot.
    let stale = store.interrupt_stale(t0 + Duration::minutes(10), Duration::minutes(2)).await.unwrap();
    assert_eq!(stale, std::slice::from_ref(&manual.id));
    let interrupted = store.run(&manual.id).await.unwrap().unwrap();
    assert_eq!(interrupted.status, RunStatus::Interrupted);
    assert_eq!(store.heartbeat(&manual.id, t0, &progress).await.unwrap(), Heartbeat::Lost);
    assert!(!store.finish_run(&manual.id, RunStatus::Completed, t0, "", &progress).await.unwrap());
    let next = store.create_run(&new_run(RunKind::Manual, t0 + Duration::minutes(11))).await.unwrap();
    assert!(store.claim_run(&next.id, "host-b", t0).await.unwrap());
    assert!(
        store
            .finish_run(&next.id, RunStatus::Completed, t0 + Duration::minutes(12), "", &progress)
            .await
            .unwrap()
    );

    // Listing: newest first, filters, total.
    let (runs, total) = store.list_runs(&RunFilter::default(), 0, 2).await.unwrap();
    assert_eq!((runs.len(), total), (2, 3));
    assert_eq!(runs[0].id, next.id);
    let only = RunFilter {
        statuses: vec![RunStatus::Interrupted],
        kind: Some(RunKind::Manual),
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&only, 0, 10).await.unwrap().1, 1);
    assert!(store.active_run(None).await.unwrap().is_none());
    assert_eq!(store.latest_finished(Some(RunKind::Manual)).await.unwrap().unwrap().id, next.id);

    // Lease: one holder until it expires.
    assert!(store.acquire_lease("scheduler", "host-a", t0, Duration::seconds(30)).await.unwrap());
    assert!(
        !store
            .acquire_lease("scheduler", "host-b", t0 + Duration::seconds(10), Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(
        store
            .acquire_lease("scheduler", "host-a", t0 + Duration::seconds(10), Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(
        store
            .acquire_lease("scheduler", "host-b", t0 + Duration::seconds(50), Duration::seconds(30))
            .await
            .unwrap()
    );
    store.record_tick("scheduler", t0).await.unwrap();
    let lease = store.lease("scheduler").await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.last_tick_at), ("host-b", Some(t0)));

    // Pruning a finished run keeps its newest volume events and every run-level one, across
    // more events than one pruning statement takes.
    let step = pb::watch_run_response::Event::StepChanged(pb::RunStep::default());
    let processed = pb::watch_run_response::Event::VolumeProcessed(pb::VolumeProcessed::default());
    let watch = std::iter::once((false, step)).chain(std::iter::repeat_n((true, processed), 6_001)).collect();
    store.commit(&next.id, Action { watch, ..Action::default() }, t0).await.unwrap();
    store.prune_events(&next.id, 1_000).await.unwrap();
    let kept: Vec<i64> =
        store.events_after(&next.id, 0, true, 10_000).await.unwrap().iter().map(|e| e.sequence).collect();
    assert_eq!(kept.len(), 1_001);
    assert_eq!((kept[0], kept[1], kept[1_000]), (1, 5_003, 6_002));
}

/// On SQLite a claim that read the outbox and then wrote to it failed at once ("database is
/// locked") when another connection committed in between; a large run's writers made that
/// happen again and again. The claim now waits its turn behind the writer.
#[tokio::test]
async fn a_relay_claim_waits_behind_another_sqlite_writer() {
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite(&dir).await;
    let store = Store::new(database.clone());
    let t0 = at("2026-03-01T10:00:00Z");
    let run = store.create_run(&new_run(RunKind::Manual, t0)).await.unwrap();
    let event =
        audit::Event { event_id: "e-1".to_owned(), run_id: run.id.clone(), ..audit::Event::default() };
    store.commit(&run.id, Action { audit: vec![event], ..Action::default() }, t0).await.unwrap();

    let mut writer = database.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *writer).await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, run_id, payload, created_at, next_attempt_at) \
         VALUES ('e-2', NULL, x'', '2026-03-01T10:00:01.000000Z', '2026-03-01T10:00:01.000000Z')",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    let relay = store.clone();
    let claim =
        tokio::spawn(
            async move { relay.claim_outbox(t0 + Duration::minutes(1), Duration::minutes(1), 10).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut *writer).await.unwrap();
    let claimed = claim.await.unwrap().unwrap();
    assert_eq!(claimed.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["e-1", "e-2"]);
}

/// A migrated SQLite database in `dir`.
async fn sqlite(dir: &tempfile::TempDir) -> Database {
    let url = format!("sqlite://{}/snapshot.db?mode=rwc", dir.path().display());
    let database = Database::connect(&url, snapshot_svc::SCHEMA, 4).await.unwrap();
    database.migrate(snapshot_svc::MIGRATIONS).await.unwrap();
    database
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = sqlite(&dir).await;
    exercise(Store::new(database)).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let Some(postgres) = TestPostgres::create().await else { return };
    let database = Database::connect(postgres.url(), snapshot_svc::SCHEMA, 4).await.unwrap();
    database.migrate(snapshot_svc::MIGRATIONS).await.unwrap();
    exercise(Store::new(database.clone())).await;
    database.close().await;
    postgres.drop_database().await;
}
