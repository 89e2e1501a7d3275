//! The gateway in front of a test suite: the real policy-svc (SQLite in a temp dir) over the
//! simulated demo cloud, and small in-test gRPC implementations ("stand-ins") of the contracts
//! whose services are not committed yet: identity-svc (ValidateUserToken, AuthenticateUser,
//! GetAdminCredentials), snapshot-svc (StartRun, GetRun, ListRuns, WatchRun, GetActiveRun,
//! CancelRun, ForecastQuota) and audit-svc (ListRecords, ExportRecords, GetCompliance,
//! ComplianceTrend). Each stand-in is a real tonic server on 127.0.0.1:0 behind
//! service_kit's GrpcServer, so switching a test to the real service changes only its URL.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use futures::Stream;
use openstack::{BLOCK_STORAGE_TYPES, CloudConfig, ExposeSecret, OpenStack, VolumeQuery};
use openstack_sim::{Scenario, SimConfig, SimHandle, Simulator};
use service_kit::config::{DatabaseArgs, SecurityArgs};
use service_kit::server::GrpcServer;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use snapkeeper_proto::identity::v1 as identity;
use snapkeeper_proto::identity::v1::identity_service_server::{IdentityService, IdentityServiceServer};
use snapkeeper_proto::prost_types::{Duration as PbDuration, Timestamp};
use snapkeeper_proto::snapshot::v1 as snapshot;
use snapkeeper_proto::snapshot::v1::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use snapkeeper_proto::tonic::{self, Request as GrpcRequest, Response as GrpcResponse, Status};
use tokio::sync::{broadcast, oneshot};
use tower::ServiceExt;

/// Password of every user of the demo cloud and of the stand-in identity.
pub const PASSWORD: &str = "gateway-test-pass";
/// Signing key of the gateway's session tokens in these tests.
pub const JWT_SECRET: &str = "gateway-test-secret-of-at-least-32-bytes";
/// A run id no stand-in knows.
pub const UNKNOWN_RUN: &str = "0190b4a2-0000-7000-8000-000000000000";

/// A user of the stand-in identity-svc: name, Keystone role, project name, Keystone token.
pub const USERS: [(&str, &str, &str, &str); 4] = [
    ("reader", "reader", "admin", "ks-reader"),
    ("member", "member", "admin", "ks-member"),
    ("admin", "admin", "admin", "ks-admin"),
    ("other", "member", "web", "ks-other"),
];

fn ts(seconds_ago: i64) -> Timestamp {
    Timestamp { seconds: chrono::Utc::now().timestamp() - seconds_ago, nanos: 0 }
}

/// The demo cloud's facts the tests use.
#[derive(Clone, Debug)]
pub struct Cloud {
    /// Project name -> id.
    pub projects: BTreeMap<String, String>,
    /// Volumes: (id, project id).
    pub volumes: Vec<(String, String)>,
}

impl Cloud {
    /// Id of the project called `name`.
    pub fn project(&self, name: &str) -> String {
        self.projects.get(name).cloned().unwrap_or_else(|| panic!("no project {name}"))
    }

    /// A volume of the project called `name`.
    pub fn volume_of(&self, name: &str) -> String {
        let project = self.project(name);
        self.volumes.iter().find(|(_, p)| *p == project).map(|(id, _)| id.clone()).unwrap()
    }
}

