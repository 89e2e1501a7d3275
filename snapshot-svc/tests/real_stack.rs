//! Must-show 3: a run through snapshot-svc (`serve`, in-process) against real Keystone and Cinder
//! (`../shared/real-openstack`), when `SNAPKEEPER_OS_CLOUD_TESTS=1` and the `OS_*` variables of
//! `/tmp/realos/endpoints.env` are set; skipped with the reason otherwise (and refused in CI).
//!
//! The test makes 3 projects x 3 volumes, a service user with `member` on them, a snapshot quota of
//! 2 in one project and three snapshots of ours from earlier slots on one volume (daily_3, keep 2).
//! The real identity-svc (in-process) holds the passwords: the stack's admin and the test's service
//! user. policy-svc and audit-svc are the real ones too (in-process, over gRPC, on SQLite files).
//! Everything made is deleted at the end, also when an assertion fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures::FutureExt;
use openstack::{
    AuthMethod, CloudConfig, DomainRef, NewProject, NewSnapshot, NewUser, NewVolume, OpenStack, ProjectRef,
    Scope, SecretString, SnapshotQuery, UserRef,
};
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;
use snapkeeper_proto::tonic::transport::Channel;
use support::Login;

const WAIT: Duration = Duration::from_secs(90);

/// The real stack's admin config, or `None` (with the reason printed) when the test is off.
fn real_config() -> Option<CloudConfig> {
    if std::env::var("SNAPKEEPER_OS_CLOUD_TESTS").is_ok_and(|v| v == "1") {
        return Some(CloudConfig::from_env().unwrap_or_else(|e| {
            panic!("SNAPKEEPER_OS_CLOUD_TESTS=1 but the OS_* environment is unusable: {e}")
        }));
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!in_ci, "CI is set but SNAPKEEPER_OS_CLOUD_TESTS is not 1: the real-stack run must run in CI");
    println!(
        "SKIP snapshot-svc against real OpenStack: SNAPKEEPER_OS_CLOUD_TESTS is not 1 \
         (bash ../shared/real-openstack/up.sh; . /tmp/realos/endpoints.env; SNAPKEEPER_OS_CLOUD_TESTS=1)"
    );
    None
}

/// What the test made, for the clean-up.
#[derive(Debug, Default)]
struct Made {
    projects: Vec<String>,
    users: Vec<String>,
}

struct Cloud {
    admin: OpenStack,
    tag: String,
    password: String,
    made: std::sync::Mutex<Made>,
}

impl Cloud {
    fn service_user(&self) -> String {
        format!("{}-svc", self.tag)
    }

    /// The service user scoped to `project_id`, sharing the admin's limits.
    async fn tenant(&self, project_id: &str) -> OpenStack {
        let auth = AuthMethod::Password {
            user: UserRef::Name { name: self.service_user(), domain: DomainRef::Id("default".to_owned()) },
            password: SecretString::from(self.password.clone()),
            scope: Scope::Project(ProjectRef::Id(project_id.to_owned())),
        };
        self.admin.with_auth(auth).await.unwrap()
    }

    /// Our snapshots in the test's projects.
    async fn snapshots(&self) -> Vec<openstack::Snapshot> {
        let all = SnapshotQuery { all_tenants: true, ..SnapshotQuery::default() };
        let projects = self.made.lock().unwrap().projects.clone();
        let listed = self.admin.cinder().snapshots(&all).await.unwrap();
        listed.into_iter().filter(|s| s.project_id.as_ref().is_some_and(|p| projects.contains(p))).collect()
    }

