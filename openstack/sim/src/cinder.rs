//! Cinder v3 subset under `/volume/v3/{project_id}`: volumes (+ metadata, attach actions),
//! snapshots (+ metadata), quota sets with usage, limits. Policy as Cinder's defaults: admin on
//! any project is cloud admin, `all_tenants` is ignored for everybody else, readers read, and
//! other projects' objects are invisible (404).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::exchange::{Api, Caller, Ctx, Failure, Reply, Sim, handle, parse_body};
use crate::state::{Snapshot, Volume, World};

type Params = Query<HashMap<String, String>>;

/// Cinder's `osapi_max_limit`.
const MAX_LIMIT: usize = 1000;

fn naive(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The token's project must be the one in the URL (Cinder: "Malformed request url").
fn caller_for<'c>(ctx: &'c Ctx, project_id: &str) -> Result<&'c Caller, Failure> {
    let caller = ctx.caller()?;
    if caller.project_id() != Some(project_id) {
        return Err(Failure::bad_request("Malformed request url"));
    }
    Ok(caller)
}

fn visible(caller: &Caller, project_id: &str) -> bool {
    caller.is_admin() || caller.project_id() == Some(project_id)
}

fn writer(caller: &Caller, rule: &str) -> Result<(), Failure> {
    if caller.can_write() { Ok(()) } else { Err(Failure::policy(rule)) }
}

