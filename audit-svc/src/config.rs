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
    /// policy-svc gRPC URL: compliance reads the policy catalog and exclusions from it.
    #[arg(long, env = "POLICY_SVC_URL", default_value = "http://127.0.0.1:50051")]
    pub policy_url: String,
    /// Seconds the catalog and exclusions fetched from policy-svc are reused before a refetch.
    #[arg(long, env = "AUDIT_POLICY_CACHE_TTL_SECS", default_value_t = 60)]
    pub policy_cache_ttl_secs: u64,
    /// Where the service keeps its data. On PostgreSQL audit writes run as the
    /// `snapkeeper_audit_writer` role (SELECT and INSERT only) when the user may switch to it.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Service-to-service credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
