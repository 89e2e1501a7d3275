//! Prometheus series of policy-svc: the rule set version in force, and the OpenStack calls it
//! makes (volume listing and metadata writes).

use std::sync::LazyLock;

use service_kit::metrics::prometheus_client::metrics::gauge::Gauge;
use service_kit::metrics::prometheus_client::registry::Registry;

static RULES_VERSION: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// Adds policy-svc's series and the OpenStack call series to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "rules_version",
        "Version of the rule set in force (0 before one was stored)",
        RULES_VERSION.clone(),
    );
    openstack::register_metrics(registry);
}

/// The rule set `version` is now in force.
pub(crate) fn rules_in_force(version: i64) {
    RULES_VERSION.set(version);
}