fn truthy(value: Option<&String>) -> bool {
    value.is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off" | ""))
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `{key}_links` with a next link when the page is full, as Cinder does (it may point at an
/// empty page).
fn links(
    ctx: &Ctx,
    path: &str,
    params: &HashMap<String, String>,
    limit: usize,
    last: Option<&String>,
    count: usize,
) -> Option<Value> {
    let last = last?;
    if count < limit {
        return None;
    }
    let mut pairs: Vec<(&String, &String)> =
        params.iter().filter(|(k, _)| *k != "marker" && *k != "limit").collect();
    pairs.sort();
    let mut query = format!("limit={limit}");
    for (k, v) in pairs {
        let _ = write!(query, "&{}={}", encode(k), encode(v));
    }
    let _ = write!(query, "&marker={}", encode(last));
    Some(json!([{"rel": "next", "href": format!("{}/volume/v3/{path}?{query}", ctx.base_url)}]))
}

fn limit_of(params: &HashMap<String, String>) -> Result<usize, Failure> {
    match params.get("limit") {
        None => Ok(MAX_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Err(_) => Err(Failure::bad_request(format!(
                "Invalid input received: limit must be a non-negative integer, got {v}"
            ))),
            Ok(n) => Ok(n.min(MAX_LIMIT)),
        },
    }
}

fn metadata_filter(params: &HashMap<String, String>) -> Result<Option<BTreeMap<String, String>>, Failure> {
    let Some(raw) = params.get("metadata") else { return Ok(None) };
    let parsed: BTreeMap<String, Value> = serde_json::from_str(raw)
        .map_err(|_| Failure::bad_request(format!("Invalid metadata filter: {raw}")))?;
    Ok(Some(
        parsed
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
    ))
}

fn meta_matches(metadata: &BTreeMap<String, String>, filter: Option<&BTreeMap<String, String>>) -> bool {
    filter.is_none_or(|f| f.iter().all(|(k, v)| metadata.get(k) == Some(v)))
}

/// Picks one page of ids: from a project's index, or from everything for admins' all_tenants.
fn page_ids(
    all: &BTreeMap<String, impl Sized>,
    by_project: &HashMap<String, BTreeSet<String>>,
    scope: Option<&str>,
    marker: Option<&str>,
    limit: usize,
    keep: impl Fn(&String) -> bool,
) -> Vec<String> {
    use std::ops::Bound;
    if let Some(project) = scope {
        return by_project
            .get(project)
            .map(|ids| World::after(ids, marker).filter(|id| keep(id)).take(limit).cloned().collect())
            .unwrap_or_default();
    }
    let start = marker.map_or(Bound::Unbounded, |m| Bound::Excluded(m.to_owned()));
    all.range::<String, _>((start, Bound::Unbounded))
        .map(|(id, _)| id)
        .filter(|id| keep(id))
        .take(limit)
        .cloned()
        .collect()
}

/// Which projects a list covers: admins with `all_tenants` see all (or `project_id`); everyone
/// else only their own project, whatever they ask.
fn list_scope(caller: &Caller, params: &HashMap<String, String>) -> Option<String> {
    if caller.is_admin() && truthy(params.get("all_tenants")) {
        params.get("project_id").cloned()
    } else {
        caller.project_id().map(str::to_owned)
    }
}

pub(crate) fn volume_json(ctx: &Ctx, v: &Volume, detail: bool) -> Value {
    let self_link = format!("{}/volume/v3/{}/volumes/{}", ctx.base_url, v.project_id, v.id);
    let links = json!([{"rel": "self", "href": self_link}, {"rel": "bookmark", "href": self_link.replace("/v3/", "/")}]);
    if !detail {
        return json!({"id": v.id, "name": v.name, "links": links});
    }
    let attachments: Vec<Value> = v
        .attachments
        .iter()
        .enumerate()
        .map(|(i, server)| {
            json!({"server_id": server, "attachment_id": format!("{}-{i}", v.id), "attached_at": naive(v.created_at),
                   "host_name": null, "volume_id": v.id, "device": format!("/dev/vd{}", char::from(b'b' + (i % 24) as u8)), "id": v.id})
        })
        .collect();
    json!({
        "id": v.id, "status": v.status, "size": v.size, "availability_zone": v.availability_zone,
        "created_at": naive(v.created_at), "updated_at": naive(v.created_at),
        "name": v.name, "description": v.description, "volume_type": v.volume_type,
        "snapshot_id": null, "source_volid": null, "metadata": v.metadata, "links": links,
        "user_id": v.user_id, "bootable": if v.bootable { "true" } else { "false" }, "encrypted": false,
        "replication_status": null, "consistencygroup_id": null, "multiattach": false,
        "attachments": attachments, "migration_status": null, "group_id": null, "provider_id": null,
        "shared_targets": false, "service_uuid": null,
        "os-vol-tenant-attr:tenant_id": v.project_id,
        "os-vol-mig-status-attr:migstat": null, "os-vol-mig-status-attr:name_id": null,
        "os-vol-host-attr:host": "sim@fake#fake"
    })
}

pub(crate) fn snapshot_json(ctx: &Ctx, s: &Snapshot, detail: bool) -> Value {
    let mut v = json!({
        "id": s.id, "created_at": naive(s.created_at), "updated_at": naive(s.created_at),
        "name": s.name, "description": s.description, "volume_id": s.volume_id, "status": s.status,
        "size": s.size, "metadata": s.metadata, "group_snapshot_id": null,
    });
    // Cinder shows the creating user from microversion 3.41 on.
    if ctx.microversion >= (3, 41) {
        v["user_id"] = json!(s.user_id);
    }
    if detail {
        v["os-extended-snapshot-attributes:project_id"] = json!(s.project_id);
        v["os-extended-snapshot-attributes:progress"] =
            json!(if s.status == "creating" { "0%" } else { "100%" });
    }
    v
}

fn string_map(value: Option<&Value>) -> Result<BTreeMap<String, String>, Failure> {
    // openstackclient sends `"metadata": null` when none is given.
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(BTreeMap::new()) };
    let object =
        value.as_object().ok_or_else(|| Failure::bad_request("Invalid metadata: must be a dictionary"))?;
    let mut out = BTreeMap::new();
    for (k, v) in object {
        let v = v.as_str().ok_or_else(|| {
            Failure::bad_request(format!(
                "Invalid input for field/attribute {k}. Value: {v}. is not of type 'string'"
            ))
        })?;
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(Failure::bad_request("Invalid metadata: key and value must be 1-255 characters"));
        }
        out.insert(k.clone(), v.to_owned());
    }
    Ok(out)
}

