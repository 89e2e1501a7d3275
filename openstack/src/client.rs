//! The client handle: one identity's session on top of the shared transport.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::Value;

use crate::auth::{Session, TokenInfo};
use crate::catalog::{BLOCK_STORAGE_TYPES, COMPUTE_TYPES};
use crate::cinder::Cinder;
use crate::config::{AuthMethod, CloudConfig};
use crate::error::Error;
use crate::keystone::Keystone;
use crate::nova::Nova;
use crate::transport::{CINDER_MICROVERSION, CallStats, Idempotency, Request, Response, Transport};

/// An authenticated OpenStack client. Cheap to clone; clones share the token, and every client
/// derived with [`OpenStack::with_auth`] shares the rate limit, concurrency limit and counters.
#[derive(Clone)]
pub struct OpenStack {
    inner: Arc<Inner>,
}

struct Inner {
    config: CloudConfig,
    transport: Arc<Transport>,
    session: Session,
}

impl std::fmt::Debug for OpenStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStack").field("auth_url", &self.inner.config.auth_url).finish_non_exhaustive()
    }
}

/// Which service a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Identity,
    BlockStorage,
    Compute,
}

/// One call before it is sent: relative path (or absolute URL) plus query and body.
pub(crate) struct Call<'a> {
    pub(crate) operation: &'a str,
    pub(crate) service: Service,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Value>,
    pub(crate) idempotency: Idempotency,
}

impl<'a> Call<'a> {
    pub(crate) fn new(operation: &'a str, service: Service, method: Method, path: impl Into<String>) -> Self {
        let idempotency =
            if method == Method::POST { Idempotency::NotIdempotent } else { Idempotency::Idempotent };
        Self {
            operation,
            service,
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotency,
        }
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Marks a POST that merges rather than creates (metadata), so it may be retried.
    pub(crate) fn idempotent(mut self) -> Self {
        self.idempotency = Idempotency::Idempotent;
        self
    }
}

impl OpenStack {
    /// Builds the client and authenticates once, so bad credentials fail here.
    pub async fn connect(config: CloudConfig) -> Result<Self, Error> {
        let transport = Transport::new(&config)?;
        let client = Self::assemble(config, transport);
        client.token_info().await?;
        Ok(client)
    }

    fn assemble(config: CloudConfig, transport: Arc<Transport>) -> Self {
        let session = Session::new(&config.auth_url, config.auth.clone());
        Self { inner: Arc::new(Inner { config, transport, session }) }
    }

    /// A client for another identity or scope (e.g. the service user scoped to one project) on
    /// the same cloud, sharing this client's limits and counters. Authenticates once.
    pub async fn with_auth(&self, auth: AuthMethod) -> Result<Self, Error> {
        let mut config = self.inner.config.clone();
        config.auth = auth;
        let client = Self::assemble(config, Arc::clone(&self.inner.transport));
        client.token_info().await?;
        Ok(client)
    }

    /// A client with a different page size, sharing everything else but the token.
    pub fn with_page_limit(&self, page_limit: u32) -> Self {
        let mut config = self.inner.config.clone();
        config.page_limit = page_limit.max(1);
        Self::assemble(config, Arc::clone(&self.inner.transport))
    }

    /// The configuration in use.
    pub fn config(&self) -> &CloudConfig {
        &self.inner.config
    }

    /// The current token's identity, scope, roles and expiry (authenticating if needed).
    pub async fn token_info(&self) -> Result<TokenInfo, Error> {
        Ok(self.inner.session.token(&self.inner.transport).await?.info.clone())
    }

    /// The current token itself, for handing to another party (e.g. a user's own session
    /// token for the gateway). Wrapped so it is never printed by accident.
    pub async fn token(&self) -> Result<secrecy::SecretString, Error> {
        let auth = self.inner.session.token(&self.inner.transport).await?;
        Ok(auth.token.clone())
    }

    /// Requests sent per operation by every client sharing this one's transport.
    pub fn call_stats(&self) -> BTreeMap<String, CallStats> {
        self.inner.transport.stats()
    }

