use anyhow::bail;
use clap::{CommandFactory as _, Parser, Subcommand};
use snapkeeper::{check_cloud, compliance, forecast, policy, run, runs};

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
    /// Check what Snapkeeper needs from the configured cloud (auth, catalog, listings, quota, role
    /// grants); read-only unless --probe-grant; exit 1 when a check fails.
    CheckCloud(check_cloud::CheckCloudArgs),
    /// Start a manual run (snapshot-svc); --watch follows it with progress bars.
    Run(run::RunArgs),
    /// List runs, newest first (snapshot-svc).
    Runs(runs::RunsArgs),
    /// Compliance of every enrolled volume and policy (audit-svc): a table, --json or --csv.
    Compliance(compliance::ComplianceArgs),
    /// Validate a rules file, or explain the decision for a volume (policy-svc).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Forecast whether the snapshots due soon fit each project's quota (snapshot-svc).
    Forecast(forecast::ForecastArgs),
    /// Print a completion script for SHELL to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
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
        Command::CheckCloud(args) => {
            let report = check_cloud::run(args.cloud_config()?, &args.options()).await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            let failed = report.count(check_cloud::Status::Fail);
            if failed > 0 {
                bail!("{failed} of {} cloud checks failed", report.checks.len());
            }
            Ok(())
        }
        Command::Run(args) => run::start(&args).await,
        Command::Runs(args) => runs::list(&args).await,
        Command::Compliance(args) => compliance::report(&args).await,
        Command::Policy(policy::PolicyCommand::Validate(args)) => policy::validate(&args).await,
        Command::Policy(policy::PolicyCommand::Explain(args)) => policy::explain(&args).await,
        Command::Forecast(args) => forecast::forecast(&args).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "snapkeeper", &mut std::io::stdout());
            Ok(())
        }
    }
}
