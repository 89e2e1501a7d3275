//! Keystone v3 subset: version document, token issue/validate/revoke (password, application
//! credential, token), domains, projects, users, roles, role assignments and grants.
//! Default policy as Keystone ships it: identity administration needs the `admin` role.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::exchange::{Api, Caller, Ctx, Failure, Reply, Sim, handle, parse_body};
use crate::state::{Project, Target, Token, TokenScope, User, World};

type Params = Query<HashMap<String, String>>;

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    })
}

pub(crate) async fn versions(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "keystone.versions", Api::Keystone, &headers, false, |_, ctx| {
        Ok(Reply::json(
            StatusCode::MULTIPLE_CHOICES,
            json!({"versions": {"values": [version_doc(&ctx.base_url)]}}),
        ))
    })
    .await
}

pub(crate) async fn version(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "keystone.version", Api::Keystone, &headers, false, |_, ctx| {
        Ok(Reply::ok(json!({"version": version_doc(&ctx.base_url)})))
    })
    .await
}

fn require_admin<'c>(ctx: &'c Ctx, rule: &str) -> Result<&'c Caller, Failure> {
    let caller = ctx.caller()?;
    if caller.is_admin() { Ok(caller) } else { Err(Failure::identity_policy(rule)) }
}

fn domain_ref(world: &World, value: &Value) -> Option<String> {
    if let Some(id) = value.get("id").and_then(Value::as_str) {
        return world.domains.contains_key(id).then(|| id.to_owned());
    }
    let name = value.get("name").and_then(Value::as_str)?;
    world.domains.values().find(|d| d.name == name).map(|d| d.id.clone())
}

fn find_user(world: &World, value: &Value) -> Option<String> {
    if let Some(id) = value.get("id").and_then(Value::as_str) {
        return world.users.contains_key(id).then(|| id.to_owned());
    }
    let name = value.get("name").and_then(Value::as_str)?;
    let domain = domain_ref(world, value.get("domain")?)?;
    world.users.values().find(|u| u.name == name && u.domain_id == domain).map(|u| u.id.clone())
}

fn resolve_scope(world: &World, scope: Option<&Value>) -> Result<TokenScope, Failure> {
    let Some(scope) = scope else { return Ok(TokenScope::Unscoped) };
    if let Some(project) = scope.get("project") {
        let id = if let Some(id) = project.get("id").and_then(Value::as_str) {
            Some(id.to_owned())
        } else {
            let name = project.get("name").and_then(Value::as_str).unwrap_or_default();
            let domain = project.get("domain").and_then(|d| domain_ref(world, d));
            world
                .projects
                .values()
                .find(|p| p.name == name && Some(&p.domain_id) == domain.as_ref())
                .map(|p| p.id.clone())
        };
        return match id {
            Some(id) if world.projects.get(&id).is_some_and(|p| p.enabled) => Ok(TokenScope::Project(id)),
            _ => Err(Failure::unauthorized()),
        };
    }
    if let Some(domain) = scope.get("domain") {
        return domain_ref(world, domain).map(TokenScope::Domain).ok_or_else(Failure::unauthorized);
    }
    Err(Failure::bad_request("unsupported scope"))
}

