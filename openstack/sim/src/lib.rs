//! `openstack-sim`: a Keystone v3 + Cinder v3 + Nova (servers) simulator for tests, benchmarks
//! and `snapkeeper up`. Never linked into production services.
//!
//! One HTTP listener serves Keystone at `/v3`, Cinder at `/volume/v3/{project_id}` and Nova at
//! `/compute/v2.1`, shaped as the real services (paths, fields, status codes, error bodies,
//! pagination links, microversions, policy). A [`Scenario`] seeds the cloud; [`Faults`] inject
//! latency, 5xx, 429 and timeouts per operation; `/_sim/stats` counts requests per operation
//! and `/_sim/faults` changes faults at run time. Each request runs `exchange::handle`, which
//! calls one handler in `keystone`, `cinder` or `nova` against the in-memory `state::World`.

mod cinder;
pub mod cli;
mod exchange;
mod faults;
mod keystone;
mod nova;
mod scenario;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

pub use faults::{Faults, OpFaults};
pub use scenario::{
    ADMIN_PASSWORD, ADMIN_PROJECT, ADMIN_USER, AppCredentialSpec, AssignmentSpec, DomainSpec, GenSpec,
    ProjectSpec, QuotaSpec, Scenario, ServerSpec, SnapshotSpec, UserSpec, VolumeSpec,
};

use exchange::{Shared, Sim, Timing};
use faults::FaultState;
use state::World;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listen address; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Initial content.
    pub scenario: Scenario,
    /// Initial faults.
    pub faults: Faults,
    /// Time a new snapshot stays `creating`.
    pub snapshot_delay: Duration,
    /// Time a new volume stays `creating`.
    pub volume_delay: Duration,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Keystone `[DEFAULT] list_limit`: longer lists are truncated (`"truncated": true`).
    pub keystone_list_limit: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            scenario: Scenario::minimal(),
            faults: Faults::default(),
            snapshot_delay: Duration::from_millis(200),
            volume_delay: Duration::from_millis(200),
            token_ttl: Duration::from_hours(1),
            keystone_list_limit: None,
        }
    }
}

/// Object counts of the simulated cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Projects.
    pub projects: usize,
    /// Users.
    pub users: usize,
    /// Volumes.
    pub volumes: usize,
    /// Snapshots.
    pub snapshots: usize,
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    base_url: String,
    shared: Sim,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// Entry point.
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

