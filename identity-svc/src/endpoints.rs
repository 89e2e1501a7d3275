//! Endpoint choice in a token's catalog: the Cinder v3 endpoint of a region, and the endpoints of
//! a region that `GetAdminCredentials` lists (pure).

use openstack::{BLOCK_STORAGE_TYPES, Catalog};

/// One catalog endpoint, with the region it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Service type, e.g. `volumev3`.
    pub service_type: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region id (empty when the catalog gives none).
    pub region: String,
    /// URL without a trailing slash.
    pub url: String,
}

/// Endpoints on `interface` in `region` (any region when `None`), in catalog order.
pub fn region_endpoints(catalog: &Catalog, interface: &str, region: Option<&str>) -> Vec<EndpointInfo> {
    let mut found = Vec::new();
    for entry in &catalog.entries {
        for endpoint in &entry.endpoints {
            let endpoint_region = endpoint.region_id.as_deref().or(endpoint.region.as_deref()).unwrap_or("");
            if endpoint.interface == interface && region.is_none_or(|r| r == endpoint_region) {
                found.push(EndpointInfo {
                    service_type: entry.service_type.clone(),
                    interface: endpoint.interface.clone(),
                    region: endpoint_region.to_owned(),
                    url: endpoint.url.trim_end_matches('/').to_owned(),
                });
            }
        }
    }
    found
}

/// The Cinder v3 endpoint: the first of `block-storage`, `volumev3`, `volume` that has one on
/// `interface` in `region`, as keystoneauth picks it.
pub fn cinder_endpoint(catalog: &Catalog, interface: &str, region: Option<&str>) -> Option<EndpointInfo> {
    let candidates = region_endpoints(catalog, interface, region);
    BLOCK_STORAGE_TYPES
        .iter()
        .find_map(|wanted| candidates.iter().find(|endpoint| endpoint.service_type == *wanted).cloned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn catalog() -> Catalog {
        let json = serde_json::json!([
            {"type": "identity", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://k/v3/"}]},
            {"type": "volumev3", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://c1/v3/p"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://c2/v3/p"}]},
            {"type": "block-storage", "endpoints": [
                {"interface": "public", "region": "RegionTwo", "url": "http://bs2/v3/p/"}]}
        ]);
        Catalog { entries: serde_json::from_value(json).unwrap() }
    }

    #[test]
    fn the_region_decides_and_block_storage_is_preferred() {
        let c = catalog();
        let one = cinder_endpoint(&c, "public", Some("RegionOne")).unwrap();
        assert_eq!((one.url.as_str(), one.region.as_str()), ("http://c1/v3/p", "RegionOne"));
        let two = cinder_endpoint(&c, "public", Some("RegionTwo")).unwrap();
        assert_eq!((two.url.as_str(), two.service_type.as_str()), ("http://bs2/v3/p", "block-storage"));
        assert!(cinder_endpoint(&c, "public", Some("RegionThree")).is_none());
        assert!(cinder_endpoint(&c, "internal", None).is_none());
    }

    #[test]
    fn region_endpoints_list_every_service_of_the_region() {
        let listed = region_endpoints(&catalog(), "public", Some("RegionOne"));
        let types: Vec<&str> = listed.iter().map(|e| e.service_type.as_str()).collect();
        assert_eq!(types, ["identity", "volumev3"]);
        assert_eq!(listed[0].url, "http://k/v3");
    }
}
