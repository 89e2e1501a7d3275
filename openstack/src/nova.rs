//! Nova, read only: server names for snapshot names and reports. A cloud without compute in the
//! catalog is normal (names are then omitted), so lists return `None` instead of failing.

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Call, OpenStack, Service, next_marker};
use crate::error::Error;

/// A Nova server (the fields Snapkeeper uses).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Server {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status, e.g. `ACTIVE`.
    #[serde(default)]
    pub status: String,
    /// Owning project.
    #[serde(default, rename = "tenant_id")]
    pub project_id: Option<String>,
}

/// Nova calls of one client.
#[derive(Debug, Clone, Copy)]
pub struct Nova<'a> {
    client: &'a OpenStack,
}

impl<'a> Nova<'a> {
    pub(crate) fn new(client: &'a OpenStack) -> Self {
        Self { client }
    }

    /// Servers (detail), every page; `None` when the catalog has no compute service.
    pub async fn servers(&self, all_tenants: bool) -> Result<Option<Vec<Server>>, Error> {
        if !self.client.has_compute().await? {
            return Ok(None);
        }
        let operation = "nova.servers.list";
        let limit = self.client.config().page_limit.to_string();
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut call =
                Call::new(operation, Service::Compute, Method::GET, "/servers/detail").query("limit", &limit);
            if all_tenants {
                call = call.query("all_tenants", "1");
            }
            if let Some(marker) = &marker {
                call = call.query("marker", marker);
            }
            let mut body: Value = self.client.json(&call).await?;
            let items = body.get_mut("servers").map_or(Value::Array(Vec::new()), Value::take);
            let page: Vec<Server> = serde_json::from_value(items).map_err(|e| Error::decode(operation, e))?;
            let empty = page.is_empty();
            all.extend(page);
            match next_marker(body.get("servers_links")) {
                Some(next) if !empty && marker.as_deref() != Some(next.as_str()) => marker = Some(next),
                _ => return Ok(Some(all)),
            }
        }
    }
}
