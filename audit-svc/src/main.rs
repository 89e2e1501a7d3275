use clap::Parser;
use service_kit::server::{bind, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = audit_svc::Config::parse();
    let _telemetry = service_kit::telemetry::init("audit-svc", config.telemetry.log_format)?;
    let listener = bind(config.listen).await?;
    let mut registry = service_kit::metrics::registry();
    audit_svc::metrics::register(&mut registry);
    service_kit::metrics::spawn(&config.metrics, registry).await?;
    audit_svc::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}
