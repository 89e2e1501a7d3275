//! The gateway: the REST API and the compliance UI, in front of the four gRPC services.
//!
//! A request enters [`router`], gets a span continuing the caller's trace, and is served by a
//! handler that calls the services through [`upstream::Upstream`]. [`health`] aggregates the
//! services' health for `/healthz`; [`api_doc`] publishes the OpenAPI document generated from
//! the handlers; [`ui`] renders the server-side pages.

pub mod api_doc;
pub mod config;
pub mod error;
pub mod health;
pub mod rules;
pub mod ui;
pub mod upstream;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use config::Config;
use upstream::Upstream;

/// What can stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Starting a shared component failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// The whole HTTP surface: API, OpenAPI document and UI, traced.
pub fn router(upstream: Upstream) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(api_doc::base())
        .routes(utoipa_axum::routes!(health::healthz))
        .routes(utoipa_axum::routes!(rules::get_rules))
        .with_state(upstream)
        .split_for_parts();
    api.merge(api_doc::routes(openapi))
        .merge(ui::routes())
        .layer(TraceLayer::new_for_http().make_span_with(service_kit::telemetry::http_server_span))
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let upstream = Upstream::connect(&config.services, &config.security)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening");
    axum::serve(listener, router(upstream)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
