//! AuditService over a real server on 127.0.0.1:0 with the generated client, on SQLite and on a
//! fresh PostgreSQL database: appends (idempotent, every kind), listings and export, inventory
//! syncs, compliance with roll-ups and trend, orphans, and the audit writer role's limits.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_svc::directory::{CachedDirectory, Directory, ExclusionEntry, PolicySource};
use audit_svc::grpc::AuditApi;
use audit_svc::inventory::Header;
use audit_svc::report::ComplianceReport;
use audit_svc::store::Store;
use audit_svc::{AuditError, MIGRATIONS, SCHEMA};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use service_kit::clock::{Clock, ManualClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use service_kit::server::GrpcServer;
use service_kit::testing::TestPostgres;
use snapkeeper_proto::audit::v1 as pb;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::audit::v1::audit_service_server::AuditServiceServer;
use snapkeeper_proto::audit::v1::sync_inventory_request::Message;
use snapkeeper_proto::audit::v1::{EventKind, event::RunDetail};
use snapkeeper_proto::prost_types::Timestamp;
use snapkeeper_proto::tonic::Code;
use snapkeeper_proto::tonic::transport::Channel;
use sqlx::{AssertSqlSafe, Column, Connection, Executor, Row};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn stamp(text: &str) -> Timestamp {
    let t = at(text);
    Timestamp { seconds: t.timestamp(), nanos: 0 }
}

const NOW: &str = "2026-11-25T12:00:00Z";
const RUN: &str = "01932c07-0000-7000-8000-0000000000aa";

/// A directory the test changes at will.
#[derive(Debug, Default)]
struct FixedPolicies(Mutex<Directory>);

impl PolicySource for FixedPolicies {
    fn fetch(&self) -> BoxFuture<'_, Result<Directory, AuditError>> {
        let directory = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(directory) })
    }
}

struct Harness {
    client: AuditServiceClient<Channel>,
    clock: ManualClock,
    policies: Arc<FixedPolicies>,
    postgres: Option<TestPostgres>,
    url: String,
    endpoint: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(pg) = self.postgres.take() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pg.drop_database().await;
        }
    }
}