impl Simulator {
    /// Builds the cloud from the scenario, binds and serves in the background.
    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        let world = World::from_scenario(&config.scenario)?;
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            faults: Mutex::new(FaultState::new(config.faults)),
            stats: Mutex::new(BTreeMap::new()),
            base_url: base_url.clone(),
            timing: Timing {
                snapshot_delay: config.snapshot_delay,
                volume_delay: config.volume_delay,
                token_ttl: config.token_ttl,
                keystone_list_limit: config.keystone_list_limit,
            },
        });
        let app = router(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "openstack-sim server stopped");
            }
        });
        tracing::info!(%base_url, "openstack-sim listening");
        Ok(SimHandle { addr, base_url, shared, stop: Some(stop), task })
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Keystone URL for `OS_AUTH_URL`.
    pub fn auth_url(&self) -> String {
        format!("{}/v3", self.base_url)
    }

    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests served per operation since start or the last reset.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.shared.stats().clone()
    }

    /// Clears the request counters.
    pub fn reset_stats(&self) {
        self.shared.stats().clear();
    }

    /// Replaces the fault settings (and restarts their random sequence).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.fault_state().replace(faults);
    }

    /// Forgets every issued token, as a Keystone key rotation would: clients get 401.
    pub fn revoke_tokens(&self) {
        self.shared.world().tokens.clear();
    }

    /// Object counts.
    pub fn counts(&self) -> Counts {
        let world = self.shared.world();
        Counts {
            projects: world.projects.len(),
            users: world.users.len(),
            volumes: world.volumes.len(),
            snapshots: world.snapshots.len(),
        }
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(shared: Sim) -> Router {
    let volume = "/volume/v3/{project_id}";
    Router::new()
        .route("/", get(keystone::versions))
        .route("/v3", get(keystone::version))
        .route("/v3/", get(keystone::version))
        .route(
            "/v3/auth/tokens",
            post(keystone::issue_token)
                .get(keystone::validate_token)
                .head(keystone::check_token)
                .delete(keystone::revoke_token),
        )
        .route("/v3/auth/projects", get(keystone::auth_projects))
        .route("/v3/domains", get(keystone::list_domains))
        .route("/v3/domains/{id}", get(keystone::get_domain))
        .route("/v3/projects", get(keystone::list_projects).post(keystone::create_project))
        .route(
            "/v3/projects/{id}",
            get(keystone::get_project).patch(keystone::update_project).delete(keystone::delete_project),
        )
        .route(
            "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
            put(keystone::grant_role).head(keystone::check_role).delete(keystone::revoke_role),
        )
        .route("/v3/users", get(keystone::list_users).post(keystone::create_user))
        .route("/v3/users/{id}", get(keystone::get_user).delete(keystone::delete_user))
        .route("/v3/roles", get(keystone::list_roles))
        .route("/v3/role_assignments", get(keystone::list_role_assignments))
        .route("/volume", get(cinder::versions))
        .route("/volume/", get(cinder::versions))
        .route(&format!("{volume}/volumes"), get(cinder::volumes_summary).post(cinder::create_volume))
        .route(&format!("{volume}/volumes/detail"), get(cinder::volumes_detail))
        .route(&format!("{volume}/volumes/{{id}}"), get(cinder::get_volume).delete(cinder::delete_volume))
        .route(&format!("{volume}/volumes/{{id}}/action"), post(cinder::volume_action))
        .route(
            &format!("{volume}/volumes/{{id}}/metadata"),
            get(cinder::get_volume_metadata)
                .post(cinder::set_volume_metadata)
                .put(cinder::replace_volume_metadata),
        )
        .route(
            &format!("{volume}/volumes/{{id}}/metadata/{{key}}"),
            put(cinder::put_volume_metadata_item).delete(cinder::delete_volume_metadata_item),
        )
        .route(&format!("{volume}/snapshots"), get(cinder::snapshots_summary).post(cinder::create_snapshot))
        .route(&format!("{volume}/snapshots/detail"), get(cinder::snapshots_detail))
        .route(
            &format!("{volume}/snapshots/{{id}}"),
            get(cinder::get_snapshot).delete(cinder::delete_snapshot),
        )
        .route(
            &format!("{volume}/snapshots/{{id}}/metadata"),
            get(cinder::get_snapshot_metadata).post(cinder::set_snapshot_metadata),
        )
        .route(
            &format!("{volume}/os-quota-sets/{{target}}"),
            get(cinder::get_quota).put(cinder::update_quota),
        )
        .route(&format!("{volume}/os-quota-sets/{{target}}/defaults"), get(cinder::get_quota_defaults))
        .route(&format!("{volume}/limits"), get(cinder::limits))
        .route("/compute/v2.1", get(nova::version))
        .route("/compute/v2.1/", get(nova::version))
        .route("/compute/v2.1/servers", get(nova::servers))
        .route("/compute/v2.1/servers/detail", get(nova::servers_detail))
        .route("/_sim/stats", get(admin_stats).delete(admin_reset_stats))
        .route("/_sim/stats/reset", post(admin_reset_stats))
        .route("/_sim/faults", get(admin_faults).put(admin_set_faults))
        .route("/_sim/tokens/revoke", post(admin_revoke_tokens))
        .with_state(shared)
}

async fn admin_stats(State(sim): State<Sim>) -> Response {
    let stats = sim.stats().clone();
    let total: u64 = stats.values().sum();
    axum::Json(json!({"total": total, "operations": stats})).into_response()
}

async fn admin_reset_stats(State(sim): State<Sim>) -> Response {
    sim.stats().clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_faults(State(sim): State<Sim>) -> Response {
    axum::Json(sim.fault_state().faults.clone()).into_response()
}

async fn admin_set_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            sim.fault_state().replace(faults.clone());
            axum::Json(faults).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn admin_revoke_tokens(State(sim): State<Sim>) -> Response {
    sim.world().tokens.clear();
    StatusCode::NO_CONTENT.into_response()
}
