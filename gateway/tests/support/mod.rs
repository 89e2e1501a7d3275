//! The gateway in front of the real suite: policy-svc, identity-svc, snapshot-svc and audit-svc
//! served in-process over real gRPC on 127.0.0.1:0, each on its own SQLite file in a temp dir,
//! against the HTTP simulator (openstack-sim) with a small cloud of several domains, projects and
//! users holding `reader`, `member` and `admin`. identity-svc holds the cloud admin's and the
//! service user's passwords as `snapkeeper up` wires it; Keystone logins and `X-Auth-Token`s go
//! through it to the simulator's Keystone. The gateway itself listens on a real port and the tests
//! talk HTTP to it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openstack::{CloudConfig, ExposeSecret, OpenStack};
use openstack_sim::{
    AssignmentSpec, DomainSpec, ProjectSpec, QuotaSpec, Scenario, SimConfig, SimHandle, Simulator, UserSpec,
    VolumeSpec,
};
use serde_json::{Value, json};
use service_kit::config::{DatabaseArgs, SecurityArgs, ServiceUrls};
use tokio::sync::watch;

/// Password of every user of the test cloud.
pub const PASSWORD: &str = "gateway-test-pass";
/// Signing key of the gateway's session tokens in these tests.
pub const JWT_SECRET: &str = "gateway-test-secret-of-at-least-32-bytes";
/// A run id nobody knows.
pub const UNKNOWN_RUN: &str = "0190b4a2-0000-7000-8000-000000000000";
/// The cloud's own service user, which snapshots land in tenants' projects through.
pub const SERVICE_USER: &str = "snapkeeper-svc";

/// The test cloud's users: name, Keystone role, project they sign in to.
pub const USERS: [(&str, &str, &str); 5] = [
    ("admin", "admin", "admin"),
    ("reader", "reader", "admin"),
    ("member", "member", "admin"),
    ("other", "member", "web"),
    ("webreader", "reader", "web"),
];

/// Projects with their domain (`None`: Default) and volumes.
const PROJECTS: [(&str, Option<&str>); 6] = [
    ("admin", None),
    ("service", None),
    ("lab", None),
    ("web", Some("acme")),
    ("db", Some("acme")),
    ("research", Some("globex")),
];

/// Projects holding volumes.
pub const TENANTS: [&str; 4] = ["lab", "web", "db", "research"];

/// Volumes per tenant project; the first two are enrolled (`daily_5`) by metadata.
const VOLUMES_PER_TENANT: usize = 3;

fn scenario() -> Scenario {
    let mut scenario = Scenario {
        seed: 8,
        domains: ["acme", "globex"].iter().map(|d| DomainSpec { id: None, name: (*d).to_owned() }).collect(),
        projects: PROJECTS
            .iter()
            .map(|(name, domain)| ProjectSpec {
                name: (*name).to_owned(),
                domain: domain.map(str::to_owned),
                ..ProjectSpec::default()
            })
            .collect(),
        default_quota: Some(QuotaSpec { volumes: Some(50), snapshots: Some(100), gigabytes: Some(5_000) }),
        ..Scenario::default()
    };
    let users = USERS.iter().map(|u| u.0).chain([SERVICE_USER]);
    scenario.users = users
        .map(|name| UserSpec {
            name: name.to_owned(),
            password: PASSWORD.to_owned(),
            email: Some(format!("{name}@example.com")),
            ..UserSpec::default()
        })
        .collect();
    let grant = |user: &str, role: &str, project: &str| AssignmentSpec {
        user: user.to_owned(),
        role: role.to_owned(),
        project: Some(project.to_owned()),
        domain: None,
    };
    scenario.assignments = USERS.iter().map(|(user, role, project)| grant(user, role, project)).collect();
    scenario.assignments.push(grant(SERVICE_USER, "member", "service"));
    for tenant in TENANTS {
        for v in 0..VOLUMES_PER_TENANT {
            let mut metadata = BTreeMap::new();
            if v < 2 {
                metadata.insert("auto_snapshot".to_owned(), "true".to_owned());
                metadata.insert("snapshot_policies".to_owned(), "daily_5".to_owned());
            }
            scenario.volumes.push(VolumeSpec {
                project: tenant.to_owned(),
                name: format!("{tenant}-data-{v}"),
                size: Some([1, 2, 5][v]),
                volume_type: Some(["standard", "ssd", "standard"][v].to_owned()),
                metadata,
                ..VolumeSpec::default()
            });
        }
    }
    scenario
}

/// The test cloud's facts the tests use.
#[derive(Clone, Debug)]
pub struct Cloud {
    /// Project name -> id.
    pub projects: BTreeMap<String, String>,
    /// Domain name -> id.
    pub domains: BTreeMap<String, String>,
    /// Volumes: (id, project id).
    pub volumes: Vec<(String, String)>,
}

