use clap::Parser;
use gateway::Config;
use service_kit::server::{bind, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = service_kit::telemetry::init("gateway", config.telemetry.log_format)?;
    let listener = bind(config.listen).await?;
    gateway::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}
