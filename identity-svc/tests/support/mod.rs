//! Where the identity-svc tests run: the simulator (always) or the real stack (when
//! `SNAPKEEPER_OS_CLOUD_TESTS=1` and the `OS_*` variables point at it), with per-test fixtures
//! that create uniquely named projects, users and volumes and remove them afterwards, even when
//! the test fails.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use futures::FutureExt as _;
use identity_svc::broker::Broker;
use identity_svc::store::GrantStore;
use identity_svc::{Config, MIGRATIONS, SCHEMA};
use openstack::{
    AssignmentFilter, AuthMethod, CloudConfig, DomainRef, NewProject, NewUser, NewVolume, OpenStack, Project,
    ProjectRef, RoleAssignment, Scope, SecretString, SnapshotQuery, User, UserRef, Volume, VolumeQuery,
};
use openstack_sim::{Scenario, SimConfig, SimHandle, Simulator};
use service_kit::client::{ServiceChannel, Timeouts, connect_lazy};
use service_kit::clock::{Clock, SystemClock};
use service_kit::config::{DatabaseArgs, SecurityArgs};
use service_kit::db::Database;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;

/// Which cloud a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// openstack-sim on 127.0.0.1:0.
    Sim,
    /// The real Keystone + Cinder of `../shared/real-openstack`.
    Real,
}

/// How long a volume or snapshot may take to settle.
pub const SETTLE: Duration = Duration::from_mins(1);

/// The admin password of the simulated cloud: unique, so the leak test can look for it.
pub fn sim_admin_password() -> String {
    format!("sim-admin-{}", uuid::Uuid::new_v4().simple())
}

/// One test's cloud, its own admin client (separate counters from the broker's), and what to
/// clean up.
#[derive(Clone)]
pub struct Fixture {
    pub side: Side,
    pub admin: OpenStack,
    pub cloud: CloudConfig,
    pub tag: String,
    pub sim: Option<Arc<SimHandle>>,
    dir: Arc<tempfile::TempDir>,
    created_projects: Arc<Mutex<Vec<String>>>,
    created_users: Arc<Mutex<Vec<String>>>,
}

fn real_config() -> Option<CloudConfig> {
    let enabled = std::env::var("SNAPKEEPER_OS_CLOUD_TESTS").is_ok_and(|v| v == "1");
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if !enabled {
        assert!(
            !in_ci,
            "CI is set but SNAPKEEPER_OS_CLOUD_TESTS is not 1: CI must run the identity-svc tests against the real stack"
        );
        eprintln!(
            "SKIP real-stack identity-svc test: SNAPKEEPER_OS_CLOUD_TESTS is not 1 \
             (bash ../shared/real-openstack/up.sh; . /tmp/realos/endpoints.env; SNAPKEEPER_OS_CLOUD_TESTS=1)"
        );
        return None;
    }
    match CloudConfig::from_env() {
        Ok(config) => Some(config),
        Err(e) => panic!("SNAPKEEPER_OS_CLOUD_TESTS=1 but the OS_* environment is unusable: {e}"),
    }
}