    /// Clears [`OpenStack::call_stats`].
    pub fn reset_call_stats(&self) {
        self.inner.transport.reset_stats();
    }

    /// Keystone v3 calls.
    pub fn keystone(&self) -> Keystone<'_> {
        Keystone::new(self)
    }

    /// Cinder v3 calls.
    pub fn cinder(&self) -> Cinder<'_> {
        Cinder::new(self)
    }

    /// Nova calls (read only).
    pub fn nova(&self) -> Nova<'_> {
        Nova::new(self)
    }

    /// Whether the catalog lists a compute service.
    pub async fn has_compute(&self) -> Result<bool, Error> {
        Ok(self.token_info().await?.catalog.has_service(COMPUTE_TYPES))
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Sends `call` with the current token; on 401 re-authenticates once and replays it.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Response, Error> {
        let mut replayed = false;
        loop {
            let auth = self.inner.session.token(&self.inner.transport).await?;
            let url = self.url_for(call, &auth.info)?;
            let mut headers = call.headers.clone();
            if call.service == Service::BlockStorage {
                headers.push(("OpenStack-API-Version", CINDER_MICROVERSION.to_owned()));
            }
            let request = Request {
                operation: call.operation,
                method: call.method.clone(),
                url,
                query: call.query.clone(),
                token: Some(&auth.token),
                project_id: auth.info.project.as_ref().map(|project| project.id.as_str()),
                headers,
                body: call.body.as_ref(),
            };
            match self.inner.transport.execute(&request, call.idempotency).await {
                Err(Error::Unauthorized(failure)) if !replayed => {
                    tracing::info!(
                        operation = call.operation,
                        request_id = failure.request_id.as_deref().unwrap_or(""),
                        "token rejected; re-authenticating once"
                    );
                    self.inner.session.invalidate(&auth).await;
                    replayed = true;
                }
                other => return other,
            }
        }
    }

    /// Sends `call` and parses the JSON body.
    pub(crate) async fn json<T: serde::de::DeserializeOwned>(&self, call: &Call<'_>) -> Result<T, Error> {
        self.send(call).await?.json(call.operation)
    }

    fn url_for(&self, call: &Call<'_>, info: &TokenInfo) -> Result<String, Error> {
        let config = &self.inner.config;
        let base = match call.service {
            Service::Identity => config.auth_url.clone(),
            Service::BlockStorage | Service::Compute => {
                let types =
                    if call.service == Service::Compute { COMPUTE_TYPES } else { BLOCK_STORAGE_TYPES };
                info.catalog.endpoint(types, config.interface.as_str(), config.region.as_deref()).ok_or_else(
                    || Error::NoEndpoint {
                        service_type: types.join("|"),
                        interface: config.interface.as_str().to_owned(),
                        region: config.region.clone().unwrap_or_else(|| "any".into()),
                    },
                )?
            }
        };
        Ok(format!("{base}{}", call.path))
    }
}

/// The `marker` of a `rel=next` link, or `None` when there is no next page. Only the marker is
/// taken: services behind proxies publish hosts in links that the client cannot always reach.
pub(crate) fn next_marker(links: Option<&Value>) -> Option<String> {
    let links = links?.as_array()?;
    let href =
        links.iter().find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))?.get("href")?.as_str()?;
    let query = href.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "marker").then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_marker_comes_from_the_next_link_only() {
        let links = json!([
            {"rel": "self", "href": "http://x/v3/p/volumes/detail?marker=self"},
            {"rel": "next", "href": "http://cinder.internal:8776/v3/p/volumes/detail?limit=2&all_tenants=1&marker=ab%2Dcd"}
        ]);
        assert_eq!(next_marker(Some(&links)).as_deref(), Some("ab-cd"));
        assert_eq!(next_marker(Some(&json!([{"rel": "self", "href": "http://x?marker=1"}]))), None);
        assert_eq!(next_marker(None), None);
    }
}
