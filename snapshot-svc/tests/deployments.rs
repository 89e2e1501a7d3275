//! How snapshot-svc behaves as deployed, against the simulator with the real identity-svc,
//! policy-svc and audit-svc in-process over gRPC: the scheduler's policy assignment pass every
//! POLICY_ASSIGN_INTERVAL_MINUTES between runs and the quota risks each scheduled run records;
//! two replicas on one PostgreSQL database for 10 scheduler ticks; SNAPKEEPER_REGIONS with two
//! regions. Time is a manual clock moved by the test, so ticks and slots come when the test says.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use openstack::{CloudConfig, OpenStack};
use openstack_sim::{
    AssignmentSpec, ProjectSpec, QuotaSpec, Scenario, SimConfig, Simulator, UserSpec, VolumeSpec,
};
use policy_svc::cloud::Cloud;
use service_kit::client::{Timeouts, connect_lazy};
use service_kit::clock::{Clock, ManualClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use service_kit::testing::TestPostgres;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapshot_svc::cloud::Admin;
use snapshot_svc::run::{RunKind, RunStatus, Scope};
use snapshot_svc::runner::{Clients, Runner, Settings};
use snapshot_svc::store::{NewRun, Store};
use snapshot_svc::worker::{Relay, SCHEDULER_LEASE, Scheduler, Worker};
use support::{Audit, Login};

const SERVICE_USER: &str = "snapkeeper-svc";
const SERVICE_PASSWORD: &str = "svc-pass";
/// A lease longer than any clock move of the tests, so the first leader stays leader.
const LEASE_TTL: Duration = Duration::hours(3);

/// 3 projects x 3 volumes; `tight` (when asked) has a snapshot quota of 2.
fn scenario(regions: &[&str], tight: bool) -> Scenario {
    let mut s = Scenario::minimal();
    s.regions = regions.iter().map(|r| (*r).to_owned()).collect();
    s.users.push(UserSpec {
        name: SERVICE_USER.to_owned(),
        password: SERVICE_PASSWORD.to_owned(),
        ..UserSpec::default()
    });
    s.default_quota = Some(QuotaSpec { volumes: Some(-1), snapshots: Some(-1), gigabytes: Some(-1) });
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
    if tight {
        s.quotas.insert(
            "tight".to_owned(),
            QuotaSpec { volumes: Some(-1), snapshots: Some(2), gigabytes: Some(-1) },
        );
    }
    s
}

/// The cloud and the services around snapshot-svc.
struct Suite {
    sim: openstack_sim::SimHandle,
    admin: OpenStack,
    identity_url: String,
    policy_url: String,
    audit: Audit,
    _dir: tempfile::TempDir,
}

/// Starts the simulator, identity-svc and policy-svc (SQLite) and audit-svc on `audit_database`
/// (SQLite when `None`).
async fn suite(scenario: Scenario, rules: &str, audit_database: Option<&str>) -> Suite {
    let sim = Simulator::start(SimConfig { scenario, ..SimConfig::default() }).await.unwrap();
    let mut cloud =
        CloudConfig::password(&sim.auth_url(), "admin", "Default", "adminpass", "admin", "Default");
    cloud.region = Some("RegionOne".to_owned());
    cloud.resilience.requests_per_second = None;
    let admin = OpenStack::connect(cloud.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let login = Login { user: SERVICE_USER.to_owned(), password: SERVICE_PASSWORD.to_owned() };
    let identity_url = support::start_identity(dir.path(), cloud, &login).await;
    let policy_url = support::start_policy(dir.path(), rules, &identity_url).await;
    let sqlite = format!("sqlite://{}/audit.db?mode=rwc", dir.path().display());
    let audit = support::start_audit(audit_database.unwrap_or(&sqlite), &policy_url).await;
    Suite { sim, admin, identity_url, policy_url, audit, _dir: dir }
}

/// One snapshot-svc replica: its worker, relay and scheduler on `database`, named `host`.
struct Replica {
    store: Store,
    worker: Worker,
    relay: Relay,
    scheduler: Scheduler,
}

async fn replica(
    suite: &Suite,
    database: &str,
    host: &str,
    clock: &ManualClock,
    regions: &[&str],
    assign_every: Duration,
) -> Replica {
    let database = Database::connect(database, snapshot_svc::SCHEMA, 4).await.unwrap();
    database.migrate(snapshot_svc::MIGRATIONS).await.unwrap();
    let store = Store::new(database);
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let security = SecurityArgs::default();
    let channel = |url: &str| connect_lazy(url, &security, Timeouts::default()).unwrap();
    let clients = Clients {
        policy: PolicyServiceClient::new(channel(&suite.policy_url)),
        identity: IdentityServiceClient::new(channel(&suite.identity_url)),
        audit: AuditServiceClient::new(channel(&suite.audit.url)),
    };
    let cloud =
        Cloud::connect(&suite.identity_url, &security, 500).unwrap().with_resilience(support::unthrottled());
    let admin = Admin::new(Arc::new(cloud), regions.iter().map(|r| (*r).to_owned()).collect());
    let settings = Settings {
        host: host.to_owned(),
        batch_size: 4,
        batch_delay: std::time::Duration::ZERO,
        concurrency: 2,
        heartbeat_interval: std::time::Duration::from_millis(200),
        max_size_gb: None,
        max_new: None,
        error_grace: Duration::hours(24),
        delete_timeout: std::time::Duration::from_secs(10),
    };
    let runner = Runner::new(store.clone(), Arc::clone(&clock), clients.clone(), admin, settings);
    let worker =
        Worker::new(store.clone(), Arc::clone(&clock), runner.clone(), host.to_owned(), Duration::minutes(2));
    let relay = Relay::new(store.clone(), Arc::clone(&clock), clients.audit.clone());
    let scheduler =
        Scheduler::new(store.clone(), clock, host.to_owned(), Duration::hours(1), false, 4, Duration::zero())
            .with_policy_assign(assign_every, runner);
    Replica { store, worker, relay, scheduler }
}

impl Replica {
    /// One worker pass, waiting for the runs it started.
    async fn work(&self) -> usize {
        let handles = self.worker.tick().await.unwrap();
        let started = handles.len();
        for handle in handles {
            handle.await.unwrap();
        }
        started
    }
}

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}/{name}.db?mode=rwc", dir.path().display())
}

