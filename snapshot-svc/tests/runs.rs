//! Runs against the simulator (openstack-sim in-process on 127.0.0.1:0) with the real identity-svc,
//! policy-svc and audit-svc (in-process, over gRPC, each on its own SQLite file). snapshot-svc gets
//! its admin session from identity-svc only; the test drives it through its own gRPC API and its
//! worker, and reads what audit-svc recorded through AuditService.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Duration, Utc};
use clap::Parser;
use openstack::{CloudConfig, OpenStack};
use openstack_sim::{
    AssignmentSpec, ProjectSpec, QuotaSpec, Scenario, SimConfig, Simulator, SnapshotSpec, UserSpec,
    VolumeSpec,
};
use policy_svc::cloud::Cloud;
use service_kit::client::{Timeouts, connect_lazy};
use service_kit::clock::{Clock, SystemClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;
use snapkeeper_proto::snapshot::v1::snapshot_service_server::SnapshotServiceServer;
use snapkeeper_proto::tonic;
use snapshot_svc::cloud::Admin;
use snapshot_svc::grpc::{ApiSettings, SnapshotApi};
use snapshot_svc::runner::{Clients, Runner, Settings};
use snapshot_svc::store::Store;
use snapshot_svc::worker::{Relay, Worker};
use support::{Audit, Login};

const RULES: &str = r#"[{"name": "everything", "priority": 10, "match": {}, "policies": ["daily_3"],
  "auto_snapshot": true, "retention": {"daily_3": 2}}]"#;
const SERVICE_USER: &str = "snapkeeper-svc";
const SERVICE_PASSWORD: &str = "svc-pass";

fn days_ago(days: i64) -> String {
    (Utc::now() - Duration::days(days)).to_rfc3339()
}

