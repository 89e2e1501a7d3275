//! Prometheus series of identity-svc: project credentials handed out by scope mode and whether
//! they came from the cache, and the Keystone calls it makes. Never a token or user in a label.

use std::sync::LazyLock;

use service_kit::metrics::prometheus_client::metrics::counter::Counter;
use service_kit::metrics::prometheus_client::metrics::family::Family;
use service_kit::metrics::prometheus_client::registry::Registry;

static CREDENTIALS: LazyLock<Family<[(&'static str, &'static str); 2], Counter>> =
    LazyLock::new(Family::default);

/// Adds identity-svc's series and the OpenStack call series to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "project_credentials",
        "Project credentials handed out, by scope mode and whether the cache answered",
        CREDENTIALS.clone(),
    );
    openstack::register_metrics(registry);
}

/// Credentials in `scope_mode` were handed out (from the cache when `cached`).
pub(crate) fn credentials_issued(scope_mode: &'static str, cached: bool) {
    CREDENTIALS
        .get_or_create(&[("scope_mode", scope_mode), ("cached", if cached { "true" } else { "false" })])
        .inc();
}
