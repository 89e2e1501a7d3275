//! Cinder v3 at a fixed microversion: volumes, volume metadata, snapshots, quota sets, limits.
//!
//! Lists are followed page by page (`limit` + `marker` from the `*_links` next link) until the
//! service stops sending a next link. Creates are never blindly repeated: after a timeout or a
//! 5xx the client looks for the object by an idempotency key it put in the metadata, and only
//! posts again when it is not there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::Method;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::client::{Call, OpenStack, Service, next_marker};
use crate::error::Error;
use crate::keystone::take;

/// Metadata key holding the per-create idempotency key on volumes and snapshots we create.
pub const IDEMPOTENCY_METADATA_KEY: &str = "snapkeeper_idempotency_key";

/// A volume attachment.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// Nova server id.
    #[serde(default)]
    pub server_id: Option<String>,
    /// Attachment id.
    #[serde(default)]
    pub attachment_id: Option<String>,
    /// Device path, e.g. `/dev/vdb`.
    #[serde(default)]
    pub device: Option<String>,
}

/// A Cinder volume (detail view).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Volume {
    /// Id.
    pub id: String,
    /// Name (may be empty or null).
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Status, e.g. `available`, `in-use`.
    pub status: String,
    /// Size in GiB.
    pub size: u64,
    /// Volume type.
    #[serde(default)]
    pub volume_type: Option<String>,
    /// Bootable (Cinder sends the string `"true"`/`"false"`).
    #[serde(default, deserialize_with = "flag")]
    pub bootable: bool,
    /// Availability zone.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Owning project (admin-visible attribute; also shown to owners).
    #[serde(default, rename = "os-vol-tenant-attr:tenant_id")]
    pub project_id: Option<String>,
    /// Metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// Attachments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub attachments: Vec<Attachment>,
    /// Creation time.
    #[serde(default, deserialize_with = "cinder_time")]
    pub created_at: Option<DateTime<Utc>>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A Cinder snapshot (detail view).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Source volume.
    pub volume_id: String,
    /// Status, e.g. `creating`, `available`, `error`.
    pub status: String,
    /// Size in GiB.
    pub size: u64,
    /// Metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// Creation time.
    #[serde(default, deserialize_with = "cinder_time")]
    pub created_at: Option<DateTime<Utc>>,
    /// Project the snapshot lives in.
    #[serde(default, rename = "os-extended-snapshot-attributes:project_id")]
    pub project_id: Option<String>,
}

/// One quota resource: limit (-1 = unlimited), in use, reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Limit; -1 means unlimited.
    pub limit: i64,
    /// Used (0 when the cloud sent flat numbers).
    pub in_use: i64,
    /// Reserved by operations in progress.
    pub reserved: i64,
}

impl QuotaUsage {
    /// Room left, `None` when unlimited.
    pub fn available(&self) -> Option<i64> {
        (self.limit >= 0).then(|| (self.limit - self.in_use - self.reserved).max(0))
    }
}

/// A project's quota set, keyed by resource (`snapshots`, `gigabytes`, `snapshots_<type>`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaSet {
    /// Resources.
    pub resources: BTreeMap<String, QuotaUsage>,
    /// Whether usage figures were present (dict form); flat numbers carry no usage.
    pub has_usage: bool,
}

impl QuotaSet {
    /// Parses `quota_set`, accepting both `{"limit", "in_use", "reserved"}` dicts (with
    /// `usage=true`) and flat integers (without it, and on some clouds even with it).
    pub fn parse(quota_set: &Value) -> Self {
        let mut set = Self::default();
        let Some(map) = quota_set.as_object() else { return set };
        for (key, value) in map {
            let usage = match value {
                Value::Number(n) => n.as_i64().map(|limit| QuotaUsage { limit, in_use: 0, reserved: 0 }),
                Value::Object(o) => {
                    let get = |k: &str| o.get(k).and_then(Value::as_i64);
                    get("limit").map(|limit| {
                        set.has_usage = true;
                        QuotaUsage {
                            limit,
                            in_use: get("in_use").unwrap_or(0),
                            reserved: get("reserved").unwrap_or(0),
                        }
                    })
                }
                _ => None,
            };
            if let Some(usage) = usage {
                set.resources.insert(key.clone(), usage);
            }
        }
        set
    }