/// The scheduler leads with one scheduled run per AUTO_SNAPSHOT_INTERVAL_MINUTES (60) and, between
/// runs, its own policy assignment pass every POLICY_ASSIGN_INTERVAL_MINUTES (15): a tag changed
/// behind its back is put back by the pass, not by a run; a pass with nothing to change writes
/// nothing. After the scheduled run, audit-svc has one quota-risk record for `tight` (quota 2,
/// three daily volumes), with its figures, and none for the projects with room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_assigns_policies_between_runs_and_records_quota_risks_after_each_run() {
    let rules = r#"[{"name": "all", "priority": 1, "match": {}, "auto_snapshot": true,
        "policies": ["daily_3"]}]"#;
    let suite = suite(scenario(&["RegionOne"], true), rules, None).await;
    let dir = tempfile::tempdir().unwrap();
    // Whole seconds: the tables keep microseconds.
    let clock = ManualClock::new(Utc::now().duration_trunc(Duration::seconds(1)).unwrap());
    let leader =
        replica(&suite, &sqlite_url(&dir, "snapshot"), "leader", &clock, &[], Duration::minutes(15)).await;
    let tag = |value: &str| BTreeMap::from([("auto_snapshot".to_owned(), value.to_owned())]);
    let volume = suite
        .admin
        .cinder()
        .volumes(&openstack::VolumeQuery { all_tenants: true, ..openstack::VolumeQuery::default() })
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.name == "web-vol-0")
        .unwrap();
    let auto_snapshot = || async {
        suite.admin.cinder().volume(&volume.id).await.unwrap().metadata.get("auto_snapshot").cloned()
    };

    // The first tick queues a scheduled run; its policy_assign step tags every volume.
    let run_id = leader.scheduler.tick(LEASE_TTL).await.unwrap().expect("a scheduled run");
    assert_eq!(leader.work().await, 1);
    let run = leader.store.run(&run_id).await.unwrap().unwrap();
    assert_eq!((run.kind, run.status), (RunKind::Scheduled, RunStatus::Partial), "{run:?}");
    assert_eq!(auto_snapshot().await.as_deref(), Some("true"));
    let lease = leader.store.lease(SCHEDULER_LEASE).await.unwrap().unwrap();
    assert_eq!(lease.last_assign_at, Some(clock.now()), "the run's policy_assign counts as a pass");

    // Quota risks of the scheduled run, through the outbox.
    leader.relay.deliver().await.unwrap();
    let risks = suite.audit.of_kinds(&run_id, &[audit::EventKind::QuotaForecastRisk]).await;
    let projects: Vec<&str> = risks.iter().map(|e| e.project_name.as_str()).collect();
    assert_eq!(projects, ["tight"], "{risks:?}");
    let risk = &risks[0];
    let figures = risk.quota.as_ref().unwrap();
    assert_eq!(figures.reason, audit::QuotaBlockReason::SnapshotsExceeded as i32, "{risk:?}");
    // Two snapshots exist (the third was blocked); the next daily slot needs one more for each of
    // the three volumes, and retention (keep 3) frees none of them.
    assert_eq!(
        (figures.snapshot_quota_limit, figures.snapshot_quota_used, figures.snapshot_quota_needed),
        (2, 2, 3),
        "{risk:?}"
    );
    assert_eq!(figures.quota_limit_gb, -1);
    assert_eq!(
        (risk.region.as_str(), risk.policy_name.as_str(), risk.domain_name.as_str()),
        ("RegionOne", "daily_3", "Default")
    );
    assert!(!risk.project_id.is_empty() && !risk.domain_id.is_empty(), "{risk:?}");
    assert!(risk.detail.starts_with("critical: snapshots used 2 of 2"), "{}", risk.detail);

    // Someone turns the volume off; ten minutes later nothing is due yet.
    suite.admin.cinder().set_volume_metadata(&volume.id, &tag("false")).await.unwrap();
    suite.sim.reset_stats();
    clock.advance(Duration::minutes(10));
    assert_eq!(leader.scheduler.tick(LEASE_TTL).await.unwrap(), None);
    assert_eq!(suite.sim.stats().get("cinder.volumes.metadata.set"), None);
    assert_eq!(auto_snapshot().await.as_deref(), Some("false"));

    // At 16 minutes the pass is due: no run is queued, the tag is back.
    clock.advance(Duration::minutes(6));
    assert_eq!(leader.scheduler.tick(LEASE_TTL).await.unwrap(), None);
    assert_eq!(suite.sim.stats().get("cinder.volumes.metadata.set").copied(), Some(1));
    assert_eq!(auto_snapshot().await.as_deref(), Some("true"));
    let lease = leader.store.lease(SCHEDULER_LEASE).await.unwrap().unwrap();
    assert_eq!(lease.last_assign_at, Some(clock.now()));
    let (runs, total) =
        leader.store.list_runs(&snapshot_svc::store::RunFilter::default(), 0, 10).await.unwrap();
    assert_eq!(total, 1, "{runs:?}");

    // The next pass (at 32 minutes) finds nothing to change and writes nothing.
    suite.sim.reset_stats();
    clock.advance(Duration::minutes(16));
    assert_eq!(leader.scheduler.tick(LEASE_TTL).await.unwrap(), None);
    assert_eq!(suite.sim.stats().get("cinder.volumes.metadata.set"), None);
    assert_eq!(leader.store.lease(SCHEDULER_LEASE).await.unwrap().unwrap().last_assign_at, Some(clock.now()));

    // At 61 minutes the next scheduled run is queued.
    clock.advance(Duration::minutes(29));
    assert!(leader.scheduler.tick(LEASE_TTL).await.unwrap().is_some());
}

