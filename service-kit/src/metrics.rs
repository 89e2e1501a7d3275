//! Prometheus metrics. A process builds one [`Registry`] with [`registry`] (every series is
//! prefixed `snapkeeper_`), each crate registers its own series into it, and [`spawn`] serves it
//! at `GET /metrics` on the `--metrics-listen` address, apart from the service's own port so
//! that scraping needs no internal credential and exposes nothing else.
//!
//! Labels carry bounded, non-secret values only: kinds, results, policy names, operation names
//! and status codes; never tokens, user names or per-request ids.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::KitError;
use crate::config::MetricsArgs;

pub use prometheus_client;

/// The prefix of every series Snapkeeper exposes.
pub const PREFIX: &str = "snapkeeper";

/// The OpenMetrics text format, which Prometheus negotiates and parses.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An empty registry whose series are named `snapkeeper_<name>`.
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, KitError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .map_err(|e| KitError::Telemetry(format!("encoding metrics: {e}")))?;
    Ok(text)
}

/// The `/metrics` endpoint over `registry`; any other path is 404.
pub fn router(registry: Registry) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(Arc::new(registry))
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    match encode(&registry) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "metrics scrape failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n").into_response()
        }
    }
}

/// Serves `registry` at `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KitError> {
    let address = listener.local_addr().map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| KitError::Io { path: format!("metrics listener {address}"), source })
}

/// Binds `--metrics-listen` (`METRICS_LISTEN`) when it is set and serves `registry` there in the
/// background for the life of the process. Returns the bound address, or `None` when metrics
/// are off. A taken port fails here, at start, naming the address.
pub async fn spawn(args: &MetricsArgs, registry: Registry) -> Result<Option<SocketAddr>, KitError> {
    let Some(address) = args.metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| KitError::Io { path: format!("METRICS_LISTEN {address}"), source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| KitError::Io { path: format!("METRICS_LISTEN {address}"), source })?;
    tokio::spawn(async move {
        if let Err(err) = serve(listener, registry, std::future::pending()).await {
            tracing::warn!(error = %err, "metrics listener stopped");
        }
    });
    tracing::info!(address = %bound, "serving prometheus metrics at /metrics");
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn metrics_are_served_prefixed_in_openmetrics_text_and_other_paths_are_404() {
        let mut registry = registry();
        let counter: Counter = Counter::default();
        registry.register("runs", "Runs finished", counter.clone());
        counter.inc_by(3);

        let app = router(registry);
        let response =
            app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.lines().any(|l| l == "snapkeeper_runs_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        let other = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn unset_listen_address_means_no_listener_and_a_taken_port_names_the_variable() {
        assert_eq!(spawn(&MetricsArgs::default(), registry()).await.unwrap(), None);
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let args = MetricsArgs { metrics_listen: Some(taken.local_addr().unwrap()) };
        let err = spawn(&args, registry()).await.unwrap_err();
        assert!(err.to_string().contains("METRICS_LISTEN"), "{err}");
    }

    #[tokio::test]
    async fn a_spawned_listener_answers_on_its_bound_port() {
        let args = MetricsArgs { metrics_listen: Some("127.0.0.1:0".parse().unwrap()) };
        let bound = spawn(&args, registry()).await.unwrap().unwrap();
        assert_ne!(bound.port(), 0);
        let mut stream = tokio::net::TcpStream::connect(bound).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut reply = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("# EOF"), "{reply}");
    }
}
