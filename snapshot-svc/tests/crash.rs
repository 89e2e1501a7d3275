//! Must-show 4: the real `snapshot-svc` binary on SQLite against the simulator, killed with SIGKILL
//! at random points of its runs and restarted, 20 times; then one run to its end. Afterwards: no
//! two snapshots for one (volume, policy, slot), every snapshot we created has its audit record
//! (delivered by the outbox relay to the real audit-svc, read back with ListRecords), and no run
//! is still active. identity-svc, policy-svc and audit-svc run in-process for real over gRPC, each
//! on its own SQLite file.
//!
//! A small cloud (5 projects x 4 volumes) with four 1-minute policies whose slots are 15 s apart,
//! so most cycles find new due snapshots to be killed in the middle of. Retention keeps 100, so
//! every snapshot made stays listed and a duplicate cannot hide behind a retention delete.
//! `SNAPKEEPER_CRASH_SEED` repeats a sequence of kill points.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use openstack::{CloudConfig, OpenStack, SnapshotQuery};
use openstack_sim::{
    AssignmentSpec, ProjectSpec, QuotaSpec, Scenario, SimConfig, Simulator, UserSpec, VolumeSpec,
};
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;
use snapkeeper_proto::tonic::{self, transport::Channel};
use support::Login;

const CYCLES: usize = 20;
/// Seconds without heartbeat before a killed run is interrupted (the binary beats every second).
const HEARTBEAT_TIMEOUT: &str = "6";
const SERVICE_USER: &str = "snapkeeper-svc";
const SERVICE_PASSWORD: &str = "svc-pass";
const RULES: &str = r#"{
  "policies": {
    "q00": {"schedule": {"interval": "1m", "anchor": "2026-01-01T00:00:00Z"}, "retention": {"count": 100}},
    "q15": {"schedule": {"interval": "1m", "anchor": "2026-01-01T00:00:15Z"}, "retention": {"count": 100}},
    "q30": {"schedule": {"interval": "1m", "anchor": "2026-01-01T00:00:30Z"}, "retention": {"count": 100}},
    "q45": {"schedule": {"interval": "1m", "anchor": "2026-01-01T00:00:45Z"}, "retention": {"count": 100}}
  },
  "rules": [{"name": "all", "priority": 1, "match": {}, "auto_snapshot": true,
             "policies": ["q00", "q15", "q30", "q45"]}]
}"#;

fn scenario() -> Scenario {
    let mut s = Scenario::minimal();
    s.default_quota = Some(QuotaSpec { volumes: Some(-1), snapshots: Some(-1), gigabytes: Some(-1) });
    s.users.push(UserSpec {
        name: SERVICE_USER.to_owned(),
        password: SERVICE_PASSWORD.to_owned(),
        ..UserSpec::default()
    });
    for p in 0..5 {
        let project = format!("tenant-{p}");
        s.projects.push(ProjectSpec { name: project.clone(), ..ProjectSpec::default() });
        s.assignments.push(AssignmentSpec {
            user: SERVICE_USER.to_owned(),
            role: "member".to_owned(),
            project: Some(project.clone()),
            domain: None,
        });
        for v in 0..4 {
            s.volumes.push(VolumeSpec {
                project: project.clone(),
                name: format!("{project}-vol-{v}"),
                size: Some(1),
                ..VolumeSpec::default()
            });
        }
    }
    s
}

/// A small xorshift generator: kill points differ per run of the test and repeat with a seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// One start of the binary.
struct Process {
    child: tokio::process::Child,
    api: SnapshotServiceClient<Channel>,
}

