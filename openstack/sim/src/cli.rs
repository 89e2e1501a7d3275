//! The simulator's command line, shared by the `openstack-sim` binary and `snapkeeper sim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Faults, GenSpec, OpFaults, Scenario, SimConfig, SimHandle, Simulator};

/// How to run the simulator from a command line (`openstack-sim`, `snapkeeper sim`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Listen address (loopback only).
    #[arg(long, env = "OPENSTACK_SIM_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Scenario file (YAML or JSON).
    #[arg(long, env = "OPENSTACK_SIM_SCENARIO", conflicts_with_all = ["demo", "generate"])]
    pub scenario: Option<PathBuf>,
    /// The demo cloud (password from SNAPKEEPER_DEMO_PASSWORD, else `demo`).
    #[arg(long, env = "OPENSTACK_SIM_DEMO", conflicts_with = "generate")]
    pub demo: bool,
    /// A generated cloud: PROJECTSxVOLUMES, e.g. 1000x10.
    #[arg(long, env = "OPENSTACK_SIM_GENERATE", value_parser = parse_generate)]
    pub generate: Option<(usize, usize)>,
    /// Existing snapshots in a generated cloud.
    #[arg(long, env = "OPENSTACK_SIM_SNAPSHOTS", default_value_t = 0)]
    pub snapshots: usize,
    /// Seed for generated ids and fault draws.
    #[arg(long, env = "OPENSTACK_SIM_SEED", default_value_t = 7)]
    pub seed: u64,
    /// Milliseconds a new snapshot stays `creating`.
    #[arg(long, env = "OPENSTACK_SIM_SNAPSHOT_DELAY_MS", default_value_t = 500)]
    pub snapshot_delay_ms: u64,
    /// Milliseconds a new volume stays `creating`.
    #[arg(long, env = "OPENSTACK_SIM_VOLUME_DELAY_MS", default_value_t = 500)]
    pub volume_delay_ms: u64,
    /// Token lifetime in seconds.
    #[arg(long, env = "OPENSTACK_SIM_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Keystone list_limit (truncate longer lists).
    #[arg(long, env = "OPENSTACK_SIM_KEYSTONE_LIST_LIMIT")]
    pub keystone_list_limit: Option<usize>,
    /// Fault settings file (YAML or JSON, the `/_sim/faults` shape); flags below override its default.
    #[arg(long, env = "OPENSTACK_SIM_FAULTS")]
    pub faults: Option<PathBuf>,
    /// Added latency per request (ms).
    #[arg(long, env = "OPENSTACK_SIM_LATENCY_MS")]
    pub latency_ms: Option<u64>,
    /// Share of requests answered 503.
    #[arg(long, env = "OPENSTACK_SIM_ERROR_RATE")]
    pub error_rate: Option<f64>,
    /// Share of requests answered 429.
    #[arg(long, env = "OPENSTACK_SIM_RATE_LIMIT_RATE")]
    pub rate_limit_rate: Option<f64>,
    /// Retry-After seconds on a 429.
    #[arg(long, env = "OPENSTACK_SIM_RETRY_AFTER_SECS")]
    pub retry_after_secs: Option<u64>,
    /// Share of requests answered late (after doing the work).
    #[arg(long, env = "OPENSTACK_SIM_TIMEOUT_RATE")]
    pub timeout_rate: Option<f64>,
    /// How late, in ms.
    #[arg(long, env = "OPENSTACK_SIM_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
}

fn parse_generate(value: &str) -> Result<(usize, usize), String> {
    let (p, v) = value.split_once(['x', 'X']).ok_or("expected PROJECTSxVOLUMES, e.g. 1000x10")?;
    Ok((p.parse().map_err(|_| "bad project count")?, v.parse().map_err(|_| "bad volume count")?))
}

fn load_faults(args: &SimArgs) -> anyhow::Result<Faults> {
    let mut faults = match &args.faults {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            serde_yaml_ng::from_str(&text).with_context(|| path.display().to_string())?
        }
        None => Faults { seed: args.seed, ..Faults::default() },
    };
    let d: &mut OpFaults = &mut faults.default;
    if let Some(v) = args.latency_ms {
        d.latency_ms = v;
    }
    if let Some(v) = args.error_rate {
        d.error_rate = v;
    }
    if let Some(v) = args.rate_limit_rate {
        d.rate_limit_rate = v;
    }
    if let Some(v) = args.retry_after_secs {
        d.retry_after_secs = v;
    }
    if let Some(v) = args.timeout_rate {
        d.timeout_rate = v;
    }
    if let Some(v) = args.timeout_ms {
        d.timeout_ms = v;
    }
    Ok(faults)
}

impl SimArgs {
    /// Starts a simulator as these arguments say (loopback only).
    pub async fn start(&self) -> anyhow::Result<SimHandle> {
        if !self.listen.ip().is_loopback() {
            bail!("--listen {}: the simulator listens on loopback only", self.listen);
        }
        let scenario = if let Some(path) = &self.scenario {
            Scenario::from_file(path)?
        } else if self.demo {
            Scenario::demo()
        } else if let Some((projects, volumes_per_project)) = self.generate {
            Scenario::generate(&GenSpec {
                projects,
                volumes_per_project,
                snapshots: self.snapshots,
                domains: 3,
                seed: self.seed,
            })
        } else {
            Scenario::minimal()
        };
        Simulator::start(SimConfig {
            addr: self.listen,
            faults: load_faults(self)?,
            scenario,
            snapshot_delay: Duration::from_millis(self.snapshot_delay_ms),
            volume_delay: Duration::from_millis(self.volume_delay_ms),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            keystone_list_limit: self.keystone_list_limit,
        })
        .await
    }

    /// What a person needs to use the running simulator: its URL, users and admin endpoints.
    pub fn describe(&self, handle: &SimHandle) -> String {
        let counts = handle.counts();
        let users = if self.demo {
            "users: demo-admin (admin), demo-reader (reader on web), admin, snapkeeper-svc; \
             password from SNAPKEEPER_DEMO_PASSWORD, else demo"
                .to_owned()
        } else if self.scenario.is_none() {
            format!("user: admin / {} (project admin, domain Default)", crate::ADMIN_PASSWORD)
        } else {
            "users: as the scenario file defines".to_owned()
        };
        format!(
            "openstack-sim: {} projects, {} users, {} volumes, {} snapshots\nOS_AUTH_URL={}\n{users}\n\
             admin endpoints: {base}/_sim/stats {base}/_sim/faults {base}/_sim/tokens/revoke",
            counts.projects,
            counts.users,
            counts.volumes,
            counts.snapshots,
            handle.auth_url(),
            base = handle.base_url(),
        )
    }
}