/// The gateway with its services.
pub struct Suite {
    /// The gateway's router (call with [`Suite::call`] or serve it).
    pub app: axum::Router,
    /// The gateway's config.
    pub config: gateway::Config,
    /// The demo cloud's ids.
    pub cloud: Cloud,
    /// The stand-in snapshot-svc's runs.
    pub runs: Arc<RunBoard>,
    _sim: SimHandle,
    _dir: tempfile::TempDir,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn serve_grpc<S>(service: S, stops: &mut Vec<oneshot::Sender<()>>) -> String
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    tokio::spawn(async move {
        GrpcServer::new(SecurityArgs::default())
            .add_service(service)
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    format!("http://{address}")
}

impl Suite {
    /// Starts everything; each run step of the stand-in snapshot-svc takes `step`.
    pub async fn start(step: Duration) -> Self {
        let sim = Simulator::start(SimConfig {
            scenario: Scenario::demo_with_password(PASSWORD),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let admin = OpenStack::connect(admin_config(&sim.auth_url())).await.unwrap();
        let projects: BTreeMap<String, String> =
            admin.keystone().projects(None).await.unwrap().into_iter().map(|p| (p.name, p.id)).collect();
        let volumes = admin
            .cinder()
            .volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() })
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.id, v.project_id.unwrap_or_default()))
            .collect();
        let cloud = Cloud { projects, volumes };

        let mut stops = Vec::new();
        let identity = StandInIdentity { auth_url: sim.auth_url(), cloud: cloud.clone() };
        let identity_url = serve_grpc(IdentityServiceServer::new(identity), &mut stops).await;

        let dir = tempfile::tempdir().unwrap();
        let mut policy = policy_svc::Config::try_parse_from(["policy-svc"]).unwrap();
        policy.identity_url.clone_from(&identity_url);
        policy.rules_file = None;
        policy.security = SecurityArgs::default();
        policy.database = DatabaseArgs {
            database_url: Some(format!("sqlite://{}/policy.db?mode=rwc", dir.path().display())),
            data_dir: dir.path().to_path_buf(),
            max_connections: 4,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let policy_url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        tokio::spawn(async move {
            policy_svc::serve(policy, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });

        let runs = Arc::new(RunBoard::new(step, cloud.clone()));
        let snapshot_url =
            serve_grpc(SnapshotServiceServer::new(StandInSnapshot(Arc::clone(&runs))), &mut stops).await;
        let audit_url = serve_grpc(AuditServiceServer::new(StandInAudit::new(&cloud)), &mut stops).await;

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
        wait_for_policy(&app).await;
        Self { app, config, cloud, runs, _sim: sim, _dir: dir, _stops: stops }
    }

    /// Sends one request through the gateway.
    pub async fn call(&self, request: Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024).await.unwrap().to_vec();
        (status, headers, body)
    }

    /// Sends a request with a Keystone token and a JSON body; returns status and JSON.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path).header("x-auth-token", token);
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let (status, _, bytes) = self.call(request.body(body).unwrap()).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, value)
    }
}

