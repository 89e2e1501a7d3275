//! `openstack-sim`: runs the simulator on loopback and prints the auth URL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use openstack_sim::{Faults, GenSpec, OpFaults, Scenario, SimConfig, Simulator};

/// Keystone v3 + Cinder v3 + Nova simulator.
#[derive(Debug, Parser)]
#[command(name = "openstack-sim", version)]
struct Args {
    /// Listen address (loopback only).
    #[arg(long, env = "OPENSTACK_SIM_LISTEN", default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// Scenario file (YAML or JSON).
    #[arg(long, env = "OPENSTACK_SIM_SCENARIO", conflicts_with_all = ["demo", "generate"])]
    scenario: Option<PathBuf>,
    /// The demo cloud (password from SNAPKEEPER_DEMO_PASSWORD, else `demo`).
    #[arg(long, env = "OPENSTACK_SIM_DEMO", conflicts_with = "generate")]
    demo: bool,
    /// A generated cloud: PROJECTSxVOLUMES, e.g. 1000x10.
    #[arg(long, env = "OPENSTACK_SIM_GENERATE", value_parser = parse_generate)]
    generate: Option<(usize, usize)>,
    /// Existing snapshots in a generated cloud.
    #[arg(long, env = "OPENSTACK_SIM_SNAPSHOTS", default_value_t = 0)]
    snapshots: usize,
    /// Seed for generated ids and fault draws.
    #[arg(long, env = "OPENSTACK_SIM_SEED", default_value_t = 7)]
    seed: u64,
    /// Milliseconds a new snapshot stays `creating`.
    #[arg(long, env = "OPENSTACK_SIM_SNAPSHOT_DELAY_MS", default_value_t = 500)]
    snapshot_delay_ms: u64,
    /// Milliseconds a new volume stays `creating`.
    #[arg(long, env = "OPENSTACK_SIM_VOLUME_DELAY_MS", default_value_t = 500)]
    volume_delay_ms: u64,
    /// Token lifetime in seconds.
    #[arg(long, env = "OPENSTACK_SIM_TOKEN_TTL_SECS", default_value_t = 3600)]
    token_ttl_secs: u64,
    /// Keystone list_limit (truncate longer lists).
    #[arg(long, env = "OPENSTACK_SIM_KEYSTONE_LIST_LIMIT")]
    keystone_list_limit: Option<usize>,
    /// Fault settings file (YAML or JSON, the `/_sim/faults` shape); flags below override its default.
    #[arg(long, env = "OPENSTACK_SIM_FAULTS")]
    faults: Option<PathBuf>,
    /// Added latency per request (ms).
    #[arg(long, env = "OPENSTACK_SIM_LATENCY_MS")]
    latency_ms: Option<u64>,
    /// Share of requests answered 503.
    #[arg(long, env = "OPENSTACK_SIM_ERROR_RATE")]
    error_rate: Option<f64>,
    /// Share of requests answered 429.
    #[arg(long, env = "OPENSTACK_SIM_RATE_LIMIT_RATE")]
    rate_limit_rate: Option<f64>,
    /// Retry-After seconds on a 429.
    #[arg(long, env = "OPENSTACK_SIM_RETRY_AFTER_SECS")]
    retry_after_secs: Option<u64>,
    /// Share of requests answered late (after doing the work).
    #[arg(long, env = "OPENSTACK_SIM_TIMEOUT_RATE")]
    timeout_rate: Option<f64>,
    /// How late, in ms.
    #[arg(long, env = "OPENSTACK_SIM_TIMEOUT_MS")]
    timeout_ms: Option<u64>,
}

fn parse_generate(value: &str) -> Result<(usize, usize), String> {
    let (p, v) = value.split_once(['x', 'X']).ok_or("expected PROJECTSxVOLUMES, e.g. 1000x10")?;
    Ok((p.parse().map_err(|_| "bad project count")?, v.parse().map_err(|_| "bad volume count")?))
}

fn load_faults(args: &Args) -> anyhow::Result<Faults> {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!("--listen {}: the simulator listens on loopback only", args.listen);
    }
    let started = std::time::Instant::now();
    let scenario = if let Some(path) = &args.scenario {
        Scenario::from_file(path)?
    } else if args.demo {
        Scenario::demo()
    } else if let Some((projects, volumes_per_project)) = args.generate {
        Scenario::generate(&GenSpec {
            projects,
            volumes_per_project,
            snapshots: args.snapshots,
            domains: 3,
            seed: args.seed,
        })
    } else {
        Scenario::minimal()
    };
    let config = SimConfig {
        addr: args.listen,
        faults: load_faults(&args)?,
        scenario,
        snapshot_delay: Duration::from_millis(args.snapshot_delay_ms),
        volume_delay: Duration::from_millis(args.volume_delay_ms),
        token_ttl: Duration::from_secs(args.token_ttl_secs),
        keystone_list_limit: args.keystone_list_limit,
    };
    let handle = Simulator::start(config).await?;
    let counts = handle.counts();
    println!(
        "openstack-sim ready in {} ms: {} projects, {} users, {} volumes, {} snapshots",
        started.elapsed().as_millis(),
        counts.projects,
        counts.users,
        counts.volumes,
        counts.snapshots
    );
    println!("OS_AUTH_URL={}", handle.auth_url());
    if args.demo {
        println!(
            "users: demo-admin (admin), demo-reader (reader on web), admin, snapkeeper-svc; password from SNAPKEEPER_DEMO_PASSWORD, else demo"
        );
    } else if args.scenario.is_none() {
        println!("user: admin / {} (project admin, domain Default)", openstack_sim::ADMIN_PASSWORD);
    }
    println!("admin endpoints: {0}/_sim/stats {0}/_sim/faults {0}/_sim/tokens/revoke", handle.base_url());
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