fn volume_of<'w>(world: &'w World, caller: &Caller, id: &str) -> Result<&'w Volume, Failure> {
    world
        .volumes
        .get(id)
        .filter(|v| visible(caller, &v.project_id))
        .ok_or_else(|| Failure::not_found(format!("Volume {id} could not be found.")))
}

fn snapshot_of<'w>(world: &'w World, caller: &Caller, id: &str) -> Result<&'w Snapshot, Failure> {
    world
        .snapshots
        .get(id)
        .filter(|s| visible(caller, &s.project_id))
        .ok_or_else(|| Failure::not_found(format!("Snapshot {id} could not be found.")))
}

fn list_volumes(
    world: &mut World,
    ctx: &Ctx,
    pid: &str,
    params: &HashMap<String, String>,
    detail: bool,
) -> Result<Reply, Failure> {
    world.settle(ctx.now);
    let caller = caller_for(ctx, pid)?;
    let limit = limit_of(params)?;
    let metadata = metadata_filter(params)?;
    let marker = params.get("marker").map(String::as_str);
    if let Some(m) = marker
        && !world.volumes.get(m).is_some_and(|v| visible(caller, &v.project_id))
    {
        return Err(Failure::not_found(format!("Volume {m} could not be found.")));
    }
    let scope = list_scope(caller, params);
    let keep = |id: &String| {
        world.volumes.get(id).is_some_and(|v| {
            params.get("status").is_none_or(|s| *s == v.status)
                && params.get("name").is_none_or(|n| *n == v.name)
                && meta_matches(&v.metadata, metadata.as_ref())
        })
    };
    let ids = page_ids(&world.volumes, &world.volumes_by_project, scope.as_deref(), marker, limit, keep);
    let items: Vec<Value> =
        ids.iter().filter_map(|id| world.volumes.get(id)).map(|v| volume_json(ctx, v, detail)).collect();
    let path = if detail { format!("{pid}/volumes/detail") } else { format!("{pid}/volumes") };
    let mut body = json!({ "volumes": items });
    if let Some(links) = links(ctx, &path, params, limit, ids.last(), ids.len()) {
        body["volumes_links"] = links;
    }
    Ok(Reply::ok(body))
}

pub(crate) async fn volumes_summary(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(params): Params,
) -> Response {
    handle(&sim, "cinder.volumes.list", Api::Cinder, &headers, true, |w, ctx| {
        list_volumes(w, ctx, &pid, &params, false)
    })
    .await
}

pub(crate) async fn volumes_detail(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(params): Params,
) -> Response {
    handle(&sim, "cinder.volumes.list", Api::Cinder, &headers, true, |w, ctx| {
        list_volumes(w, ctx, &pid, &params, true)
    })
    .await
}

fn quota_check(
    world: &World,
    project: &str,
    key: &str,
    adding: i64,
    used: i64,
    volume_type: &str,
) -> Result<(), Failure> {
    let limit = world.limit(project, key);
    if limit >= 0 && used + adding > limit {
        let message = match key {
            "snapshots" => {
                format!("SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded")
            }
            "volumes" => format!(
                "VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota 'volumes'."
            ),
            k if k.starts_with("gigabytes") => format!(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {key} quota. Requested {adding}G, quota is {limit}G and {used}G has been consumed."
            ),
            _ => format!("{key} quota exceeded for {volume_type}: limit {limit}, in use {used}"),
        };
        return Err(Failure::over_limit(message));
    }
    Ok(())
}