/// 3 projects x 3 volumes; `tight` has a snapshot quota of 2. Volume `web-vol-0` has 4 of our
/// snapshots from earlier days, `db-vol-0` 3 of the old system's: retention (keep 2) deletes 2 and
/// 1 of them.
fn scenario() -> Scenario {
    let mut s = Scenario::minimal();
    s.users.push(UserSpec {
        name: SERVICE_USER.to_owned(),
        password: SERVICE_PASSWORD.to_owned(),
        ..UserSpec::default()
    });
    for project in ["web", "db", "tight"] {
        s.projects.push(ProjectSpec { name: project.to_owned(), ..ProjectSpec::default() });
        s.assignments.push(AssignmentSpec {
            user: SERVICE_USER.to_owned(),
            role: "member".to_owned(),
            project: Some(project.to_owned()),
            domain: None,
        });
        for v in 0..3 {
            s.volumes.push(VolumeSpec {
                project: project.to_owned(),
                name: format!("{project}-vol-{v}"),
                size: Some(1 + v),
                ..VolumeSpec::default()
            });
        }
    }
    s.default_quota = Some(QuotaSpec { volumes: Some(-1), snapshots: Some(-1), gigabytes: Some(-1) });
    s.quotas.insert("tight".to_owned(), QuotaSpec { snapshots: Some(2), ..QuotaSpec::default() });
    for day in 1..=4 {
        let slot = (Utc::now() - Duration::days(day)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
        s.snapshots.push(SnapshotSpec {
            volume: "web-vol-0".to_owned(),
            name: format!("ours-{day}"),
            metadata: BTreeMap::from([
                ("created_by".to_owned(), "snapkeeper".to_owned()),
                ("policy".to_owned(), "daily_3".to_owned()),
                ("slot".to_owned(), slot.to_rfc3339()),
            ]),
            created_at: Some(days_ago(day)),
            ..SnapshotSpec::default()
        });
    }
    for day in 1..=3 {
        s.snapshots.push(SnapshotSpec {
            volume: "db-vol-0".to_owned(),
            name: format!("legacy-{day}"),
            metadata: BTreeMap::from([
                ("created_by".to_owned(), "p9_auto_snapshots".to_owned()),
                ("policy".to_owned(), "daily_3".to_owned()),
            ]),
            created_at: Some(days_ago(day)),
            ..SnapshotSpec::default()
        });
    }
    s
}

struct Suite {
    sim: openstack_sim::SimHandle,
    admin: OpenStack,
    api: SnapshotServiceClient<tonic::transport::Channel>,
    worker: Worker,
    relay: Relay,
    audit: Audit,
    _dir: tempfile::TempDir,
}

async fn start() -> Suite {
    start_with(scenario(), RULES).await
}

/// The simulator's admin as identity-svc holds it (region RegionOne) and as the test reads with.
fn sim_admin(sim: &openstack_sim::SimHandle) -> CloudConfig {
    let mut cloud =
        CloudConfig::password(&sim.auth_url(), "admin", "Default", "adminpass", "admin", "Default");
    cloud.region = Some("RegionOne".to_owned());
    cloud.resilience.requests_per_second = None;
    cloud
}

fn service_user() -> Login {
    Login { user: SERVICE_USER.to_owned(), password: SERVICE_PASSWORD.to_owned() }
}

async fn start_with(scenario: Scenario, rules: &str) -> Suite {
    let sim = Simulator::start(SimConfig { scenario, ..SimConfig::default() }).await.unwrap();
    let admin = OpenStack::connect(sim_admin(&sim)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let identity_url = support::start_identity(dir.path(), sim_admin(&sim), &service_user()).await;
    let policy_url = support::start_policy(dir.path(), rules, &identity_url).await;
    let audit =
        support::start_audit(&format!("sqlite://{}/audit.db?mode=rwc", dir.path().display()), &policy_url)
            .await;
    let audit_url = audit.url.clone();

    let security = SecurityArgs::default();
    let clients = Clients {
        policy: PolicyServiceClient::new(connect_lazy(&policy_url, &security, Timeouts::default()).unwrap()),
        identity: IdentityServiceClient::new(
            connect_lazy(&identity_url, &security, Timeouts::default()).unwrap(),
        ),
        audit: AuditServiceClient::new(connect_lazy(&audit_url, &security, Timeouts::default()).unwrap()),
    };
    let database = Database::connect(
        &format!("sqlite://{}/snapshot.db?mode=rwc", dir.path().display()),
        snapshot_svc::SCHEMA,
        4,
    )
    .await
    .unwrap();
    database.migrate(snapshot_svc::MIGRATIONS).await.unwrap();
    let store = Store::new(database);
    let settings = Settings {
        host: "test-host".to_owned(),
        batch_size: 4,
        batch_delay: std::time::Duration::ZERO,
        concurrency: 2,
        heartbeat_interval: std::time::Duration::from_millis(200),
        max_size_gb: None,
        max_new: None,
        error_grace: Duration::hours(24),
        delete_timeout: std::time::Duration::from_secs(10),
    };
    // No SNAPKEEPER_REGIONS: the admin session's default region (identity-svc's RegionOne).
    let cloud =
        Cloud::connect(&identity_url, &security, 500).unwrap().with_resilience(support::unthrottled());
    let cloud_access = Admin::new(Arc::new(cloud), Vec::new());
    let runner =
        Runner::new(store.clone(), Arc::clone(&clock), clients.clone(), cloud_access.clone(), settings);
    let worker =
        Worker::new(store.clone(), Arc::clone(&clock), runner, "test-host".to_owned(), Duration::minutes(2));
    let relay = Relay::new(store.clone(), Arc::clone(&clock), clients.audit.clone());
    let api = SnapshotApi::new(ApiSettings {
        store,
        clock,
        policy: clients.policy.clone(),
        admin: cloud_access,
        host: "test-host".to_owned(),
        scheduler_enabled: false,
        snapshot_interval: Duration::hours(1),
        policy_assign_interval: Duration::hours(1),
        batch_size: 4,
        batch_delay: Duration::zero(),
    });
    let api_url = support::serve(SnapshotServiceServer::new(api)).await;
    let api = SnapshotServiceClient::connect(api_url).await.unwrap();
    Suite { sim, admin, api, worker, relay, audit, _dir: dir }
}

impl Suite {
    /// Starts a manual run through the API, executes it with the worker, returns it with its
    /// quota blocks and the simulator's request counts.
    async fn run(&mut self, dry_run: bool) -> (pb::Run, Vec<pb::QuotaBlock>, BTreeMap<String, u64>) {
        self.sim.reset_stats();
        let request = pb::StartRunRequest {
            kind: pb::RunKind::Manual.into(),
            dry_run,
            triggered_by: "alice".to_owned(),
            scope: None,
        };
        let run = self.api.start_run(request).await.unwrap().into_inner().run.unwrap();
        assert_eq!(run.status, pb::RunStatus::Pending as i32);
        for handle in self.worker.tick().await.unwrap() {
            handle.await.unwrap();
        }
        let stats = self.sim.stats();
        let response = self
            .api
            .get_run(pb::GetRunRequest {
                run_id: run.run_id,
                include_batches: true,
                include_quota_blocks: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!response.active);
        (response.run.unwrap(), response.quota_blocks, stats)
    }

    async fn batches(&mut self, run_id: &str) -> Vec<pb::Batch> {
        let request = pb::GetRunRequest {
            run_id: run_id.to_owned(),
            include_batches: true,
            include_quota_blocks: false,
        };
        self.api.get_run(request).await.unwrap().into_inner().batches
    }

    async fn snapshots(&self) -> Vec<openstack::Snapshot> {
        let all = openstack::SnapshotQuery { all_tenants: true, ..openstack::SnapshotQuery::default() };
        self.admin.cinder().snapshots(&all).await.unwrap()
    }
}

/// How long each step of a run took, for the printed figures.
fn step_times(run: &pb::Run) -> String {
    let mut parts = Vec::new();
    for step in &run.steps {
        let name = pb::StepKey::try_from(step.key).map_or("?", |k| k.as_str_name());
        if let (Some(from), Some(to)) = (step.started_at, step.finished_at) {
            let millis = (to.seconds - from.seconds) * 1000 + i64::from(to.nanos - from.nanos) / 1_000_000;
            parts.push(format!(
                "{} {:.1}s",
                name.trim_start_matches("STEP_KEY_").to_lowercase(),
                millis as f64 / 1000.0
            ));
        }
    }
    parts.join(", ")
}

fn calls(stats: &BTreeMap<String, u64>) -> u64 {
    stats.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_create_due_snapshots_in_each_project_block_on_quota_retain_and_never_duplicate() {
    let mut suite = start().await;
    let volumes = suite
        .admin
        .cinder()
        .volumes(&openstack::VolumeQuery { all_tenants: true, ..openstack::VolumeQuery::default() })
        .await
        .unwrap();
    let project_of: BTreeMap<String, String> =
        volumes.iter().map(|v| (v.id.clone(), v.project_id.clone().unwrap())).collect();
    let before: Vec<String> = suite.snapshots().await.iter().map(|s| s.id.clone()).collect();

    // A dry run plans everything and changes nothing.
    let (dry, _, _) = suite.run(true).await;
    let counters = dry.counters.unwrap();
    assert_eq!((counters.would_create, counters.would_delete, counters.quota_blocked), (8, 3, 1), "{dry:?}");
    assert_eq!(counters.snapshots_created, 0);
    assert_eq!(suite.snapshots().await.len(), before.len());

    // The first real run: 9 due, 8 created (tight allows 2), 1 blocked with figures, 3 deleted.
    let (first, blocks, stats) = suite.run(false).await;
    suite.relay.deliver().await.unwrap();
    let failures: Vec<String> = suite
        .audit
        .records(audit::RecordFilter::default())
        .await
        .iter()
        .filter(|e| !e.error.is_empty())
        .map(|e| e.error.clone())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let counters = first.counters.unwrap();
    assert_eq!(first.status, pb::RunStatus::Partial as i32, "{first:?}");
    assert_eq!(
        (
            counters.total_volumes,
            counters.due,
            counters.snapshots_created,
            counters.quota_blocked,
            counters.snapshots_deleted
        ),
        (9, 9, 8, 1, 3),
        "{counters:?}"
    );
    assert_eq!(blocks.len(), 1);
    let block = &blocks[0];
    assert_eq!(block.reason, pb::QuotaBlockReason::SnapshotsExceeded as i32);
    assert_eq!(
        (block.snapshot_quota_limit, block.snapshot_quota_used, block.snapshot_quota_needed),
        (2, 2, 1)
    );
    assert_eq!(block.volume_name, "tight-vol-2", "the largest volume is the one left out");
    let after = suite.snapshots().await;
    let created: Vec<&openstack::Snapshot> = after.iter().filter(|s| !before.contains(&s.id)).collect();
    assert_eq!(created.len(), 8);
    for snapshot in &created {
        assert_eq!(
            snapshot.project_id.as_ref(),
            project_of.get(&snapshot.volume_id),
            "snapshot in the volume's own project"
        );
        assert_eq!(snapshot.metadata["created_by"], "snapkeeper");
        assert_eq!(snapshot.metadata["run_id"], first.run_id);
        assert!(snapshot.name.starts_with("auto-"), "{}", snapshot.name);
    }
    let deleted: Vec<&String> = before.iter().filter(|id| !after.iter().any(|s| &s.id == *id)).collect();
    assert_eq!(deleted.len(), 3);
    println!("first run: {} OpenStack calls {stats:?}", calls(&stats));

    // One project per batch at concurrency 2: the second batch starts as soon as the first
    // project leaves a worker free, not after the first batch has ended.
    let batches = suite.batches(&first.run_id).await;
    assert_eq!(batches.len(), 3, "{batches:?}");
    let at = |t: &Option<snapkeeper_proto::prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
    assert!(batches.iter().all(|b| b.status == pb::BatchStatus::Completed as i32 || b.quota_blocked > 0));
    assert!(at(&batches[1].started_at) < at(&batches[0].finished_at), "{batches:?}");

    // Every created snapshot has its audit record once the relay delivered the outbox, each in
    // the volume's project with the figures of the block, and audit-svc's own summary of the run
    // agrees with snapshot-svc's.
    suite.relay.deliver().await.unwrap();
    assert_eq!(suite.relay.deliver().await.unwrap(), 0, "the outbox is drained");
    let recorded = suite.audit.of_kinds(&first.run_id, &[audit::EventKind::SnapshotCreated]).await;
    let mut recorded_ids: Vec<&str> = recorded.iter().map(|e| e.snapshot_id.as_str()).collect();
    recorded_ids.sort_unstable();
    let mut created_ids: Vec<&str> = created.iter().map(|s| s.id.as_str()).collect();
    created_ids.sort_unstable();
    assert_eq!(recorded_ids, created_ids);
    for event in &recorded {
        assert_eq!(Some(&event.project_id), project_of.get(&event.volume_id), "{event:?}");
        assert_eq!(event.region, "RegionOne");
    }
    let blocked = suite.audit.of_kinds(&first.run_id, &[audit::EventKind::SnapshotQuotaBlocked]).await;
    assert_eq!(blocked.len(), 1);
    let figures = blocked[0].quota.as_ref().unwrap();
    assert_eq!(
        (figures.snapshot_quota_limit, figures.snapshot_quota_used, figures.snapshot_quota_needed),
        (2, 2, 1)
    );
    let deleted_records = suite.audit.of_kinds(&first.run_id, &[audit::EventKind::SnapshotDeleted]).await;
    let mut deleted_recorded: Vec<&String> = deleted_records.iter().map(|e| &e.snapshot_id).collect();
    deleted_recorded.sort_unstable();
    let mut deleted_sorted = deleted.clone();
    deleted_sorted.sort_unstable();
    assert_eq!(deleted_recorded, deleted_sorted);
    let summary = suite.audit.run(&first.run_id).await.unwrap();
    assert_eq!(summary.status, audit::RunStatus::Partial as i32, "{summary:?}");
    let audited = summary.counters.unwrap();
    assert_eq!(
        (audited.snapshots_created, audited.quota_blocked, audited.snapshots_deleted),
        (8, 1, 3),
        "{audited:?}"
    );
    // inventory_pre and inventory_post both reached audit-svc: their steps completed there, and
    // the inventory audit-svc applied was listed during this run.
    let steps = suite.audit.of_kinds(&first.run_id, &[audit::EventKind::RunStep]).await;
    for step in [audit::StepKey::InventoryPre, audit::StepKey::InventoryPost] {
        let completed = steps.iter().any(|e| match &e.run_detail {
            Some(audit::event::RunDetail::RunStep(change)) => {
                change.step == step as i32 && change.status == audit::PhaseStatus::Completed as i32
            }
            _ => false,
        });
        assert!(completed, "{step:?} completed in audit-svc: {steps:?}");
    }
    let synced = suite.audit.inventory_synced_at().await.expect("an inventory was applied");
    assert!(synced.seconds >= first.started_at.unwrap().seconds, "{synced:?}");

    // The second run creates nothing: every due slot is taken (tight is still blocked).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // creating -> available
    let (second, _, stats) = suite.run(false).await;
    let counters = second.counters.unwrap();
    assert_eq!((counters.due, counters.snapshots_created, counters.quota_blocked), (1, 0, 1), "{counters:?}");
    println!("second run: {} OpenStack calls {stats:?}", calls(&stats));

    // The schedule names each policy of the last run with its enrolled volumes and next slot.
    let schedule = suite.api.get_schedule(pb::GetScheduleRequest::default()).await.unwrap().into_inner();
    let daily = &schedule.policies[0];
    assert_eq!((daily.policy_name.as_str(), daily.enrolled_volumes), ("daily_3", 9), "{schedule:?}");
    assert!(daily.next_slot.is_some() && daily.error.is_empty(), "{daily:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_validates_requests_and_allows_one_active_manual_run() {
    let mut suite = start().await;
    let bad = suite
        .api
        .start_run(pb::StartRunRequest { kind: 0, triggered_by: "x".to_owned(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("kind"));
    let unknown = suite
        .api
        .start_run(pb::StartRunRequest {
            kind: pb::RunKind::Manual.into(),
            triggered_by: "x".to_owned(),
            scope: Some(pb::RunScope { policy_names: vec!["nightly".to_owned()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("scope.policy_names[0]"));
    let scheduled = suite
        .api
        .start_run(pb::StartRunRequest {
            kind: pb::RunKind::Scheduled.into(),
            triggered_by: "x".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(scheduled.code(), tonic::Code::FailedPrecondition);

    let start = pb::StartRunRequest {
        kind: pb::RunKind::Manual.into(),
        triggered_by: "alice".to_owned(),
        ..Default::default()
    };
    let run = suite.api.start_run(start.clone()).await.unwrap().into_inner().run.unwrap();
    let again = suite.api.start_run(start).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    assert!(again.message().contains(&run.run_id));
    let active = suite
        .api
        .get_active_run(pb::GetActiveRunRequest {
            kind: None,
            include_latest_finished: true,
            include_batches: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(active.active);

    // Watch streams the run to its end with increasing sequence numbers.
    let mut watch = suite
        .api
        .watch_run(pb::WatchRunRequest {
            run_id: run.run_id.clone(),
            after_sequence: 0,
            include_volume_events: true,
        })
        .await
        .unwrap()
        .into_inner();
    for handle in suite.worker.tick().await.unwrap() {
        handle.await.unwrap();
    }
    let mut sequences = Vec::new();
    let mut kinds = Vec::new();
    while let Some(message) = watch.message().await.unwrap() {
        sequences.push(message.sequence);
        kinds.push(match message.event.unwrap() {
            pb::watch_run_response::Event::Snapshot(_) => "snapshot",
            pb::watch_run_response::Event::StepChanged(_) => "step",
            pb::watch_run_response::Event::BatchStarted(_) => "batch_started",
            pb::watch_run_response::Event::BatchFinished(_) => "batch_finished",
            pb::watch_run_response::Event::VolumeProcessed(_) => "volume",
            pb::watch_run_response::Event::Progress(_) => "progress",
            pb::watch_run_response::Event::RunFinished(_) => "run_finished",
        });
    }
    assert_eq!(kinds.first(), Some(&"snapshot"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert!(kinds.contains(&"volume") && kinds.contains(&"batch_finished"));
    assert!(sequences.windows(2).skip(1).all(|w| w[0] < w[1]), "{sequences:?}");

    let cancel = suite
        .api
        .cancel_run(pb::CancelRunRequest {
            run_id: run.run_id.clone(),
            actor: "bob".to_owned(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), tonic::Code::FailedPrecondition);
    let listed = suite
        .api
        .list_runs(pb::ListRunsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((listed.runs.len(), listed.total_count), (1, 1));
    let bad_page = suite
        .api
        .list_runs(pb::ListRunsRequest { page_token: "zz".to_owned(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad_page.code(), tonic::Code::InvalidArgument);
}

/// Must-show 2 at any size: a generated cloud (SNAPKEEPER_SCALE_PROJECTS projects, default 20, x 10
/// volumes) with 3 policies per volume. Every tenth project has a snapshot quota of 20 (30 due:
/// 10 blocked, the largest volumes, with figures); every tenth project but those has six of our
/// earlier daily_5 snapshots on one volume (retention keeps 5: one planned delete per run). The
/// first run creates exactly the due snapshots, each in its volume's project; the second creates
/// none; both delete exactly the planned ones. OpenStack calls per operation grow with projects
/// and snapshots made, not with volumes x snapshots. Prints the figures and wall times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_grow_with_projects_and_snapshots_made() {
    let projects: usize =
        std::env::var("SNAPKEEPER_SCALE_PROJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut scenario = Scenario::generate(&openstack_sim::GenSpec {
        projects,
        volumes_per_project: 10,
        snapshots: 0,
        domains: 3,
        seed: 7,
    });
    scenario.users.push(UserSpec {
        name: SERVICE_USER.to_owned(),
        password: SERVICE_PASSWORD.to_owned(),
        ..UserSpec::default()
    });
    let names: Vec<String> =
        scenario.projects.iter().filter(|p| p.name.starts_with("project-")).map(|p| p.name.clone()).collect();
    let tight: Vec<&String> = names.iter().step_by(10).collect();
    let seeded: Vec<&String> = names.iter().skip(1).step_by(10).collect();
    for name in &names {
        scenario.assignments.push(AssignmentSpec {
            user: SERVICE_USER.to_owned(),
            role: "member".to_owned(),
            project: Some(name.clone()),
            domain: None,
        });
    }
    for name in &tight {
        let quota = QuotaSpec { volumes: Some(-1), snapshots: Some(20), gigabytes: Some(-1) };
        scenario.quotas.insert((*name).clone(), quota);
    }
    for name in &seeded {
        for day in 1..=6 {
            let slot =
                (Utc::now() - Duration::days(day)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
            scenario.snapshots.push(SnapshotSpec {
                volume: format!("{name}-vol-000"),
                name: format!("{name}-earlier-{day}"),
                metadata: BTreeMap::from([
                    ("created_by".to_owned(), "snapkeeper".to_owned()),
                    ("policy".to_owned(), "daily_5".to_owned()),
                    ("slot".to_owned(), slot.to_rfc3339()),
                ]),
                created_at: Some(days_ago(day)),
                ..SnapshotSpec::default()
            });
        }
    }
    let rules = r#"[{"name": "all", "priority": 1, "match": {}, "auto_snapshot": true,
        "policies": ["daily_5", "weekly_4", "monthly_1st"]}]"#;
    let mut suite = start_with(scenario, rules).await;
    let volumes = suite
        .admin
        .cinder()
        .volumes(&openstack::VolumeQuery { all_tenants: true, ..openstack::VolumeQuery::default() })
        .await
        .unwrap();
    let project_of: BTreeMap<String, String> =
        volumes.iter().map(|v| (v.id.clone(), v.project_id.clone().unwrap())).collect();
    let before: BTreeSet<String> = suite.snapshots().await.into_iter().map(|s| s.id).collect();
    // The planned deletes: the oldest earlier snapshot of each seeded project.
    let oldest: BTreeSet<String> = suite
        .snapshots()
        .await
        .into_iter()
        .filter(|s| s.name.ends_with("-earlier-6"))
        .map(|s| s.id)
        .collect();
    assert_eq!(oldest.len(), seeded.len());

    let pairs = (projects * 10 * 3) as i64;
    let blocked = (tight.len() * 10) as i64;
    let started = std::time::Instant::now();
    let (first, blocks, stats) = suite.run(false).await;
    let first_took = started.elapsed();
    let counters = first.counters.unwrap();
    assert_eq!(
        (
            counters.due,
            counters.snapshots_created,
            counters.quota_blocked,
            counters.snapshots_deleted,
            counters.snapshots_failed,
            counters.deletes_failed
        ),
        (pairs, pairs - blocked, blocked, seeded.len() as i64, 0, 0),
        "{counters:?}"
    );
    assert_eq!(blocks.len() as i64, blocked);
    for block in &blocks {
        assert_eq!(block.reason, pb::QuotaBlockReason::SnapshotsExceeded as i32, "{block:?}");
        assert_eq!(
            (block.snapshot_quota_limit, block.snapshot_quota_used, block.snapshot_quota_needed),
            (20, 20, 1),
            "{block:?}"
        );
        assert!(tight.contains(&&block.project_name), "{block:?}");
    }
    let after = suite.snapshots().await;
    let created: Vec<&openstack::Snapshot> = after.iter().filter(|s| !before.contains(&s.id)).collect();
    assert_eq!(created.len() as i64, pairs - blocked);
    let mut per_slot = BTreeSet::new();
    for snapshot in &created {
        assert_eq!(
            snapshot.project_id.as_ref(),
            project_of.get(&snapshot.volume_id),
            "in the volume's project"
        );
        let key = |k: &str| snapshot.metadata.get(k).cloned().unwrap_or_default();
        assert!(
            per_slot.insert((key("original_volume_id"), key("policy"), key("slot"))),
            "duplicate {snapshot:?}"
        );
    }
    let gone: BTreeSet<String> =
        before.iter().filter(|id| !after.iter().any(|s| &s.id == *id)).cloned().collect();
    assert_eq!(gone, oldest, "retention deleted exactly the planned snapshots");
    assert_eq!(stats.get("cinder.snapshots.create").copied(), Some((pairs - blocked) as u64));
    assert_eq!(stats.get("cinder.snapshots.delete").copied(), Some(seeded.len() as u64));
    assert_eq!(stats.get("cinder.quota_sets.get").copied(), Some(projects as u64));
    // Listing: the pages of volumes and snapshots, twice (inventory_pre's listing is reused by the
    // snapshots step; inventory_post lists again), plus policy-svc's one volume listing for
    // policy_assign, whatever the number of volumes x snapshots.
    let listing = |stats: &BTreeMap<String, u64>| {
        stats.get("cinder.snapshots.list").copied().unwrap_or(0)
            + stats.get("cinder.volumes.list").copied().unwrap_or(0)
    };
    let pages = |items: usize| 1 + items as u64 / 500;
    let volume_pages = pages(projects * 10);
    let snapshot_pages = pages(before.len() + created.len());
    assert!(listing(&stats) <= 2 * (volume_pages + snapshot_pages) + volume_pages, "{stats:?}");
    // policy_assign writes metadata only where it changes: on this first run every volume (the
    // generator tagged some with daily_5 only), on the second none.
    let tagged = stats.get("cinder.volumes.metadata.set").copied().unwrap_or(0);
    assert!(tagged <= (projects * 10) as u64, "{stats:?}");
    // Everything else is per project with work (quota, token, role check) or per snapshot made
    // or deleted (create; delete and its confirmation).
    let bound = |projects_with_work: usize, made: u64, deleted: u64| {
        8 * projects_with_work as u64 + made + 4 * deleted + 3 * (volume_pages + snapshot_pages) + 20
    };
    assert!(
        calls(&stats) - tagged <= bound(projects, (pairs - blocked) as u64, seeded.len() as u64),
        "{stats:?}"
    );

    // The audit trail has every create and block once the outbox is relayed.
    suite.relay.deliver().await.unwrap();
    let recorded = suite.audit.of_kinds(&first.run_id, &[audit::EventKind::SnapshotCreated]).await;
    assert_eq!(recorded.len() as i64, pairs - blocked);
    let audited_blocks = suite.audit.of_kinds(&first.run_id, &[audit::EventKind::SnapshotQuotaBlocked]).await;
    assert_eq!(audited_blocks.len() as i64, blocked);
    assert!(audited_blocks.iter().all(|e| e.quota.as_ref().is_some_and(|q| q.snapshot_quota_limit == 20)));

    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // creating -> available
    let started = std::time::Instant::now();
    let (second, _, second_stats) = suite.run(false).await;
    let second_took = started.elapsed();
    let counters = second.counters.unwrap();
    // Only the blocked pairs are still due (and blocked again); the earlier snapshots' volume now
    // has 5 earlier + 1 new available: retention deletes one more per seeded project.
    assert_eq!(
        (counters.due, counters.snapshots_created, counters.quota_blocked, counters.snapshots_deleted),
        (blocked, 0, blocked, seeded.len() as i64),
        "{counters:?}"
    );
    assert_eq!(second_stats.get("cinder.snapshots.create"), None);
    assert_eq!(second_stats.get("cinder.volumes.metadata.set"), None, "the tags are in place");
    assert_eq!(
        second_stats.get("cinder.quota_sets.get").copied().unwrap_or(0),
        tight.len() as u64,
        "only projects with due pairs read their quota"
    );
    assert!(
        calls(&second_stats) <= bound(tight.len() + seeded.len(), 0, seeded.len() as u64),
        "{second_stats:?}"
    );
    println!(
        "scale: {projects} projects x 10 volumes x 3 policies ({} volumes, {} snapshots listed before)\n\
         first run {first_took:.1?} ({}): due {pairs}, created {}, quota-blocked {blocked} (limit 20, used 20, needed 1), \
         deleted {} (planned {}); {} OpenStack calls {stats:?}\n\
         second run {second_took:.1?} ({}): due {}, created 0, quota-blocked {}, deleted {}; {} OpenStack calls {second_stats:?}",
        projects * 10,
        before.len(),
        step_times(&first),
        pairs - blocked,
        seeded.len(),
        oldest.len(),
        calls(&stats),
        step_times(&second),
        counters.due,
        counters.quota_blocked,
        counters.snapshots_deleted,
        calls(&second_stats),
    );
}

/// snapshot-svc starts and serves with no identity-svc, policy-svc, audit-svc or cloud reachable
/// (and no cloud credentials of its own); a run then fails its steps saying what is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_without_a_cloud_and_a_run_fails_its_steps_naming_identity_svc() {
    // A port that was free a moment ago: nothing answers there.
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let config = snapshot_svc::Config::try_parse_from([
        "snapshot-svc",
        "--identity-url",
        &dead,
        "--policy-url",
        &dead,
        "--audit-url",
        &dead,
        "--database-url",
        &format!("sqlite://{}/snapshot.db?mode=rwc", dir.path().display()),
        "--scheduler-enabled",
        "false",
    ])
    .unwrap();
    assert!(config.regions.is_empty());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(snapshot_svc::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let mut api = SnapshotServiceClient::connect(url).await.unwrap();
    let start = pb::StartRunRequest {
        kind: pb::RunKind::Manual.into(),
        triggered_by: "alice".to_owned(),
        ..Default::default()
    };
    let run_id = api.start_run(start).await.unwrap().into_inner().run.unwrap().run_id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    let run = loop {
        let request = pb::GetRunRequest { run_id: run_id.clone(), ..Default::default() };
        let response = api.get_run(request).await.unwrap().into_inner();
        if !response.active {
            break response.run.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the run did not end: {response:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(run.status, pb::RunStatus::Failed as i32, "{run:?}");
    let step = |key: pb::StepKey| run.steps.iter().find(|s| s.key == key as i32).unwrap().clone();
    let snapshots = step(pb::StepKey::Snapshots);
    assert_eq!(snapshots.status, pb::StepStatus::Failed as i32);
    assert!(
        snapshots.error.contains("no admin session") && snapshots.error.contains("identity-svc"),
        "{}",
        snapshots.error
    );
    assert_eq!(step(pb::StepKey::InventoryPre).status, pb::StepStatus::Failed as i32);
    assert!(step(pb::StepKey::PolicyAssign).error.contains("policy-svc"), "{run:?}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// ForecastQuota: `tight` (snapshot quota 2, three daily volumes) is critical with its figures;
/// the unlimited projects are fine; requests are validated field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_quota_flags_the_project_whose_quota_cannot_take_the_next_slots() {
    let mut suite = start().await;
    let forecast = suite.api.forecast_quota(pb::ForecastQuotaRequest::default()).await.unwrap().into_inner();
    let summary = forecast.summary.unwrap();
    assert_eq!(
        (
            summary.total_projects_scanned,
            summary.critical_count,
            summary.projects_ok,
            summary.total_snapshot_volumes
        ),
        (3, 1, 2, 9),
        "{summary:?}"
    );
    assert!((summary.safety_margin_pct - 10.0).abs() < 1e-9);
    let tight = &forecast.alerts[0];
    assert_eq!(
        (tight.project_name.as_str(), tight.severity),
        ("tight", pb::ForecastSeverity::Critical as i32)
    );
    let snapshots =
        tight.resources.iter().find(|r| r.resource == pb::QuotaResource::Snapshots as i32).unwrap();
    assert_eq!(
        (
            snapshots.limit,
            snapshots.used,
            snapshots.available,
            snapshots.needed,
            snapshots.needed_with_margin
        ),
        (2, 0, 2, 3, 4)
    );
    assert_eq!(snapshots.shortfall, 2);
    let daily = &tight.policies[0];
    assert_eq!((daily.policy_name.as_str(), daily.slots_in_horizon, daily.volumes), ("daily_3", 1, 3));
    let names: Vec<&str> = forecast.ok_projects.iter().map(|p| p.project_name.as_str()).collect();
    assert_eq!(names, ["db", "web"]);

    let bad = |request: pb::ForecastQuotaRequest| {
        let mut api = suite.api.clone();
        async move { api.forecast_quota(request).await.unwrap_err() }
    };
    let margin = bad(pb::ForecastQuotaRequest { safety_margin_pct: Some(150.0), ..Default::default() }).await;
    assert_eq!(margin.code(), tonic::Code::InvalidArgument);
    assert!(margin.message().starts_with("safety_margin_pct"), "{margin:?}");
    let horizon = bad(pb::ForecastQuotaRequest {
        horizon: Some(snapkeeper_proto::prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    })
    .await;
    assert!(horizon.message().starts_with("horizon"), "{horizon:?}");
    let project =
        bad(pb::ForecastQuotaRequest { project_ids: vec![String::new()], ..Default::default() }).await;
    assert!(project.message().starts_with("project_ids[0]"), "{project:?}");
    let region = bad(pb::ForecastQuotaRequest { region: "Nowhere".to_owned(), ..Default::default() }).await;
    assert_eq!(region.code(), tonic::Code::NotFound);
}
