//! `openstack-sim`: runs the simulator on loopback and prints the auth URL.

use clap::Parser;
use openstack_sim::cli::SimArgs;

/// Keystone v3 + Cinder v3 + Nova simulator.
#[derive(Debug, Parser)]
#[command(name = "openstack-sim", version)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let started = std::time::Instant::now();
    let handle = cli.sim.start().await?;
    println!("ready in {} ms", started.elapsed().as_millis());
    println!("{}", cli.sim.describe(&handle));
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
