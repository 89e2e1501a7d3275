//! Nova subset under `/compute/v2.1`: servers (summary and detail) with limit/marker paging and
//! `all_tenants` for admins, enough for server names and volume attachments.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::exchange::{Api, Ctx, Failure, Reply, Sim, handle};
use crate::keystone::time;
use crate::state::World;

fn list(world: &World, ctx: &Ctx, params: &HashMap<String, String>, detail: bool) -> Result<Reply, Failure> {
    let caller = ctx.caller()?;
    let all = caller.is_admin()
        && params.get("all_tenants").is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
    let limit = match params.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Failure::bad_request("limit must be a positive integer"))?,
        None => 1000,
    };
    let marker = params.get("marker");
    if let Some(m) = marker
        && !world.servers.contains_key(m)
    {
        return Err(Failure::bad_request(format!("marker [{m}] not found")));
    }
    let mut attached: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    if detail {
        for v in world.volumes.values() {
            for s in &v.attachments {
                attached.entry(s.as_str()).or_default().push(v.id.as_str());
            }
        }
    }
    let start = marker.map_or(std::ops::Bound::Unbounded, |m| std::ops::Bound::Excluded(m.clone()));
    let page: Vec<Value> = world
        .servers
        .range::<String, _>((start, std::ops::Bound::Unbounded))
        .map(|(_, s)| s)
        .filter(|s| all || caller.project_id() == Some(s.project_id.as_str()))
        .take(limit)
        .map(|s| {
            let link = format!("{}/compute/v2.1/servers/{}", ctx.base_url, s.id);
            let links = json!([{"rel": "self", "href": link}]);
            if !detail {
                return json!({"id": s.id, "name": s.name, "links": links});
            }
            let volumes: Vec<Value> = attached
                .get(s.id.as_str())
                .into_iter()
                .flatten()
                .map(|v| json!({"id": v, "delete_on_termination": false}))
                .collect();
            json!({"id": s.id, "name": s.name, "status": "ACTIVE", "tenant_id": s.project_id, "user_id": "",
                   "created": time(s.created_at), "updated": time(s.created_at), "addresses": {}, "metadata": {},
                   "os-extended-volumes:volumes_attached": volumes, "links": links})
        })
        .collect();
    let mut body = json!({});
    if page.len() == limit
        && let Some(last) = page.last().and_then(|s| s.get("id")).and_then(Value::as_str)
    {
        let all_param = if all { "&all_tenants=1" } else { "" };
        let path = if detail { "servers/detail" } else { "servers" };
        body["servers_links"] = json!([{"rel": "next", "href": format!("{}/compute/v2.1/{path}?limit={limit}{all_param}&marker={last}", ctx.base_url)}]);
    }
    body["servers"] = Value::Array(page);
    Ok(Reply::ok(body))
}

pub(crate) async fn servers(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    handle(&sim, "nova.servers.list", Api::Nova, &headers, true, |w, ctx| list(w, ctx, &params, false)).await
}

pub(crate) async fn servers_detail(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    handle(&sim, "nova.servers.list", Api::Nova, &headers, true, |w, ctx| list(w, ctx, &params, true)).await
}

pub(crate) async fn version(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "nova.version", Api::Nova, &headers, false, |_, ctx| {
        Ok(Reply::json(StatusCode::OK, json!({"version": {
            "id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": format!("{}/compute/v2.1/", ctx.base_url)}]
        }})))
    })
    .await
}