/// Usage of per-type keys (`volumes_<t>`, `snapshots_<t>`, `gigabytes_<t>`) of one project.
fn typed_usage(world: &World, project: &str) -> BTreeMap<String, i64> {
    let mut usage = BTreeMap::new();
    for id in world.volumes_by_project.get(project).into_iter().flatten() {
        if let Some(v) = world.volumes.get(id) {
            *usage.entry(format!("volumes_{}", v.volume_type)).or_default() += 1;
            *usage.entry(format!("gigabytes_{}", v.volume_type)).or_default() += v.size as i64;
        }
    }
    for id in world.snapshots_by_project.get(project).into_iter().flatten() {
        if let Some(s) = world.snapshots.get(id) {
            let kind = world.volumes.get(&s.volume_id).map_or("__DEFAULT__", |v| v.volume_type.as_str());
            *usage.entry(format!("snapshots_{kind}")).or_default() += 1;
            *usage.entry(format!("gigabytes_{kind}")).or_default() += s.size as i64;
        }
    }
    usage
}

pub(crate) async fn create_volume(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.volumes.create", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?.clone();
        writer(&caller, "volume:create")?;
        let body = parse_body(&body)?;
        let v = body
            .get("volume")
            .ok_or_else(|| Failure::bad_request("Missing required element 'volume' in request body."))?;
        let size = v.get("size").and_then(Value::as_u64).filter(|s| *s > 0).ok_or_else(|| {
            Failure::bad_request("Invalid input for field/attribute size. Value: must be a positive integer.")
        })?;
        let volume_type = v.get("volume_type").and_then(Value::as_str).unwrap_or("__DEFAULT__").to_owned();
        let usage = world.usage(&pid);
        quota_check(world, &pid, "volumes", 1, usage.volumes, &volume_type)?;
        quota_check(world, &pid, "gigabytes", size as i64, usage.gigabytes, &volume_type)?;
        let id = world.uuid();
        let volume = Volume {
            id: id.clone(),
            project_id: pid.clone(),
            user_id: caller.user_id.clone(),
            name: v.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            description: v.get("description").and_then(Value::as_str).map(str::to_owned),
            size,
            volume_type,
            bootable: false,
            availability_zone: v
                .get("availability_zone")
                .and_then(Value::as_str)
                .unwrap_or("nova")
                .to_owned(),
            status: "creating".into(),
            ready_at: Some(ctx.now + ctx.timing.volume_delay),
            attachments: Vec::new(),
            metadata: string_map(v.get("metadata"))?,
            created_at: Utc::now(),
        };
        let mut json = volume_json(ctx, &volume, true);
        if let Some(o) = json.as_object_mut() {
            o.retain(|k, _| !k.starts_with("os-"));
        }
        world.insert_volume(volume);
        Ok(Reply::json(StatusCode::ACCEPTED, json!({ "volume": json })))
    })
    .await
}

pub(crate) async fn get_volume(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    handle(&sim, "cinder.volumes.get", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?;
        Ok(Reply::ok(json!({"volume": volume_json(ctx, volume_of(world, caller, &id)?, true)})))
    })
    .await
}

pub(crate) async fn delete_volume(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    handle(&sim, "cinder.volumes.delete", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?;
        writer(caller, "volume:delete")?;
        let volume = volume_of(world, caller, &id)?;
        let snapshots = world.snapshots_by_volume.get(&id).map_or(0, BTreeSet::len);
        let cascade = truthy(params.get("cascade"));
        if !matches!(volume.status.as_str(), "available" | "error") || !volume.attachments.is_empty() || (snapshots > 0 && !cascade) {
            return Err(Failure::bad_request(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.",
            ));
        }
        world.remove_volume(&id);
        Ok(Reply::empty(StatusCode::ACCEPTED))
    })
    .await
}

