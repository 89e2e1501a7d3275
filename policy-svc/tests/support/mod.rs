//! A simulated cloud with a stand-in identity-svc: the simulator (openstack-sim), and an
//! IdentityService on 127.0.0.1:0 that logs in to it as the admin and answers
//! GetAdminCredentials as the contract describes (token, expiry, project, region, catalog
//! endpoints). The end-to-end tests use the real identity-svc instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openstack::{BLOCK_STORAGE_TYPES, CloudConfig, ExposeSecret, OpenStack};
use openstack_sim::{Scenario, SimConfig, SimHandle, Simulator};
use service_kit::config::SecurityArgs;
use service_kit::server::GrpcServer;
use snapkeeper_proto::identity::v1 as identity;
use snapkeeper_proto::identity::v1::identity_service_server::{IdentityService, IdentityServiceServer};
use snapkeeper_proto::prost_types::Timestamp;
use snapkeeper_proto::tonic::{self, Request, Response, Status};

/// The seed's `snapshots/snapshot_policy_rules.json`.
pub(crate) const SEED_RULES: &str = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily + 1st + 15th", "priority": 20, "match": {},
   "policies": ["daily_5", "monthly_1st", "monthly_15th"], "auto_snapshot": true,
   "retention": {"daily_5": 5, "monthly_1st": 1, "monthly_15th": 1}}
]"#;

/// Password of the demo cloud's users in these tests.
pub(crate) const PASSWORD: &str = "sim-admin-pass";
/// The simulator's only region.
pub(crate) const REGION: &str = "RegionOne";

/// The running simulator and the stand-in identity-svc in front of it.
pub(crate) struct SimCloud {
    /// The simulator.
    pub(crate) sim: SimHandle,
    /// gRPC URL of the stand-in identity-svc.
    pub(crate) identity_url: String,
    /// GetAdminCredentials calls answered.
    pub(crate) identity_calls: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for SimCloud {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl SimCloud {
    /// The simulator's admin, for reading volumes as they are.
    pub(crate) async fn admin(&self) -> OpenStack {
        OpenStack::connect(admin_config(&self.sim.auth_url())).await.unwrap()
    }
}

fn admin_config(auth_url: &str) -> CloudConfig {
    CloudConfig::password(auth_url, "admin", "Default", PASSWORD, "admin", "Default")
}

/// Starts the demo cloud (200 volumes in 18 tenant projects) and identity-svc in front of it.
pub(crate) async fn start_demo_cloud() -> SimCloud {
    let config = SimConfig { scenario: Scenario::demo_with_password(PASSWORD), ..SimConfig::default() };
    let sim = Simulator::start(config).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = StandInIdentity { auth_url: sim.auth_url(), calls: Arc::clone(&calls) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        GrpcServer::new(SecurityArgs::default())
            .add_service(IdentityServiceServer::new(service))
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    SimCloud { sim, identity_url: format!("http://{address}"), identity_calls: calls, shutdown: Some(tx) }
}

/// identity-svc's GetAdminCredentials, logging in afresh on every call.
struct StandInIdentity {
    auth_url: String,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl IdentityService for StandInIdentity {
    async fn get_admin_credentials(
        &self,
        request: Request<identity::GetAdminCredentialsRequest>,
    ) -> Result<Response<identity::GetAdminCredentialsResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let unavailable = |e: openstack::Error| Status::unavailable(e.to_string());
        let region = match request.into_inner().region {
            r if r.is_empty() => REGION.to_owned(),
            r => r,
        };
        let admin = OpenStack::connect(admin_config(&self.auth_url)).await.map_err(unavailable)?;
        let token = admin.token().await.map_err(unavailable)?;
        let info = admin.token_info().await.map_err(unavailable)?;
        let cinder_endpoint = info
            .catalog
            .endpoint(BLOCK_STORAGE_TYPES, "public", Some(&region))
            .ok_or_else(|| Status::failed_precondition(format!("no Cinder endpoint in region {region}")))?;
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
        let project = info.project.clone().unwrap_or_else(|| panic!("admin token is project-scoped"));
        Ok(Response::new(identity::GetAdminCredentialsResponse {
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