fn token_body(world: &World, ctx: &Ctx, token: &Token, with_catalog: bool) -> Value {
    let user = world.users.get(&token.user_id);
    let user_domain = user.and_then(|u| world.domains.get(&u.domain_id));
    let roles: Vec<Value> = match &token.scope {
        TokenScope::Unscoped => Vec::new(),
        TokenScope::Project(p) => role_refs(world, &token.user_id, &Target::Project(p.clone())),
        TokenScope::Domain(d) => role_refs(world, &token.user_id, &Target::Domain(d.clone())),
    };
    let mut body = json!({
        "methods": token.methods,
        "user": {
            "id": token.user_id, "name": user.map(|u| u.name.clone()),
            "domain": {"id": user_domain.map(|d| d.id.clone()), "name": user_domain.map(|d| d.name.clone())},
            "password_expires_at": null
        },
        "audit_ids": [format!("{:022x}", token.issued_at.timestamp_micros())],
        "expires_at": time(token.expires_at),
        "issued_at": time(token.issued_at),
        "is_domain": false,
    });
    if !roles.is_empty() {
        body["roles"] = Value::Array(roles);
    }
    match &token.scope {
        TokenScope::Project(p) => {
            if let Some(project) = world.projects.get(p) {
                let domain = world.domains.get(&project.domain_id);
                body["project"] = json!({"id": project.id, "name": project.name,
                    "domain": {"id": project.domain_id, "name": domain.map(|d| d.name.clone())}});
            }
        }
        TokenScope::Domain(d) => {
            if let Some(domain) = world.domains.get(d) {
                body["domain"] = json!({"id": domain.id, "name": domain.name});
            }
        }
        TokenScope::Unscoped => {}
    }
    if with_catalog && token.scope != TokenScope::Unscoped {
        body["catalog"] = catalog(world, ctx, &token.scope);
    }
    json!({ "token": body })
}

fn role_refs(world: &World, user_id: &str, target: &Target) -> Vec<Value> {
    world
        .assignments
        .iter()
        .filter(|(u, t, _)| u == user_id && t == target)
        .filter_map(|(_, _, role)| world.roles.get(role).map(|name| json!({"id": role, "name": name})))
        .collect()
}

/// Catalog as Keystone renders it, one endpoint per region and interface. Cinder's URL holds
/// the project id, so a domain-scoped token gets no block-storage endpoints (as in Keystone).
fn catalog(world: &World, ctx: &Ctx, scope: &TokenScope) -> Value {
    let base = &ctx.base_url;
    let mut services = vec![("identity", "keystone", format!("{base}/v3/"))];
    if let TokenScope::Project(p) = scope {
        services.push(("volumev3", "cinderv3", format!("{base}/volume/v3/{p}")));
        services.push(("block-storage", "cinder", format!("{base}/volume/v3/{p}")));
    }
    if world.compute_enabled {
        services.push(("compute", "nova", format!("{base}/compute/v2.1")));
    }
    let entries: Vec<Value> = services
        .iter()
        .map(|(kind, name, url)| {
            let endpoints: Vec<Value> = world
                .regions
                .iter()
                .flat_map(|region| {
                    ["public", "internal", "admin"].map(|interface| {
                        json!({"id": format!("{kind}-{region}-{interface}"), "interface": interface,
                               "region_id": region, "region": region, "url": url})
                    })
                })
                .collect();
            json!({"type": kind, "name": name, "id": format!("svc-{kind}"), "endpoints": endpoints})
        })
        .collect();
    Value::Array(entries)
}