/// How to start the binary: the same database and services every time.
struct Launcher {
    env: Vec<(&'static str, String)>,
    log: std::path::PathBuf,
}

impl Launcher {
    async fn start(&self) -> Process {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        // No OS_* and no cloud credentials: the admin session comes from identity-svc.
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_snapshot-svc"))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SNAPSHOT_SVC_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let api = loop {
            match SnapshotServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
                Ok(api) => break api,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "snapshot-svc did not listen: {error}\n{}",
                        self.tail()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        Process { child, api }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Starts a manual run, waiting while a killed run still holds the slot (until its heartbeat
/// times out and the restarted worker interrupts it).
async fn start_run(api: &mut SnapshotServiceClient<Channel>, launcher: &Launcher) -> String {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let request = pb::StartRunRequest {
            kind: pb::RunKind::Manual.into(),
            triggered_by: "crash-test".to_owned(),
            ..Default::default()
        };
        match api.start_run(request).await {
            Ok(response) => return response.into_inner().run.unwrap().run_id,
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                assert!(
                    Instant::now() < deadline,
                    "the killed run was never interrupted\n{}",
                    launcher.tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("StartRun: {status:?}\n{}", launcher.tail()),
        }
    }
}

async fn get_run(api: &mut SnapshotServiceClient<Channel>, run_id: &str) -> pb::Run {
    let request = pb::GetRunRequest { run_id: run_id.to_owned(), ..Default::default() };
    api.get_run(request).await.unwrap().into_inner().run.unwrap()
}

fn step_name(run: &pb::Run) -> &'static str {
    if run.status != pb::RunStatus::Running as i32 {
        return if run.status == pb::RunStatus::Pending as i32 { "pending" } else { "finished" };
    }
    let running = run.steps.iter().find(|s| s.status == pb::StepStatus::Running as i32);
    match running.and_then(|s| pb::StepKey::try_from(s.key).ok()) {
        Some(pb::StepKey::PolicyAssign) => "policy_assign",
        Some(pb::StepKey::InventoryPre) => "inventory_pre",
        Some(pb::StepKey::Snapshots) => "snapshots",
        Some(pb::StepKey::InventoryPost) => "inventory_post",
        _ => "between steps",
    }
}

async fn our_snapshots(admin: &OpenStack) -> Vec<openstack::Snapshot> {
    let all = SnapshotQuery { all_tenants: true, ..SnapshotQuery::default() };
    let listed = admin.cinder().snapshots(&all).await.unwrap();
    listed
        .into_iter()
        .filter(|s| s.metadata.get("created_by").map(String::as_str) == Some("snapkeeper"))
        .collect()
}

fn launcher(dir: &Path, identity_url: &str, policy_url: &str, audit_url: &str) -> Launcher {
    let env = vec![
        ("IDENTITY_SVC_URL", identity_url.to_owned()),
        ("POLICY_SVC_URL", policy_url.to_owned()),
        ("AUDIT_SVC_URL", audit_url.to_owned()),
        ("DATABASE_URL", format!("sqlite://{}/snapshot.db?mode=rwc", dir.display())),
        ("SNAPSHOT_SCHEDULER_ENABLED", "false".to_owned()),
        ("RUN_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT.to_owned()),
        ("AUTO_SNAPSHOT_BATCH_SIZE", "4".to_owned()),
        ("AUTO_SNAPSHOT_CONCURRENCY", "2".to_owned()),
        ("SNAPSHOT_SVC_HOST", "crash-test".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    Launcher { env, log: dir.join("snapshot-svc.log") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_never_duplicates_loses_a_record_or_leaves_a_run_active() {
    let sim = Simulator::start(SimConfig {
        scenario: scenario(),
        snapshot_delay: Duration::from_millis(30),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut cloud =
        CloudConfig::password(&sim.auth_url(), "admin", "Default", "adminpass", "admin", "Default");
    cloud.region = Some("RegionOne".to_owned());
    let admin = OpenStack::connect(cloud.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service_user = Login { user: SERVICE_USER.to_owned(), password: SERVICE_PASSWORD.to_owned() };
    let identity_url = support::start_identity(dir.path(), cloud, &service_user).await;
    let policy_url = support::start_policy(dir.path(), RULES, &identity_url).await;
    let audit =
        support::start_audit(&format!("sqlite://{}/audit.db?mode=rwc", dir.path().display()), &policy_url)
            .await;
    let launcher = launcher(dir.path(), &identity_url, &policy_url, &audit.url);
    let seed =
        std::env::var("SNAPKEEPER_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
    let mut dice = Dice(seed);
    let started = Instant::now();
    // Kill points: a random time after the run was claimed, up to a bit more than the longest run
    // took so far (measured on the runs that finished), so kills land in every step and a few
    // between runs.
    let mut longest_run = Duration::from_millis(500);
    let mut kills: BTreeMap<&'static str, usize> = BTreeMap::new();
    for cycle in 0..CYCLES {
        let creates_before = sim.stats().get("cinder.snapshots.create").copied().unwrap_or(0);
        let mut process = launcher.start().await;
        let run_id = start_run(&mut process.api, &launcher).await;
        let claimed = Instant::now();
        loop {
            let run = get_run(&mut process.api, &run_id).await;
            if run.status != pb::RunStatus::Pending as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let running = Instant::now();
        let delay = Duration::from_millis(dice.below(longest_run.as_millis() as u64 * 5 / 4));
        tokio::time::sleep(delay).await;
        let at_kill = get_run(&mut process.api, &run_id).await;
        process.child.start_kill().unwrap();
        process.child.wait().await.unwrap();
        let step = step_name(&at_kill);
        if let (Some(from), Some(to)) = (at_kill.started_at, at_kill.finished_at) {
            let took = Duration::from_millis(
                ((to.seconds - from.seconds) * 1000 + i64::from((to.nanos - from.nanos) / 1_000_000)).max(0)
                    as u64,
            );
            longest_run = longest_run.max(took);
        }
        *kills.entry(step).or_default() += 1;
        let creates = sim.stats().get("cinder.snapshots.create").copied().unwrap_or(0) - creates_before;
        println!(
            "cycle {cycle:2}: claimed after {:?}, killed {delay:?} into the run in {step} ({creates} creates sent)",
            running - claimed,
        );
    }

    // The last start: the run that finds what the killed ones left, to its end.
    let mut process = launcher.start().await;
    let run_id = start_run(&mut process.api, &launcher).await;
    let deadline = Instant::now() + Duration::from_mins(2);
    let last = loop {
        let run = get_run(&mut process.api, &run_id).await;
        if !matches!(pb::RunStatus::try_from(run.status), Ok(pb::RunStatus::Pending | pb::RunStatus::Running))
        {
            break run;
        }
        assert!(Instant::now() < deadline, "the last run did not finish\n{}", launcher.tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(pb::RunStatus::try_from(last.status), Ok(pb::RunStatus::Completed | pb::RunStatus::Partial)),
        "{last:?}\n{}",
        launcher.tail()
    );

    // Zero duplicates: one snapshot per (volume, policy, slot).
    let snapshots = our_snapshots(&admin).await;
    let mut per_slot: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for snapshot in &snapshots {
        let key = |k: &str| snapshot.metadata.get(k).cloned().unwrap_or_default();
        per_slot
            .entry((key("original_volume_id"), key("policy"), key("slot")))
            .or_default()
            .push(snapshot.id.clone());
    }
    let duplicates: Vec<_> = per_slot.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(duplicates.is_empty(), "duplicate snapshots: {duplicates:?}");

    // Every snapshot has its audit record once the relay has delivered the outbox.
    let deadline = Instant::now() + Duration::from_mins(1);
    let (recorded, recovered) = loop {
        let filter = audit::RecordFilter {
            kinds: vec![audit::EventKind::SnapshotCreated.into()],
            dry_run: Some(false),
            ..audit::RecordFilter::default()
        };
        let events = audit.records(filter).await;
        let created: Vec<&audit::Event> = events.iter().collect();
        let recorded: BTreeSet<String> = created.iter().map(|e| e.snapshot_id.clone()).collect();
        let missing: Vec<&String> =
            snapshots.iter().map(|s| &s.id).filter(|id| !recorded.contains(*id)).collect();
        if missing.is_empty() {
            break (recorded, created.iter().filter(|e| e.recovered).count());
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} snapshots have no audit record: {missing:?}\n{}",
            missing.len(),
            snapshots.len(),
            launcher.tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let unknown: Vec<&String> =
        recorded.iter().filter(|id| !snapshots.iter().any(|s| &s.id == *id)).collect();
    assert!(unknown.is_empty(), "audit records of snapshots Cinder does not have: {unknown:?}");

    // No run is active; every killed one was interrupted.
    let runs = process.api.list_runs(pb::ListRunsRequest::default()).await.unwrap().into_inner().runs;
    let active: Vec<&pb::Run> = runs
        .iter()
        .filter(|r| {
            matches!(pb::RunStatus::try_from(r.status), Ok(pb::RunStatus::Pending | pb::RunStatus::Running))
        })
        .collect();
    assert!(active.is_empty(), "{active:?}");
    let interrupted = runs.iter().filter(|r| r.status == pb::RunStatus::Interrupted as i32).count();
    process.child.start_kill().unwrap();
    process.child.wait().await.unwrap();
    let stats = sim.stats();
    println!(
        "kill -9 x{CYCLES} (seed {seed}) in {:?}: kills by step {kills:?}; {} runs, {interrupted} interrupted; \
         {} snapshots ({} create calls), 0 duplicates, all with audit records ({recovered} recorded as recovered \
         after a kill)",
        started.elapsed(),
        runs.len(),
        snapshots.len(),
        stats.get("cinder.snapshots.create").copied().unwrap_or(0),
    );
}