/// Starts a simulator with the minimal cloud and `admin_password`.
pub async fn start_sim(admin_password: &str) -> (SimHandle, CloudConfig) {
    let mut scenario = Scenario::minimal();
    for user in &mut scenario.users {
        admin_password.clone_into(&mut user.password);
    }
    let sim = Simulator::start(SimConfig {
        scenario,
        snapshot_delay: Duration::from_millis(100),
        volume_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let mut config =
        CloudConfig::password(&sim.auth_url(), "admin", "Default", admin_password, "admin", "Default");
    config.region = Some("RegionOne".to_owned());
    (sim, config)
}

/// Runs `case` against `side` with a fresh fixture and cleans up afterwards.
pub async fn run<F, Fut>(side: Side, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    let (cloud, sim) = match side {
        Side::Sim => {
            let (sim, config) = start_sim(&sim_admin_password()).await;
            (config, Some(Arc::new(sim)))
        }
        Side::Real => match real_config() {
            Some(config) => (config, None),
            None => return,
        },
    };
    let admin = OpenStack::connect(cloud.clone()).await.expect("admin connects");
    let tag = format!("skid-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let fixture = Fixture {
        side,
        admin,
        cloud,
        tag,
        sim,
        dir: Arc::new(tempfile::tempdir().expect("temp dir")),
        created_projects: Arc::default(),
        created_users: Arc::default(),
    };
    let outcome = AssertUnwindSafe(case(fixture.clone())).catch_unwind().await;
    fixture.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Fixture {
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    pub fn password(&self) -> String {
        format!("{}-Pw!", self.tag)
    }

    /// A broker configured with `args` (identity-svc flags) on this cloud, with its own database.
    pub async fn broker(&self, args: &[&str]) -> Arc<Broker> {
        self.broker_with_clock(args, Arc::new(SystemClock)).await
    }

    /// [`Fixture::broker`] with a clock of the test's choosing.
    pub async fn broker_with_clock(&self, args: &[&str], clock: Arc<dyn Clock>) -> Arc<Broker> {
        let mut argv = vec!["identity-svc"];
        argv.extend_from_slice(args);
        let mut config = Config::try_parse_from(argv).expect("flags parse");
        config.cloud = Some(self.cloud.clone());
        let settings = config.settings_with(&|_| None).expect("settings");
        let path = self.dir.path().join(format!("identity-{}.db", uuid::Uuid::new_v4().simple()));
        let database = Database::connect(&format!("sqlite://{}?mode=rwc", path.display()), SCHEMA, 2)
            .await
            .expect("database");
        database.migrate(MIGRATIONS).await.expect("migrations");
        Arc::new(Broker::new(settings, GrantStore::new(database), clock))
    }

    /// The flags of a service user with a plain-text password.
    pub fn service_user_flags<'a>(user: &'a str, password: &'a str) -> Vec<&'a str> {
        vec!["--service-user", user, "--service-user-password", password]
    }

    pub async fn project(&self, what: &str) -> Project {
        let project = self
            .admin
            .keystone()
            .create_project(&NewProject {
                name: self.name(what),
                domain_id: "default".into(),
                description: "identity-svc test".into(),
            })
            .await
            .expect("create project");
        self.created_projects.lock().expect("lock").push(project.id.clone());
        project
    }

    /// A user named exactly `name` in the default domain with this fixture's password.
    pub async fn user_named(&self, name: &str) -> User {
        let user = self
            .admin
            .keystone()
            .create_user(&NewUser {
                name: name.to_owned(),
                domain_id: "default".into(),
                password: SecretString::from(self.password()),
                email: None,
            })
            .await
            .expect("create user");
        self.created_users.lock().expect("lock").push(user.id.clone());
        user
    }

    /// The service user, with a `+` in its name (the old lookup broke on it).
    pub async fn service_user(&self) -> User {
        self.user_named(&format!("snap+{}@example.com", self.tag)).await
    }

    pub async fn role_id(&self, name: &str) -> String {
        self.admin.keystone().find_role(name).await.expect("roles").expect("role exists").id
    }

    pub async fn grant(&self, project: &Project, user: &User, role: &str) {
        let role = self.role_id(role).await;
        self.admin.keystone().grant_project_role(&project.id, &user.id, &role).await.expect("grant");
    }

    /// Direct role assignments of `user` on `project`, as Keystone has them now.
    pub async fn assignments(&self, project: &Project, user: &User) -> Vec<RoleAssignment> {
        let filter = AssignmentFilter {
            user_id: Some(user.id.clone()),
            project_id: Some(project.id.clone()),
            role_id: None,
        };
        self.admin.keystone().role_assignments(&filter).await.expect("role assignments")
    }

    pub async fn login(&self, user: &User, project: &Project) -> OpenStack {
        let auth = AuthMethod::Password {
            user: UserRef::Name { name: user.name.clone(), domain: DomainRef::Id("default".into()) },
            password: SecretString::from(self.password()),
            scope: Scope::Project(ProjectRef::Id(project.id.clone())),
        };
        self.admin.with_auth(auth).await.expect("user logs in")
    }

    /// A project with a member user and one available volume in it.
    pub async fn project_with_volume(&self, what: &str) -> (Project, User, Volume) {
        let project = self.project(what).await;
        let owner = self.user_named(&self.name(&format!("{what}-owner"))).await;
        self.grant(&project, &owner, "member").await;
        let client = self.login(&owner, &project).await;
        let volume = client
            .cinder()
            .create_volume(&NewVolume {
                name: self.name(&format!("{what}-vol")),
                size: 1,
                ..NewVolume::default()
            })
            .await
            .expect("create volume");
        let volume =
            client.cinder().wait_for_volume(&volume.id, "available", SETTLE).await.expect("available");
        (project, owner, volume)
    }

    /// Keystone requests the server has seen: the simulator's own count, `None` on the real stack
    /// (there the broker's client counters are the measure).
    pub fn server_keystone_requests(&self) -> Option<u64> {
        self.sim
            .as_ref()
            .map(|sim| sim.stats().iter().filter(|(op, _)| op.starts_with("keystone.")).map(|(_, n)| n).sum())
    }

    async fn cleanup(&self) {
        let projects = self.created_projects.lock().expect("lock").clone();
        let cinder = self.admin.cinder();
        for project in &projects {
            let query = SnapshotQuery {
                all_tenants: true,
                project_id: Some(project.clone()),
                ..SnapshotQuery::default()
            };
            for snapshot in cinder.snapshots(&query).await.unwrap_or_default() {
                let _ = cinder.wait_for_snapshot(&snapshot.id, "available", SETTLE).await;
                if cinder.delete_snapshot(&snapshot.id).await.is_ok() {
                    let _ = cinder.wait_for_snapshot_deleted(&snapshot.id, SETTLE).await;
                }
            }
            let query = VolumeQuery {
                all_tenants: true,
                project_id: Some(project.clone()),
                ..VolumeQuery::default()
            };
            for volume in cinder.volumes(&query).await.unwrap_or_default() {
                let _ = cinder.wait_for_volume(&volume.id, "available", SETTLE).await;
                let _ = cinder.delete_volume(&volume.id, true).await;
            }
        }
        let users = self.created_users.lock().expect("lock").clone();
        for user in users {
            let _ = self.admin.keystone().delete_user(&user).await;
        }
        for project in projects {
            let _ = self.admin.keystone().delete_project(&project).await;
        }
    }
}

/// A running identity-svc; dropping it stops the server.
pub struct Server {
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Serves identity-svc for `cloud` with identity-svc flags `args` and the internal `token`.
pub async fn serve(cloud: CloudConfig, args: &[&str], token: Option<&str>) -> Server {
    let mut argv = vec!["identity-svc"];
    argv.extend_from_slice(args);
    let mut config = Config::try_parse_from(argv).unwrap();
    config.cloud = Some(cloud);
    let dir = tempfile::tempdir().unwrap();
    config.database =
        DatabaseArgs { database_url: None, data_dir: dir.path().to_owned(), max_connections: 2 };
    config.security = security(token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = identity_svc::serve(config, listener, shutdown).await {
            panic!("identity-svc stopped: {e}");
        }
    });
    Server { url, _stop: stop, _dir: dir }
}

pub fn security(token: Option<&str>) -> SecurityArgs {
    SecurityArgs {
        internal_token: token.map(|t| SecretString::from(t.to_owned())),
        ..SecurityArgs::default()
    }
}

/// A client presenting `token` (or nothing).
pub fn client(server: &Server, token: Option<&str>) -> IdentityServiceClient<ServiceChannel> {
    IdentityServiceClient::new(connect_lazy(&server.url, &security(token), Timeouts::default()).unwrap())
}

/// Creates a snapshot with nothing but a token and a Cinder endpoint, as snapshot-svc will.
pub async fn snapshot_with(token: &str, cinder_endpoint: &str, volume_id: &str, name: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{cinder_endpoint}/snapshots"))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", openstack::CINDER_MICROVERSION)
        .json(&serde_json::json!({"snapshot": {"volume_id": volume_id, "name": name, "force": true}}))
        .send()
        .await
        .expect("cinder answers");
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("json body");
    assert!(status.is_success(), "snapshot create: HTTP {status}: {body}");
    body["snapshot"]["id"].as_str().expect("snapshot id").to_owned()
}

/// Generates one `#[tokio::test]` per case and side: `sim::<case>` and `real::<case>`.
#[macro_export]
macro_rules! on_both_clouds {
    ($($case:ident),* $(,)?) => {
        mod sim {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::support::run($crate::support::Side::Sim, super::$case).await;
                }
            )*
        }
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::support::run($crate::support::Side::Real, super::$case).await;
                }
            )*
        }
    };
}
