//! `/healthz`: the gateway is healthy when every service it depends on says SERVING.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use utoipa::ToSchema;

use crate::upstream::{Dependency, Upstream};

/// How long one service may take to answer its health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The suite's health as the gateway sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok` when every service is serving, else `degraded`.
    pub status: &'static str,
    /// One entry per service.
    pub services: Vec<ServiceHealth>,
}

/// One service's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceHealth {
    /// Service name, e.g. `policy-svc`.
    pub name: &'static str,
    /// The URL the gateway calls it on.
    pub url: String,
    /// `SERVING`, `NOT_SERVING`, `UNKNOWN` or `UNREACHABLE`.
    pub status: String,
    /// Round trip of the check in milliseconds.
    pub latency_ms: u64,
    /// Why it is not serving, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Health of the gateway and every service behind it.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "every service is serving", body = HealthReport),
        (status = 503, description = "at least one service is not serving", body = HealthReport),
    )
)]
pub async fn healthz(State(upstream): State<Upstream>) -> (StatusCode, Json<HealthReport>) {
    let services = futures::future::join_all(upstream.dependencies.iter().map(check)).await;
    let all_serving = services.iter().all(|s| s.status == "SERVING");
    let code = if all_serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let status = if all_serving { "ok" } else { "degraded" };
    (code, Json(HealthReport { status, services }))
}

async fn check(dependency: &Dependency) -> ServiceHealth {
    let started = Instant::now();
    let mut client = HealthClient::new(dependency.channel.clone());
    let request = HealthCheckRequest { service: dependency.grpc_service.to_owned() };
    let answer = tokio::time::timeout(CHECK_TIMEOUT, client.check(request)).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let (status, error) = match answer {
        Ok(Ok(response)) => {
            let status =
                ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
            (status.as_str_name().to_owned(), None)
        }
        Ok(Err(status)) => ("UNREACHABLE".to_owned(), Some(status.message().to_owned())),
        Err(_) => ("UNREACHABLE".to_owned(), Some(format!("no answer within {}s", CHECK_TIMEOUT.as_secs()))),
    };
    ServiceHealth { name: dependency.name, url: dependency.url.clone(), status, latency_ms, error }
}