    /// One resource.
    pub fn get(&self, resource: &str) -> Option<QuotaUsage> {
        self.resources.get(resource).copied()
    }
}

/// Absolute limits of the token's project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `maxTotalSnapshots`, `totalSnapshotsUsed`, ...
    pub absolute: BTreeMap<String, i64>,
}

/// Filters for [`Cinder::volumes`].
#[derive(Debug, Clone, Default)]
pub struct VolumeQuery {
    /// All projects (admins only; Cinder ignores it for others).
    pub all_tenants: bool,
    /// Only this project (with `all_tenants`).
    pub project_id: Option<String>,
    /// Only volumes with all these metadata pairs.
    pub metadata: BTreeMap<String, String>,
    /// Only this status.
    pub status: Option<String>,
}

/// Filters for [`Cinder::snapshots`].
#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    /// All projects (admins only).
    pub all_tenants: bool,
    /// Only snapshots of this volume.
    pub volume_id: Option<String>,
    /// Only this project (with `all_tenants`).
    pub project_id: Option<String>,
}

impl VolumeQuery {
    /// The query string pairs.
    fn params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        if self.all_tenants {
            params.push(("all_tenants".to_owned(), "1".to_owned()));
        }
        if let Some(project) = &self.project_id {
            params.push(("project_id".to_owned(), project.clone()));
        }
        if !self.metadata.is_empty() {
            params.push(("metadata".to_owned(), json!(self.metadata).to_string()));
        }
        if let Some(status) = &self.status {
            params.push(("status".to_owned(), status.clone()));
        }
        params
    }
}

impl SnapshotQuery {
    /// The query string pairs.
    fn params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        if self.all_tenants {
            params.push(("all_tenants".to_owned(), "1".to_owned()));
        }
        if let Some(volume) = &self.volume_id {
            params.push(("volume_id".to_owned(), volume.clone()));
        }
        if let Some(project) = &self.project_id {
            params.push(("project_id".to_owned(), project.clone()));
        }
        params
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// Marker of the next page; `None` on the last.
    pub next: Option<String>,
}

const VOLUMES_LIST: &str = "cinder.volumes.list";
const VOLUMES_PATH: &str = "/volumes/detail";
const SNAPSHOTS_LIST: &str = "cinder.snapshots.list";
const SNAPSHOTS_PATH: &str = "/snapshots/detail";

/// A volume to create (test setup and demos).
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    /// Name.
    pub name: String,
    /// Size in GiB.
    pub size: u64,
    /// Description.
    pub description: Option<String>,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A snapshot to create.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    /// Source volume.
    pub volume_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Snapshot an in-use volume.
    pub force: bool,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Reads a list page's body, `{key: [...], "{key}_links": [...]}`, straight into its items,
