//! What the integration tests share: the real identity-svc ([`start_identity`]) and policy-svc
//! ([`start_policy`]) in-process, and a stand-in for audit-svc, which is not committed yet
//! ([`StandInAudit`]: the contract as far as snapshot-svc needs it, events kept by id and
//! inventory syncs counted).
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use openstack::CloudConfig;
use policy_svc::active_rules::ActiveRules;
use policy_svc::assignment::Assigner;
use policy_svc::cloud::Cloud;
use policy_svc::grpc::PolicyApi;
use service_kit::clock::{Clock, SystemClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use service_kit::server::GrpcServer;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::policy::v1::policy_service_server::PolicyServiceServer;
use snapkeeper_proto::tonic::{self, Request, Response, Status};

/// A Keystone user by name in the Default domain, with its password.
#[derive(Debug, Clone)]
pub struct Login {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Starts the real identity-svc in-process on a SQLite file in `dir`, holding the password of
/// `admin` (the cloud's admin) and of `service_user` (which it takes project tokens for, granting
/// `member` where missing); returns its URL.
pub async fn start_identity(dir: &std::path::Path, admin: CloudConfig, service_user: &Login) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let database = format!("sqlite://{}/identity.db?mode=rwc", dir.display());
    let mut config = <identity_svc::Config as clap::Parser>::try_parse_from([
        "identity-svc",
        "--service-user",
        &service_user.user,
        "--service-user-password",
        &service_user.password,
        "--database-url",
        &database,
    ])
    .unwrap();
    config.cloud = Some(admin);
    tokio::spawn(async move { identity_svc::serve(config, listener, std::future::pending()).await.unwrap() });
    url
}

/// audit-svc's contract as far as snapshot-svc needs it: events kept by id, syncs counted.
#[derive(Debug, Clone, Default)]
pub struct StandInAudit {
    /// Events by id.
    pub events: Arc<Mutex<BTreeMap<String, audit::Event>>>,
    /// Completed inventory syncs.
    pub syncs: Arc<Mutex<usize>>,
}

impl StandInAudit {
    /// The events received so far.
    pub fn events(&self) -> Vec<audit::Event> {
        self.events.lock().unwrap().values().cloned().collect()
    }
}

#[tonic::async_trait]
impl AuditService for StandInAudit {
    async fn append_events(
        &self,
        request: Request<audit::AppendEventsRequest>,
    ) -> Result<Response<audit::AppendEventsResponse>, Status> {
        let mut events = self.events.lock().unwrap();
        let mut inserted = 0;
        for event in request.into_inner().events {
            if events.insert(event.event_id.clone(), event).is_none() {
                inserted += 1;
            }
        }
        Ok(Response::new(audit::AppendEventsResponse { inserted, ..audit::AppendEventsResponse::default() }))
    }

    async fn sync_inventory(
        &self,
        request: Request<tonic::Streaming<audit::SyncInventoryRequest>>,
    ) -> Result<Response<audit::SyncInventoryResponse>, Status> {
        let mut stream = request.into_inner();
        let mut ended = false;
        while let Some(message) = stream.message().await? {
            ended = matches!(message.message, Some(audit::sync_inventory_request::Message::End(_)));
        }
        assert!(ended, "a sync ends with its end message");
        *self.syncs.lock().unwrap() += 1;
        Ok(Response::new(audit::SyncInventoryResponse {
            applied: true,
            ..audit::SyncInventoryResponse::default()
        }))
    }
}

/// Serves one gRPC service on 127.0.0.1:0 until the test ends; returns its URL.
pub async fn serve<S>(service: S) -> String
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
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        GrpcServer::new(SecurityArgs::default())
            .add_service(service)
            .serve(listener, std::future::pending())
            .await
            .unwrap();
    });
    url
}

/// Serves the stand-in audit-svc; returns it and its URL.
pub async fn serve_audit() -> (StandInAudit, String) {
    let audit = StandInAudit::default();
    let url = serve(AuditServiceServer::new(audit.clone())).await;
    (audit, url)
}

/// Starts the real policy-svc in-process on a SQLite file in `dir` with `rules` active and cloud
/// access through the identity-svc at `identity_url` (ApplyAssignment writes volume metadata);
/// returns its URL.
pub async fn start_policy(dir: &std::path::Path, rules: &str, identity_url: &str) -> String {
    let database = Database::connect(&format!("sqlite://{}/policy.db?mode=rwc", dir.display()), "policy", 2)
        .await
        .unwrap();
    database.migrate(policy_svc::MIGRATIONS).await.unwrap();
    let active = Arc::new(ActiveRules::load(policy_svc::store::Store::new(database)).await.unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cloud = Arc::new(Cloud::connect(identity_url, &SecurityArgs::default(), 500).unwrap());
    let assigner = Arc::new(Assigner::new(cloud, Arc::clone(&active), Arc::clone(&clock), 4));
    let api = PolicyApi::new(active, clock).with_assigner(assigner);
    let url = serve(PolicyServiceServer::new(api)).await;
    let mut client = PolicyServiceClient::connect(url.clone()).await.unwrap();
    let replaced = client
        .replace_rules(policy::ReplaceRulesRequest {
            document: rules.to_owned(),
            actor: "test".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replaced.accepted, "{:?}", replaced.problems);
    url
}
