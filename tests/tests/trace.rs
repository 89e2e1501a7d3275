//! One trace from a REST request at the gateway through a service to another service: each hop's
//! server span is the child of the previous hop's span, so an operator sees the whole request.
#![allow(clippy::unwrap_used)]

use std::future::pending;

use clap::Parser as _;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::SpanData;
use service_kit::client::{ServiceChannel, Timeouts, connect_lazy};
use service_kit::config::{SecurityArgs, parse_secret};
use service_kit::server::GrpcServer;
use service_kit::testing::SpanCapture;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::identity::v1::identity_service_server::{IdentityService, IdentityServiceServer};
use snapkeeper_proto::identity::v1::{StatusRequest, StatusResponse};
use snapkeeper_proto::policy::v1::policy_service_server::{PolicyService, PolicyServiceServer};
use snapkeeper_proto::policy::v1::{GetRulesRequest, GetRulesResponse, RuleSet, RuleSetVersion};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Stands in for policy-svc: answering GetRules needs a call to the next service.
struct Front {
    identity: ServiceChannel,
}

#[tonic::async_trait]
impl PolicyService for Front {
    async fn get_rules(&self, _: Request<GetRulesRequest>) -> Result<Response<GetRulesResponse>, Status> {
        IdentityServiceClient::new(self.identity.clone()).status(StatusRequest {}).await?;
        let version = RuleSetVersion { version: 3, rule_count: 0, ..RuleSetVersion::default() };
        let rule_set = RuleSet { version: Some(version), document: "[]".to_owned(), ..RuleSet::default() };
        Ok(Response::new(GetRulesResponse { rule_set: Some(rule_set) }))
    }
}

/// Stands in for identity-svc, the last hop.
struct Back;

#[tonic::async_trait]
impl IdentityService for Back {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse::default()))
    }
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
        panic!("no span {name:?} among {names:?}")
    })
}

#[tokio::test]
async fn a_rest_request_is_one_trace_across_gateway_and_two_services() {
    let capture = SpanCapture::start();
    // The internal credential travels with the trace context on every hop.
    let security =
        SecurityArgs { internal_token: parse_secret("trace-test-token").ok(), ..SecurityArgs::default() };

    let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let back_url = format!("http://{}", back.local_addr().unwrap());
    let server = GrpcServer::new(security.clone()).add_service(IdentityServiceServer::new(Back));
    tokio::spawn(server.serve(back, pending()));

    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_url = format!("http://{}", front.local_addr().unwrap());
    let identity = connect_lazy(&back_url, &security, Timeouts::default()).unwrap();
    let server = GrpcServer::new(security.clone()).add_service(PolicyServiceServer::new(Front { identity }));
    tokio::spawn(server.serve(front, pending()));

    let mut config = gateway::Config::try_parse_from([
        "gateway",
        "--policy-url",
        &front_url,
        "--identity-url",
        &back_url,
        "--snapshot-url",
        &back_url,
        "--audit-url",
        &back_url,
        "--jwt-secret",
        JWT_SECRET,
    ])
    .unwrap();
    config.security = security;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_url = format!("http://{}", http.local_addr().unwrap());
    let app = gateway::app(&config).unwrap();
    tokio::spawn(async move { axum_serve(http, app).await });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("{gateway_url}/api/snapshot/rules"))
        .bearer_auth(session_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["version"], 3);

    let spans = capture.finished();
    let rest = span(&spans, "GET /api/snapshot/rules");
    let policy = span(&spans, "snapkeeper.policy.v1.PolicyService/GetRules");
    let identity = span(&spans, "snapkeeper.identity.v1.IdentityService/Status");
    let trace_id = rest.span_context.trace_id();
    assert_eq!(policy.span_context.trace_id(), trace_id, "policy hop continues the REST trace");
    assert_eq!(identity.span_context.trace_id(), trace_id, "identity hop continues the same trace");
    assert_eq!(rest.parent_span_id, SpanId::INVALID, "the REST request starts the trace");
    assert_eq!(policy.parent_span_id, rest.span_context.span_id());
    assert_eq!(identity.parent_span_id, policy.span_context.span_id());
}

const JWT_SECRET: &str = "trace-test-signing-key-of-32-bytes-or-more";

/// A gateway session for a cloud-wide reader, signed as the gateway signs its own.
fn session_token() -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "snapkeeper-gateway",
        "sub": "id-trace",
        "name": "trace",
        "roles": ["reader"],
        "global": true,
        "csrf": "not-used-with-bearer",
        "iat": now,
        "exp": now + 300,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

async fn axum_serve(listener: TcpListener, router: axum::Router) {
    axum::serve(listener, router).await.unwrap();
}