/// policy-svc answers once its database is migrated; wait for that.
async fn wait_for_policy(app: &axum::Router) {
    for _ in 0..100 {
        let request = Request::get("/api/snapshot/rules")
            .header("x-auth-token", "ks-admin")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        if response.status() == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("policy-svc did not come up");
}

fn admin_config(auth_url: &str) -> CloudConfig {
    CloudConfig::password(auth_url, "admin", "Default", PASSWORD, "admin", "Default")
}

// ---------------------------------------------------------------------------------------------
// identity-svc stand-in

struct StandInIdentity {
    auth_url: String,
    cloud: Cloud,
}

impl StandInIdentity {
    fn identity(&self, user: &str) -> Option<identity::UserIdentity> {
        let (name, role, project, _) = USERS.iter().find(|u| u.0 == user)?;
        Some(identity::UserIdentity {
            user_id: format!("id-{name}"),
            user_name: (*name).to_owned(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            scope: identity::TokenScope::Project as i32,
            project_id: self.cloud.project(project),
            project_name: (*project).to_owned(),
            scope_domain_id: "default".into(),
            scope_domain_name: "Default".into(),
            is_admin_project: false,
            roles: vec![(*role).to_owned()],
            issued_at: Some(ts(0)),
            expires_at: Some(ts(-3600)),
        })
    }
}

#[tonic::async_trait]
impl IdentityService for StandInIdentity {
    async fn validate_user_token(
        &self,
        request: GrpcRequest<identity::ValidateUserTokenRequest>,
    ) -> Result<GrpcResponse<identity::ValidateUserTokenResponse>, Status> {
        let token = request.into_inner().token;
        let user =
            USERS.iter().find(|u| u.3 == token).ok_or_else(|| Status::unauthenticated("token invalid"))?;
        Ok(GrpcResponse::new(identity::ValidateUserTokenResponse { identity: self.identity(user.0) }))
    }

    async fn authenticate_user(
        &self,
        request: GrpcRequest<identity::AuthenticateUserRequest>,
    ) -> Result<GrpcResponse<identity::AuthenticateUserResponse>, Status> {
        let request = request.into_inner();
        if request.password != PASSWORD || request.user_domain_name != "Default" {
            return Err(Status::unauthenticated("wrong credentials"));
        }
        let identity =
            self.identity(&request.username).ok_or_else(|| Status::unauthenticated("no such user"))?;
        Ok(GrpcResponse::new(identity::AuthenticateUserResponse {
            identity: Some(identity),
            token: "ks-issued".into(),
        }))
    }

    async fn get_admin_credentials(
        &self,
        _: GrpcRequest<identity::GetAdminCredentialsRequest>,
    ) -> Result<GrpcResponse<identity::GetAdminCredentialsResponse>, Status> {
        let unavailable = |e: openstack::Error| Status::unavailable(e.to_string());
        let region = "RegionOne".to_owned();
        let admin = OpenStack::connect(admin_config(&self.auth_url)).await.map_err(unavailable)?;
        let token = admin.token().await.map_err(unavailable)?;
        let info = admin.token_info().await.map_err(unavailable)?;
        let cinder_endpoint = info
            .catalog
            .endpoint(BLOCK_STORAGE_TYPES, "public", Some(&region))
            .ok_or_else(|| Status::failed_precondition("no Cinder endpoint"))?;
        let endpoints = info
            .catalog
            .entries
            .iter()
            .flat_map(|entry| {
                entry.endpoints.iter().map(|ep| identity::CatalogEndpoint {
                    service_type: entry.service_type.clone(),
                    interface: ep.interface.clone(),
                    region: ep.region_id.clone().or_else(|| ep.region.clone()).unwrap_or_default(),
                    url: ep.url.clone(),
                })
            })
            .filter(|ep| ep.interface == "public" && ep.region == region)
            .collect();
        let project = info.project.clone().unwrap();
        Ok(GrpcResponse::new(identity::GetAdminCredentialsResponse {
            token: token.expose_secret().to_owned(),
            expires_at: Some(Timestamp { seconds: info.expires_at.timestamp(), nanos: 0 }),
            user_id: info.user.id.clone(),
            user_name: info.user.name.clone(),
            project_id: project.id,
            project_name: project.name,
            cinder_endpoint,
            region,
            endpoints,
            cached: false,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// snapshot-svc stand-in: runs that walk through the four steps and two batches

/// The stand-in snapshot-svc's runs and their events.
pub struct RunBoard {
    step: Duration,
    cloud: Cloud,
    state: Mutex<Board>,
    events: broadcast::Sender<snapshot::WatchRunResponse>,
}

#[derive(Default)]
struct Board {
    runs: Vec<snapshot::Run>,
    history: BTreeMap<String, Vec<snapshot::WatchRunResponse>>,
    batches: BTreeMap<String, Vec<snapshot::Batch>>,
}

const STEPS: [(snapshot::StepKey, &str); 4] = [
    (snapshot::StepKey::PolicyAssign, "Policy Assignment"),
    (snapshot::StepKey::InventoryPre, "Inventory Sync (pre-snapshot)"),
    (snapshot::StepKey::Snapshots, "Auto Snapshots"),
    (snapshot::StepKey::InventoryPost, "Inventory Sync (post-snapshot)"),
];

impl RunBoard {
    fn new(step: Duration, cloud: Cloud) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self { step, cloud, state: Mutex::new(Board::default()), events }
    }

    fn publish(&self, run_id: &str, event: snapshot::watch_run_response::Event) {
        let mut board = self.state.lock().unwrap();
        let history = board.history.entry(run_id.to_owned()).or_default();
        let message = snapshot::WatchRunResponse {
            sequence: history.len() as i64 + 1,
            time: Some(ts(0)),
            run_id: run_id.to_owned(),
            event: Some(event),
        };
        history.push(message.clone());
        let _ = self.events.send(message);
    }

    fn update(&self, run_id: &str, change: impl FnOnce(&mut snapshot::Run)) -> snapshot::Run {
        let mut board = self.state.lock().unwrap();
        let run = board.runs.iter_mut().find(|r| r.run_id == run_id).unwrap();
        change(run);
        run.clone()
    }

    /// The run with `run_id`.
    pub fn run(&self, run_id: &str) -> Option<snapshot::Run> {
        self.state.lock().unwrap().runs.iter().find(|r| r.run_id == run_id).cloned()
    }

    fn batches_of(&self, run_id: &str) -> Vec<snapshot::Batch> {
        self.state.lock().unwrap().batches.get(run_id).cloned().unwrap_or_default()
    }

    async fn execute(self: Arc<Self>, run_id: String) {
        use snapshot::watch_run_response::Event;
        tokio::time::sleep(self.step).await;
        let run = self.update(&run_id, |r| {
            r.status = snapshot::RunStatus::Running as i32;
            r.started_at = Some(ts(0));
            r.execution_host = "stand-in".into();
        });
        self.publish(&run_id, Event::Snapshot(run));
        let batches: Vec<snapshot::Batch> = ["web", "db"]
            .iter()
            .enumerate()
            .map(|(i, name)| snapshot::Batch {
                batch_number: i as i32 + 1,
                region: "RegionOne".into(),
                project_ids: vec![self.cloud.project(name)],
                project_names: vec![(*name).to_owned()],
                total_volumes: 3,
                status: snapshot::BatchStatus::Pending as i32,
                ..snapshot::Batch::default()
            })
            .collect();
        self.state.lock().unwrap().batches.insert(run_id.clone(), batches.clone());
        self.update(&run_id, |r| r.total_batches = 2);
        for (index, (key, label)) in STEPS.iter().enumerate() {
            let step = |status: snapshot::StepStatus| snapshot::RunStep {
                key: *key as i32,
                label: (*label).to_owned(),
                status: status as i32,
                started_at: Some(ts(0)),
                finished_at: (status == snapshot::StepStatus::Completed).then(|| ts(0)),
                ..snapshot::RunStep::default()
            };
            let running = step(snapshot::StepStatus::Running);
            self.update(&run_id, |r| r.steps[index] = running.clone());
            self.publish(&run_id, Event::StepChanged(running));
            if *key == snapshot::StepKey::Snapshots {
                for mut batch in batches.clone() {
                    batch.status = snapshot::BatchStatus::Running as i32;
                    batch.started_at = Some(ts(0));
                    self.publish(&run_id, Event::BatchStarted(batch.clone()));
                    tokio::time::sleep(self.step / 2).await;
                    batch.status = snapshot::BatchStatus::Completed as i32;
                    batch.completed = 3;
                    batch.finished_at = Some(ts(0));
                    let number = batch.batch_number;
                    {
                        let mut board = self.state.lock().unwrap();
                        if let Some(stored) =
                            board.batches.get_mut(&run_id).and_then(|b| b.get_mut(number as usize - 1))
                        {
                            *stored = batch.clone();
                        }
                    }
                    self.update(&run_id, |r| {
                        r.completed_batches = number;
                        r.current_batch = number;
                        let counters = r.counters.get_or_insert_with(Default::default);
                        counters.snapshots_created += 3;
                        counters.processed_volumes += 3;
                    });
                    self.publish(&run_id, Event::BatchFinished(batch));
                }
            } else {
                tokio::time::sleep(self.step).await;
            }
            let done = step(snapshot::StepStatus::Completed);
            let pct = (index as f64 + 1.0) * 25.0;
            let run = self.update(&run_id, |r| {
                r.steps[index] = done.clone();
                r.progress_pct = pct;
                r.estimated_finish_at = Some(ts(-5));
            });
            self.publish(&run_id, Event::StepChanged(done));
            self.publish(
                &run_id,
                Event::Progress(snapshot::RunProgress {
                    progress_pct: pct,
                    current_step: *key as i32,
                    counters: run.counters,
                    completed_batches: run.completed_batches,
                    total_batches: run.total_batches,
                    current_batch: run.current_batch,
                    volumes_per_minute: 12.0,
                    estimated_finish_at: run.estimated_finish_at,
                    elapsed: Some(PbDuration { seconds: 1, nanos: 0 }),
                }),
            );
        }
        let run = self.update(&run_id, |r| {
            r.status = snapshot::RunStatus::Completed as i32;
            r.finished_at = Some(ts(0));
            r.progress_pct = 100.0;
            r.estimated_finish_at = None;
        });
        self.publish(&run_id, Event::RunFinished(run));
    }
}

fn active(run: &snapshot::Run) -> bool {
    matches!(run.status(), snapshot::RunStatus::Pending | snapshot::RunStatus::Running)
}

struct StandInSnapshot(Arc<RunBoard>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<snapshot::WatchRunResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for StandInSnapshot {
    async fn start_run(
        &self,
        request: GrpcRequest<snapshot::StartRunRequest>,
    ) -> Result<GrpcResponse<snapshot::StartRunResponse>, Status> {
        let request = request.into_inner();
        if request.triggered_by.is_empty() {
            return Err(Status::invalid_argument("triggered_by: required"));
        }
        let run = {
            let mut board = self.0.state.lock().unwrap();
            if let Some(running) = board.runs.iter().find(|r| r.kind == request.kind && active(r)) {
                return Err(Status::already_exists(format!(
                    "a manual run is already active: {}",
                    running.run_id
                )));
            }
            let run = snapshot::Run {
                run_id: uuid::Uuid::now_v7().to_string(),
                kind: request.kind,
                status: snapshot::RunStatus::Pending as i32,
                dry_run: request.dry_run,
                triggered_by: request.triggered_by,
                scope: request.scope,
                policies: vec!["daily_5".into()],
                created_at: Some(ts(0)),
                steps: STEPS
                    .iter()
                    .map(|(key, label)| snapshot::RunStep {
                        key: *key as i32,
                        label: (*label).to_owned(),
                        status: snapshot::StepStatus::Pending as i32,
                        ..snapshot::RunStep::default()
                    })
                    .collect(),
                counters: Some(snapshot::RunCounters { total_volumes: 6, ..Default::default() }),
                batch_size: 20,
                ..snapshot::Run::default()
            };
            board.runs.insert(0, run.clone());
            run
        };
        self.0.publish(&run.run_id, snapshot::watch_run_response::Event::Snapshot(run.clone()));
        tokio::spawn(Arc::clone(&self.0).execute(run.run_id.clone()));
        Ok(GrpcResponse::new(snapshot::StartRunResponse { run: Some(run) }))
    }

    async fn get_run(
        &self,
        request: GrpcRequest<snapshot::GetRunRequest>,
    ) -> Result<GrpcResponse<snapshot::GetRunResponse>, Status> {
        let request = request.into_inner();
        let run = self.0.run(&request.run_id).ok_or_else(|| Status::not_found("run not found"))?;
        let quota_blocks = if request.include_quota_blocks {
            ["web", "db"]
                .iter()
                .map(|name| snapshot::QuotaBlock {
                    project_id: self.0.cloud.project(name),
                    project_name: (*name).to_owned(),
                    volume_id: format!("vol-{name}"),
                    reason: snapshot::QuotaBlockReason::GigabytesExceeded as i32,
                    ..snapshot::QuotaBlock::default()
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(GrpcResponse::new(snapshot::GetRunResponse {
            active: active(&run),
            batches: if request.include_batches { self.0.batches_of(&run.run_id) } else { Vec::new() },
            quota_blocks,
            run: Some(run),
        }))
    }

    async fn list_runs(
        &self,
        request: GrpcRequest<snapshot::ListRunsRequest>,
    ) -> Result<GrpcResponse<snapshot::ListRunsResponse>, Status> {
        let request = request.into_inner();
        let runs: Vec<snapshot::Run> = self
            .0
            .state
            .lock()
            .unwrap()
            .runs
            .iter()
            .filter(|r| request.statuses.is_empty() || request.statuses.contains(&r.status))
            .filter(|r| request.kind.is_none_or(|k| k == r.kind))
            .cloned()
            .collect();
        let (page, next) = page_of(&runs, request.page_size, &request.page_token)?;
        Ok(GrpcResponse::new(snapshot::ListRunsResponse {
            runs: page,
            next_page_token: next,
            total_count: runs.len() as i32,
        }))
    }

    async fn watch_run(
        &self,
        request: GrpcRequest<snapshot::WatchRunRequest>,
    ) -> Result<GrpcResponse<WatchStream>, Status> {
        let request = request.into_inner();
        if uuid::Uuid::parse_str(&request.run_id).is_err() {
            return Err(Status::invalid_argument("run_id: not a UUID"));
        }
        self.0.run(&request.run_id).ok_or_else(|| Status::not_found("run not found"))?;
        let live = self.0.events.subscribe();
        let past: Vec<snapshot::WatchRunResponse> = self
            .0
            .state
            .lock()
            .unwrap()
            .history
            .get(&request.run_id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.sequence > request.after_sequence)
            .collect();
        let stream = event_stream(past, live, request.run_id);
        Ok(GrpcResponse::new(stream))
    }

    async fn get_active_run(
        &self,
        request: GrpcRequest<snapshot::GetActiveRunRequest>,
    ) -> Result<GrpcResponse<snapshot::GetActiveRunResponse>, Status> {
        let request = request.into_inner();
        let board = self.0.state.lock().unwrap();
        let of_kind = |r: &&snapshot::Run| request.kind.is_none_or(|k| k == r.kind);
        let active_run = board.runs.iter().filter(of_kind).find(|r| active(r)).cloned();
        let is_active = active_run.is_some();
        let run = active_run.or_else(|| {
            if request.include_latest_finished { board.runs.iter().find(of_kind).cloned() } else { None }
        });
        let batches = match (&run, request.include_batches) {
            (Some(run), true) => board.batches.get(&run.run_id).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(GrpcResponse::new(snapshot::GetActiveRunResponse { active: is_active, run, batches }))
    }

    async fn cancel_run(
        &self,
        request: GrpcRequest<snapshot::CancelRunRequest>,
    ) -> Result<GrpcResponse<snapshot::CancelRunResponse>, Status> {
        let request = request.into_inner();
        let run = self.0.run(&request.run_id).ok_or_else(|| Status::not_found("run not found"))?;
        if !active(&run) {
            return Err(Status::failed_precondition("the run has already finished"));
        }
        let run = self.0.update(&request.run_id, |r| {
            r.cancel_requested_at = Some(ts(0));
            r.cancel_requested_by = request.actor;
        });
        Ok(GrpcResponse::new(snapshot::CancelRunResponse { run: Some(run) }))
    }

    async fn forecast_quota(
        &self,
        request: GrpcRequest<snapshot::ForecastQuotaRequest>,
    ) -> Result<GrpcResponse<snapshot::ForecastQuotaResponse>, Status> {
        let request = request.into_inner();
        let project = |name: &str, severity: snapshot::ForecastSeverity| snapshot::ProjectForecast {
            project_id: self.0.cloud.project(name),
            project_name: name.to_owned(),
            domain_name: "acme".into(),
            severity: severity as i32,
            enrolled_volumes: 4,
            resources: vec![snapshot::ResourceForecast {
                resource: snapshot::QuotaResource::Gigabytes as i32,
                limit: 100,
                used: 90,
                available: 10,
                needed: if severity == snapshot::ForecastSeverity::Critical { 40 } else { 1 },
                severity: severity as i32,
                ..snapshot::ResourceForecast::default()
            }],
            ..snapshot::ProjectForecast::default()
        };
        let keep = |p: &snapshot::ProjectForecast| {
            request.project_ids.is_empty() || request.project_ids.contains(&p.project_id)
        };
        let alerts: Vec<_> =
            [project("web", snapshot::ForecastSeverity::Critical)].into_iter().filter(keep).collect();
        let ok_projects: Vec<_> =
            [project("db", snapshot::ForecastSeverity::Ok)].into_iter().filter(keep).collect();
        let summary = snapshot::ForecastSummary {
            total_projects_scanned: (alerts.len() + ok_projects.len()) as i32,
            projects_at_risk: alerts.len() as i32,
            projects_ok: ok_projects.len() as i32,
            critical_count: alerts.len() as i32,
            safety_margin_pct: request.safety_margin_pct.unwrap_or(10.0),
            horizon: request.horizon,
            ..snapshot::ForecastSummary::default()
        };
        Ok(GrpcResponse::new(snapshot::ForecastQuotaResponse {
            alerts,
            ok_projects,
            summary: Some(summary),
            generated_at: Some(ts(0)),
        }))
    }
}

/// A stream that yields `past`, then the run's live events, until `run_finished` has been sent.
fn event_stream(
    past: Vec<snapshot::WatchRunResponse>,
    mut live: broadcast::Receiver<snapshot::WatchRunResponse>,
    run_id: String,
) -> WatchStream {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let finished = |e: &snapshot::WatchRunResponse| {
            matches!(e.event, Some(snapshot::watch_run_response::Event::RunFinished(_)))
        };
        let mut last = 0;
        for event in past {
            last = event.sequence;
            let end = finished(&event);
            if tx.send(Ok(event)).await.is_err() || end {
                return;
            }
        }
        while let Ok(event) = live.recv().await {
            if event.run_id != run_id || event.sequence <= last {
                continue;
            }
            last = event.sequence;
            let end = finished(&event);
            if tx.send(Ok(event)).await.is_err() || end {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn page_of<T: Clone>(rows: &[T], page_size: i32, token: &str) -> Result<(Vec<T>, String), Status> {
    let start: usize = if token.is_empty() {
        0
    } else {
        token.parse().map_err(|_| Status::invalid_argument("page_token: malformed"))?
    };
    let size = if page_size <= 0 { 100 } else { page_size.min(1000) as usize };
    let end = (start + size).min(rows.len());
    let page = rows.get(start..end).map(<[T]>::to_vec).unwrap_or_default();
    let next = if end < rows.len() { end.to_string() } else { String::new() };
    Ok((page, next))
}

// ---------------------------------------------------------------------------------------------
// audit-svc stand-in: records and compliance rows of two projects

/// The run id of the stand-in audit records.
pub const RECORDED_RUN: &str = "0190b4a2-1111-7000-8000-000000000001";

struct StandInAudit {
    records: Vec<audit::Record>,
    rows: Vec<audit::ComplianceRow>,
}

impl StandInAudit {
    fn new(cloud: &Cloud) -> Self {
        let mut records = Vec::new();
        let mut rows = Vec::new();
        let statuses = [
            audit::ComplianceStatus::Compliant,
            audit::ComplianceStatus::Missing,
            audit::ComplianceStatus::QuotaBlocked,
            audit::ComplianceStatus::Pending,
        ];
        for (p, (project, domain)) in
            [("web", "acme"), ("db", "acme"), ("research", "globex")].iter().enumerate()
        {
            for v in 0..4 {
                let volume_id = format!("vol-{project}-{v}");
                let kind =
                    if v == 3 { audit::EventKind::SnapshotFailed } else { audit::EventKind::SnapshotCreated };
                records.push(audit::Record {
                    id: (p * 10 + v + 1) as i64,
                    recorded_at: Some(ts(60)),
                    event: Some(audit::Event {
                        event_id: uuid::Uuid::now_v7().to_string(),
                        occurred_at: Some(ts(120)),
                        kind: kind as i32,
                        run_id: RECORDED_RUN.into(),
                        actor: "scheduler".into(),
                        volume_id: volume_id.clone(),
                        volume_name: format!("{project}-data-{v}"),
                        project_id: cloud.project(project),
                        project_name: (*project).to_owned(),
                        domain_id: format!("dom-{domain}"),
                        domain_name: (*domain).to_owned(),
                        policy_name: "daily_5".into(),
                        snapshot_id: format!("snap-{project}-{v}"),
                        size_gb: 10,
                        retention_count: 5,
                        error: if v == 3 { "cinder 500".into() } else { String::new() },
                        ..audit::Event::default()
                    }),
                });
                let status = statuses[v % statuses.len()];
                rows.push(audit::ComplianceRow {
                    volume_id,
                    volume_name: format!("{project}-data-{v}"),
                    volume_type: "ssd".into(),
                    tenant_id: format!("dom-{domain}"),
                    tenant_name: (*domain).to_owned(),
                    project_id: cloud.project(project),
                    project_name: (*project).to_owned(),
                    policy_name: if v % 2 == 0 { "daily_5".into() } else { "weekly_4".into() },
                    retention_count: 5,
                    snapshot_count: 2,
                    last_snapshot_at: Some(ts(3600 * (v as i64 + 1))),
                    last_good_snapshot_at: Some(ts(3600 * (v as i64 + 1))),
                    compliant: status == audit::ComplianceStatus::Compliant,
                    status: status as i32,
                    policy_cadence: "daily at 00:00 UTC".into(),
                    reason: format!("{} for the latest slot", status.as_str_name().to_lowercase()),
                    ..audit::ComplianceRow::default()
                });
            }
        }
        Self { records, rows }
    }

    fn matching_records(&self, filter: &audit::RecordFilter) -> Vec<audit::Record> {
        self.records
            .iter()
            .filter(|r| {
                let e = r.event.as_ref().unwrap();
                filter.run_id.as_ref().is_none_or(|x| *x == e.run_id)
                    && filter.project_id.as_ref().is_none_or(|x| *x == e.project_id)
                    && filter.volume_id.as_ref().is_none_or(|x| *x == e.volume_id)
                    && filter.domain_id.as_ref().is_none_or(|x| *x == e.domain_id)
                    && (filter.kinds.is_empty() || filter.kinds.contains(&e.kind))
            })
            .cloned()
            .collect()
    }
}

fn summarize(rows: &[audit::ComplianceRow], days: i32) -> audit::ComplianceSummary {
    let count = |s: audit::ComplianceStatus| rows.iter().filter(|r| r.status == s as i32).count() as i32;
    let compliant = count(audit::ComplianceStatus::Compliant);
    let missing = count(audit::ComplianceStatus::Missing);
    let blocked = count(audit::ComplianceStatus::QuotaBlocked);
    let judged = compliant + missing + blocked;
    audit::ComplianceSummary {
        compliant,
        noncompliant: missing,
        pending: count(audit::ComplianceStatus::Pending),
        quota_blocked: blocked,
        excluded: count(audit::ComplianceStatus::Excluded),
        total: rows.len() as i32,
        compliance_pct: if judged == 0 { 100.0 } else { f64::from(compliant) * 100.0 / f64::from(judged) },
        days,
        policies: rows.iter().map(|r| &r.policy_name).collect::<std::collections::BTreeSet<_>>().len() as i32,
    }
}

#[tonic::async_trait]
impl AuditService for StandInAudit {
    async fn list_records(
        &self,
        request: GrpcRequest<audit::ListRecordsRequest>,
    ) -> Result<GrpcResponse<audit::ListRecordsResponse>, Status> {
        let request = request.into_inner();
        let mut records = self.matching_records(&request.filter.unwrap_or_default());
        records.reverse();
        let (records, next_page_token) = page_of(&records, request.page_size, &request.page_token)?;
        Ok(GrpcResponse::new(audit::ListRecordsResponse { records, next_page_token }))
    }

    async fn export_records(
        &self,
        request: GrpcRequest<audit::ExportRecordsRequest>,
    ) -> Result<
        GrpcResponse<Pin<Box<dyn Stream<Item = Result<audit::ExportRecordsResponse, Status>> + Send>>>,
        Status,
    > {
        let request = request.into_inner();
        let records = self.matching_records(&request.filter.unwrap_or_default());
        let chunks: Vec<Result<audit::ExportRecordsResponse, Status>> =
            records.chunks(5).map(|c| Ok(audit::ExportRecordsResponse { records: c.to_vec() })).collect();
        Ok(GrpcResponse::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn get_compliance(
        &self,
        request: GrpcRequest<audit::GetComplianceRequest>,
    ) -> Result<GrpcResponse<audit::GetComplianceResponse>, Status> {
        let request = request.into_inner();
        let rows: Vec<audit::ComplianceRow> = self
            .rows
            .iter()
            .filter(|r| request.project_id.as_ref().is_none_or(|x| *x == r.project_id))
            .filter(|r| request.tenant_id.as_ref().is_none_or(|x| *x == r.tenant_id))
            .filter(|r| request.policy.as_ref().is_none_or(|x| *x == r.policy_name))
            .filter(|r| request.statuses.is_empty() || request.statuses.contains(&r.status))
            .cloned()
            .collect();
        let summary = summarize(&rows, request.days.unwrap_or(2));
        let by_project = ["web", "db", "research"]
            .iter()
            .filter_map(|name| {
                let of: Vec<_> = rows.iter().filter(|r| r.project_name == *name).cloned().collect();
                (!of.is_empty()).then(|| audit::ComplianceRollup {
                    key: of[0].project_id.clone(),
                    name: (*name).to_owned(),
                    summary: Some(summarize(&of, 2)),
                })
            })
            .collect();
        let (page, next_page_token) = page_of(&rows, request.page_size, &request.page_token)?;
        Ok(GrpcResponse::new(audit::GetComplianceResponse {
            rows: page,
            next_page_token,
            total_count: rows.len() as i32,
            summary: Some(summary),
            by_project: if request.include_rollups { by_project } else { Vec::new() },
            evaluated_at: Some(ts(0)),
            inventory_synced_at: Some(ts(600)),
            ..audit::GetComplianceResponse::default()
        }))
    }

    async fn compliance_trend(
        &self,
        request: GrpcRequest<audit::ComplianceTrendRequest>,
    ) -> Result<GrpcResponse<audit::ComplianceTrendResponse>, Status> {
        let request = request.into_inner();
        if request.group_by == 0 {
            return Err(Status::invalid_argument("group_by: required"));
        }
        let days = request.days.clamp(1, 14);
        let points = (0..days)
            .rev()
            .map(|d| {
                let day = chrono::Utc::now().date_naive() - chrono::Days::new(d as u64);
                let compliant = 5 + (days - d);
                audit::TrendPoint {
                    date: day.format("%Y-%m-%d").to_string(),
                    summary: Some(audit::ComplianceSummary {
                        compliant,
                        noncompliant: 3,
                        total: compliant + 3,
                        compliance_pct: f64::from(compliant) * 100.0 / f64::from(compliant + 3),
                        ..audit::ComplianceSummary::default()
                    }),
                    recorded_at: Some(ts(0)),
                }
            })
            .collect();
        Ok(GrpcResponse::new(audit::ComplianceTrendResponse {
            series: vec![audit::TrendSeries { key: "overall".into(), name: "overall".into(), points }],
            next_page_token: String::new(),
        }))
    }
}