pub(crate) async fn issue_token(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, "keystone.auth.tokens.create", Api::Keystone, &headers, false, |world, ctx| {
        let body = parse_body(&body)?;
        let identity = body
            .pointer("/auth/identity")
            .ok_or_else(|| Failure::bad_request("auth.identity is required"))?;
        let method = identity.pointer("/methods/0").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut scope_value = body.pointer("/auth/scope").cloned();
        let user_id = match method.as_str() {
            "password" => {
                let user = identity
                    .pointer("/password/user")
                    .ok_or_else(|| Failure::bad_request("password.user is required"))?;
                let password = user.get("password").and_then(Value::as_str).unwrap_or_default();
                let id = find_user(world, user).ok_or_else(Failure::unauthorized)?;
                let record = world.users.get(&id).ok_or_else(Failure::unauthorized)?;
                if record.password != password || !record.enabled {
                    return Err(Failure::unauthorized());
                }
                id
            }
            "application_credential" => {
                let credential = identity
                    .get("application_credential")
                    .ok_or_else(|| Failure::bad_request("application_credential is required"))?;
                let secret = credential.get("secret").and_then(Value::as_str).unwrap_or_default();
                let found = if let Some(id) = credential.get("id").and_then(Value::as_str) {
                    world.app_credentials.get(id)
                } else {
                    let name = credential.get("name").and_then(Value::as_str).unwrap_or_default();
                    let owner = credential.get("user").and_then(|u| find_user(world, u));
                    world
                        .app_credentials
                        .values()
                        .find(|c| c.name == name && Some(&c.user_id) == owner.as_ref())
                };
                let credential = found.filter(|c| c.secret == secret).ok_or_else(Failure::unauthorized)?;
                scope_value = Some(json!({"project": {"id": credential.project_id}}));
                credential.user_id.clone()
            }
            "token" => {
                let id = identity.pointer("/token/id").and_then(Value::as_str).unwrap_or_default();
                let token = world
                    .tokens
                    .get(id)
                    .filter(|t| t.expires_at > Utc::now())
                    .ok_or_else(Failure::unauthorized)?;
                token.user_id.clone()
            }
            _ => return Err(Failure::unauthorized()),
        };
        let scope = resolve_scope(world, scope_value.as_ref())?;
        let target = match &scope {
            TokenScope::Project(p) => Some(Target::Project(p.clone())),
            TokenScope::Domain(d) => Some(Target::Domain(d.clone())),
            TokenScope::Unscoped => None,
        };
        // Keystone refuses a scope on which the user holds no role.
        if let Some(target) = target
            && world.roles_on(&user_id, &target).is_empty()
        {
            return Err(Failure::unauthorized());
        }
        let token_id = world.issue_token(&user_id, scope, vec![method], ctx.token_ttl);
        let token = world.tokens.get(&token_id).cloned().ok_or_else(Failure::unauthorized)?;
        let mut reply = Reply::json(StatusCode::CREATED, token_body(world, ctx, &token, true));
        reply.headers.push(("x-subject-token", token_id));
        Ok(reply)
    })
    .await
}

fn subject(world: &World, ctx: &Ctx, rule: &str) -> Result<(String, Token), Failure> {
    let caller = ctx.caller()?;
    let subject = ctx.header("x-subject-token").unwrap_or_default().to_owned();
    if !caller.is_admin() && subject != caller.token && !caller.roles.iter().any(|r| r == "service") {
        return Err(Failure::identity_policy(rule));
    }
    let token = world
        .tokens
        .get(&subject)
        .filter(|t| t.expires_at > Utc::now())
        .cloned()
        .ok_or_else(|| Failure::not_found("Could not recognize Fernet token"))?;
    Ok((subject, token))
}

pub(crate) async fn validate_token(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    handle(&sim, "keystone.auth.tokens.validate", Api::Keystone, &headers, true, |world, ctx| {
        let (id, token) = subject(world, ctx, "validate_token")?;
        let with_catalog = !params.contains_key("nocatalog");
        let mut reply = Reply::ok(token_body(world, ctx, &token, with_catalog));
        reply.headers.push(("x-subject-token", id));
        Ok(reply)
    })
    .await
}

pub(crate) async fn check_token(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "keystone.auth.tokens.check", Api::Keystone, &headers, true, |world, ctx| {
        subject(world, ctx, "check_token")?;
        Ok(Reply::empty(StatusCode::OK))
    })
    .await
}

pub(crate) async fn revoke_token(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "keystone.auth.tokens.revoke", Api::Keystone, &headers, true, |world, ctx| {
        let (id, _) = subject(world, ctx, "revoke_token")?;
        world.tokens.remove(&id);
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    })
    .await
}

fn links(ctx: &Ctx, path: &str) -> Value {
    json!({"self": format!("{}/v3/{path}", ctx.base_url), "previous": null, "next": null})
}

fn list_reply(ctx: &Ctx, key: &str, mut items: Vec<Value>) -> Reply {
    let mut body = json!({ "links": links(ctx, key) });
    if let Some(limit) = ctx.timing.keystone_list_limit
        && items.len() > limit
    {
        items.truncate(limit);
        body["truncated"] = json!(true);
    }
    body[key] = Value::Array(items);
    Reply::ok(body)
}

