//! The settings of the `snapshot-svc` binary. Seed variable names are kept (`AUTO_SNAPSHOT_*`,
//! `SNAPSHOT_SCHEDULER_ENABLED`, ...). No cloud credentials: the admin session comes from
//! identity-svc (`IDENTITY_SVC_URL`), the only service holding passwords.

use std::net::SocketAddr;

use service_kit::config::{DatabaseArgs, MetricsArgs, SecurityArgs, ServiceUrls, TelemetryArgs};

/// Settings of `snapshot-svc`; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "snapshot-svc",
    about = "Runs: scheduler, due snapshots, retention, quotas and progress",
    version
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "SNAPSHOT_SVC_LISTEN", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,
    /// Volumes per batch; a project is never split across batches.
    #[arg(long, env = "AUTO_SNAPSHOT_BATCH_SIZE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Pause between batches in seconds (the seed slept 5 s; the rate limit makes it optional).
    #[arg(long, env = "AUTO_SNAPSHOT_BATCH_DELAY", default_value_t = 0.0)]
    pub batch_delay_secs: f64,
    /// Projects processed at once.
    #[arg(long, env = "AUTO_SNAPSHOT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Minutes between scheduled runs.
    #[arg(long, env = "AUTO_SNAPSHOT_INTERVAL_MINUTES", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10_080))]
    pub snapshot_interval_minutes: u32,
    /// Minutes between policy assignment passes (every run also starts with one).
    #[arg(long, env = "POLICY_ASSIGN_INTERVAL_MINUTES", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10_080))]
    pub policy_assign_interval_minutes: u32,
    /// Whether this deployment schedules runs (one replica does, holding the lease).
    #[arg(long, env = "SNAPSHOT_SCHEDULER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler_enabled: bool,
    /// Scheduled runs are dry runs (plan only, change nothing).
    #[arg(long, env = "AUTO_SNAPSHOT_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set)]
    pub dry_run: bool,
    /// Volumes larger than this (GiB) are skipped (the seed's Platform9 limit was 260).
    #[arg(long, env = "AUTO_SNAPSHOT_MAX_SIZE_GB")]
    pub max_size_gb: Option<u64>,
    /// At most this many creates per run; the rest are skipped with a reason.
    #[arg(long, env = "AUTO_SNAPSHOT_MAX_NEW")]
    pub max_new: Option<u64>,
    /// Seconds without heartbeat after which a run is marked interrupted (the heartbeat beats every
    /// quarter of it, 1 to 5 s).
    #[arg(long, env = "RUN_HEARTBEAT_TIMEOUT", default_value_t = 120, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub heartbeat_timeout_secs: u64,
    /// Hours an error snapshot of ours is kept (for inspection) before retention deletes it.
    #[arg(long, env = "SNAPSHOT_ERROR_GRACE_HOURS", default_value_t = 24)]
    pub error_grace_hours: u32,
    /// Regions processed in one run, comma-separated; empty: the admin session's default region
    /// (identity-svc's).
    #[arg(long, env = "SNAPKEEPER_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Volumes and snapshots per page when listing Cinder (1 to 1000).
    #[arg(long, env = "SNAPSHOT_CINDER_PAGE_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub cinder_page_size: u32,
    /// OpenStack requests per second this service sends at most, across all projects (0 = no
    /// limit). Calls in flight are also capped at the larger of 16 and AUTO_SNAPSHOT_CONCURRENCY.
    #[arg(long, env = "SNAPSHOT_OPENSTACK_RPS", default_value_t = 50)]
    pub openstack_rps: u32,
    /// Name of this replica in runs and the scheduler lease; default: the host name.
    #[arg(long, env = "SNAPSHOT_SVC_HOST")]
    pub host: Option<String>,
    /// Where the other services are.
    #[command(flatten)]
    pub services: ServiceUrls,
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

impl Config {
    /// Retry, rate and in-flight limits of the OpenStack sessions: the client's defaults with
    /// `--openstack-rps`, and room for every project `--concurrency` processes at once.
    pub fn resilience(&self) -> openstack::Resilience {
        let defaults = openstack::Resilience::default();
        openstack::Resilience {
            requests_per_second: (self.openstack_rps > 0).then_some(f64::from(self.openstack_rps)),
            max_concurrency: defaults.max_concurrency.max(self.concurrency as usize),
            ..defaults
        }
    }

    /// Checks what clap cannot; the message names the variable.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.batch_delay_secs.is_finite() && (0.0..=3600.0).contains(&self.batch_delay_secs)) {
            return Err("AUTO_SNAPSHOT_BATCH_DELAY must be 0 to 3600 seconds".to_owned());
        }
        if self.regions.iter().any(|r| r.trim().is_empty()) {
            return Err("SNAPKEEPER_REGIONS must not contain empty names".to_owned());
        }
        Ok(())
    }

    /// This replica's name: `--host`, else the system host name.
    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "snapshot-svc".to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn seed_defaults_and_flags_parse() {
        let config = Config::try_parse_from(["snapshot-svc"]).unwrap();
        assert_eq!(config.batch_size, 20);
        assert_eq!(config.snapshot_interval_minutes, 60);
        assert!(config.scheduler_enabled);
        assert!(config.validate().is_ok());
        let config = Config::try_parse_from([
            "snapshot-svc",
            "--batch-size",
            "5",
            "--scheduler-enabled",
            "false",
            "--regions",
            "RegionOne,RegionTwo",
            "--batch-delay-secs=-1",
        ])
        .unwrap();
        assert_eq!(config.regions, ["RegionOne", "RegionTwo"]);
        assert!(!config.scheduler_enabled);
        assert!(config.validate().unwrap_err().contains("AUTO_SNAPSHOT_BATCH_DELAY"));
        assert!(Config::try_parse_from(["snapshot-svc", "--batch-size", "0"]).is_err());
        // Short heartbeat timeouts are for tests that kill the process; below 5 s is refused.
        assert!(Config::try_parse_from(["snapshot-svc", "--heartbeat-timeout-secs", "5"]).is_ok());
        assert!(Config::try_parse_from(["snapshot-svc", "--heartbeat-timeout-secs", "4"]).is_err());
    }

    #[test]
    fn openstack_rate_defaults_to_50_and_zero_lifts_it() {
        let config = Config::try_parse_from(["snapshot-svc"]).unwrap();
        assert_eq!(config.resilience().requests_per_second, Some(50.0));
        assert_eq!(config.resilience().max_concurrency, 16);
        let config =
            Config::try_parse_from(["snapshot-svc", "--openstack-rps", "0", "--concurrency", "64"]).unwrap();
        assert_eq!(config.resilience().requests_per_second, None);
        assert_eq!(config.resilience().max_concurrency, 64);
    }
}
