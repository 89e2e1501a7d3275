//! `snapkeeper health TARGET`: one probe for containers and scripts. A `HOST:PORT` target is a
//! gRPC service asked through the standard health protocol; an `http(s)://` URL must answer 200
//! (the gateway's `/healthz` does only when every service is serving).

use std::time::Duration;

use anyhow::{Context as _, bail};
use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::SecurityArgs;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Settings of `snapkeeper health`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// `HOST:PORT` of a gRPC service, or an `http(s)://` URL that must answer 200.
    pub target: String,
    /// gRPC service to ask about (e.g. snapkeeper.policy.v1.PolicyService); the whole server when absent.
    #[arg(long)]
    pub service: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
    /// TLS settings when the service uses TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Checks the target; `Ok` carries what it answered, `Err` says why it is not healthy.
pub async fn check(args: &HealthArgs) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(args.timeout_secs);
    if args.target.starts_with("http://") || args.target.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response =
            client.get(&args.target).send().await.with_context(|| format!("GET {}", args.target))?;
        if !response.status().is_success() {
            bail!("{} answered {}", args.target, response.status());
        }
        return Ok(format!("{} answered {}", args.target, response.status()));
    }
    let scheme = if args.security.tls_ca.is_some() { "https" } else { "http" };
    let channel = connect_lazy(
        &format!("{scheme}://{}", args.target),
        &args.security,
        Timeouts { connect: timeout, request: timeout },
    )?;
    let service = args.service.clone().unwrap_or_default();
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.clone() })
        .await
        .with_context(|| format!("health check of {}", args.target))?
        .into_inner();
    let status = ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown);
    let what = if service.is_empty() { args.target.clone() } else { format!("{service} at {}", args.target) };
    if status != ServingStatus::Serving {
        bail!("{what} is {}", status.as_str_name());
    }
    Ok(format!("{what} is SERVING"))
}