fn project_json(ctx: &Ctx, p: &Project) -> Value {
    json!({"id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
           "enabled": p.enabled, "parent_id": p.domain_id, "is_domain": false, "tags": [], "options": {},
           "links": {"self": format!("{}/v3/projects/{}", ctx.base_url, p.id)}})
}

fn user_json(ctx: &Ctx, u: &User) -> Value {
    let mut v = json!({"id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
                       "password_expires_at": null, "options": {},
                       "links": {"self": format!("{}/v3/users/{}", ctx.base_url, u.id)}});
    if let Some(email) = &u.email {
        v["email"] = json!(email);
    }
    v
}

pub(crate) async fn list_domains(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    handle(&sim, "keystone.domains.list", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "list_domains")?;
        let items = world
            .domains
            .values()
            .filter(|d| params.get("name").is_none_or(|n| *n == d.name))
            .map(|d| json!({"id": d.id, "name": d.name, "enabled": d.enabled, "description": "", "tags": [], "options": {},
                            "links": {"self": format!("{}/v3/domains/{}", ctx.base_url, d.id)}}))
            .collect();
        Ok(list_reply(ctx, "domains", items))
    })
    .await
}

pub(crate) async fn get_domain(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    handle(&sim, "keystone.domains.get", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "get_domain")?;
        let d = world
            .domains
            .get(&id)
            .ok_or_else(|| Failure::not_found(format!("Could not find domain: {id}.")))?;
        Ok(Reply::ok(
            json!({"domain": {"id": d.id, "name": d.name, "enabled": d.enabled, "description": ""}}),
        ))
    })
    .await
}

pub(crate) async fn list_projects(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    handle(&sim, "keystone.projects.list", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "list_projects")?;
        let items = world
            .projects
            .values()
            .filter(|p| params.get("name").is_none_or(|n| *n == p.name))
            .filter(|p| params.get("domain_id").is_none_or(|d| *d == p.domain_id))
            .map(|p| project_json(ctx, p))
            .collect();
        Ok(list_reply(ctx, "projects", items))
    })
    .await
}

pub(crate) async fn auth_projects(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    handle(&sim, "keystone.auth.projects", Api::Keystone, &headers, true, |world, ctx| {
        let caller = ctx.caller()?;
        let items = world
            .projects
            .values()
            .filter(|p| !world.roles_on(&caller.user_id, &Target::Project(p.id.clone())).is_empty())
            .map(|p| project_json(ctx, p))
            .collect();
        Ok(list_reply(ctx, "projects", items))
    })
    .await
}

pub(crate) async fn get_project(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    handle(&sim, "keystone.projects.get", Api::Keystone, &headers, true, |world, ctx| {
        let caller = ctx.caller()?;
        if !caller.is_admin() && caller.project_id() != Some(id.as_str()) {
            return Err(Failure::identity_policy("get_project"));
        }
        let p = world
            .projects
            .get(&id)
            .ok_or_else(|| Failure::not_found(format!("Could not find project: {id}.")))?;
        Ok(Reply::ok(json!({"project": project_json(ctx, p)})))
    })
    .await
}

pub(crate) async fn create_project(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, "keystone.projects.create", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "create_project")?;
        let body = parse_body(&body)?;
        let p = body.get("project").ok_or_else(|| Failure::bad_request("project is required"))?;
        let name = p.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| Failure::bad_request("project.name is required"))?;
        let domain_id = p.get("domain_id").and_then(Value::as_str).unwrap_or("default").to_owned();
        if !world.domains.contains_key(&domain_id) {
            return Err(Failure::not_found(format!("Could not find domain: {domain_id}.")));
        }
        if world.projects.values().any(|x| x.name == name && x.domain_id == domain_id) {
            return Err(Failure::conflict(format!(
                "Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : {name}."
            )));
        }
        let id = world.hex_id();
        let project = Project {
            id: id.clone(),
            name: name.to_owned(),
            domain_id,
            description: p.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
            enabled: p.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        };
        let json = project_json(ctx, &project);
        world.projects.insert(id, project);
        Ok(Reply::json(StatusCode::CREATED, json!({ "project": json })))
    })
    .await
}

