//! The settings of the `policy-svc` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use service_kit::config::{DatabaseArgs, MetricsArgs, SecurityArgs, TelemetryArgs};

/// Settings of `policy-svc`; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "policy-svc", about = "Rules, policy catalog, assignments and exclusions", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "POLICY_SVC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Rules document (the seed's `snapshot_policy_rules.json` format, or the object form) loaded at
    /// start and whenever it changes; a broken file is logged and the active rules stay.
    #[arg(long, env = "POLICY_RULES_FILE")]
    pub rules_file: Option<PathBuf>,
    /// How often the rules file is checked for changes (e.g. `10s`, `1m`).
    #[arg(long, env = "POLICY_RULES_POLL_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub rules_poll_interval: Duration,
    /// identity-svc gRPC URL: the admin session (token and catalog) for Cinder and Keystone comes
    /// from there, so policy-svc holds no cloud password.
    #[arg(long, env = "IDENTITY_SVC_URL", default_value = "http://127.0.0.1:50052")]
    pub identity_url: String,
    /// Volumes per page when listing Cinder (1 to 1000).
    #[arg(long, env = "POLICY_CINDER_PAGE_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub cinder_page_size: u32,
    /// Volume metadata writes in flight at once during ApplyAssignment (1 to 64).
    #[arg(long, env = "POLICY_WRITE_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub write_concurrency: u16,
    /// Where the service keeps its data.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Service-to-service credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Prometheus `/metrics` listener.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Parses a poll interval such as `10s` or `2m` (1 second to 1 day).
fn parse_interval(text: &str) -> Result<Duration, String> {
    let parsed = crate::schedule::parse_duration(text).map_err(|e| e.to_string())?;
    let seconds = u64::try_from(parsed.num_seconds()).map_err(|_| "must be positive".to_owned())?;
    if !(1..=86_400).contains(&seconds) {
        return Err("must be from 1s to 1d".to_owned());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn rules_file_and_poll_interval_parse_from_flags() {
        let config = Config::try_parse_from([
            "policy-svc",
            "--rules-file",
            "/etc/rules.json",
            "--rules-poll-interval",
            "30s",
        ])
        .unwrap();
        assert_eq!(config.rules_file, Some(PathBuf::from("/etc/rules.json")));
        assert_eq!(config.rules_poll_interval, Duration::from_secs(30));
        assert!(Config::try_parse_from(["policy-svc", "--rules-poll-interval", "0s"]).is_err());
    }

    #[test]
    fn cloud_access_settings_parse_and_refuse_out_of_range_values() {
        let config = Config::try_parse_from([
            "policy-svc",
            "--identity-url",
            "http://identity:50052",
            "--cinder-page-size",
            "50",
            "--write-concurrency",
            "4",
        ])
        .unwrap();
        assert_eq!(config.identity_url, "http://identity:50052");
        assert_eq!((config.cinder_page_size, config.write_concurrency), (50, 4));
        assert!(Config::try_parse_from(["policy-svc", "--cinder-page-size", "0"]).is_err());
        assert!(Config::try_parse_from(["policy-svc", "--write-concurrency", "65"]).is_err());
    }
}
