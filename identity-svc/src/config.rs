//! The settings of the `identity-svc` binary.

use std::net::SocketAddr;

use service_kit::config::{DatabaseArgs, SecurityArgs, TelemetryArgs};

/// Settings of `identity-svc`; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "identity-svc",
    about = "Service-user identity, project-scoped credentials and token validation",
    version
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "IDENTITY_SVC_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Where the service keeps its data.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Service-to-service credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
