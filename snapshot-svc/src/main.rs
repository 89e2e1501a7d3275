use clap::Parser;
use service_kit::server::{bind, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = snapshot_svc::Config::parse();
    let _telemetry = service_kit::telemetry::init("snapshot-svc", config.telemetry.log_format)?;
    let listener = bind(config.listen).await?;
    let mut registry = service_kit::metrics::registry();
    snapshot_svc::metrics::register(&mut registry, &config, chrono::Utc::now());
    service_kit::metrics::spawn(&config.metrics, registry).await?;
    snapshot_svc::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}
