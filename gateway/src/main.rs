use clap::Parser;
use gateway::Config;
use service_kit::server::{bind, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = service_kit::telemetry::init("gateway", config.telemetry.log_format)?;
    let listener = bind(config.listen).await?;
    let mut registry = service_kit::metrics::registry();
    gateway::metrics::register(&mut registry);
    service_kit::metrics::spawn(&config.metrics, registry).await?;
    gateway::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}