pub(crate) async fn update_project(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    handle(&sim, "keystone.projects.update", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "update_project")?;
        let body = parse_body(&body)?;
        let project = world
            .projects
            .get_mut(&id)
            .ok_or_else(|| Failure::not_found(format!("Could not find project: {id}.")))?;
        if let Some(enabled) = body.pointer("/project/enabled").and_then(Value::as_bool) {
            project.enabled = enabled;
        }
        if let Some(description) = body.pointer("/project/description").and_then(Value::as_str) {
            description.clone_into(&mut project.description);
        }
        let json = project_json(ctx, project);
        Ok(Reply::ok(json!({ "project": json })))
    })
    .await
}

pub(crate) async fn delete_project(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    handle(&sim, "keystone.projects.delete", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "delete_project")?;
        world
            .projects
            .remove(&id)
            .ok_or_else(|| Failure::not_found(format!("Could not find project: {id}.")))?;
        let target = Target::Project(id.clone());
        world.assignments.retain(|(_, t, _)| *t != target);
        world.tokens.retain(|_, t| t.scope != TokenScope::Project(id.clone()));
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub(crate) async fn list_users(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    handle(&sim, "keystone.users.list", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "list_users")?;
        let items = world
            .users
            .values()
            .filter(|u| params.get("name").is_none_or(|n| *n == u.name))
            .filter(|u| params.get("domain_id").is_none_or(|d| *d == u.domain_id))
            .map(|u| user_json(ctx, u))
            .collect();
        Ok(list_reply(ctx, "users", items))
    })
    .await
}

pub(crate) async fn get_user(State(sim): State<Sim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    handle(&sim, "keystone.users.get", Api::Keystone, &headers, true, |world, ctx| {
        let caller = ctx.caller()?;
        if !caller.is_admin() && caller.user_id != id {
            return Err(Failure::identity_policy("get_user"));
        }
        let u =
            world.users.get(&id).ok_or_else(|| Failure::not_found(format!("Could not find user: {id}.")))?;
        Ok(Reply::ok(json!({"user": user_json(ctx, u)})))
    })
    .await
}

pub(crate) async fn create_user(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, "keystone.users.create", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "create_user")?;
        let body = parse_body(&body)?;
        let u = body.get("user").ok_or_else(|| Failure::bad_request("user is required"))?;
        let name = u.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| Failure::bad_request("user.name is required"))?;
        let domain_id = u.get("domain_id").and_then(Value::as_str).unwrap_or("default").to_owned();
        if !world.domains.contains_key(&domain_id) {
            return Err(Failure::not_found(format!("Could not find domain: {domain_id}.")));
        }
        if world.users.values().any(|x| x.name == name && x.domain_id == domain_id) {
            return Err(Failure::conflict(format!("Conflict occurred attempting to store user - Duplicate entry found with name {name} at domain ID {domain_id}.")));
        }
        let id = world.hex_id();
        let user = User {
            id: id.clone(),
            name: name.to_owned(),
            domain_id,
            password: u.get("password").and_then(Value::as_str).unwrap_or_default().to_owned(),
            email: u.get("email").and_then(Value::as_str).map(str::to_owned),
            enabled: u.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        };
        let json = user_json(ctx, &user);
        world.users.insert(id, user);
        Ok(Reply::json(StatusCode::CREATED, json!({ "user": json })))
    })
    .await
}

pub(crate) async fn delete_user(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    handle(&sim, "keystone.users.delete", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "delete_user")?;
        world.users.remove(&id).ok_or_else(|| Failure::not_found(format!("Could not find user: {id}.")))?;
        world.assignments.retain(|(u, _, _)| *u != id);
        world.tokens.retain(|_, t| t.user_id != id);
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub(crate) async fn list_roles(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    handle(&sim, "keystone.roles.list", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "list_roles")?;
        let items = world
            .roles
            .iter()
            .filter(|(_, name)| params.get("name").is_none_or(|n| n == *name))
            .map(|(id, name)| {
                json!({"id": id, "name": name, "domain_id": null, "description": null, "options": {},
                                     "links": {"self": format!("{}/v3/roles/{id}", ctx.base_url)}})
            })
            .collect();
        Ok(list_reply(ctx, "roles", items))
    })
    .await
}

