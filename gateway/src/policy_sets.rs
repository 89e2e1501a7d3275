//! `/api/snapshot/policy-sets`: named bundles of policies with retention, global or scoped to one
//! project (the seed's `snapshot_policy_sets`), over policy-svc.
//!
//! A project-scoped user sees global sets and the own project's sets, and creates or changes only
//! the own project's sets.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use prost_types::FieldMask;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::{
    CreatePolicySetRequest, DeletePolicySetRequest, GetPolicySetRequest, ListPolicySetsRequest, PolicySet,
    UpdatePolicySetRequest,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::paging;
use crate::rbac::{CanAdmin, CanRead, CanWrite, Principal};
use crate::upstream::Upstream;
use crate::wire::time;

/// Most policy sets read for one list.
const MAX_SETS: usize = 10_000;

/// A policy set as the seed's API showed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySetView {
    /// Id.
    pub id: i64,
    /// Name, unique together with tenant_id.
    pub name: String,
    /// Free text.
    pub description: String,
    /// True when the set applies to every project.
    pub is_global: bool,
    /// Keystone project id the set is scoped to (the seed's tenant); null when global.
    pub tenant_id: Option<String>,
    /// Project name.
    pub tenant_name: Option<String>,
    /// Policy names.
    pub policies: Vec<String>,
    /// Retention count per policy.
    pub retention_map: BTreeMap<String, i32>,
    /// Higher first, 0 to 1000.
    pub priority: i32,
    /// Inactive sets are not offered for new assignments.
    pub is_active: bool,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339.
    pub updated_at: Option<String>,
    /// Who last changed it.
    pub updated_by: String,
}

impl From<PolicySet> for PolicySetView {
    fn from(set: PolicySet) -> Self {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Self {
            id: set.id,
            name: set.name,
            description: set.description,
            is_global: set.is_global,
            tenant_id: non_empty(set.tenant_id),
            tenant_name: non_empty(set.tenant_name),
            policies: set.policies,
            retention_map: set.retention_map.into_iter().collect(),
            priority: set.priority,
            is_active: set.is_active,
            created_at: time(set.created_at.as_ref()),
            created_by: set.created_by,
            updated_at: time(set.updated_at.as_ref()),
            updated_by: set.updated_by,
        }
    }
}

/// Filters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicySetQuery {
    /// Only global (true) or only project-scoped (false) sets.
    pub is_global: Option<bool>,
    /// Only sets scoped to this project id.
    pub tenant_id: Option<String>,
    /// Only active (true) or inactive (false) sets.
    pub is_active: Option<bool>,
}

/// The list, highest priority first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySetList {
    /// The sets.
    pub policy_sets: Vec<PolicySetView>,
    /// How many.
    pub count: usize,
}

/// A new policy set. `is_global` defaults to true as in the seed.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewPolicySet {
    /// Name, 1 to 255 characters.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Applies to every project; default true.
    #[serde(default = "yes")]
    pub is_global: bool,
    /// Project id for a non-global set.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Project name.
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// Policy names, at least one.
    pub policies: Vec<String>,
    /// Retention per policy; keys must equal `policies`.
    pub retention_map: BTreeMap<String, i32>,
    /// 0 to 1000, default 0.
    #[serde(default)]
    pub priority: i32,
}

fn yes() -> bool {
    true
}

/// Changes to a policy set; only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PolicySetPatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New policies.
    pub policies: Option<Vec<String>>,
    /// New retention map.
    pub retention_map: Option<BTreeMap<String, i32>>,
    /// New priority.
    pub priority: Option<i32>,
    /// Activate or deactivate.
    pub is_active: Option<bool>,
    /// Make global or project-scoped.
    pub is_global: Option<bool>,
    /// New project id.
    pub tenant_id: Option<String>,
    /// New project name.
    pub tenant_name: Option<String>,
}

/// Whether `principal` may see `set`: global sets and the own project's.
fn visible(principal: &Principal, set: &PolicySet) -> bool {
    set.is_global || principal.sees(&set.tenant_id)
}