pub(crate) async fn volume_action(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.volumes.action", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?;
        writer(caller, "volume:attach")?;
        volume_of(world, caller, &id)?;
        let body = parse_body(&body)?;
        let volume = world
            .volumes
            .get_mut(&id)
            .ok_or_else(|| Failure::not_found(format!("Volume {id} could not be found.")))?;
        if body.get("os-reserve").is_some() {
            if volume.status != "available" {
                return Err(Failure::bad_request(format!(
                    "Invalid volume: Volume status must be available to reserve, but the status is {}.",
                    volume.status
                )));
            }
            volume.status = "attaching".into();
        } else if let Some(attach) = body.get("os-attach") {
            let server = attach
                .get("instance_uuid")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::bad_request("instance_uuid is required"))?;
            volume.attachments.push(server.to_owned());
            volume.status = "in-use".into();
        } else if body.get("os-detach").is_some() {
            volume.attachments.clear();
            volume.status = "available".into();
        } else {
            return Err(Failure::bad_request("There is no such action"));
        }
        Ok(Reply::empty(StatusCode::ACCEPTED))
    })
    .await
}

fn metadata_reply(
    world: &mut World,
    ctx: &Ctx,
    pid: &str,
    id: &str,
    body: Option<&[u8]>,
    replace: bool,
    snapshot: bool,
) -> Result<Reply, Failure> {
    let caller = caller_for(ctx, pid)?.clone();
    let (target, kind) = if snapshot {
        (snapshot_of(world, &caller, id)?.id.clone(), "snapshot")
    } else {
        (volume_of(world, &caller, id)?.id.clone(), "volume")
    };
    let metadata = if snapshot {
        world.snapshots.get_mut(&target).map(|s| &mut s.metadata)
    } else {
        world.volumes.get_mut(&target).map(|v| &mut v.metadata)
    }
    .ok_or_else(|| Failure::not_found(format!("{kind} {id} could not be found.")))?;
    if let Some(body) = body {
        writer(&caller, &format!("{kind}:update_{kind}_metadata"))?;
        let body = parse_body(body)?;
        let update = string_map(Some(
            body.get("metadata").ok_or_else(|| Failure::bad_request("Malformed request body"))?,
        ))?;
        if replace {
            metadata.clear();
        }
        metadata.extend(update);
    }
    Ok(Reply::ok(json!({ "metadata": metadata })))
}

pub(crate) async fn get_volume_metadata(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    handle(&sim, "cinder.volumes.metadata.get", Api::Cinder, &headers, true, |w, ctx| {
        metadata_reply(w, ctx, &pid, &id, None, false, false)
    })
    .await
}

pub(crate) async fn set_volume_metadata(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.volumes.metadata.set", Api::Cinder, &headers, true, |w, ctx| {
        metadata_reply(w, ctx, &pid, &id, Some(&body), false, false)
    })
    .await
}

pub(crate) async fn replace_volume_metadata(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.volumes.metadata.replace", Api::Cinder, &headers, true, |w, ctx| {
        metadata_reply(w, ctx, &pid, &id, Some(&body), true, false)
    })
    .await
}

pub(crate) async fn put_volume_metadata_item(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id, key)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.volumes.metadata.set", Api::Cinder, &headers, true, |world, ctx| {
        let caller = caller_for(ctx, &pid)?.clone();
        writer(&caller, "volume:update_volume_metadata")?;
        volume_of(world, &caller, &id)?;
        let body = parse_body(&body)?;
        let meta = string_map(body.get("meta"))?;
        if meta.len() != 1 || !meta.contains_key(&key) {
            return Err(Failure::bad_request("Request body and URI mismatch"));
        }
        if let Some(v) = world.volumes.get_mut(&id) {
            v.metadata.extend(meta.clone());
        }
        Ok(Reply::ok(json!({ "meta": meta })))
    })
    .await
}

pub(crate) async fn delete_volume_metadata_item(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id, key)): Path<(String, String, String)>,
) -> Response {
    handle(&sim, "cinder.volumes.metadata.delete", Api::Cinder, &headers, true, |world, ctx| {
        let caller = caller_for(ctx, &pid)?.clone();
        writer(&caller, "volume:delete_volume_metadata")?;
        volume_of(world, &caller, &id)?;
        let removed = world.volumes.get_mut(&id).and_then(|v| v.metadata.remove(&key));
        if removed.is_none() {
            return Err(Failure::not_found(format!("Volume {id} has no metadata with key {key}.")));
        }
        Ok(Reply::empty(StatusCode::OK))
    })
    .await
}

