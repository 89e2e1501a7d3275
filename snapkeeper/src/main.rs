use clap::{Parser, Subcommand};

/// Snapkeeper: policy-driven Cinder snapshots across every tenant, audited.
#[derive(Parser, Debug)]
#[command(name = "snapkeeper", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole suite in one process (SQLite under .snapkeeper/ unless DATABASE_URL is PostgreSQL).
    Up(snapkeeper::up::UpArgs),
    /// Run the OpenStack simulator alone (Keystone v3, Cinder v3, Nova) on loopback.
    Sim(openstack_sim::cli::SimArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            let _telemetry = service_kit::telemetry::init("snapkeeper", args.telemetry.log_format)?;
            let suite = snapkeeper::up::start(args).await?;
            println!("{}", suite.banner());
            suite.run_until(service_kit::server::shutdown_signal()).await
        }
        Command::Sim(args) => {
            let _telemetry =
                service_kit::telemetry::init("openstack-sim", service_kit::telemetry::LogFormat::Text)?;
            let simulator = args.start().await?;
            println!("{}\n\nPress Ctrl-C to stop.", args.describe(&simulator));
            service_kit::server::shutdown_signal().await;
            simulator.shutdown().await;
            Ok(())
        }
    }
}
