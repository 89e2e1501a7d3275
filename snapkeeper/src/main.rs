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
    /// Check that a service (HOST:PORT, gRPC health) or the gateway (http URL) is healthy; exit 1 if not.
    Health(snapkeeper::health::HealthArgs),
    /// Run the OpenStack simulator alone (Keystone v3, Cinder v3, Nova) on loopback.
    Sim(openstack_sim::cli::SimArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain on one line; operators read this, not a backtrace.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            let _telemetry = service_kit::telemetry::init("snapkeeper", args.telemetry.log_format)?;
            let suite = snapkeeper::up::start(args).await?;
            println!("{}", suite.banner());
            suite.run_until(service_kit::server::shutdown_signal()).await
        }
        Command::Health(args) => {
            println!("{}", snapkeeper::health::check(&args).await?);
            Ok(())
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