/// skipping other members. Going through a `Value` first built every item twice and left a big
/// listing's memory fragmented.
struct PageBody<'k, T> {
    key: &'k str,
    items: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for PageBody<'_, T> {
    type Value = (Vec<T>, Option<Value>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for PageBody<'_, T> {
    type Value = (Vec<T>, Option<Value>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an object with {:?}", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let links_key = format!("{}_links", self.key);
        let (mut items, mut links) = (Vec::new(), None);
        while let Some(name) = map.next_key::<String>()? {
            if name == self.key {
                items = map.next_value()?;
            } else if name == links_key {
                links = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((items, links))
    }
}

/// Cinder calls of one client.
#[derive(Debug, Clone, Copy)]
pub struct Cinder<'a> {
    client: &'a OpenStack,
}

impl<'a> Cinder<'a> {
    pub(crate) fn new(client: &'a OpenStack) -> Self {
        Self { client }
    }

    /// One page of `key` from `marker` (the first page when `None`).
    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        query: &[(String, String)],
        key: &str,
        marker: Option<&str>,
    ) -> Result<Page<T>, Error> {
        let limit = self.client.config().page_limit.to_string();
        let mut call = Call::new(operation, Service::BlockStorage, Method::GET, path).query("limit", &limit);
        call.query.extend(query.iter().cloned());
        if let Some(marker) = marker {
            call = call.query("marker", marker);
        }
        let response = self.client.send(&call).await?;
        let mut reader = serde_json::Deserializer::from_slice(&response.body);
        let body = PageBody { key, items: PhantomData }.deserialize(&mut reader);
        let (items, links) =
            body.and_then(|body| reader.end().map(|()| body)).map_err(|e| Error::decode(operation, e))?;
        let next = next_marker(links.as_ref()).filter(|_| !items.is_empty());
        if next.is_some() && next.as_deref() == marker {
            return Err(Error::decode(operation, "next link repeats the marker"));
        }
        Ok(Page { items, next })
    }

    /// Follows `key`'s pages to the end.
    async fn paginate<T: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        query: &[(String, String)],
        key: &str,
    ) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self.page(operation, path, query, key, marker.as_deref()).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => marker = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Volumes (detail), every page.
    pub async fn volumes(&self, query: &VolumeQuery) -> Result<Vec<Volume>, Error> {
        self.paginate(VOLUMES_LIST, VOLUMES_PATH, &query.params(), "volumes").await
    }

    /// One page of volumes (detail) from `marker`, so a caller can handle a big listing page by
    /// page instead of holding it whole.
    pub async fn volume_page(
        &self,
        query: &VolumeQuery,
        marker: Option<&str>,
    ) -> Result<Page<Volume>, Error> {
        self.page(VOLUMES_LIST, VOLUMES_PATH, &query.params(), "volumes", marker).await
    }

    /// One volume.
    pub async fn volume(&self, id: &str) -> Result<Volume, Error> {
        let call =
            Call::new("cinder.volumes.get", Service::BlockStorage, Method::GET, format!("/volumes/{id}"));
        take(self.client.json(&call).await?, "volume", call.operation)
    }

    /// Creates a volume in the token's project; never duplicated by a retry.
    pub async fn create_volume(&self, volume: &NewVolume) -> Result<Volume, Error> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut metadata = volume.metadata.clone();
        metadata.insert(IDEMPOTENCY_METADATA_KEY.into(), key.clone());
        let mut body = json!({"volume": {"size": volume.size, "name": volume.name, "metadata": metadata}});
        if let Some(d) = &volume.description {
            body["volume"]["description"] = json!(d);
        }
        if let Some(t) = &volume.volume_type {
            body["volume"]["volume_type"] = json!(t);
        }
        if let Some(az) = &volume.availability_zone {
            body["volume"]["availability_zone"] = json!(az);
        }
        let call =
            Call::new("cinder.volumes.create", Service::BlockStorage, Method::POST, "/volumes").body(body);
        let lookup = || async {
            let own = self.volumes(&VolumeQuery::default()).await?;
            Ok(own.into_iter().find(|v| v.metadata.get(IDEMPOTENCY_METADATA_KEY) == Some(&key)))
        };
        self.create_once(&call, "volume", lookup).await
    }

    /// Deletes a volume (`cascade` also deletes its snapshots).
    pub async fn delete_volume(&self, id: &str, cascade: bool) -> Result<(), Error> {
        let mut call = Call::new(
            "cinder.volumes.delete",
            Service::BlockStorage,
            Method::DELETE,
            format!("/volumes/{id}"),
        );
        if cascade {
            call = call.query("cascade", "true");
        }
        self.client.send(&call).await?;
        Ok(())
    }

    /// Marks a volume attached to `server_id` the way Nova does (`os-reserve`, `os-attach`);
    /// for test setup and demos on clouds without Nova.
    pub async fn attach_volume(&self, id: &str, server_id: &str) -> Result<(), Error> {
        let path = format!("/volumes/{id}/action");
        let reserve = Call::new("cinder.volumes.action", Service::BlockStorage, Method::POST, &path)
            .body(json!({"os-reserve": null}));
        self.client.send(&reserve).await?;
        let attach = Call::new("cinder.volumes.action", Service::BlockStorage, Method::POST, path)
            .body(json!({"os-attach": {"instance_uuid": server_id, "mountpoint": "/dev/vdb", "mode": "rw"}}));
        self.client.send(&attach).await?;
        Ok(())
    }

    /// Detaches a volume attached with [`Cinder::attach_volume`].
    pub async fn detach_volume(&self, id: &str) -> Result<(), Error> {
        let call = Call::new(
            "cinder.volumes.action",
            Service::BlockStorage,
            Method::POST,
            format!("/volumes/{id}/action"),
        )
        .body(json!({"os-detach": {}}))
        .idempotent();
        self.client.send(&call).await?;
        Ok(())
    }

    /// Merges `metadata` into a volume's metadata; returns the whole metadata.
    pub async fn set_volume_metadata(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let call = Call::new(
            "cinder.volumes.metadata.set",
            Service::BlockStorage,
            Method::POST,
            format!("/volumes/{id}/metadata"),
        )
        .body(json!({ "metadata": metadata }))
        .idempotent();
        take(self.client.json(&call).await?, "metadata", call.operation)
    }

    /// Deletes one metadata key of a volume (`NotFound` when the key is absent).
    pub async fn delete_volume_metadata(&self, id: &str, key: &str) -> Result<(), Error> {
        let path = format!("/volumes/{id}/metadata/{}", encode_segment(key));
        self.client
            .send(&Call::new("cinder.volumes.metadata.delete", Service::BlockStorage, Method::DELETE, path))
            .await?;
        Ok(())
    }

    /// Creates a snapshot in the token's project; never duplicated by a retry.
    pub async fn create_snapshot(&self, snapshot: &NewSnapshot) -> Result<Snapshot, Error> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut metadata = snapshot.metadata.clone();
        metadata.insert(IDEMPOTENCY_METADATA_KEY.into(), key.clone());
        let mut body = json!({"snapshot": {
            "volume_id": snapshot.volume_id, "name": snapshot.name, "force": snapshot.force, "metadata": metadata
        }});
        if let Some(d) = &snapshot.description {
            body["snapshot"]["description"] = json!(d);
        }
        let call = Call::new("cinder.snapshots.create", Service::BlockStorage, Method::POST, "/snapshots")
            .body(body);
        let lookup = || async {
            let query =
                SnapshotQuery { volume_id: Some(snapshot.volume_id.clone()), ..SnapshotQuery::default() };
            let found = self.snapshots(&query).await?;
            Ok(found.into_iter().find(|s| s.metadata.get(IDEMPOTENCY_METADATA_KEY) == Some(&key)))
        };
        self.create_once(&call, "snapshot", lookup).await
    }

    /// Posts `call`; when the outcome is unknown (timeout, 5xx) asks `lookup` whether the
    /// object exists before posting again.
    async fn create_once<T, F, Fut>(&self, call: &Call<'_>, key: &str, lookup: F) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, Error>>,
    {
        let max_attempts = self.client.transport().policy().max_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.client.json::<Value>(call).await {
                Ok(body) => return take(body, key, call.operation),
                Err(e) => e,
            };
            let unknown_outcome = match &error {
                Error::Transport { sent, .. } => *sent,
                Error::Api(f) => matches!(f.status, 500 | 502 | 503 | 504),
                _ => false,
            };
            if !unknown_outcome {
                return Err(error);
            }
            tracing::warn!(operation = call.operation, attempt, error = %error, "create outcome unknown; looking it up");
            tokio::time::sleep(self.client.transport().backoff(attempt)).await;
            if let Some(found) = lookup().await? {
                return Ok(found);
            }
            if attempt >= max_attempts {
                return Err(error);
            }
        }
    }

    /// Snapshots (detail), every page.
    pub async fn snapshots(&self, query: &SnapshotQuery) -> Result<Vec<Snapshot>, Error> {
        self.paginate(SNAPSHOTS_LIST, SNAPSHOTS_PATH, &query.params(), "snapshots").await
    }

    /// One page of snapshots (detail) from `marker`.
    pub async fn snapshot_page(
        &self,
        query: &SnapshotQuery,
        marker: Option<&str>,
    ) -> Result<Page<Snapshot>, Error> {
        self.page(SNAPSHOTS_LIST, SNAPSHOTS_PATH, &query.params(), "snapshots", marker).await
    }

    /// One snapshot.
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot, Error> {
        let call =
            Call::new("cinder.snapshots.get", Service::BlockStorage, Method::GET, format!("/snapshots/{id}"));
        take(self.client.json(&call).await?, "snapshot", call.operation)
    }

    /// Deletes a snapshot (asynchronous in Cinder: it goes `deleting`, then disappears).
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        let call = Call::new(
            "cinder.snapshots.delete",
            Service::BlockStorage,
            Method::DELETE,
            format!("/snapshots/{id}"),
        );
        self.client.send(&call).await?;
        Ok(())
    }

    /// A snapshot's metadata.
    pub async fn snapshot_metadata(&self, id: &str) -> Result<BTreeMap<String, String>, Error> {
        let path = format!("/snapshots/{id}/metadata");
        let call = Call::new("cinder.snapshots.metadata.get", Service::BlockStorage, Method::GET, path);
        take(self.client.json(&call).await?, "metadata", call.operation)
    }

    /// Merges `metadata` into a snapshot's metadata; returns the whole metadata.
    pub async fn set_snapshot_metadata(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let path = format!("/snapshots/{id}/metadata");
        let call = Call::new("cinder.snapshots.metadata.set", Service::BlockStorage, Method::POST, path)
            .body(json!({ "metadata": metadata }))
            .idempotent();
        take(self.client.json(&call).await?, "metadata", call.operation)
    }

    /// A project's quota set, with usage when `usage` is true.
    pub async fn quota_set(&self, project_id: &str, usage: bool) -> Result<QuotaSet, Error> {
        let mut call = Call::new(
            "cinder.quota_sets.get",
            Service::BlockStorage,
            Method::GET,
            format!("/os-quota-sets/{project_id}"),
        );
        if usage {
            call = call.query("usage", "true");
        }
        let body: Value = self.client.json(&call).await?;
        let set = body.get("quota_set").ok_or_else(|| Error::decode(call.operation, "no quota_set"))?;
        Ok(QuotaSet::parse(set))
    }

    /// Sets quota limits of a project (admin; test setup).
    pub async fn update_quota_set(
        &self,
        project_id: &str,
        limits: &BTreeMap<String, i64>,
    ) -> Result<QuotaSet, Error> {
        let call = Call::new(
            "cinder.quota_sets.update",
            Service::BlockStorage,
            Method::PUT,
            format!("/os-quota-sets/{project_id}"),
        )
        .body(json!({ "quota_set": limits }));
        let body: Value = self.client.json(&call).await?;
        let set = body.get("quota_set").ok_or_else(|| Error::decode(call.operation, "no quota_set"))?;
        Ok(QuotaSet::parse(set))
    }

    /// Absolute limits of the token's project.
    pub async fn limits(&self) -> Result<Limits, Error> {
        let call = Call::new("cinder.limits.get", Service::BlockStorage, Method::GET, "/limits");
        let body: Value = self.client.json(&call).await?;
        let absolute = body
            .pointer("/limits/absolute")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::decode(call.operation, "no limits.absolute"))?;
        Ok(Limits { absolute: absolute.iter().filter_map(|(k, v)| Some((k.clone(), v.as_i64()?))).collect() })
    }

    /// Polls a volume until it reaches `status` (an `error*` status or `timeout` fails).
    pub async fn wait_for_volume(&self, id: &str, status: &str, timeout: Duration) -> Result<Volume, Error> {
        wait_for(timeout, "cinder.volumes.get", status, || self.volume(id), |v: &Volume| v.status.clone())
            .await
    }

    /// Polls a snapshot until it reaches `status`.
    pub async fn wait_for_snapshot(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<Snapshot, Error> {
        wait_for(
            timeout,
            "cinder.snapshots.get",
            status,
            || self.snapshot(id),
            |s: &Snapshot| s.status.clone(),
        )
        .await
    }

    /// Polls until a snapshot is gone (404).
    pub async fn wait_for_snapshot_deleted(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.snapshot(id).await {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
                Ok(s) if Instant::now() >= deadline => {
                    return Err(Error::decode(
                        "cinder.snapshots.get",
                        format!("snapshot {id} still {}", s.status),
                    ));
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

async fn wait_for<T, F, Fut>(
    timeout: Duration,
    operation: &str,
    want: &str,
    fetch: F,
    status_of: impl Fn(&T) -> String,
) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let item = fetch().await?;
        let status = status_of(&item);
        if status == want {
            return Ok(item);
        }
        if status.starts_with("error") || Instant::now() >= deadline {
            return Err(Error::decode(operation, format!("status {status}, waited for {want}")));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Percent-encodes a path segment (metadata keys may hold any character).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// Cinder times come without a zone (`2026-11-25T20:22:18.000000`) and are UTC.
fn cinder_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| Some(t.and_utc()))
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_set_parses_dicts_and_flat_numbers() {
        let with_usage = json!({
            "id": "p1",
            "snapshots": {"limit": 10, "in_use": 3, "reserved": 1},
            "gigabytes": {"limit": -1, "in_use": 40, "reserved": 0},
            "snapshots_ssd": {"limit": 2, "in_use": 2, "reserved": 0}
        });
        let set = QuotaSet::parse(&with_usage);
        assert!(set.has_usage);
        assert_eq!(set.get("snapshots"), Some(QuotaUsage { limit: 10, in_use: 3, reserved: 1 }));
        assert_eq!(set.get("snapshots").and_then(|q| q.available()), Some(6));
        assert_eq!(set.get("gigabytes").and_then(|q| q.available()), None);
        assert_eq!(set.get("snapshots_ssd").and_then(|q| q.available()), Some(0));
        assert!(set.get("id").is_none());

        let flat = QuotaSet::parse(&json!({"id": "p1", "snapshots": 10, "gigabytes": 1000}));
        assert!(!flat.has_usage);
        assert_eq!(flat.get("gigabytes"), Some(QuotaUsage { limit: 1000, in_use: 0, reserved: 0 }));
    }

    #[test]
    fn volume_detail_fields_parse_as_cinder_sends_them() {
        let v: Volume = serde_json::from_value(json!({
            "id": "v1", "name": null, "status": "in-use", "size": 5, "bootable": "true",
            "os-vol-tenant-attr:tenant_id": "p1", "metadata": {"auto_snapshot": "true"},
            "attachments": [{"server_id": "s1", "attachment_id": "a1", "device": "/dev/vdb"}],
            "created_at": "2026-11-25T20:22:18.000000"
        }))
        .expect("volume");
        assert!(v.bootable);
        assert_eq!(v.name, "");
        assert_eq!(v.project_id.as_deref(), Some("p1"));
        assert_eq!(v.attachments[0].server_id.as_deref(), Some("s1"));
        assert_eq!(v.created_at.map(|t| t.to_rfc3339()).as_deref(), Some("2026-11-25T20:22:18+00:00"));
    }

    #[test]
    fn metadata_keys_are_encoded_as_path_segments() {
        assert_eq!(encode_segment("retention_daily_5"), "retention_daily_5");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