/// Policy sets, highest priority first, then newest.
#[utoipa::path(
    get,
    path = "/api/snapshot/policy-sets",
    tag = "policies",
    params(PolicySetQuery),
    responses(
        (status = 200, description = "the sets (snapshots:read)", body = PolicySetList),
        (status = 401, description = "not signed in", body = ErrorBody),
    )
)]
pub async fn list_policy_sets(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<PolicySetQuery>,
) -> Result<Json<PolicySetList>, ApiError> {
    let client = upstream.policy();
    let sets = paging::read_all(MAX_SETS, |page_size, page_token| {
        let mut client = client.clone();
        let request = ListPolicySetsRequest {
            is_global: query.is_global,
            tenant_id: query.tenant_id.clone(),
            is_active: query.is_active,
            page_size,
            page_token,
        };
        async move {
            let response = client.list_policy_sets(request).await?.into_inner();
            Ok((response.policy_sets, response.next_page_token))
        }
    })
    .await?;
    let policy_sets: Vec<PolicySetView> =
        sets.into_iter().filter(|s| visible(&principal, s)).map(PolicySetView::from).collect();
    Ok(Json(PolicySetList { count: policy_sets.len(), policy_sets }))
}

/// Creates a policy set.
#[utoipa::path(
    post,
    path = "/api/snapshot/policy-sets",
    tag = "policies",
    request_body = NewPolicySet,
    responses(
        (status = 201, description = "created (snapshots:write)", body = PolicySetView),
        (status = 403, description = "needs snapshots:write, or another project's set", body = ErrorBody),
        (status = 409, description = "same name and tenant_id exists", body = ErrorBody),
        (status = 422, description = "invalid; the field is named", body = ErrorBody),
    )
)]
pub async fn create_policy_set(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    ApiJson(body): ApiJson<NewPolicySet>,
) -> Result<(StatusCode, Json<PolicySetView>), ApiError> {
    let mut tenant_id = body.tenant_id.unwrap_or_default();
    if let Some(own) = principal.own_project() {
        if body.is_global {
            return Err(ApiError::forbidden(
                "a project-scoped user creates sets of the own project only; set is_global false",
            ));
        }
        if tenant_id.is_empty() {
            own.clone_into(&mut tenant_id);
        } else if tenant_id != own {
            return Err(ApiError::forbidden("tenant_id: not your project"));
        }
    }
    let set = PolicySet {
        name: body.name,
        description: body.description.unwrap_or_default(),
        is_global: body.is_global,
        tenant_id,
        tenant_name: body.tenant_name.unwrap_or_default(),
        policies: body.policies,
        retention_map: body.retention_map.into_iter().collect(),
        priority: body.priority,
        ..PolicySet::default()
    };
    let created = upstream
        .policy()
        .create_policy_set(CreatePolicySetRequest { policy_set: Some(set), actor: principal.user_name })
        .await
        .map_err(|e| ApiError::from(e).in_body("policy_set"))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(created.policy_set.unwrap_or_default().into())))
}

/// Fetches a set the caller may see, else 404.
async fn fetch(upstream: &Upstream, principal: &Principal, id: i64) -> Result<PolicySet, ApiError> {
    if id <= 0 {
        return Err(ApiError::invalid("id", "must be positive"));
    }
    let set = upstream
        .policy()
        .get_policy_set(GetPolicySetRequest { id })
        .await?
        .into_inner()
        .policy_set
        .unwrap_or_default();
    if visible(principal, &set) { Ok(set) } else { Err(ApiError::not_found("policy set", id)) }
}

/// Fails unless the caller may change `set`: global users any, project users their own.
fn may_change(principal: &Principal, set: &PolicySet) -> Result<(), ApiError> {
    if principal.own_project().is_some() && set.is_global {
        return Err(ApiError::forbidden("global sets are changed by global administrators only"));
    }
    Ok(())
}