impl Cloud {
    /// Id of the project called `name`.
    pub fn project(&self, name: &str) -> String {
        self.projects.get(name).cloned().unwrap_or_else(|| panic!("no project {name}"))
    }

    /// Id of the domain called `name`.
    pub fn domain(&self, name: &str) -> String {
        self.domains.get(name).cloned().unwrap_or_else(|| panic!("no domain {name}"))
    }

    /// A volume of the project called `name`.
    pub fn volume_of(&self, name: &str) -> String {
        let project = self.project(name);
        self.volumes.iter().find(|(_, p)| *p == project).map(|(id, _)| id.clone()).unwrap()
    }
}

/// The gateway with the suite behind it.
pub struct Suite {
    /// Where the gateway listens (`http://127.0.0.1:port`).
    pub base: String,
    /// The gateway's config.
    pub config: gateway::Config,
    /// The test cloud's ids.
    pub cloud: Cloud,
    /// The simulator (for its Keystone URL and its state).
    pub sim: SimHandle,
    tokens: BTreeMap<String, String>,
    client: Client<HttpConnector, Body>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for Suite {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn shutdown(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn spawn<E: std::fmt::Display>(
    name: &'static str,
    service: impl Future<Output = Result<(), E>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(error) = service.await {
            panic!("{name} stopped: {error}");
        }
    });
}

impl Suite {
    /// Starts the simulator, the four services and the gateway.
    pub async fn start() -> Self {
        let sim = Simulator::start(SimConfig { scenario: scenario(), ..SimConfig::default() }).await.unwrap();
        let admin_config = user_config(&sim.auth_url(), "admin", "admin");
        let admin = OpenStack::connect(admin_config.clone()).await.unwrap();
        let keystone = admin.keystone();
        let projects: BTreeMap<String, String> =
            keystone.projects(None).await.unwrap().into_iter().map(|p| (p.name, p.id)).collect();
        let domains: BTreeMap<String, String> =
            keystone.domains().await.unwrap().into_iter().map(|d| (d.name, d.id)).collect();
        let volumes = admin
            .cinder()
            .volumes(&openstack::VolumeQuery { all_tenants: true, ..openstack::VolumeQuery::default() })
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.id, v.project_id.unwrap_or_default()))
            .collect();
        let cloud = Cloud { projects, domains, volumes };
        let mut tokens = BTreeMap::new();
        for (user, _, project) in USERS {
            let session = OpenStack::connect(user_config(&sim.auth_url(), user, project))
                .await
                .unwrap_or_else(|e| panic!("{user} on {project}: {e}"));
            tokens.insert(user.to_owned(), session.token().await.unwrap().expose_secret().to_owned());
        }

        let dir = tempfile::tempdir().unwrap();
        let database =
            DatabaseArgs { database_url: None, data_dir: dir.path().to_path_buf(), max_connections: 4 };
        let (stop, _) = watch::channel(false);
        let (policy_listener, policy_url) = listener().await;
        let (identity_listener, identity_url) = listener().await;
        let (snapshot_listener, snapshot_url) = listener().await;
        let (audit_listener, audit_url) = listener().await;
        let urls = ServiceUrls {
            policy_url: policy_url.clone(),
            identity_url: identity_url.clone(),
            snapshot_url: snapshot_url.clone(),
            audit_url: audit_url.clone(),
        };

        let mut config = identity_svc::Config::try_parse_from(["identity-svc"]).unwrap();
        config.database = database.clone();
        config.security = SecurityArgs::default();
        config.cloud = Some(admin_config);
        config.service_user.email = Some(SERVICE_USER.to_owned());
        config.service_user.password = Some(PASSWORD.to_owned().into());
        spawn("identity-svc", identity_svc::serve(config, identity_listener, shutdown(&stop)));

        let mut config = policy_svc::Config::try_parse_from(["policy-svc"]).unwrap();
        config.identity_url.clone_from(&identity_url);
        config.rules_file = None;
        config.database = database.clone();
        config.security = SecurityArgs::default();
        spawn("policy-svc", policy_svc::serve(config, policy_listener, shutdown(&stop)));

        let mut config = snapshot_svc::Config::try_parse_from(["snapshot-svc"]).unwrap();
        config.services = urls.clone();
        config.database = database.clone();
        config.security = SecurityArgs::default();
        // Runs start only when a test asks for one.
        config.scheduler_enabled = false;
        config.batch_size = 4;
        spawn("snapshot-svc", snapshot_svc::serve(config, snapshot_listener, shutdown(&stop)));

        let mut config = audit_svc::Config::try_parse_from(["audit-svc"]).unwrap();
        config.policy_url.clone_from(&policy_url);
        config.database = database;
        config.security = SecurityArgs::default();
        spawn("audit-svc", audit_svc::serve(config, audit_listener, shutdown(&stop)));