/// Issue 11: two replicas (two workers and two schedulers on one PostgreSQL database) for 10
/// scheduler ticks an hour apart, with an hourly policy: exactly one run per tick, each executed
/// by one replica, and no volume processed twice (one snapshot and one audit record per volume and
/// slot; audit-svc on the same database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgresql_run_once_per_tick_and_never_process_a_volume_twice() {
    let Some(postgres) = TestPostgres::create().await else { return };
    let rules = r#"[{"name": "all", "priority": 1, "match": {}, "auto_snapshot": true,
        "policies": ["hourly_24"]}]"#;
    let suite = suite(scenario(&["RegionOne"], false), rules, Some(postgres.url())).await;
    // Hours in the past, so the 10 hourly slots are behind the services' own clocks too.
    let start =
        (Utc::now() - Duration::hours(12)).duration_trunc(Duration::hours(1)).unwrap() + Duration::minutes(1);
    let clock = ManualClock::new(start);
    let one = replica(&suite, postgres.url(), "replica-a", &clock, &[], Duration::hours(6)).await;
    let two = replica(&suite, postgres.url(), "replica-b", &clock, &[], Duration::hours(6)).await;
    let mut executed_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut run_ids = Vec::new();
    for tick in 0..10 {
        if tick > 0 {
            clock.advance(Duration::hours(1));
        }
        let (a, b) = tokio::join!(one.scheduler.tick(LEASE_TTL), two.scheduler.tick(LEASE_TTL));
        let queued: Vec<String> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(queued.len(), 1, "tick {tick}: one run per tick, got {queued:?}");
        let (a, b) = tokio::join!(one.work(), two.work());
        assert_eq!(a + b, 1, "tick {tick}: one replica executes the run");
        let run = one.store.run(&queued[0]).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed, "tick {tick}: {run:?}");
        assert_eq!((run.counters.due, run.counters.snapshots_created), (9, 9), "tick {tick}: {run:?}");
        *executed_by.entry(run.execution_host.clone().unwrap_or_default()).or_default() += 1;
        run_ids.push(run.id);
    }
    let (_, scheduled) = one
        .store
        .list_runs(
            &snapshot_svc::store::RunFilter { kind: Some(RunKind::Scheduled), ..Default::default() },
            0,
            100,
        )
        .await
        .unwrap();
    assert_eq!(scheduled, 10);

    // One snapshot per (volume, slot) in Cinder.
    let all = openstack::SnapshotQuery { all_tenants: true, ..openstack::SnapshotQuery::default() };
    let snapshots = suite.admin.cinder().snapshots(&all).await.unwrap();
    let slots: BTreeSet<(String, String)> = snapshots
        .iter()
        .map(|s| (s.volume_id.clone(), s.metadata.get("slot").cloned().unwrap_or_default()))
        .collect();
    assert_eq!((snapshots.len(), slots.len()), (90, 90));

    // Both relays deliver at once and share the outbox: each event is sent once; audit-svc holds
    // one created record per volume and run.
    let waiting = one.store.outbox_len().await.unwrap();
    let (a, b) = tokio::join!(one.relay.deliver(), two.relay.deliver());
    let (a, b) = (a.unwrap(), b.unwrap());
    println!("relays delivered {a} + {b} of {waiting} events");
    assert_eq!((a + b) as i64, waiting);
    assert_eq!(one.store.outbox_len().await.unwrap(), 0);
    for run_id in &run_ids {
        let created = suite.audit.of_kinds(run_id, &[audit::EventKind::SnapshotCreated]).await;
        let volumes: BTreeSet<&str> = created.iter().map(|e| e.volume_id.as_str()).collect();
        assert_eq!((created.len(), volumes.len()), (9, 9), "run {run_id}");
    }
    let recorded = suite.audit.of_kinds("", &[audit::EventKind::SnapshotCreated]).await;
    let ids: BTreeSet<&str> = recorded.iter().map(|e| e.snapshot_id.as_str()).collect();
    assert_eq!((recorded.len(), ids.len()), (90, 90));
    println!("two replicas, 10 ticks: runs executed by {executed_by:?}; 90 snapshots, 90 audit records");
    drop((one, two, suite));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    postgres.drop_database().await;
}

