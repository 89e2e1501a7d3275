//! The service catalog of a token, and endpoint selection by type, interface and region.

use serde::Deserialize;

/// Catalog types that mean Cinder v3, most specific first.
pub const BLOCK_STORAGE_TYPES: &[&str] = &["block-storage", "volumev3", "volume"];
/// Catalog types that mean Nova.
pub const COMPUTE_TYPES: &[&str] = &["compute"];

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Service type, e.g. `volumev3`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Service name, e.g. `cinderv3`.
    #[serde(default)]
    pub name: String,
    /// Its endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a service.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region id (Keystone sends both `region_id` and the legacy `region`).
    #[serde(default)]
    pub region_id: Option<String>,
    /// Legacy region field.
    #[serde(default)]
    pub region: Option<String>,
    /// Base URL.
    pub url: String,
}

impl Endpoint {
    fn region(&self) -> Option<&str> {
        self.region_id.as_deref().or(self.region.as_deref())
    }
}

/// The catalog of a scoped token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Services in catalog order.
    pub entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The URL for the first of `types` that has an endpoint on `interface` in `region`
    /// (`None` region: any region, as keystoneauth does). Types are tried in the given order so
    /// `block-storage` wins over the deprecated `volumev3` when both exist.
    pub fn endpoint(&self, types: &[&str], interface: &str, region: Option<&str>) -> Option<String> {
        for wanted in types {
            for entry in self.entries.iter().filter(|e| e.service_type == *wanted) {
                let found = entry
                    .endpoints
                    .iter()
                    .find(|ep| ep.interface == interface && region.is_none_or(|r| ep.region() == Some(r)));
                if let Some(ep) = found {
                    return Some(ep.url.trim_end_matches('/').to_owned());
                }
            }
        }
        None
    }

    /// Whether any of `types` is in the catalog at all (any interface, any region).
    pub fn has_service(&self, types: &[&str]) -> bool {
        self.entries.iter().any(|e| types.contains(&e.service_type.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let json = serde_json::json!([
            {"type": "identity", "name": "keystone", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://k/v3/"}]},
            {"type": "volumev3", "name": "cinderv3", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://c1/v3/p"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://c2/v3/p"},
                {"interface": "internal", "region_id": "RegionTwo", "url": "http://c2-int/v3/p"}]},
            {"type": "block-storage", "name": "cinder", "endpoints": [
                {"interface": "public", "region": "RegionTwo", "url": "http://bs2/v3/p"}]}
        ]);
        Catalog { entries: serde_json::from_value(json).expect("catalog") }
    }

    #[test]
    fn region_decides_between_endpoints_of_one_type() {
        let c = catalog();
        assert_eq!(c.endpoint(&["volumev3"], "public", Some("RegionOne")).as_deref(), Some("http://c1/v3/p"));
        assert_eq!(c.endpoint(&["volumev3"], "public", Some("RegionTwo")).as_deref(), Some("http://c2/v3/p"));
        assert_eq!(c.endpoint(&["volumev3"], "public", Some("RegionThree")), None);
    }

    #[test]
    fn preferred_type_wins_when_it_has_the_region() {
        let c = catalog();
        assert_eq!(
            c.endpoint(BLOCK_STORAGE_TYPES, "public", Some("RegionTwo")).as_deref(),
            Some("http://bs2/v3/p")
        );
        // block-storage has no RegionOne endpoint, so the next type is used.
        assert_eq!(
            c.endpoint(BLOCK_STORAGE_TYPES, "public", Some("RegionOne")).as_deref(),
            Some("http://c1/v3/p")
        );
    }

    #[test]
    fn interface_is_matched_and_trailing_slash_dropped() {
        let c = catalog();
        assert_eq!(c.endpoint(&["volumev3"], "internal", None).as_deref(), Some("http://c2-int/v3/p"));
        assert_eq!(c.endpoint(&["volumev3"], "admin", None), None);
        assert_eq!(c.endpoint(&["identity"], "public", None).as_deref(), Some("http://k/v3"));
        assert!(!c.has_service(COMPUTE_TYPES));
    }
}