pub(crate) async fn list_role_assignments(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    handle(&sim, "keystone.role_assignments.list", Api::Keystone, &headers, true, |world, ctx| {
        let caller = ctx.caller()?;
        let own = params.get("user.id") == Some(&caller.user_id);
        if !caller.is_admin() && !own {
            return Err(Failure::identity_policy("list_role_assignments"));
        }
        let names = params.contains_key("include_names");
        let items = world
            .assignments
            .iter()
            .filter(|(u, _, _)| params.get("user.id").is_none_or(|x| x == u))
            .filter(|(_, _, r)| params.get("role.id").is_none_or(|x| x == r))
            .filter(|(_, t, _)| params.get("scope.project.id").is_none_or(|x| *t == Target::Project(x.clone())))
            .filter(|(_, t, _)| params.get("scope.domain.id").is_none_or(|x| *t == Target::Domain(x.clone())))
            .map(|(u, t, r)| {
                let mut role = json!({"id": r});
                let mut user = json!({"id": u});
                let (kind, id) = match t {
                    Target::Project(p) => ("project", p),
                    Target::Domain(d) => ("domain", d),
                };
                let mut target = json!({"id": id});
                if names {
                    role["name"] = json!(world.roles.get(r));
                    user["name"] = json!(world.users.get(u).map(|x| x.name.clone()));
                    let name = match t {
                        Target::Project(p) => world.projects.get(p).map(|x| x.name.clone()),
                        Target::Domain(d) => world.domains.get(d).map(|x| x.name.clone()),
                    };
                    target["name"] = json!(name);
                }
                json!({"role": role, "user": user, "scope": { kind: target },
                       "links": {"assignment": format!("{}/v3/{kind}s/{id}/users/{u}/roles/{r}", ctx.base_url)}})
            })
            .collect();
        Ok(list_reply(ctx, "role_assignments", items))
    })
    .await
}

fn grant_target(
    world: &World,
    project: &str,
    user: &str,
    role: &str,
) -> Result<(String, Target, String), Failure> {
    if !world.projects.contains_key(project) {
        return Err(Failure::not_found(format!("Could not find project: {project}.")));
    }
    if !world.users.contains_key(user) {
        return Err(Failure::not_found(format!("Could not find user: {user}.")));
    }
    if !world.roles.contains_key(role) {
        return Err(Failure::not_found(format!("Could not find role: {role}.")));
    }
    Ok((user.to_owned(), Target::Project(project.to_owned()), role.to_owned()))
}

pub(crate) async fn grant_role(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Response {
    handle(&sim, "keystone.roles.grant", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "create_grant")?;
        let key = grant_target(world, &p, &u, &r)?;
        world.assignments.insert(key);
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub(crate) async fn check_role(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Response {
    handle(&sim, "keystone.roles.check", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "check_grant")?;
        let key = grant_target(world, &p, &u, &r)?;
        if world.assignments.contains(&key) {
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        } else {
            Err(Failure::not_found(format!("Could not find role assignment with role: {r}, user or group: {u}, project, domain, or system: {p}.")))
        }
    })
    .await
}

pub(crate) async fn revoke_role(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Response {
    handle(&sim, "keystone.roles.revoke", Api::Keystone, &headers, true, |world, ctx| {
        require_admin(ctx, "revoke_grant")?;
        let key = grant_target(world, &p, &u, &r)?;
        if world.assignments.remove(&key) {
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        } else {
            Err(Failure::not_found(format!("Could not find role assignment with role: {r}, user or group: {u}, project, domain, or system: {p}.")))
        }
    })
    .await
}
