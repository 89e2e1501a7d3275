//! The gateway's settings.

use std::net::SocketAddr;

use service_kit::config::{SecurityArgs, ServiceUrls, TelemetryArgs};

/// Settings of the `gateway` binary; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "gateway", about = "Snapkeeper REST API and compliance UI", version)]
pub struct Config {
    /// Address the REST API and UI listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Where the services are.
    #[command(flatten)]
    pub services: ServiceUrls,
    /// How the gateway authenticates to the services.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