fn list_snapshots(
    world: &mut World,
    ctx: &Ctx,
    pid: &str,
    params: &HashMap<String, String>,
    detail: bool,
) -> Result<Reply, Failure> {
    world.settle(ctx.now);
    let caller = caller_for(ctx, pid)?;
    let limit = limit_of(params)?;
    let metadata = metadata_filter(params)?;
    let marker = params.get("marker").map(String::as_str);
    if let Some(m) = marker
        && !world.snapshots.get(m).is_some_and(|s| visible(caller, &s.project_id))
    {
        return Err(Failure::not_found(format!("Snapshot {m} could not be found.")));
    }
    let scope = list_scope(caller, params);
    let keep = |id: &String| {
        world.snapshots.get(id).is_some_and(|s| {
            params.get("volume_id").is_none_or(|v| *v == s.volume_id)
                && params.get("status").is_none_or(|x| *x == s.status)
                && params.get("name").is_none_or(|n| *n == s.name)
                && scope.as_ref().is_none_or(|p| *p == s.project_id)
                && meta_matches(&s.metadata, metadata.as_ref())
        })
    };
    // A volume filter is served from the per-volume index: retention asks this per volume.
    let ids = match params.get("volume_id") {
        Some(volume) => match world.snapshots_by_volume.get(volume) {
            Some(ids) => World::after(ids, marker).filter(|id| keep(id)).take(limit).cloned().collect(),
            None => Vec::new(),
        },
        None => {
            page_ids(&world.snapshots, &world.snapshots_by_project, scope.as_deref(), marker, limit, keep)
        }
    };
    let items: Vec<Value> =
        ids.iter().filter_map(|id| world.snapshots.get(id)).map(|s| snapshot_json(ctx, s, detail)).collect();
    let path = if detail { format!("{pid}/snapshots/detail") } else { format!("{pid}/snapshots") };
    let mut body = json!({ "snapshots": items });
    if let Some(links) = links(ctx, &path, params, limit, ids.last(), ids.len()) {
        body["snapshots_links"] = links;
    }
    Ok(Reply::ok(body))
}

pub(crate) async fn snapshots_summary(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(params): Params,
) -> Response {
    handle(&sim, "cinder.snapshots.list", Api::Cinder, &headers, true, |w, ctx| {
        list_snapshots(w, ctx, &pid, &params, false)
    })
    .await
}

pub(crate) async fn snapshots_detail(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(params): Params,
) -> Response {
    handle(&sim, "cinder.snapshots.list", Api::Cinder, &headers, true, |w, ctx| {
        list_snapshots(w, ctx, &pid, &params, true)
    })
    .await
}

