//! Prometheus series of the gateway: HTTP requests by method, route template and status, and
//! their latency. The route is the matched template (`/api/runs/{id}`), never the raw path, so
//! ids do not multiply the series.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use service_kit::metrics::prometheus_client::metrics::counter::Counter;
use service_kit::metrics::prometheus_client::metrics::family::Family;
use service_kit::metrics::prometheus_client::metrics::histogram::Histogram;
use service_kit::metrics::prometheus_client::registry::{Registry, Unit};

/// Latency buckets (seconds): a cached page to a large export.
const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

type Labels<const N: usize> = [(&'static str, String); N];

struct Series {
    requests: Family<Labels<3>, Counter>,
    latency: Family<Labels<2>, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

static SERIES: LazyLock<Series> = LazyLock::new(|| Series {
    requests: Family::default(),
    latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
});

/// Adds the gateway's series to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "http_requests",
        "Gateway HTTP requests by method, route template and status",
        SERIES.requests.clone(),
    );
    registry.register_with_unit(
        "http_request_duration",
        "Gateway HTTP request latency by method and route template",
        Unit::Seconds,
        SERIES.latency.clone(),
    );
}

/// Middleware counting and timing each routed request.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    SERIES
        .latency
        .get_or_create(&[("method", method.clone()), ("route", route.clone())])
        .observe(started.elapsed().as_secs_f64());
    SERIES.requests.get_or_create(&[("method", method), ("route", route), ("status", status)]).inc();
    response
}