async fn start(postgres: bool) -> Option<Harness> {
    let dir = tempfile::tempdir().unwrap();
    let pg = if postgres { Some(TestPostgres::create().await?) } else { None };
    let url = match &pg {
        Some(pg) => pg.url().to_owned(),
        None => format!("sqlite://{}/audit.db?mode=rwc", dir.path().display()),
    };
    let database = Database::connect(&url, SCHEMA, 4).await.unwrap();
    let url_for_checks = url.clone();
    database.migrate(MIGRATIONS).await.unwrap();
    let store = Store::open(database).await.unwrap();
    let clock = ManualClock::new(at(NOW));
    let policies = Arc::new(FixedPolicies::default());
    let directory = CachedDirectory::new(Arc::clone(&policies) as Arc<dyn PolicySource>, Duration::ZERO);
    let report =
        Arc::new(ComplianceReport::new(store.clone(), directory, Arc::new(clock.clone()) as Arc<dyn Clock>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        GrpcServer::new(SecurityArgs::default())
            .add_service(AuditServiceServer::new(AuditApi::new(store, report)))
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let endpoint = format!("http://{address}");
    let client = AuditServiceClient::connect(endpoint.clone()).await.unwrap();
    Some(Harness {
        client,
        clock,
        policies,
        postgres: pg,
        url: url_for_checks,
        endpoint,
        shutdown: Some(tx),
        _dir: dir,
    })
}

fn event_id(n: u32) -> String {
    format!("01932c07-5a3e-7b4c-9d2e-{n:012x}")
}

fn event(n: u32, kind: EventKind, occurred: &str) -> pb::Event {
    pb::Event {
        event_id: event_id(n),
        occurred_at: Some(stamp(occurred)),
        kind: kind.into(),
        run_id: RUN.to_owned(),
        actor: "scheduler".to_owned(),
        region: "RegionOne".to_owned(),
        volume_id: "vol-a".to_owned(),
        volume_name: "db-data".to_owned(),
        project_id: "p1".to_owned(),
        project_name: "prod".to_owned(),
        domain_id: "d1".to_owned(),
        domain_name: "Default".to_owned(),
        policy_name: "daily_7".to_owned(),
        size_gb: 40,
        ..pb::Event::default()
    }
}

/// One event of every kind of the contract, as one run would send them.
fn every_kind() -> Vec<pb::Event> {
    let mut started = event(1, EventKind::RunStarted, "2026-11-25T00:00:01Z");
    started.volume_id.clear();
    started.run_detail = Some(RunDetail::RunStarted(pb::RunStarted {
        kind: pb::RunKind::Scheduled.into(),
        execution_host: "worker-1".into(),
        regions: vec!["RegionOne".into()],
        rule_set_version: 3,
        batch_size: 20,
        ..pb::RunStarted::default()
    }));
    let mut step = event(2, EventKind::RunStep, "2026-11-25T00:00:02Z");
    step.run_detail = Some(RunDetail::RunStep(pb::RunStepChange {
        step: pb::StepKey::Snapshots.into(),
        status: pb::PhaseStatus::Running.into(),
        ..pb::RunStepChange::default()
    }));
    let mut created = event(3, EventKind::SnapshotCreated, "2026-11-25T00:01:00Z");
    created.snapshot_id = "snap-1".into();
    created.slot = Some(stamp("2026-11-25T00:00:00Z"));
    created.scope_mode = pb::ScopeMode::ServiceUser.into();
    created.cinder_request_id = "req-abc".into();
    created.retention_count = 7;
    let mut deleted = event(4, EventKind::SnapshotDeleted, "2026-11-25T00:01:30Z");
    deleted.snapshot_id = "snap-0".into();
    let mut failed = event(5, EventKind::SnapshotFailed, "2026-11-25T00:02:00Z");
    failed.volume_id = "vol-b".into();
    failed.error = "cinder 500".into();
    let mut delete_failed = event(6, EventKind::SnapshotDeleteFailed, "2026-11-25T00:02:30Z");
    delete_failed.error = "cinder 409".into();
    let mut skipped = event(7, EventKind::SnapshotSkipped, "2026-11-25T00:03:00Z");
    skipped.skip_reason = pb::SkipReason::SizeLimit.into();
    let mut quota = event(8, EventKind::SnapshotQuotaBlocked, "2026-11-25T00:04:00Z");
    quota.volume_id = "vol-q".into();
    quota.project_id = "p2".into();
    quota.slot = Some(stamp("2026-11-25T00:00:00Z"));
    quota.quota = Some(pb::QuotaFigures {
        reason: pb::QuotaBlockReason::GigabytesExceeded.into(),
        quota_limit_gb: 1000,
        quota_used_gb: 980,
        quota_needed_gb: 40,
        ..pb::QuotaFigures::default()
    });
    let mut dry = event(9, EventKind::SnapshotDryRun, "2026-11-25T00:05:00Z");
    dry.dry_run_action = pb::DryRunAction::Create.into();
    let mut grant = event(10, EventKind::RoleGranted, "2026-11-25T00:00:30Z");
    grant.volume_id.clear();
    grant.role_name = "member".into();
    let mut batch = event(11, EventKind::RunBatch, "2026-11-25T00:06:00Z");
    batch.run_detail = Some(RunDetail::RunBatch(pb::RunBatch {
        batch_number: 1,
        project_ids: vec!["p1".into()],
        completed: 1,
        status: pb::PhaseStatus::Completed.into(),
        ..pb::RunBatch::default()
    }));
    let mut finished = event(12, EventKind::RunFinished, "2026-11-25T00:07:00Z");
    finished.run_detail = Some(RunDetail::RunFinished(pb::RunFinished {
        status: pb::RunStatus::Partial.into(),
        counters: Some(pb::RunCounters {
            snapshots_created: 1,
            quota_blocked: 1,
            ..pb::RunCounters::default()
        }),
        total_batches: 1,
        error_summary: "1 failed".into(),
        ..pb::RunFinished::default()
    }));
    let mut risk = event(13, EventKind::QuotaForecastRisk, "2026-11-25T00:04:30Z");
    risk.volume_id.clear();
    risk.volume_name.clear();
    risk.project_id = "p3".into();
    risk.quota = Some(pb::QuotaFigures {
        reason: pb::QuotaBlockReason::GigabytesExceeded.into(),
        quota_limit_gb: 500,
        quota_used_gb: 470,
        quota_needed_gb: 80,
        ..pb::QuotaFigures::default()
    });
    vec![
        started,
        step,
        created,
        deleted,
        failed,
        delete_failed,
        skipped,
        quota,
        dry,
        grant,
        batch,
        finished,
        risk,
    ]
}

async fn appends_once_and_lists_every_kind(mut h: Harness) {
    let events = every_kind();
    let first = h
        .client
        .append_events(pb::AppendEventsRequest { events: events.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.inserted, first.duplicates), (13, 0));
    // The same events again (and one repeated inside the batch) are stored once.
    let mut again = events.clone();
    again.push(events[2].clone());
    let second =
        h.client.append_events(pb::AppendEventsRequest { events: again }).await.unwrap().into_inner();
    assert_eq!((second.inserted, second.duplicates), (0, 14));
    assert_eq!(second.duplicate_event_ids[0], event_id(1));

    // Default listing: snapshot-level kinds only, newest first, every field back as sent.
    let all = h.client.list_records(pb::ListRecordsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.records.len(), 9);
    assert_eq!(all.records[0].event.as_ref().unwrap().kind(), EventKind::SnapshotDryRun);
    let created = all
        .records
        .iter()
        .map(|r| r.event.clone().unwrap())
        .find(|e| e.kind() == EventKind::SnapshotCreated)
        .unwrap();
    assert_eq!(created, events[2]);
    let quota = all
        .records
        .iter()
        .map(|r| r.event.clone().unwrap())
        .find(|e| e.kind() == EventKind::SnapshotQuotaBlocked)
        .unwrap();
    assert_eq!(quota, events[7]);
    let risk = all
        .records
        .iter()
        .map(|r| r.event.clone().unwrap())
        .find(|e| e.kind() == EventKind::QuotaForecastRisk)
        .unwrap();
    assert_eq!(risk, events[12]);

    // Run-level kinds only when asked, with their payloads.
    let filter = pb::RecordFilter {
        kinds: vec![EventKind::RunStarted.into(), EventKind::RunFinished.into()],
        ..Default::default()
    };
    let runs = h
        .client
        .list_records(pb::ListRecordsRequest {
            filter: Some(filter),
            oldest_first: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        runs.records.iter().map(|r| r.event.clone().unwrap()).collect::<Vec<_>>(),
        vec![events[0].clone(), events[11].clone()]
    );

    // Filters and pages.
    let filter = pb::RecordFilter {
        volume_id: Some("vol-a".into()),
        occurred: Some(pb::TimeRange {
            start: Some(stamp("2026-11-25T00:01:00Z")),
            end: Some(stamp("2026-11-25T00:03:00Z")),
        }),
        ..Default::default()
    };
    let page1 = h
        .client
        .list_records(pb::ListRecordsRequest {
            filter: Some(filter.clone()),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.records.len(), 2);
    assert!(!page1.next_page_token.is_empty());
    let page2 = h
        .client
        .list_records(pb::ListRecordsRequest {
            filter: Some(filter.clone()),
            page_size: 2,
            page_token: page1.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> =
        page1.records.iter().chain(&page2.records).map(|r| r.event.clone().unwrap().event_id).collect();
    assert_eq!(ids, [event_id(6), event_id(4), event_id(3)]);
    assert!(page2.next_page_token.is_empty());
    let changed = pb::RecordFilter { volume_id: Some("vol-b".into()), ..filter };
    let refused = h
        .client
        .list_records(pb::ListRecordsRequest {
            filter: Some(changed),
            page_token: page1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Export: every record of the filter, oldest first, in chunks.
    let mut stream = h
        .client
        .export_records(pb::ExportRecordsRequest {
            filter: Some(pb::RecordFilter { kinds: (1..=13).collect(), ..Default::default() }),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        exported.extend(chunk.records);
    }
    assert_eq!(exported.len(), 13);
    assert!(exported.windows(2).all(|w| w[0].event.as_ref().unwrap().occurred_at.unwrap().seconds
        <= w[1].event.as_ref().unwrap().occurred_at.unwrap().seconds));

    // Quota blocks with their figures.
    let blocks = h
        .client
        .list_quota_blocks(pb::ListQuotaBlocksRequest { project_id: Some("p2".into()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blocks.quota_blocks.len(), 1);
    assert_eq!(blocks.quota_blocks[0].event.as_ref().unwrap().quota.as_ref().unwrap().quota_used_gb, 980);
    let none = h
        .client
        .list_quota_blocks(pb::ListQuotaBlocksRequest {
            reason: Some(pb::QuotaBlockReason::SnapshotsExceeded.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.quota_blocks.is_empty());
    // A forecast is not a block: it is listed as a record, not among the quota blocks.
    let forecast_only = h
        .client
        .list_quota_blocks(pb::ListQuotaBlocksRequest { project_id: Some("p3".into()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(forecast_only.quota_blocks.is_empty());

    // The run as its events tell it.
    let runs = h.client.list_runs(pb::ListRunsRequest::default()).await.unwrap().into_inner();
    assert_eq!(runs.total_count, 1);
    let run = &runs.runs[0];
    assert_eq!(
        (run.status(), run.kind(), run.triggered_by.as_str()),
        (pb::RunStatus::Partial, pb::RunKind::Scheduled, "scheduler")
    );
    assert_eq!((run.execution_host.as_str(), run.rule_set_version, run.total_batches), ("worker-1", 3, 1));
    assert_eq!(run.counters.unwrap().quota_blocked, 1);
    assert_eq!(run.finished_at, Some(stamp("2026-11-25T00:07:00Z")));
    let running = h
        .client
        .list_runs(pb::ListRunsRequest {
            statuses: vec![pb::RunStatus::Running.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.total_count, 0);
    h.stop().await;
}

async fn validation_names_the_field(mut h: Harness) {
    let empty = h.client.append_events(pb::AppendEventsRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().starts_with("events:"), "{}", empty.message());
    let mut events = every_kind();
    events[3].event_id = "not-a-uuid".into();
    let bad = h.client.append_events(pb::AppendEventsRequest { events }).await.unwrap_err();
    assert!(bad.message().starts_with("events[3].event_id"), "{}", bad.message());
    let bad_range = pb::RecordFilter {
        occurred: Some(pb::TimeRange {
            start: Some(stamp("2026-11-25T00:00:00Z")),
            end: Some(stamp("2026-11-24T00:00:00Z")),
        }),
        ..Default::default()
    };
    let err = h
        .client
        .list_records(pb::ListRecordsRequest { filter: Some(bad_range), ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("filter.occurred.end"), "{}", err.message());
    let err =
        h.client.list_runs(pb::ListRunsRequest { page_size: -1, ..Default::default() }).await.unwrap_err();
    assert!(err.message().starts_with("page_size"), "{}", err.message());
    let err = h
        .client
        .get_compliance(pb::GetComplianceRequest { days: Some(0), ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("days"), "{}", err.message());
    let err = h.client.compliance_trend(pb::ComplianceTrendRequest::default()).await.unwrap_err();
    assert!(err.message().starts_with("group_by"), "{}", err.message());
    // Before any inventory: compliance is empty and a roll-up has nothing to record.
    let empty = h.client.get_compliance(pb::GetComplianceRequest::default()).await.unwrap().into_inner();
    assert!(empty.rows.is_empty() && empty.inventory_synced_at.is_none());
    let err = h
        .client
        .record_compliance_snapshot(pb::RecordComplianceSnapshotRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    h.stop().await;
}

fn volume(id: &str, project: &str, policies: &str) -> pb::InventoryVolume {
    let mut v = pb::InventoryVolume {
        id: id.into(),
        name: format!("name-{id}"),
        project_id: project.into(),
        status: "in-use".into(),
        size_gb: 10,
        volume_type: "ssd".into(),
        attached_server_ids: vec!["srv-1".into()],
        ..Default::default()
    };
    v.metadata.insert("auto_snapshot".into(), "true".into());
    v.metadata.insert("snapshot_policies".into(), policies.into());
    v.metadata.insert("retention_daily_7".into(), "7".into());
    v
}

fn snapshot(
    id: &str,
    volume: &str,
    policy: &str,
    status: &str,
    created_by: &str,
    created: &str,
    slot: Option<&str>,
) -> pb::InventorySnapshot {
    let mut s = pb::InventorySnapshot {
        id: id.into(),
        name: format!("auto-{id}"),
        volume_id: volume.into(),
        project_id: "p1".into(),
        status: status.into(),
        size_gb: 10,
        created_at: Some(stamp(created)),
        ..Default::default()
    };
    s.metadata.insert("created_by".into(), created_by.into());
    s.metadata.insert("policy".into(), policy.into());
    if let Some(slot) = slot {
        s.metadata.insert("slot".into(), slot.into());
    }
    s
}

fn sync_messages(
    sync: u32,
    listed: &str,
    volumes: Vec<pb::InventoryVolume>,
    snapshots: Vec<pb::InventorySnapshot>,
) -> Vec<pb::SyncInventoryRequest> {
    let header = pb::SyncHeader {
        sync_id: event_id(1000 + sync),
        region: "RegionOne".into(),
        listed_at: Some(stamp(listed)),
        source: "test".into(),
        ..Default::default()
    };
    let chunk = pb::InventoryChunk {
        domains: vec![pb::InventoryDomain { id: "d1".into(), name: "Default".into(), enabled: true }],
        projects: vec![
            pb::InventoryProject {
                id: "p1".into(),
                name: "prod".into(),
                domain_id: "d1".into(),
                enabled: true,
            },
            pb::InventoryProject {
                id: "p2".into(),
                name: "lab".into(),
                domain_id: "d1".into(),
                enabled: true,
            },
        ],
        servers: vec![pb::InventoryServer {
            id: "srv-1".into(),
            name: "web-1".into(),
            project_id: "p1".into(),
            status: "ACTIVE".into(),
        }],
        volumes,
        snapshots,
    };
    let end = pb::SyncEnd {
        domain_count: 1,
        project_count: 2,
        server_count: 1,
        volume_count: chunk.volumes.len() as i64,
        snapshot_count: chunk.snapshots.len() as i64,
    };
    vec![
        pb::SyncInventoryRequest { message: Some(Message::Header(header)) },
        pb::SyncInventoryRequest { message: Some(Message::Chunk(chunk)) },
        pb::SyncInventoryRequest { message: Some(Message::End(end)) },
    ]
}

async fn sync(
    h: &mut Harness,
    messages: Vec<pb::SyncInventoryRequest>,
) -> Result<pb::SyncInventoryResponse, snapkeeper_proto::tonic::Status> {
    h.client
        .sync_inventory(futures::stream::iter(messages))
        .await
        .map(snapkeeper_proto::tonic::Response::into_inner)
}

async fn syncs_and_judges_each_policy_by_its_cadence(mut h: Harness) {
    h.policies.0.lock().unwrap().exclusions.push(ExclusionEntry {
        volume_id: "vol-x".into(),
        project_id: "p1".into(),
        until: Some(at("2026-12-01T00:00:00Z")),
        reason: "migration".into(),
    });
    let volumes = vec![
        volume("vol-a", "p1", "daily_7,monthly_1st"),
        volume("vol-e", "p1", "daily_7"),
        volume("vol-q", "p2", "daily_7"),
        volume("vol-x", "p1", "daily_7"),
        volume("vol-gone", "p1", "weekly_4"),
    ];
    let snapshots = vec![
        snapshot(
            "s1",
            "vol-a",
            "daily_7",
            "available",
            "snapkeeper",
            "2026-11-25T00:01:00Z",
            Some("2026-11-25T00:00:00Z"),
        ),
        // The old system's snapshot (no slot) counts for the monthly policy on the 25th.
        snapshot(
            "s2",
            "vol-a",
            "monthly_1st",
            "available",
            "p9_auto_snapshots",
            "2026-11-01T00:04:00Z",
            None,
        ),
        snapshot(
            "s3",
            "vol-e",
            "daily_7",
            "error",
            "snapkeeper",
            "2026-11-25T00:01:00Z",
            Some("2026-11-25T00:00:00Z"),
        ),
        snapshot("s4", "vol-e", "daily_7", "available", "someone", "2026-11-25T00:01:00Z", None),
        snapshot(
            "s5",
            "vol-gone",
            "weekly_4",
            "available",
            "snapkeeper",
            "2026-11-22T00:01:00Z",
            Some("2026-11-22T00:00:00Z"),
        ),
        snapshot("s6", "vol-a", "hourly_3", "available", "snapkeeper", "2026-11-20T00:01:00Z", None),
        snapshot(
            "s7",
            "vol-q",
            "daily_7",
            "available",
            "snapkeeper",
            "2026-11-20T00:01:00Z",
            Some("2026-11-20T00:00:00Z"),
        ),
    ];
    let first = sync(&mut h, sync_messages(1, "2026-11-25T11:00:00Z", volumes.clone(), snapshots.clone()))
        .await
        .unwrap();
    assert!(first.applied);
    assert_eq!((first.volumes_added, first.volumes_disappeared), (5, 0));
    let resent = sync(&mut h, sync_messages(1, "2026-11-25T11:00:00Z", volumes.clone(), snapshots.clone()))
        .await
        .unwrap();
    assert!(!resent.applied);
    assert_eq!(resent.volumes_added, 5);

    // vol-q's daily_7 attempt for today's slot was blocked by quota.
    let mut events = every_kind();
    events.retain(|e| e.kind() == EventKind::SnapshotQuotaBlocked);
    h.client.append_events(pb::AppendEventsRequest { events }).await.unwrap();

    let report = h
        .client
        .get_compliance(pb::GetComplianceRequest {
            include_rollups: true,
            include_manual_snapshots: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = |volume: &str, policy: &str| {
        let row = report.rows.iter().find(|r| r.volume_id == volume && r.policy_name == policy).unwrap();
        (row.status(), row.reason.clone())
    };
    assert_eq!(status("vol-a", "daily_7").0, pb::ComplianceStatus::Compliant);
    assert_eq!(status("vol-a", "monthly_1st").0, pb::ComplianceStatus::Compliant);
    assert_eq!(
        status("vol-e", "daily_7"),
        (pb::ComplianceStatus::Missing, "only an error snapshot for slot 2026-11-25T00:00Z".into())
    );
    assert_eq!(
        status("vol-q", "daily_7"),
        (pb::ComplianceStatus::QuotaBlocked, "gigabytes quota 980/1000 GiB, needs 40 GiB".into())
    );
    assert_eq!(
        status("vol-x", "daily_7"),
        (pb::ComplianceStatus::Excluded, "excluded until 2026-12-01: migration".into())
    );
    assert_eq!(status("vol-gone", "weekly_4").0, pb::ComplianceStatus::Compliant);
    let summary = report.summary.unwrap();
    assert_eq!(
        (summary.compliant, summary.noncompliant, summary.quota_blocked, summary.excluded, summary.total),
        (3, 1, 1, 1, 6)
    );
    assert_eq!(report.rows[0].status(), pb::ComplianceStatus::QuotaBlocked);
    let row = report.rows.iter().find(|r| r.volume_id == "vol-a" && r.policy_name == "monthly_1st").unwrap();
    assert_eq!(row.judged_slot, Some(stamp("2026-11-01T00:00:00Z")));
    assert_eq!(row.next_due_at, Some(stamp("2026-12-01T00:00:00Z")));
    assert_eq!(
        (row.tenant_name.as_str(), row.project_name.as_str(), row.vm_name.as_str()),
        ("Default", "prod", "web-1")
    );
    assert_eq!(report.by_project.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["lab", "prod"]);
    assert_eq!(report.by_policy.len(), 3);
    assert_eq!(report.manual_snapshots_total, 1);
    assert_eq!(report.manual_snapshots[0].snapshot_id, "s4");

    // Seed-compatible filters, status filter and paging.
    let lab = h
        .client
        .get_compliance(pb::GetComplianceRequest { project_id: Some("p2".into()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lab.total_count, 1);
    let missing = h
        .client
        .get_compliance(pb::GetComplianceRequest {
            statuses: vec![pb::ComplianceStatus::Missing.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(missing.rows.iter().map(|r| r.volume_id.as_str()).collect::<Vec<_>>(), ["vol-e"]);
    let page = h
        .client
        .get_compliance(pb::GetComplianceRequest { page_size: 4, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let rest = h
        .client
        .get_compliance(pb::GetComplianceRequest {
            page_size: 4,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.rows.len(), rest.rows.len(), rest.next_page_token.as_str()), (4, 2, ""));

    // Orphans: s6's policy no volume has.
    let orphans = h.client.list_orphans(pb::ListOrphansRequest::default()).await.unwrap().into_inner();
    assert_eq!(
        orphans.orphans.iter().map(|o| (o.snapshot_id.as_str(), o.reason())).collect::<Vec<_>>(),
        [("s6", pb::OrphanReason::PolicyUnused)]
    );

    // Daily roll-up and trend.
    let recorded = h
        .client
        .record_compliance_snapshot(pb::RecordComplianceSnapshotRequest { actor: "test".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((recorded.date.as_str(), recorded.summary.unwrap().total), ("2026-11-25", 6));

    // A later sync without vol-gone: it disappears, its snapshot becomes an orphan.
    h.clock.set(at("2026-11-26T12:00:00Z"));
    let later: Vec<pb::InventoryVolume> = volumes.iter().filter(|v| v.id != "vol-gone").cloned().collect();
    let second = sync(&mut h, sync_messages(2, "2026-11-26T11:00:00Z", later.clone(), snapshots.clone()))
        .await
        .unwrap();
    assert_eq!(second.volumes_disappeared, 1);
    assert_eq!(second.disappeared_volumes[0].volume_id, "vol-gone");
    assert_eq!(second.disappeared_volumes[0].last_seen_at, Some(stamp("2026-11-25T11:00:00Z")));
    let orphans = h
        .client
        .list_orphans(pb::ListOrphansRequest {
            reason: Some(pb::OrphanReason::VolumeGone.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orphans.orphans[0].snapshot_id, "s5");
    assert_eq!(orphans.orphans[0].volume_last_seen_at, Some(stamp("2026-11-25T11:00:00Z")));
    // A stale sync is refused; enrolled_at survives re-syncs (vol-a stays judged, not pending).
    let stale = sync(&mut h, sync_messages(3, "2026-11-24T00:00:00Z", later.clone(), snapshots.clone()))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let next_day = h
        .client
        .get_compliance(pb::GetComplianceRequest { volume_id: Some("vol-a".into()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let daily = next_day.rows.iter().find(|r| r.policy_name == "daily_7").unwrap();
    assert_eq!(
        (daily.status(), daily.enrolled_at),
        (pb::ComplianceStatus::Missing, Some(stamp("2026-11-25T00:00:00Z")))
    );
    // A volume first seen without any snapshot of ours is pending until its first slot passes.
    let newcomer = vec![volume("vol-new", "p1", "daily_7")];
    sync(
        &mut h,
        sync_messages(4, "2026-11-26T11:30:00Z", [later.clone(), newcomer].concat(), snapshots.clone()),
    )
    .await
    .unwrap();
    let fresh = h
        .client
        .get_compliance(pb::GetComplianceRequest { volume_id: Some("vol-new".into()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.rows[0].status(), pb::ComplianceStatus::Pending);
    assert_eq!(fresh.rows[0].next_due_at, Some(stamp("2026-11-27T00:00:00Z")));
    h.client
        .record_compliance_snapshot(pb::RecordComplianceSnapshotRequest { actor: "test".into() })
        .await
        .unwrap();
    let trend = h
        .client
        .compliance_trend(pb::ComplianceTrendRequest {
            days: 7,
            group_by: pb::TrendGroupBy::Project.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let prod = trend.series.iter().find(|s| s.key == "p1").unwrap();
    assert_eq!(prod.points.iter().map(|p| p.date.as_str()).collect::<Vec<_>>(), ["2026-11-25", "2026-11-26"]);
    assert_eq!(prod.points[0].summary.unwrap().compliant, 3);
    let overall = h
        .client
        .compliance_trend(pb::ComplianceTrendRequest {
            days: 7,
            group_by: pb::TrendGroupBy::Overall.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.series[0].points[1].summary.unwrap().total, 6);
    h.stop().await;
}

async fn sync_protocol_errors(mut h: Harness) {
    let mut messages = sync_messages(1, "2026-11-25T11:00:00Z", vec![volume("v", "p1", "daily_7")], vec![]);
    messages.pop();
    let err = sync(&mut h, messages).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "end: stream closed without the end message")
    );
    let messages = sync_messages(
        1,
        "2026-11-25T11:00:00Z",
        vec![volume("v", "p1", "daily_7"), volume("", "p1", "")],
        vec![],
    );
    let err = sync(&mut h, messages).await.unwrap_err();
    assert!(err.message().starts_with("chunk 1 volumes[1].id"), "{}", err.message());
    // Nothing was applied.
    assert!(
        h.client
            .get_compliance(pb::GetComplianceRequest::default())
            .await
            .unwrap()
            .into_inner()
            .inventory_synced_at
            .is_none()
    );
    h.stop().await;
}

/// Every row of the inventory tables, as text, in key order.
async fn stored_view(h: &Harness) -> Vec<String> {
    let database = Database::connect(&h.url, SCHEMA, 1).await.unwrap();
    let mut out = Vec::new();
    for (table, order) in [
        ("inventory_regions", "region"),
        ("inventory_syncs", "sync_id"),
        ("inventory_disappeared_volumes", "seq"),
        ("inventory_domains", "region, id"),
        ("inventory_projects", "region, id"),
        ("inventory_servers", "region, id"),
        ("inventory_volumes", "region, id"),
        ("inventory_enrollments", "region, volume_id, policy_name"),
        ("inventory_snapshots", "region, id"),
    ] {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {table} ORDER BY {order}")))
            .fetch_all(database.pool())
            .await
            .unwrap();
        for row in rows {
            let mut line = table.to_owned();
            for (i, column) in row.columns().iter().enumerate() {
                let value = match row.try_get::<Option<String>, _>(i) {
                    Ok(text) => format!("{text:?}"),
                    Err(_) => format!("{:?}", row.try_get::<Option<i64>, _>(i).unwrap()),
                };
                let _ = write!(line, " {}={value}", column.name());
            }
            out.push(line);
        }
    }
    database.close().await;
    out
}

/// Rows in the staging tables, stages included.
async fn staged_rows(h: &Harness) -> i64 {
    let database = Database::connect(&h.url, SCHEMA, 1).await.unwrap();
    let mut total = 0;
    for table in [
        "inventory_stages",
        "inventory_stage_domains",
        "inventory_stage_projects",
        "inventory_stage_servers",
        "inventory_stage_volumes",
        "inventory_stage_enrollments",
        "inventory_stage_snapshots",
    ] {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
            .fetch_one(database.pool())
            .await
            .unwrap();
        total += row.try_get::<i64, _>("n").unwrap();
    }
    database.close().await;
    total
}

/// One item of a chunk.
enum Item {
    Domain(pb::InventoryDomain),
    Project(pb::InventoryProject),
    Server(pb::InventoryServer),
    Volume(pb::InventoryVolume),
    Snapshot(pb::InventorySnapshot),
}

/// The same sync with its items re-cut into chunks of `size`, snapshots first (so a pair's
/// evidence arrives before its volume), kinds mixed within a chunk.
fn rechunked(messages: Vec<pb::SyncInventoryRequest>, size: usize) -> Vec<pb::SyncInventoryRequest> {
    let mut items = Vec::new();
    let mut out = Vec::new();
    let mut end = None;
    for message in messages {
        match message.message {
            Some(Message::Chunk(chunk)) => {
                items.extend(chunk.snapshots.into_iter().map(Item::Snapshot));
                items.extend(chunk.volumes.into_iter().map(Item::Volume));
                items.extend(chunk.servers.into_iter().map(Item::Server));
                items.extend(chunk.projects.into_iter().map(Item::Project));
                items.extend(chunk.domains.into_iter().map(Item::Domain));
            }
            Some(Message::End(_)) => end = Some(message),
            _ => out.push(message),
        }
    }
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let mut chunk = pb::InventoryChunk::default();
        for item in items.by_ref().take(size) {
            match item {
                Item::Domain(d) => chunk.domains.push(d),
                Item::Project(p) => chunk.projects.push(p),
                Item::Server(s) => chunk.servers.push(s),
                Item::Volume(v) => chunk.volumes.push(v),
                Item::Snapshot(s) => chunk.snapshots.push(s),
            }
        }
        out.push(pb::SyncInventoryRequest { message: Some(Message::Chunk(chunk)) });
    }
    out.extend(end);
    out
}

/// Volumes `from..to` (every third unenrolled) and, for each, four snapshots: two of ours with a
/// slot, one of ours without, one of someone else.
fn fleet(from: u32, to: u32) -> (Vec<pb::InventoryVolume>, Vec<pb::InventorySnapshot>) {
    let mut volumes = Vec::new();
    let mut snapshots = Vec::new();
    for n in from..to {
        let id = format!("vol-{n:03}");
        let policies = if n % 3 == 0 { "" } else { "daily_7, weekly_4" };
        let mut v = volume(&id, if n % 2 == 0 { "p1" } else { "p2" }, policies);
        if policies.is_empty() {
            v.metadata.insert("auto_snapshot".into(), "false".into());
        }
        volumes.push(v);
        let day = 10 + n % 10;
        snapshots.push(snapshot(
            &format!("snap-{n:03}-a"),
            &id,
            "daily_7",
            "available",
            "snapkeeper",
            &format!("2026-11-{day}T00:01:00Z"),
            Some(&format!("2026-11-{day}T00:00:00Z")),
        ));
        snapshots.push(snapshot(
            &format!("snap-{n:03}-b"),
            &id,
            "daily_7",
            "error",
            "snapkeeper",
            &format!("2026-11-{}T00:01:00Z", day + 1),
            Some(&format!("2026-11-{}T00:00:00Z", day + 1)),
        ));
        snapshots.push(snapshot(
            &format!("snap-{n:03}-c"),
            &id,
            "weekly_4",
            "available",
            "snapkeeper",
            &format!("2026-11-{day}T06:00:00Z"),
            None,
        ));
        snapshots.push(snapshot(
            &format!("snap-{n:03}-d"),
            &id,
            "",
            "available",
            "someone",
            "2026-11-01T00:00:00Z",
            None,
        ));
    }
    (volumes, snapshots)
}

async fn a_sync_in_many_chunks_stores_what_one_chunk_does(mut whole: Harness) {
    let Some(mut chunked) = start(whole.postgres.is_some()).await else { return };
    let (volumes, snapshots) = fleet(0, 40);
    let first = sync_messages(1, "2026-11-25T11:00:00Z", volumes, snapshots);
    // The second sync loses vol-000..009 (and their snapshots) and gains vol-040..049.
    let (volumes, snapshots) = fleet(10, 50);
    let second = sync_messages(2, "2026-11-26T11:00:00Z", volumes, snapshots);

    let mut responses = Vec::new();
    for (h, size) in [(&mut whole, usize::MAX), (&mut chunked, 7)] {
        let mut answers = Vec::new();
        for messages in [&first, &second] {
            let messages =
                if size == usize::MAX { messages.clone() } else { rechunked(messages.clone(), size) };
            answers.push(sync(h, messages).await.unwrap());
        }
        responses.push(answers);
    }
    assert_eq!(rechunked(second.clone(), 7).len(), 2 + (160_usize + 40 + 4).div_ceil(7));
    assert_eq!(responses[0], responses[1]);
    let answer = &responses[1][1];
    assert!(answer.applied);
    assert_eq!(
        (answer.volumes_added, answer.volumes_disappeared, answer.snapshots_disappeared),
        (10, 10, 40)
    );
    let gone: Vec<&str> = answer.disappeared_volumes.iter().map(|v| v.volume_id.as_str()).collect();
    assert_eq!(gone, (0..10).map(|n| format!("vol-{n:03}")).collect::<Vec<_>>());
    assert_eq!(answer.disappeared_volumes[0].last_seen_at, Some(stamp("2026-11-25T11:00:00Z")));

    let view = stored_view(&chunked).await;
    assert_eq!(stored_view(&whole).await, view);
    assert_eq!(view.iter().filter(|line| line.starts_with("inventory_volumes ")).count(), 40);
    // vol-010 stayed: first seen at the first sync, last seen at the second; its daily_7 pair
    // keeps the enrolled_at the first sync derived from its oldest slot.
    let row = |prefix: &str| view.iter().find(|line| line.starts_with(prefix)).unwrap().clone();
    let kept = row("inventory_volumes region=Some(\"RegionOne\") id=Some(\"vol-010\")");
    assert!(kept.contains("first_seen_at=Some(\"2026-11-25T11:00:00.000000Z\")"), "{kept}");
    assert!(kept.contains("last_seen_at=Some(\"2026-11-26T11:00:00.000000Z\")"), "{kept}");
    let pair = row(
        "inventory_enrollments region=Some(\"RegionOne\") volume_id=Some(\"vol-010\") policy_name=Some(\"daily_7\")",
    );
    assert!(pair.contains("enrolled_at=Some(\"2026-11-10T00:00:00.000000Z\")"), "{pair}");
    let weekly = row(
        "inventory_enrollments region=Some(\"RegionOne\") volume_id=Some(\"vol-010\") policy_name=Some(\"weekly_4\")",
    );
    assert!(weekly.contains("enrolled_at=Some(\"2026-11-10T06:00:00.000000Z\")"), "{weekly}");
    // vol-045 is new in the second sync.
    let new = row("inventory_volumes region=Some(\"RegionOne\") id=Some(\"vol-045\")");
    assert!(new.contains("first_seen_at=Some(\"2026-11-26T11:00:00.000000Z\")"), "{new}");

    // Replayed in other chunks, the second sync answers as before and changes nothing.
    let replay = sync(&mut chunked, rechunked(second.clone(), 5)).await.unwrap();
    assert_eq!(replay, pb::SyncInventoryResponse { applied: false, ..answer.clone() });
    assert_eq!(stored_view(&chunked).await, view);
    assert_eq!(staged_rows(&chunked).await, 0);
    whole.stop().await;
    chunked.stop().await;
}

async fn a_broken_sync_changes_nothing_and_leaves_nothing_staged(mut h: Harness) {
    let (volumes, snapshots) = fleet(0, 20);
    sync(&mut h, sync_messages(1, "2026-11-25T11:00:00Z", volumes, snapshots)).await.unwrap();
    let view = stored_view(&h).await;
    let (volumes, snapshots) = fleet(5, 30);
    let next = rechunked(sync_messages(2, "2026-11-26T11:00:00Z", volumes, snapshots), 9);

    // An id sent again in a later chunk is refused naming the item, like one sent twice in a chunk.
    let mut repeated = next.clone();
    if let Some(Message::Chunk(chunk)) = &mut repeated[3].message {
        chunk.snapshots[4].id = "snap-005-a".into();
    }
    let err = sync(&mut h, repeated).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "chunk 3 snapshots[4].id: snap-005-a sent twice")
    );
    // A count that disagrees at the end, a stream without its end, a stale sync.
    let mut miscounted = next.clone();
    if let Some(Message::End(end)) = &mut miscounted.last_mut().unwrap().message {
        end.volume_count += 1;
    }
    let err = sync(&mut h, miscounted).await.unwrap_err();
    assert!(err.message().starts_with("end.volume_count"), "{}", err.message());
    let mut unended = next.clone();
    unended.pop();
    assert_eq!(sync(&mut h, unended).await.unwrap_err().code(), Code::InvalidArgument);
    let (volumes, snapshots) = fleet(5, 30);
    let stale = rechunked(sync_messages(3, "2026-11-24T11:00:00Z", volumes, snapshots), 9);
    assert_eq!(sync(&mut h, stale).await.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(stored_view(&h).await, view);
    assert_eq!(staged_rows(&h).await, 0);

    // A client that goes away mid-stream (its own connection closes): what it sent was staged,
    // and is discarded.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut client = AuditServiceClient::connect(h.endpoint.clone()).await.unwrap();
    let call =
        tokio::spawn(
            async move { client.sync_inventory(tokio_stream::wrappers::ReceiverStream::new(rx)).await },
        );
    for message in next.iter().take(4) {
        tx.send(message.clone()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while staged_rows(&h).await < 1 + 27 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(staged_rows(&h).await, 1 + 27);
    call.abort();
    drop(tx);
    while staged_rows(&h).await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(staged_rows(&h).await, 0);
    assert_eq!(stored_view(&h).await, view);

    // A stage its service stopped receiving is deleted once abandoned, not before.
    let database = Database::connect(&h.url, SCHEMA, 1).await.unwrap();
    let store = Store::open(database).await.unwrap();
    let header = Header {
        sync_id: event_id(1004),
        region: "RegionOne".into(),
        listed_at: at("2026-11-26T12:00:00Z"),
        run_id: String::new(),
        source: "test".into(),
    };
    let staged = store.begin_sync(header, at(NOW)).await.unwrap();
    let Some(Message::Chunk(chunk)) = &next[1].message else { panic!("a chunk") };
    store.stage_chunk(&staged, 1, chunk, at(NOW)).await.unwrap();
    assert!(staged_rows(&h).await > 1);
    assert_eq!(store.discard_abandoned_syncs(at("2026-11-25T12:59:00Z")).await.unwrap(), 0);
    assert_eq!(store.discard_abandoned_syncs(at("2026-11-25T13:01:00Z")).await.unwrap(), 1);
    assert_eq!(staged_rows(&h).await, 0);
    // Its stream, were it to go on, is told to send the sync again.
    let err = store.stage_chunk(&staged, 2, chunk, at(NOW)).await.unwrap_err();
    assert!(matches!(err, AuditError::FailedPrecondition(_)), "{err}");
    assert_eq!(stored_view(&h).await, view);
    h.stop().await;
}

macro_rules! on_both_backends {
    ($scenario:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $scenario(start(false).await.unwrap()).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(harness) = start(true).await else { return };
            $scenario(harness).await;
        }
    };
}

on_both_backends!(
    appends_once_and_lists_every_kind,
    appends_once_and_lists_every_kind_sqlite,
    appends_once_and_lists_every_kind_postgres
);
on_both_backends!(
    validation_names_the_field,
    validation_names_the_field_sqlite,
    validation_names_the_field_postgres
);
on_both_backends!(
    syncs_and_judges_each_policy_by_its_cadence,
    syncs_and_judges_each_policy_by_its_cadence_sqlite,
    syncs_and_judges_each_policy_by_its_cadence_postgres
);
on_both_backends!(sync_protocol_errors, sync_protocol_errors_sqlite, sync_protocol_errors_postgres);
on_both_backends!(
    a_sync_in_many_chunks_stores_what_one_chunk_does,
    a_sync_in_many_chunks_stores_what_one_chunk_does_sqlite,
    a_sync_in_many_chunks_stores_what_one_chunk_does_postgres
);
on_both_backends!(
    a_broken_sync_changes_nothing_and_leaves_nothing_staged,
    a_broken_sync_changes_nothing_and_leaves_nothing_staged_sqlite,
    a_broken_sync_changes_nothing_and_leaves_nothing_staged_postgres
);

#[tokio::test]
async fn the_audit_writer_role_cannot_update_or_delete_audit_rows() {
    let Some(mut h) = start(true).await else { return };
    h.client.append_events(pb::AppendEventsRequest { events: every_kind() }).await.unwrap();
    let url = h.postgres.as_ref().unwrap().url().to_owned();
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    connection.execute("SET search_path TO audit").await.unwrap();
    connection.execute("SET ROLE snapkeeper_audit_writer").await.unwrap();
    // The role may read and append ...
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_records").fetch_one(&mut connection).await.unwrap();
    assert_eq!(count, 13);
    for statement in [
        "UPDATE snapshot_records SET actor = 'forged'",
        "DELETE FROM snapshot_records",
        "UPDATE snapshot_quota_blocks SET quota_used_gb = 0",
        "DELETE FROM snapshot_quota_blocks",
        "UPDATE run_summaries SET status = 'completed'",
        "DELETE FROM run_summaries",
        "DELETE FROM compliance_daily",
        "TRUNCATE snapshot_records",
    ] {
        let err = sqlx::query(statement).execute(&mut connection).await.unwrap_err();
        let code = err.as_database_error().and_then(sqlx::error::DatabaseError::code).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
    connection.execute("RESET ROLE").await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_records WHERE actor = 'scheduler'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(count, 13);
    connection.close().await.unwrap();
    h.stop().await;
}