pub(crate) async fn create_snapshot(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.snapshots.create", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?.clone();
        writer(&caller, "volume:create_snapshot")?;
        let body = parse_body(&body)?;
        let s = body
            .get("snapshot")
            .ok_or_else(|| Failure::bad_request("Missing required element 'snapshot' in request body."))?;
        let volume_id = s
            .get("volume_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::bad_request("'volume_id' is a required property"))?;
        let force = match s.get("force") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(v)) => matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"),
            _ => false,
        };
        let volume = volume_of(world, &caller, volume_id)?;
        let allowed = volume.status == "available" || (force && volume.status == "in-use");
        if !allowed {
            return Err(Failure::bad_request(format!(
                "Invalid volume: Volume {volume_id} status must be available, but current status is: {}.",
                volume.status
            )));
        }
        let (size, volume_type, volume_id) = (volume.size, volume.volume_type.clone(), volume.id.clone());
        // The snapshot lands in the token's project, whoever owns the volume.
        let usage = world.usage(&pid);
        quota_check(world, &pid, "snapshots", 1, usage.snapshots, &volume_type)?;
        quota_check(world, &pid, "gigabytes", size as i64, usage.gigabytes, &volume_type)?;
        let typed = typed_usage(world, &pid);
        for key in [format!("snapshots_{volume_type}"), format!("gigabytes_{volume_type}")] {
            let adding = if key.starts_with("snapshots") { 1 } else { size as i64 };
            quota_check(world, &pid, &key, adding, typed.get(&key).copied().unwrap_or(0), &volume_type)?;
        }
        let snapshot = Snapshot {
            id: world.uuid(),
            project_id: pid.clone(),
            user_id: caller.user_id.clone(),
            volume_id,
            name: s.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            description: s.get("description").and_then(Value::as_str).map(str::to_owned),
            size,
            status: "creating".into(),
            ready_at: Some(ctx.now + ctx.timing.snapshot_delay),
            metadata: string_map(s.get("metadata"))?,
            created_at: Utc::now(),
        };
        let json = snapshot_json(ctx, &snapshot, false);
        world.insert_snapshot(snapshot);
        Ok(Reply::json(StatusCode::ACCEPTED, json!({ "snapshot": json })))
    })
    .await
}

pub(crate) async fn get_snapshot(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    handle(&sim, "cinder.snapshots.get", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?;
        Ok(Reply::ok(json!({"snapshot": snapshot_json(ctx, snapshot_of(world, caller, &id)?, true)})))
    })
    .await
}

pub(crate) async fn delete_snapshot(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    handle(&sim, "cinder.snapshots.delete", Api::Cinder, &headers, true, |world, ctx| {
        world.settle(ctx.now);
        let caller = caller_for(ctx, &pid)?;
        writer(caller, "volume:delete_snapshot")?;
        let snapshot = snapshot_of(world, caller, &id)?;
        if !matches!(snapshot.status.as_str(), "available" | "error") {
            return Err(Failure::bad_request("Invalid snapshot: Snapshot status must be available or error and must not be part of a group."));
        }
        world.remove_snapshot(&id);
        Ok(Reply::empty(StatusCode::ACCEPTED))
    })
    .await
}

pub(crate) async fn get_snapshot_metadata(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    handle(&sim, "cinder.snapshots.metadata.get", Api::Cinder, &headers, true, |w, ctx| {
        metadata_reply(w, ctx, &pid, &id, None, false, true)
    })
    .await
}

pub(crate) async fn set_snapshot_metadata(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.snapshots.metadata.set", Api::Cinder, &headers, true, |w, ctx| {
        metadata_reply(w, ctx, &pid, &id, Some(&body), false, true)
    })
    .await
}

fn quota_body(world: &World, target: &str, usage: bool, defaults: bool) -> Value {
    let mut keys: BTreeSet<String> = world.default_quota.keys().cloned().collect();
    let types: BTreeSet<&str> = world.volumes.values().map(|v| v.volume_type.as_str()).collect();
    for t in types {
        for prefix in ["volumes", "snapshots", "gigabytes"] {
            keys.insert(format!("{prefix}_{t}"));
        }
    }
    if let Some(overrides) = world.quotas.get(target) {
        keys.extend(overrides.keys().cloned());
    }
    let totals = world.usage(target);
    let typed = if usage { typed_usage(world, target) } else { BTreeMap::new() };
    let mut body = Map::new();
    for key in keys {
        let limit = if defaults {
            world.default_quota.get(&key).copied().unwrap_or(-1)
        } else {
            world.limit(target, &key)
        };
        let value = if usage {
            let in_use = match key.as_str() {
                "volumes" => totals.volumes,
                "snapshots" => totals.snapshots,
                "gigabytes" => totals.gigabytes,
                other => typed.get(other).copied().unwrap_or(0),
            };
            json!({"limit": limit, "in_use": in_use, "reserved": 0})
        } else {
            json!(limit)
        };
        body.insert(key, value);
    }
    body.insert("id".into(), json!(target));
    Value::Object(body)
}

