//! The gateway's settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use service_kit::config::{MetricsArgs, SecurityArgs, ServiceUrls, TelemetryArgs, parse_secret};

use crate::rbac::RoleMap;

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
    /// How users authenticate to the gateway.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Largest request body accepted, in bytes (a rules document may be up to 1 MiB).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Prometheus `/metrics` listener.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// User authentication: session tokens, Keystone role mapping, login throttling.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// HMAC key (at least 32 bytes) signing the gateway's session tokens (HS256). Without it and
    /// without `--jwt-secret-file`, a loopback-only gateway generates one per start.
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<SecretString>,
    /// File holding the signing key (used when `GATEWAY_JWT_SECRET` is not set).
    #[arg(long, env = "GATEWAY_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Lifetime of a session token in seconds (60 to 86400).
    #[arg(long, env = "GATEWAY_JWT_TTL_SECONDS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub jwt_ttl_seconds: u64,
    /// Keystone role to permission map, `role=read|write|admin` pairs separated by commas; the
    /// highest permission of a user's roles applies.
    #[arg(long, env = "GATEWAY_ROLE_MAP", default_value = "admin=admin,member=write,reader=read",
          value_parser = RoleMap::parse)]
    pub role_map: RoleMap,
    /// Projects (names or ids) whose tokens see every project; besides these, system-scoped
    /// tokens and admins of Keystone's admin project do.
    #[arg(long, env = "GATEWAY_GLOBAL_PROJECTS", default_value = "admin", value_delimiter = ',')]
    pub global_projects: Vec<String>,
    /// Mark session cookies `Secure` (set it when users reach the gateway over HTTPS; requests
    /// arriving with `X-Forwarded-Proto: https` get `Secure` cookies anyway).
    #[arg(long, env = "GATEWAY_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,
    /// Failed logins per user within 5 minutes before further attempts are refused.
    #[arg(long, env = "GATEWAY_LOGIN_FAILURES_PER_USER", default_value_t = 5)]
    pub login_failures_per_user: u32,
    /// Login attempts per client address within a minute.
    #[arg(long, env = "GATEWAY_LOGIN_ATTEMPTS_PER_ADDRESS", default_value_t = 30)]
    pub login_attempts_per_address: u32,
    /// How long a validated Keystone token (`X-Auth-Token`) is trusted without asking again, in
    /// seconds (never past its expiry).
    #[arg(long, env = "GATEWAY_TOKEN_CACHE_SECONDS", default_value_t = 30)]
    pub token_cache_seconds: u64,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::rbac::Permission;

    #[test]
    fn defaults_parse_without_any_setting() {
        let config = Config::try_parse_from(["gateway"]).unwrap();
        assert_eq!(config.auth.jwt_ttl_seconds, 1800);
        assert_eq!(config.auth.role_map.permission(&["member".to_owned()]), Some(Permission::Write));
        assert_eq!(config.auth.global_projects, vec!["admin"]);
    }

    #[test]
    fn a_custom_role_map_replaces_the_default_and_bad_ones_are_refused() {
        let config =
            Config::try_parse_from(["gateway", "--role-map", "operator=write,auditor=read"]).unwrap();
        assert_eq!(config.auth.role_map.permission(&["member".to_owned()]), None);
        assert_eq!(config.auth.role_map.permission(&["Operator".to_owned()]), Some(Permission::Write));
        assert!(Config::try_parse_from(["gateway", "--role-map", "member=owner"]).is_err());
        assert!(Config::try_parse_from(["gateway", "--jwt-ttl-seconds", "5"]).is_err());
    }
}
