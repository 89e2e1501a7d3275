//! Prometheus series for every HTTP call this process makes to the cloud. They are process-wide
//! (all clients share one transport's limits, so they share its counters too) and are exposed
//! once the binary registers them with [`register_metrics`].

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets (seconds): from a fast cached GET to a slow create near the timeout.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Labels of one answered (or failed) attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// Catalog service type: `identity`, `volumev3`, `compute`.
    service: &'static str,
    /// Our operation name, e.g. `cinder.snapshots.create` (a fixed set, never a URL).
    operation: String,
    /// HTTP status code, or `error` when no answer arrived (connect failure, timeout).
    status: String,
}

/// Labels of a retried call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    service: &'static str,
    operation: String,
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

struct Series {
    latency: LatencyFamily,
    retries: Family<OperationLabels, Counter>,
    rate_limit_waits: Counter,
    rate_limit_wait_seconds: Counter<f64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

static SERIES: LazyLock<Series> = LazyLock::new(|| Series {
    latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    retries: Family::default(),
    rate_limit_waits: Counter::default(),
    rate_limit_wait_seconds: Counter::default(),
});

/// Adds the OpenStack call series to `registry` (request latency by service, operation and
/// status; retries; rate-limit waits).
pub fn register_metrics(registry: &mut Registry) {
    let series = &*SERIES;
    registry.register_with_unit(
        "openstack_request_duration",
        "OpenStack HTTP attempts by catalog service, operation and status, and how long each took",
        Unit::Seconds,
        series.latency.clone(),
    );
    registry.register(
        "openstack_retries",
        "OpenStack calls repeated after a retryable failure (429, 5xx, timeout, connect error)",
        series.retries.clone(),
    );
    registry.register(
        "openstack_rate_limit_waits",
        "OpenStack calls held back by the process-wide rate limit",
        series.rate_limit_waits.clone(),
    );
    registry.register_with_unit(
        "openstack_rate_limit_wait",
        "Time OpenStack calls spent held back by the process-wide rate limit",
        Unit::Seconds,
        series.rate_limit_wait_seconds.clone(),
    );
}

/// The catalog service type an operation goes to, from its name's first part.
pub(crate) fn service_of(operation: &str) -> &'static str {
    match operation.split('.').next() {
        Some("keystone") => "identity",
        Some("cinder") => "volumev3",
        Some("nova") => "compute",
        _ => "other",
    }
}

/// One attempt answered with `status` (`None`: no answer) after `elapsed`.
pub(crate) fn observe_attempt(operation: &str, status: Option<u16>, elapsed: Duration) {
    let labels = RequestLabels {
        service: service_of(operation),
        operation: operation.to_owned(),
        status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
    };
    SERIES.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    // A zero retry series from the first attempt on, so that the first retry shows as an increase.
    let labels = OperationLabels { service: labels.service, operation: labels.operation };
    SERIES.retries.get_or_create_owned(&labels);
}

/// A call about to be repeated.
pub(crate) fn count_retry(operation: &str) {
    let labels = OperationLabels { service: service_of(operation), operation: operation.to_owned() };
    SERIES.retries.get_or_create(&labels).inc();
}

/// A call held back by the rate limit for `wait`.
pub(crate) fn count_rate_limit_wait(wait: Duration) {
    SERIES.rate_limit_waits.inc();
    SERIES.rate_limit_wait_seconds.inc_by(wait.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_their_catalog_service() {
        assert_eq!(service_of("keystone.auth.tokens.create"), "identity");
        assert_eq!(service_of("cinder.snapshots.create"), "volumev3");
        assert_eq!(service_of("nova.servers.list"), "compute");
        assert_eq!(service_of("glance.images.list"), "other");
    }

    #[test]
    fn registered_series_show_attempts_retries_and_waits() {
        let mut registry = Registry::with_prefix("snapkeeper");
        register_metrics(&mut registry);
        observe_attempt("cinder.metrics-test.get", Some(200), Duration::from_millis(30));
        observe_attempt("cinder.metrics-test.get", None, Duration::from_millis(2));
        count_retry("cinder.metrics-test.get");
        count_rate_limit_wait(Duration::from_millis(250));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let has = |prefix: &str| text.lines().any(|l| l.starts_with(prefix));
        assert!(
            has(
                r#"snapkeeper_openstack_request_duration_seconds_count{service="volumev3",operation="cinder.metrics-test.get",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"snapkeeper_openstack_request_duration_seconds_bucket{le="0.05",service="volumev3",operation="cinder.metrics-test.get",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"snapkeeper_openstack_request_duration_seconds_count{service="volumev3",operation="cinder.metrics-test.get",status="error"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"snapkeeper_openstack_retries_total{service="volumev3",operation="cinder.metrics-test.get"} 1"#
            ),
            "{text}"
        );
        assert!(has("snapkeeper_openstack_rate_limit_waits_total "), "{text}");
        assert!(has("snapkeeper_openstack_rate_limit_wait_seconds_total "), "{text}");
    }
}