pub(crate) async fn get_quota(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, target)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    handle(&sim, "cinder.quota_sets.get", Api::Cinder, &headers, true, |world, ctx| {
        let caller = caller_for(ctx, &pid)?;
        if !caller.is_admin() && caller.project_id() != Some(target.as_str()) {
            return Err(Failure::policy("volume_extension:quotas:show"));
        }
        Ok(Reply::ok(json!({"quota_set": quota_body(world, &target, truthy(params.get("usage")), false)})))
    })
    .await
}

pub(crate) async fn get_quota_defaults(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, target)): Path<(String, String)>,
) -> Response {
    handle(&sim, "cinder.quota_sets.defaults", Api::Cinder, &headers, true, |world, ctx| {
        caller_for(ctx, &pid)?;
        Ok(Reply::ok(json!({"quota_set": quota_body(world, &target, false, true)})))
    })
    .await
}

pub(crate) async fn update_quota(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((pid, target)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    handle(&sim, "cinder.quota_sets.update", Api::Cinder, &headers, true, |world, ctx| {
        let caller = caller_for(ctx, &pid)?;
        if !caller.is_admin() {
            return Err(Failure::policy("volume_extension:quotas:update"));
        }
        let body = parse_body(&body)?;
        let update = body
            .get("quota_set")
            .and_then(Value::as_object)
            .ok_or_else(|| Failure::bad_request("Missing required element 'quota_set' in request body."))?;
        let known = |k: &str| {
            world.default_quota.contains_key(k)
                || ["volumes_", "snapshots_", "gigabytes_"].iter().any(|p| k.starts_with(p))
        };
        let bad: Vec<&String> = update.keys().filter(|k| !known(k)).collect();
        if !bad.is_empty() {
            return Err(Failure::bad_request(format!(
                "Bad key(s) in quota set: {}",
                bad.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let mut parsed = Vec::new();
        for (k, v) in update {
            let n = v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).filter(|n| *n >= -1);
            let n = n.ok_or_else(|| {
                Failure::bad_request(format!("Quota limit {v} for {k} must be an integer >= -1"))
            })?;
            parsed.push((k.clone(), n));
        }
        world.quotas.entry(target.clone()).or_default().extend(parsed);
        let mut flat = quota_body(world, &target, false, false);
        if let Some(o) = flat.as_object_mut() {
            o.remove("id");
        }
        Ok(Reply::ok(json!({ "quota_set": flat })))
    })
    .await
}

pub(crate) async fn limits(State(sim): State<Sim>, headers: HeaderMap, Path(pid): Path<String>) -> Response {
    handle(&sim, "cinder.limits.get", Api::Cinder, &headers, true, |world, ctx| {
        caller_for(ctx, &pid)?;
        let usage = world.usage(&pid);
        Ok(Reply::ok(json!({"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": world.limit(&pid, "volumes"),
            "maxTotalSnapshots": world.limit(&pid, "snapshots"),
            "maxTotalVolumeGigabytes": world.limit(&pid, "gigabytes"),
            "maxTotalBackups": world.limit(&pid, "backups"),
            "maxTotalBackupGigabytes": world.limit(&pid, "backup_gigabytes"),
            "totalVolumesUsed": usage.volumes,
            "totalGigabytesUsed": usage.gigabytes,
            "totalSnapshotsUsed": usage.snapshots,
            "totalBackupsUsed": 0,
            "totalBackupGigabytesUsed": 0
        }}})))
    })
    .await
}

pub(crate) async fn versions(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "cinder.versions", Api::Cinder, &headers, false, |_, ctx| {
        Ok(Reply::json(StatusCode::MULTIPLE_CHOICES, json!({"versions": [{
            "id": "v3.0", "status": "CURRENT", "version": "3.71", "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
            "links": [{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
                      {"rel": "self", "href": format!("{}/volume/v3/", ctx.base_url)}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]
        }]})))
    })
    .await
}
