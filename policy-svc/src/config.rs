//! The settings of the `policy-svc` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use service_kit::config::{DatabaseArgs, SecurityArgs, TelemetryArgs};

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
}
