//! The settings of the `audit-svc` binary.

use std::net::SocketAddr;

use service_kit::config::{DatabaseArgs, SecurityArgs, TelemetryArgs};

/// Settings of `audit-svc`; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "audit-svc", about = "Audit records, inventory and compliance", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AUDIT_SVC_LISTEN", default_value = "127.0.0.1:50054")]
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
