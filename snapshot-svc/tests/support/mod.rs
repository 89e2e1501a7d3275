//! What the integration tests share: the real identity-svc ([`start_identity`]), policy-svc
//! ([`start_policy`]) and audit-svc ([`start_audit`], read back through its own RPCs) served
//! in-process over gRPC, each on its own database.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::sync::Arc;

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
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::policy::v1::policy_service_server::PolicyServiceServer;
use snapkeeper_proto::tonic::{self, transport::Channel};

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

/// The real audit-svc served in-process, with a client to read back what it recorded.
#[derive(Debug, Clone)]
pub struct Audit {
    /// Its gRPC URL.
    pub url: String,
    /// A client of it.
    pub client: AuditServiceClient<Channel>,
}

/// Starts the real audit-svc in-process over gRPC on `database_url` (a SQLite file or a
/// PostgreSQL database, where it takes its own schema), reading the policy catalog from
/// `policy_url`.
pub async fn start_audit(database_url: &str, policy_url: &str) -> Audit {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = <audit_svc::Config as clap::Parser>::try_parse_from([
        "audit-svc",
        "--policy-url",
        policy_url,
        "--database-url",
        database_url,
        "--max-connections",
        "4",
    ])
    .unwrap();
    tokio::spawn(async move { audit_svc::serve(config, listener, std::future::pending()).await.unwrap() });
    let client = AuditServiceClient::connect(url.clone()).await.unwrap();
    Audit { url, client }
}

impl Audit {
    /// Every record matching `filter`, oldest first (all pages of ListRecords).
    pub async fn records(&self, filter: audit::RecordFilter) -> Vec<audit::Event> {
        let mut client = self.client.clone();
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_records(audit::ListRecordsRequest {
                    filter: Some(filter.clone()),
                    oldest_first: true,
                    page_size: 1000,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            events.extend(page.records.into_iter().filter_map(|r| r.event));
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }

    /// The records of `kinds` (of every run when `run_id` is empty).
    pub async fn of_kinds(&self, run_id: &str, kinds: &[audit::EventKind]) -> Vec<audit::Event> {
        self.records(audit::RecordFilter {
            run_id: (!run_id.is_empty()).then(|| run_id.to_owned()),
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            ..audit::RecordFilter::default()
        })
        .await
    }

    /// The run as audit-svc summarises it from its events.
    pub async fn run(&self, run_id: &str) -> Option<audit::RunSummary> {
        let mut client = self.client.clone();
        let request = audit::ListRunsRequest { run_id: Some(run_id.to_owned()), ..Default::default() };
        client.list_runs(request).await.unwrap().into_inner().runs.into_iter().next()
    }

    /// When the latest inventory audit-svc applied was listed.
    pub async fn inventory_synced_at(&self) -> Option<snapkeeper_proto::prost_types::Timestamp> {
        let mut client = self.client.clone();
        let request = audit::GetComplianceRequest::default();
        client.get_compliance(request).await.unwrap().into_inner().inventory_synced_at
    }
}

/// The OpenStack client's limits without the request rate limit: the simulator needs no
/// protection, and a scale run would otherwise measure the limit (50 requests/s by default).
pub fn unthrottled() -> openstack::Resilience {
    openstack::Resilience {
        requests_per_second: None,
        max_concurrency: 64,
        ..openstack::Resilience::default()
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
    let cloud = Arc::new(
        Cloud::connect(identity_url, &SecurityArgs::default(), 500).unwrap().with_resilience(unthrottled()),
    );
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