    /// Deletes the projects' volumes with their snapshots, then the user and the projects.
    async fn clean_up(&self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap());
        let cinder = self.admin.cinder();
        let all = openstack::VolumeQuery { all_tenants: true, ..openstack::VolumeQuery::default() };
        let volumes = cinder.volumes(&all).await.unwrap_or_default();
        let ours: Vec<&openstack::Volume> = volumes
            .iter()
            .filter(|v| v.project_id.as_ref().is_some_and(|p| made.projects.contains(p)))
            .collect();
        for volume in &ours {
            if let Err(error) = cinder.delete_volume(&volume.id, true).await {
                eprintln!("clean-up: volume {}: {error}", volume.id);
            }
        }
        let deadline = Instant::now() + WAIT;
        for volume in &ours {
            while Instant::now() < deadline {
                match cinder.volume(&volume.id).await {
                    Err(error) if error.is_not_found() => break,
                    _ => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
        for user in &made.users {
            if let Err(error) = self.admin.keystone().delete_user(user).await {
                eprintln!("clean-up: user {user}: {error}");
            }
        }
        for project in &made.projects {
            if let Err(error) = self.admin.keystone().delete_project(project).await {
                eprintln!("clean-up: project {project}: {error}");
            }
        }
    }
}

/// 3 projects x 3 volumes (sizes 1, 2, 3 GiB), the service user with `member` on each, a snapshot
/// quota of 2 in `tight`, and three snapshots of ours for earlier daily slots on `a-vol-0`.
/// Returns the project ids by short name and the volume ids by name.
async fn set_up(cloud: &Cloud) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let keystone = cloud.admin.keystone();
    let user = keystone
        .create_user(&NewUser {
            name: cloud.service_user(),
            domain_id: "default".to_owned(),
            password: SecretString::from(cloud.password.clone()),
            email: None,
        })
        .await
        .unwrap();
    cloud.made.lock().unwrap().users.push(user.id.clone());
    let member = keystone.find_role("member").await.unwrap().unwrap();
    let mut projects = BTreeMap::new();
    let mut volumes = BTreeMap::new();
    for short in ["a", "b", "tight"] {
        let project = keystone
            .create_project(&NewProject {
                name: format!("{}-{short}", cloud.tag),
                domain_id: "default".to_owned(),
                description: "snapshot-svc real-stack test".to_owned(),
            })
            .await
            .unwrap();
        cloud.made.lock().unwrap().projects.push(project.id.clone());
        keystone.grant_project_role(&project.id, &user.id, &member.id).await.unwrap();
        let tenant = cloud.tenant(&project.id).await;
        for v in 0..3_u64 {
            let name = format!("{short}-vol-{v}");
            let volume = tenant
                .cinder()
                .create_volume(&NewVolume { name: name.clone(), size: v + 1, ..NewVolume::default() })
                .await
                .unwrap();
            volumes.insert(name, volume.id);
        }
        for (name, id) in volumes.iter().filter(|(n, _)| n.starts_with(&format!("{short}-"))) {
            tenant
                .cinder()
                .wait_for_volume(id, "available", WAIT)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        projects.insert(short.to_owned(), project.id);
    }
    let limits = BTreeMap::from([("snapshots".to_owned(), 2)]);
    cloud.admin.cinder().update_quota_set(&projects["tight"], &limits).await.unwrap();
    // Oldest slot first, so creation order is slot order (retention keeps the newest by creation).
    let tenant = cloud.tenant(&projects["a"]).await;
    for days in [3, 2, 1] {
        let slot =
            (Utc::now() - chrono::Duration::days(days)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let snapshot = tenant
            .cinder()
            .create_snapshot(&NewSnapshot {
                volume_id: volumes["a-vol-0"].clone(),
                name: format!("earlier-{days}"),
                metadata: BTreeMap::from([
                    ("created_by".to_owned(), "snapkeeper".to_owned()),
                    ("policy".to_owned(), "daily_3".to_owned()),
                    ("slot".to_owned(), snapkeeper_slot(slot)),
                ]),
                ..NewSnapshot::default()
            })
            .await
            .unwrap();
        tenant.cinder().wait_for_snapshot(&snapshot.id, "available", WAIT).await.unwrap();
    }
    (projects, volumes)
}

fn snapkeeper_slot(slot: chrono::DateTime<Utc>) -> String {
    slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Starts a manual run over the test's projects and waits for its end; returns it with its
/// quota blocks.
async fn run(
    api: &mut SnapshotServiceClient<Channel>,
    projects: &BTreeMap<String, String>,
) -> (pb::Run, Vec<pb::QuotaBlock>) {
    let request = pb::StartRunRequest {
        kind: pb::RunKind::Manual.into(),
        triggered_by: "real-stack-test".to_owned(),
        scope: Some(pb::RunScope { project_ids: projects.values().cloned().collect(), ..Default::default() }),
        ..Default::default()
    };
    let run_id = api.start_run(request).await.unwrap().into_inner().run.unwrap().run_id;
    let deadline = Instant::now() + Duration::from_mins(5);
    loop {
        let request =
            pb::GetRunRequest { run_id: run_id.clone(), include_quota_blocks: true, include_batches: false };
        let response = api.get_run(request).await.unwrap().into_inner();
        if !response.active {
            return (response.run.unwrap(), response.quota_blocks);
        }
        assert!(Instant::now() < deadline, "the run did not finish: {response:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_real_openstack_creates_blocks_on_quota_and_keeps_retention() {
    let Some(config) = real_config() else { return };
    let tag = format!("sk7-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let cloud = Cloud {
        admin: OpenStack::connect(config.clone()).await.unwrap(),
        password: format!("{tag}-pw"),
        tag,
        made: std::sync::Mutex::default(),
    };
    let outcome = AssertUnwindSafe(exercise(&cloud, &config)).catch_unwind().await;
    cloud.clean_up().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn exercise(cloud: &Cloud, config: &CloudConfig) {
    let (projects, volumes) = set_up(cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let service_user = Login { user: cloud.service_user(), password: cloud.password.clone() };
    let identity_url = support::start_identity(dir.path(), config.clone(), &service_user).await;
    // Only the test's projects are enrolled (and the runs are scoped to them): the stack is shared.
    let rules = format!(
        r#"[{{"name": "it", "priority": 1, "match": {{"tenant_name": {{"regex": "^{}-"}}}},
             "policies": ["daily_3"], "auto_snapshot": true, "retention": {{"daily_3": 2}}}}]"#,
        cloud.tag
    );
    let policy_url = support::start_policy(dir.path(), &rules, &identity_url).await;
    let audit =
        support::start_audit(&format!("sqlite://{}/audit.db?mode=rwc", dir.path().display()), &policy_url)
            .await;
    let audit_url = audit.url.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = snapshot_svc::Config::try_parse_from([
        "snapshot-svc",
        "--identity-url",
        &identity_url,
        "--policy-url",
        &policy_url,
        "--audit-url",
        &audit_url,
        "--database-url",
        &format!("sqlite://{}/snapshot.db?mode=rwc", dir.path().display()),
        "--scheduler-enabled",
        "false",
    ])
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(snapshot_svc::serve(service, listener, async {
        let _ = stopped.await;
    }));
    let mut api = SnapshotServiceClient::connect(url).await.unwrap();
    let earlier: Vec<openstack::Snapshot> = cloud.snapshots().await;
    assert_eq!(earlier.len(), 3);

    // First run: 9 due; tight takes 2 (the smallest) and blocks the 3 GiB one with figures;
    // retention (keep 2) deletes the oldest of a-vol-0's three earlier snapshots.
    let (first, blocks) = run(&mut api, &projects).await;
    let counters = first.counters.unwrap();
    assert_eq!(first.status, pb::RunStatus::Partial as i32, "{first:?}");
    assert_eq!(
        (
            counters.total_volumes,
            counters.due,
            counters.snapshots_created,
            counters.quota_blocked,
            counters.snapshots_deleted,
            counters.snapshots_failed
        ),
        (9, 9, 8, 1, 1, 0),
        "{first:?}"
    );
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let block = &blocks[0];
    assert_eq!(block.reason, pb::QuotaBlockReason::SnapshotsExceeded as i32);
    assert_eq!(
        (block.snapshot_quota_limit, block.snapshot_quota_used, block.snapshot_quota_needed),
        (2, 2, 1),
        "used counts the two admitted before it: {block:?}"
    );
    // Gigabytes: the volumes (1 + 2 + 3) and the two admitted snapshots (1 + 2).
    assert_eq!((block.quota_used_gb, block.quota_needed_gb), (9, 3), "{block:?}");
    assert_eq!(
        (block.volume_name.as_str(), block.project_id.as_str()),
        ("tight-vol-2", projects["tight"].as_str())
    );
    let after = cloud.snapshots().await;
    let created: Vec<&openstack::Snapshot> =
        after.iter().filter(|s| s.metadata.get("run_id") == Some(&first.run_id)).collect();
    assert_eq!(created.len(), 8);
    let project_of: BTreeMap<&String, &str> = volumes
        .iter()
        .map(|(name, id)| (id, projects[name.split("-vol-").next().unwrap()].as_str()))
        .collect();
    for snapshot in &created {
        assert_eq!(
            snapshot.project_id.as_deref(),
            Some(project_of[&snapshot.volume_id]),
            "in the volume's project"
        );
        assert!(snapshot.name.starts_with("auto-"), "{}", snapshot.name);
    }
    let oldest = earlier.iter().find(|s| s.name == "earlier-3").unwrap();
    assert!(!after.iter().any(|s| s.id == oldest.id), "retention deleted the oldest earlier snapshot");

    // Every created snapshot reaches audit through the outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recorded = audit.of_kinds(&first.run_id, &[audit::EventKind::SnapshotCreated]).await.len();
        if recorded == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "{recorded} of 8 created snapshots recorded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Second run, once Cinder has them available: nothing new, tight still blocked, and
    // retention trims a-vol-0 again (two earlier + today's = 3, keep 2).
    for snapshot in &created {
        cloud.admin.cinder().wait_for_snapshot(&snapshot.id, "available", WAIT).await.unwrap();
    }
    let (second, blocks) = run(&mut api, &projects).await;
    let counters = second.counters.unwrap();
    assert_eq!(
        (counters.due, counters.snapshots_created, counters.quota_blocked, counters.snapshots_deleted),
        (1, 0, 1, 1),
        "{second:?}"
    );
    assert_eq!(blocks.len(), 1);
    let kept: Vec<String> = cloud
        .snapshots()
        .await
        .iter()
        .filter(|s| s.volume_id == volumes["a-vol-0"])
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|n| n == "earlier-1") && kept.iter().any(|n| n.starts_with("auto-")), "{kept:?}");
    println!(
        "real stack: first run {} created, {} quota-blocked (limit {}, used {}, needed {}), {} deleted; \
         second run {} created, {} blocked, {} deleted",
        first.counters.as_ref().map_or(0, |c| c.snapshots_created),
        first.counters.as_ref().map_or(0, |c| c.quota_blocked),
        block.snapshot_quota_limit,
        block.snapshot_quota_used,
        block.snapshot_quota_needed,
        first.counters.as_ref().map_or(0, |c| c.snapshots_deleted),
        counters.snapshots_created,
        counters.quota_blocked,
        counters.snapshots_deleted,
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