/// SNAPKEEPER_REGIONS=RegionOne,RegionTwo: each region is listed, planned, batched and recorded
/// under its own name, with an admin session and project tokens per region from identity-svc,
/// and a run scoped to RegionTwo acts there only. The simulator's catalog has both regions but
/// one Cinder behind them, so each region sees the same volumes: a dry run plans them twice
/// (once per region), and the real run is scoped to one region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_are_each_processed_and_recorded_under_their_name() {
    let rules = r#"[{"name": "all", "priority": 1, "match": {}, "auto_snapshot": true,
        "policies": ["daily_3"]}]"#;
    let suite = suite(scenario(&["RegionOne", "RegionTwo"], false), rules, None).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc::now());
    let regions = ["RegionOne", "RegionTwo"];
    let node =
        replica(&suite, &sqlite_url(&dir, "snapshot"), "node", &clock, &regions, Duration::hours(1)).await;
    let queue = |dry_run: bool, region_names: Vec<String>| NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        kind: RunKind::Manual,
        dry_run,
        triggered_by: "alice".to_owned(),
        scope: Scope { region_names, ..Scope::default() },
        batch_size: 4,
        batch_delay: Duration::zero(),
        created_at: clock.now(),
    };

    let dry = node.store.create_run(&queue(true, Vec::new())).await.unwrap();
    assert_eq!(node.work().await, 1);
    let dry = node.store.run(&dry.id).await.unwrap().unwrap();
    assert_eq!(dry.regions, regions);
    assert_eq!(dry.counters.would_create, 18, "9 due volumes in each region: {dry:?}");
    let batch_regions: BTreeSet<String> =
        node.store.batches(&dry.id).await.unwrap().into_iter().map(|b| b.region).collect();
    assert_eq!(batch_regions, BTreeSet::from(regions.map(str::to_owned)));
    node.relay.deliver().await.unwrap();
    let planned = suite.audit.of_kinds(&dry.id, &[audit::EventKind::SnapshotDryRun]).await;
    let mut per_region: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &planned {
        *per_region.entry(event.region.as_str()).or_default() += 1;
    }
    assert_eq!(per_region, BTreeMap::from([("RegionOne", 9), ("RegionTwo", 9)]));

    suite.sim.reset_stats();
    let real = node.store.create_run(&queue(false, vec!["RegionTwo".to_owned()])).await.unwrap();
    assert_eq!(node.work().await, 1);
    let real = node.store.run(&real.id).await.unwrap().unwrap();
    assert_eq!((real.status, real.counters.snapshots_created), (RunStatus::Completed, 9), "{real:?}");
    assert_eq!(real.regions, ["RegionTwo"]);
    node.relay.deliver().await.unwrap();
    let created = suite.audit.of_kinds(&real.id, &[audit::EventKind::SnapshotCreated]).await;
    assert_eq!(created.len(), 9);
    assert!(created.iter().all(|e| e.region == "RegionTwo"), "{created:?}");
    let summary = suite.audit.run(&real.id).await.unwrap();
    assert_eq!(summary.regions, ["RegionTwo"]);
    let synced = suite.audit.inventory_synced_at().await;
    assert!(synced.is_some(), "RegionTwo's inventory reached audit-svc");
    println!(
        "two regions: dry run planned {per_region:?}; the RegionTwo run made 9 snapshots: {:?}",
        suite.sim.stats()
    );
}