        let config = gateway::Config::try_parse_from([
            "gateway",
            "--policy-url",
            &policy_url,
            "--identity-url",
            &identity_url,
            "--snapshot-url",
            &snapshot_url,
            "--audit-url",
            &audit_url,
            "--jwt-secret",
            JWT_SECRET,
        ])
        .unwrap();
        let app = gateway::app(&config).unwrap();
        let (gateway_listener, base) = listener().await;
        let stopped = shutdown(&stop);
        tokio::spawn(async move {
            axum::serve(gateway_listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stopped)
                .await
                .unwrap();
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let suite = Self { base, config, cloud, sim, tokens, client, stop, _dir: dir };
        suite.wait_until_ready().await;
        suite
    }

    /// The Keystone token of test user `name` (scoped to the project of [`USERS`]).
    pub fn ks(&self, name: &str) -> String {
        self.tokens.get(name).cloned().unwrap_or_else(|| panic!("no user {name}"))
    }

    /// Every service reports SERVING and policy-svc answers through the gateway.
    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (health, _, _) = self.call(Request::get("/healthz").body(Body::empty()).unwrap()).await;
            let (rules, _) = self.json("GET", "/api/snapshot/rules", &self.ks("admin"), None).await;
            if health == StatusCode::OK && rules == StatusCode::OK {
                return;
            }
            assert!(Instant::now() < deadline, "the suite did not come up: healthz {health}, rules {rules}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends one request to the gateway over HTTP.
    pub async fn call(&self, request: Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        parts.uri = format!("{}{path}", self.base).parse().unwrap();
        let response = self.client.request(Request::from_parts(parts, body)).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body =
            axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024 * 1024).await.unwrap().to_vec();
        (status, headers, body)
    }

    /// Sends a request with a Keystone token and a JSON body; returns status and JSON.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path).header("x-auth-token", token);
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let (status, _, bytes) = self.call(request.body(body).unwrap()).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// Signs `user` in to the project of [`USERS`] through `/auth/login`; returns the login answer.
    pub async fn login(&self, user: &str) -> Value {
        let project = USERS.iter().find(|u| u.0 == user).map(|u| u.2).unwrap();
        let project_domain = PROJECTS.iter().find(|p| p.0 == project).and_then(|p| p.1).unwrap_or("Default");
        let body = json!({"username": user, "password": PASSWORD, "project": project, "project_domain": project_domain});
        let request = Request::post("/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, _, body) = self.call(request).await;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "login of {user}: {body}");
        body
    }

    /// Starts a run as the admin and waits until it has finished; returns its final status.
    pub async fn run(&self) -> Value {
        let (status, accepted) = self.json("POST", "/api/snapshot/run-now", &self.ks("admin"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let job = accepted["job_id"].as_str().unwrap().to_owned();
        let finished = self.wait_until_finished(&job).await;
        self.wait_for_records(&job).await;
        finished
    }

    /// Waits until audit-svc holds a record of every snapshot run `job` created (snapshot-svc
    /// relays them from its outbox a moment after the run).
    pub async fn wait_for_records(&self, job: &str) {
        let reader = self.ks("reader");
        let (_, run) = self.json("GET", &format!("/api/snapshot/runs/{job}"), &reader, None).await;
        let created = run["snapshots_created"].as_u64().unwrap();
        let path = format!("/api/snapshot/records?snapshot_run_id={job}&action=created&limit=1000");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, records) = self.json("GET", &path, &reader, None).await;
            if records["count"].as_u64() == Some(created) {
                return;
            }
            assert!(Instant::now() < deadline, "records of run {job} did not arrive: {records}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Suite::run`], which must complete without quota blocks or failures.
    pub async fn run_to_completion(&self) -> Value {
        let finished = self.run().await;
        assert_eq!(finished["status"], "completed", "{finished}");
        finished
    }

    /// Sets the Cinder snapshot quota of project `name` in the simulator, as its admin would.
    pub async fn set_snapshot_quota(&self, name: &str, snapshots: i64) {
        let admin = OpenStack::connect(user_config(&self.sim.auth_url(), "admin", "admin")).await.unwrap();
        let limits = BTreeMap::from([("snapshots".to_owned(), snapshots)]);
        admin.cinder().update_quota_set(&self.cloud.project(name), &limits).await.unwrap();
    }

    /// Polls run-now/status until the run `job` has finished.
    pub async fn wait_until_finished(&self, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let (_, status) =
                self.json("GET", "/api/snapshot/run-now/status", &self.ks("reader"), None).await;
            if status["job_id"] == job && status["active"] == false {
                return status;
            }
            assert!(Instant::now() < deadline, "the run did not finish: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn user_config(auth_url: &str, user: &str, project: &str) -> CloudConfig {
    let domain = PROJECTS.iter().find(|p| p.0 == project).and_then(|p| p.1).unwrap_or("Default");
    CloudConfig::password(auth_url, user, "Default", PASSWORD, project, domain)
}