/// One policy set.
#[utoipa::path(
    get,
    path = "/api/snapshot/policy-sets/{id}",
    tag = "policies",
    params(("id" = i64, Path, description = "policy set id")),
    responses(
        (status = 200, description = "the set (snapshots:read)", body = PolicySetView),
        (status = 404, description = "no such set (or another project's)", body = ErrorBody),
    )
)]
pub async fn get_policy_set(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    Path(id): Path<i64>,
) -> Result<Json<PolicySetView>, ApiError> {
    Ok(Json(fetch(&upstream, &principal, id).await?.into()))
}

/// Changes the fields given; the merged set is validated as on create.
#[utoipa::path(
    patch,
    path = "/api/snapshot/policy-sets/{id}",
    tag = "policies",
    params(("id" = i64, Path, description = "policy set id")),
    request_body = PolicySetPatch,
    responses(
        (status = 200, description = "changed (snapshots:write)", body = PolicySetView),
        (status = 404, description = "no such set", body = ErrorBody),
        (status = 409, description = "the new name clashes", body = ErrorBody),
        (status = 422, description = "no fields, or the merged set is invalid", body = ErrorBody),
    )
)]
pub async fn update_policy_set(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<PolicySetPatch>,
) -> Result<Json<PolicySetView>, ApiError> {
    let existing = fetch(&upstream, &principal, id).await?;
    may_change(&principal, &existing)?;
    let mut set = PolicySet::default();
    let mut paths = Vec::new();
    if let Some(name) = patch.name {
        set.name = name;
        paths.push("name");
    }
    if let Some(description) = patch.description {
        set.description = description;
        paths.push("description");
    }
    if let Some(policies) = patch.policies {
        set.policies = policies;
        paths.push("policies");
    }
    if let Some(retention_map) = patch.retention_map {
        set.retention_map = retention_map.into_iter().collect();
        paths.push("retention_map");
    }
    if let Some(priority) = patch.priority {
        set.priority = priority;
        paths.push("priority");
    }
    if let Some(is_active) = patch.is_active {
        set.is_active = is_active;
        paths.push("is_active");
    }
    if let Some(is_global) = patch.is_global {
        if principal.own_project().is_some() && is_global {
            return Err(ApiError::forbidden("is_global: a project-scoped user cannot make a set global"));
        }
        set.is_global = is_global;
        paths.push("is_global");
    }
    if let Some(tenant_id) = patch.tenant_id {
        if !principal.sees(&tenant_id) {
            return Err(ApiError::forbidden("tenant_id: not your project"));
        }
        set.tenant_id = tenant_id;
        paths.push("tenant_id");
    }
    if let Some(tenant_name) = patch.tenant_name {
        set.tenant_name = tenant_name;
        paths.push("tenant_name");
    }
    if paths.is_empty() {
        return Err(ApiError::invalid("body", "no fields to change"));
    }
    let update_mask = FieldMask { paths: paths.into_iter().map(str::to_owned).collect() };
    let updated = upstream
        .policy()
        .update_policy_set(UpdatePolicySetRequest {
            id,
            policy_set: Some(set),
            update_mask: Some(update_mask),
            actor: principal.user_name,
        })
        .await
        .map_err(|e| ApiError::from(e).in_body("policy_set"))?
        .into_inner();
    Ok(Json(updated.policy_set.unwrap_or_default().into()))
}

/// Deletes a policy set; refused while assignments reference it (never cascades).
#[utoipa::path(
    delete,
    path = "/api/snapshot/policy-sets/{id}",
    tag = "policies",
    params(("id" = i64, Path, description = "policy set id")),
    responses(
        (status = 204, description = "deleted (snapshots:admin)"),
        (status = 404, description = "no such set", body = ErrorBody),
        (status = 409, description = "assignments still reference it", body = ErrorBody),
    )
)]
pub async fn delete_policy_set(
    State(upstream): State<Upstream>,
    CanAdmin(principal): CanAdmin,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let existing = fetch(&upstream, &principal, id).await?;
    may_change(&principal, &existing)?;
    upstream.policy().delete_policy_set(DeletePolicySetRequest { id, actor: principal.user_name }).await?;
    Ok(StatusCode::NO_CONTENT)
}
