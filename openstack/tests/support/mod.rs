//! Where the conformance tests run: the simulator (always) or the real stack (when
//! `SNAPKEEPER_OS_CLOUD_TESTS=1` and the `OS_*` variables point at it), and per-test fixtures
//! that create uniquely named objects and remove them afterwards, even when the test fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use openstack::{
    AuthMethod, CloudConfig, DomainRef, NewProject, NewUser, NewVolume, OpenStack, Project, ProjectRef,
    Scope, SecretString, SnapshotQuery, User, UserRef, Volume, VolumeQuery,
};
use openstack_sim::{Scenario, SimConfig, SimHandle, Simulator};

/// Which cloud a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Sim,
    Real,
}

/// Seconds to wait for a volume or snapshot to settle (the real stack takes ~0.3 s).
pub(crate) const SETTLE: Duration = Duration::from_mins(1);

/// The cloud of one test, its admin client, and what to clean up.
#[derive(Clone)]
pub(crate) struct Fixture {
    pub(crate) admin: OpenStack,
    pub(crate) tag: String,
    pub(crate) default_domain: String,
    created_projects: Arc<Mutex<Vec<String>>>,
    created_users: Arc<Mutex<Vec<String>>>,
    _sim: Option<Arc<SimHandle>>,
}

fn real_config() -> Option<CloudConfig> {
    let enabled = std::env::var("SNAPKEEPER_OS_CLOUD_TESTS").is_ok_and(|v| v == "1");
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if !enabled {
        assert!(
            !in_ci,
            "CI is set but SNAPKEEPER_OS_CLOUD_TESTS is not 1: CI must run the conformance suite against the real stack \
             (bash ../shared/real-openstack/up.sh; . /tmp/realos/endpoints.env; SNAPKEEPER_OS_CLOUD_TESTS=1)"
        );
        eprintln!(
            "SKIP real-stack conformance: SNAPKEEPER_OS_CLOUD_TESTS is not 1 (source /tmp/realos/endpoints.env and set it to run)"
        );
        return None;
    }
    match CloudConfig::from_env() {
        Ok(config) => Some(config),
        Err(e) => panic!("SNAPKEEPER_OS_CLOUD_TESTS=1 but the OS_* environment is unusable: {e}"),
    }
}

/// Runs `case` against `side` with a fresh fixture and cleans up afterwards.
pub(crate) async fn run<F, Fut>(side: Side, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    let (config, sim) = match side {
        Side::Sim => {
            let sim = Simulator::start(SimConfig {
                scenario: Scenario::minimal(),
                snapshot_delay: Duration::from_millis(300),
                volume_delay: Duration::from_millis(300),
                ..SimConfig::default()
            })
            .await
            .expect("simulator starts");
            let config = CloudConfig::password(
                &sim.auth_url(),
                "admin",
                "Default",
                openstack_sim::ADMIN_PASSWORD,
                "admin",
                "Default",
            );
            (config, Some(Arc::new(sim)))
        }
        Side::Real => match real_config() {
            Some(config) => (config, None),
            None => return,
        },
    };
    let admin = OpenStack::connect(config).await.expect("admin connects");
    let tag = format!("skc-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let fixture = Fixture {
        admin,
        tag,
        default_domain: "default".into(),
        created_projects: Arc::default(),
        created_users: Arc::default(),
        _sim: sim,
    };
    let outcome = AssertUnwindSafe(case(fixture.clone())).catch_unwind().await;
    fixture.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Fixture {
    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    pub(crate) async fn project(&self, what: &str) -> Project {
        let project = self
            .admin
            .keystone()
            .create_project(&NewProject {
                name: self.name(what),
                domain_id: self.default_domain.clone(),
                description: "conformance".into(),
            })
            .await
            .expect("create project");
        self.created_projects.lock().expect("lock").push(project.id.clone());
        project
    }

    pub(crate) async fn user(&self, what: &str, email: Option<String>) -> User {
        let user = self
            .admin
            .keystone()
            .create_user(&NewUser {
                name: self.name(what),
                domain_id: self.default_domain.clone(),
                password: SecretString::from(self.password()),
                email,
            })
            .await
            .expect("create user");
        self.created_users.lock().expect("lock").push(user.id.clone());
        user
    }

    pub(crate) fn password(&self) -> String {
        format!("{}-pw", self.tag)
    }

    pub(crate) async fn role_id(&self, name: &str) -> String {
        self.admin
            .keystone()
            .find_role(name)
            .await
            .expect("roles")
            .unwrap_or_else(|| panic!("role {name} exists"))
            .id
    }

    pub(crate) async fn grant(&self, project: &Project, user: &User, role: &str) {
        let role = self.role_id(role).await;
        self.admin.keystone().grant_project_role(&project.id, &user.id, &role).await.expect("grant");
    }

    /// A client for `user` scoped to `project`, sharing the admin client's limits.
    pub(crate) async fn login(&self, user: &User, project: &Project) -> OpenStack {
        self.admin
            .with_auth(self.password_auth(user, Scope::Project(ProjectRef::Id(project.id.clone()))))
            .await
            .expect("user logs in")
    }

    pub(crate) fn password_auth(&self, user: &User, scope: Scope) -> AuthMethod {
        AuthMethod::Password {
            user: UserRef::Name {
                name: user.name.clone(),
                domain: DomainRef::Id(self.default_domain.clone()),
            },
            password: SecretString::from(self.password()),
            scope,
        }
    }

    /// A member user with a client scoped to a new project.
    pub(crate) async fn member_in(&self, what: &str) -> (Project, User, OpenStack) {
        let project = self.project(what).await;
        let user = self.user(&format!("{what}-member"), None).await;
        self.grant(&project, &user, "member").await;
        let client = self.login(&user, &project).await;
        (project, user, client)
    }

    pub(crate) async fn volume(
        &self,
        client: &OpenStack,
        what: &str,
        metadata: BTreeMap<String, String>,
    ) -> Volume {
        let volume = client
            .cinder()
            .create_volume(&NewVolume { name: self.name(what), size: 1, metadata, ..NewVolume::default() })
            .await
            .expect("create volume");
        client.cinder().wait_for_volume(&volume.id, "available", SETTLE).await.expect("volume available")
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
                if volume.status == "in-use" {
                    let _ = cinder.detach_volume(&volume.id).await;
                }
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

/// Generates one `#[tokio::test]` per case and side: `sim::<case>` and `real::<case>`.
#[macro_export]
macro_rules! conformance {
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
