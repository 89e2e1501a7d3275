//! `/api/snapshot/assignments`: manual per-volume assignments (the seed's
//! `snapshot_assignments`), over policy-svc. An assignment overrides the rules for its volume; the
//! volume metadata follows at the next run's policy assignment step.
//!
//! A project-scoped user lists, reads and changes only the own project's assignments; a new one
//! is accepted only for a volume that Cinder places in that project.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use prost_types::FieldMask;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::{
    Assignment, AssignmentSource, CreateAssignmentRequest, DeleteAssignmentRequest, GetAssignmentRequest,
    ListAssignmentsRequest, UpdateAssignmentRequest,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::evaluate::volume_project;
use crate::paging::{self, PageQuery};
use crate::rbac::{CanRead, CanWrite, Principal, ProjectFilter};
use crate::upstream::Upstream;
use crate::wire::{time, word};

/// An assignment as the seed's API showed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentView {
    /// Id; null for rows derived from Cinder metadata.
    pub id: Option<i64>,
    /// Cinder volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Keystone domain id of the project.
    pub tenant_id: String,
    /// Domain name.
    pub tenant_name: String,
    /// Keystone project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Nova server id.
    pub vm_id: String,
    /// Server name.
    pub vm_name: String,
    /// Policy set the assignment was made from.
    pub policy_set_id: Option<i64>,
    /// Value of the auto_snapshot metadata key.
    pub auto_snapshot: bool,
    /// Policy names.
    pub policies: Vec<String>,
    /// Retention count per policy.
    pub retention_map: BTreeMap<String, i32>,
    /// `manual`, `api`, `rule-based` or `cinder_metadata`.
    pub assignment_source: String,
    /// Rules that matched when it was made.
    pub matched_rules: Vec<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339.
    pub updated_at: Option<String>,
    /// Who last changed it.
    pub updated_by: String,
    /// When the volume's metadata last matched it.
    pub last_verified_at: Option<String>,
}

impl From<Assignment> for AssignmentView {
    fn from(a: Assignment) -> Self {
        let source = match a.assignment_source() {
            AssignmentSource::RuleBased => "rule-based".to_owned(),
            AssignmentSource::Unspecified => "manual".to_owned(),
            other => word(other.as_str_name(), "ASSIGNMENT_SOURCE_"),
        };
        Self {
            id: (a.id != 0).then_some(a.id),
            volume_id: a.volume_id,
            volume_name: a.volume_name,
            tenant_id: a.tenant_id,
            tenant_name: a.tenant_name,
            project_id: a.project_id,
            project_name: a.project_name,
            vm_id: a.vm_id,
            vm_name: a.vm_name,
            policy_set_id: a.policy_set_id,
            auto_snapshot: a.auto_snapshot,
            policies: a.policies,
            retention_map: a.retention_map.into_iter().collect(),
            assignment_source: source,
            matched_rules: a.matched_rules,
            created_at: time(a.created_at.as_ref()),
            created_by: a.created_by,
            updated_at: time(a.updated_at.as_ref()),
            updated_by: a.updated_by,
            last_verified_at: time(a.last_verified_at.as_ref()),
        }
    }
}

/// Filters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AssignmentQuery {
    /// Only this volume.
    pub volume_id: Option<String>,
    /// Only this Keystone domain id.
    pub tenant_id: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only volumes attached to this server.
    pub vm_id: Option<String>,
    /// Only this auto_snapshot value.
    pub auto_snapshot: Option<bool>,
    /// Only assignments made from this policy set.
    pub policy_set_id: Option<i64>,
    /// Also list volumes enrolled only through their Cinder metadata (the seed's synthetic rows;
    /// costs a Cinder listing). Default false.
    #[serde(default)]
    pub include_cinder_metadata: bool,
}

/// A page of assignments.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentList {
    /// Assignments, by volume id.
    pub assignments: Vec<AssignmentView>,
    /// Rows in this page.
    pub count: usize,
    /// Stored assignments matching the filters.
    pub total: i32,
    /// Page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// Token for the next page; null on the last.
    pub next_page_token: Option<String>,
}

/// A new assignment; `auto_snapshot` defaults to true as in the seed.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAssignment {
    /// Cinder volume id.
    pub volume_id: String,
    /// Volume name.
    #[serde(default)]
    pub volume_name: Option<String>,
    /// Keystone domain id of the project.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Domain name.
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// Keystone project owning the volume.
    pub project_id: String,
    /// Project name.
    #[serde(default)]
    pub project_name: Option<String>,
    /// Nova server id.
    #[serde(default)]
    pub vm_id: Option<String>,
    /// Server name.
    #[serde(default)]
    pub vm_name: Option<String>,
    /// Policy set it comes from.
    #[serde(default)]
    pub policy_set_id: Option<i64>,
    /// Enrol (true, default) or opt the volume out (false).
    #[serde(default = "yes")]
    pub auto_snapshot: bool,
    /// Policy names.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Retention count per policy.
    #[serde(default)]
    pub retention_map: BTreeMap<String, i32>,
    /// `manual` (default), `api` or `rule-based`.
    #[serde(default)]
    pub assignment_source: Option<String>,
    /// Rules that matched (informational).
    #[serde(default)]
    pub matched_rules: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Changes to an assignment; only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AssignmentPatch {
    /// Enrol or opt out.
    pub auto_snapshot: Option<bool>,
    /// New policies.
    pub policies: Option<Vec<String>>,
    /// New retention map.
    pub retention_map: Option<BTreeMap<String, i32>>,
    /// New policy set.
    pub policy_set_id: Option<i64>,
    /// New volume name.
    pub volume_name: Option<String>,
    /// New server id.
    pub vm_id: Option<String>,
    /// New server name.
    pub vm_name: Option<String>,
}

fn source(text: Option<&str>) -> Result<AssignmentSource, ApiError> {
    match text.unwrap_or("manual") {
        "manual" => Ok(AssignmentSource::Manual),
        "api" => Ok(AssignmentSource::Api),
        "rule-based" | "rule_based" => Ok(AssignmentSource::RuleBased),
        _ => Err(ApiError::invalid("assignment_source", "must be manual, api or rule-based")),
    }
}

/// Assignments by volume id, optionally followed by volumes enrolled only by their metadata.
#[utoipa::path(
    get,
    path = "/api/snapshot/assignments",
    tag = "policies",
    params(AssignmentQuery, PageQuery),
    responses(
        (status = 200, description = "a page (snapshots:read); default limit 1000", body = AssignmentList),
        (status = 422, description = "bad paging", body = ErrorBody),
    )
)]
pub async fn list_assignments(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<AssignmentQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<AssignmentList>, ApiError> {
    let paging = page.paging(1000)?;
    let ProjectFilter::Use(project_id) = principal.project_filter(query.project_id.clone()) else {
        return Ok(Json(AssignmentList {
            assignments: Vec::new(),
            count: 0,
            total: 0,
            limit: paging.limit,
            offset: paging.offset,
            next_page_token: None,
        }));
    };
    let client = upstream.policy();
    let total = AtomicI32::new(0);
    let page = paging::read(&paging, |page_size, page_token| {
        let mut client = client.clone();
        let request = ListAssignmentsRequest {
            volume_id: query.volume_id.clone(),
            tenant_id: query.tenant_id.clone(),
            project_id: project_id.clone(),
            vm_id: query.vm_id.clone(),
            auto_snapshot: query.auto_snapshot,
            policy_set_id: query.policy_set_id,
            include_cinder_metadata: query.include_cinder_metadata,
            page_size,
            page_token,
        };
        let total = &total;
        async move {
            let response = client.list_assignments(request).await?.into_inner();
            total.store(response.total_count, Ordering::Relaxed);
            Ok((response.assignments, response.next_page_token))
        }
    })
    .await?;
    let assignments: Vec<AssignmentView> = page.rows.into_iter().map(AssignmentView::from).collect();
    Ok(Json(AssignmentList {
        count: assignments.len(),
        assignments,
        total: total.load(Ordering::Relaxed),
        limit: paging.limit,
        offset: paging.offset,
        next_page_token: page.next_page_token,
    }))
}

/// Creates the manual assignment of one volume.
#[utoipa::path(
    post,
    path = "/api/snapshot/assignments",
    tag = "policies",
    request_body = NewAssignment,
    responses(
        (status = 201, description = "created (snapshots:write)", body = AssignmentView),
        (status = 403, description = "the volume is not in your project", body = ErrorBody),
        (status = 409, description = "the volume already has an assignment", body = ErrorBody),
        (status = 422, description = "invalid; the field is named", body = ErrorBody),
    )
)]
pub async fn create_assignment(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    ApiJson(body): ApiJson<NewAssignment>,
) -> Result<(StatusCode, Json<AssignmentView>), ApiError> {
    if body.volume_id.trim().is_empty() {
        return Err(ApiError::invalid("volume_id", "required"));
    }
    if principal.own_project().is_some() {
        // The body's project_id is the caller's claim; Cinder says where the volume really is.
        let actual = volume_project(&upstream, &body.volume_id).await?;
        if !principal.sees(&body.project_id) || actual != body.project_id {
            return Err(ApiError::forbidden("project_id: the volume is not in your project"));
        }
    }
    let assignment = Assignment {
        volume_id: body.volume_id,
        volume_name: body.volume_name.unwrap_or_default(),
        tenant_id: body.tenant_id.unwrap_or_default(),
        tenant_name: body.tenant_name.unwrap_or_default(),
        project_id: body.project_id,
        project_name: body.project_name.unwrap_or_default(),
        vm_id: body.vm_id.unwrap_or_default(),
        vm_name: body.vm_name.unwrap_or_default(),
        policy_set_id: body.policy_set_id,
        auto_snapshot: body.auto_snapshot,
        policies: body.policies,
        retention_map: body.retention_map.into_iter().collect(),
        assignment_source: source(body.assignment_source.as_deref())? as i32,
        matched_rules: body.matched_rules,
        ..Assignment::default()
    };
    let created = upstream
        .policy()
        .create_assignment(CreateAssignmentRequest {
            assignment: Some(assignment),
            actor: principal.user_name,
        })
        .await
        .map_err(|e| ApiError::from(e).in_body("assignment"))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(created.assignment.unwrap_or_default().into())))
}

/// Fetches the assignment of a volume the caller may see, else 404.
async fn fetch(upstream: &Upstream, principal: &Principal, volume_id: &str) -> Result<Assignment, ApiError> {
    let assignment = upstream
        .policy()
        .get_assignment(GetAssignmentRequest { volume_id: volume_id.to_owned() })
        .await?
        .into_inner()
        .assignment
        .unwrap_or_default();
    if principal.sees(&assignment.project_id) {
        Ok(assignment)
    } else {
        Err(ApiError::not_found("assignment of volume", volume_id))
    }
}

/// The assignment of one volume.
#[utoipa::path(
    get,
    path = "/api/snapshot/assignments/{volume_id}",
    tag = "policies",
    params(("volume_id" = String, Path, description = "Cinder volume id")),
    responses(
        (status = 200, description = "the assignment (snapshots:read)", body = AssignmentView),
        (status = 404, description = "none (or another project's volume)", body = ErrorBody),
    )
)]
pub async fn get_assignment(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    Path(volume_id): Path<String>,
) -> Result<Json<AssignmentView>, ApiError> {
    Ok(Json(fetch(&upstream, &principal, &volume_id).await?.into()))
}

/// Changes the fields given.
#[utoipa::path(
    patch,
    path = "/api/snapshot/assignments/{volume_id}",
    tag = "policies",
    params(("volume_id" = String, Path, description = "Cinder volume id")),
    request_body = AssignmentPatch,
    responses(
        (status = 200, description = "changed (snapshots:write)", body = AssignmentView),
        (status = 404, description = "none (or another project's volume)", body = ErrorBody),
        (status = 422, description = "no fields, or the merged assignment is invalid", body = ErrorBody),
    )
)]
pub async fn update_assignment(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    Path(volume_id): Path<String>,
    ApiJson(patch): ApiJson<AssignmentPatch>,
) -> Result<Json<AssignmentView>, ApiError> {
    fetch(&upstream, &principal, &volume_id).await?;
    let mut assignment = Assignment::default();
    let mut paths = Vec::new();
    if let Some(auto_snapshot) = patch.auto_snapshot {
        assignment.auto_snapshot = auto_snapshot;
        paths.push("auto_snapshot");
    }
    if let Some(policies) = patch.policies {
        assignment.policies = policies;
        paths.push("policies");
    }
    if let Some(retention_map) = patch.retention_map {
        assignment.retention_map = retention_map.into_iter().collect();
        paths.push("retention_map");
    }
    if let Some(policy_set_id) = patch.policy_set_id {
        assignment.policy_set_id = Some(policy_set_id);
        paths.push("policy_set_id");
    }
    if let Some(volume_name) = patch.volume_name {
        assignment.volume_name = volume_name;
        paths.push("volume_name");
    }
    if let Some(vm_id) = patch.vm_id {
        assignment.vm_id = vm_id;
        paths.push("vm_id");
    }
    if let Some(vm_name) = patch.vm_name {
        assignment.vm_name = vm_name;
        paths.push("vm_name");
    }
    if paths.is_empty() {
        return Err(ApiError::invalid("body", "no fields to change"));
    }
    let updated = upstream
        .policy()
        .update_assignment(UpdateAssignmentRequest {
            volume_id,
            assignment: Some(assignment),
            update_mask: Some(FieldMask { paths: paths.into_iter().map(str::to_owned).collect() }),
            actor: principal.user_name,
        })
        .await
        .map_err(|e| ApiError::from(e).in_body("assignment"))?
        .into_inner();
    Ok(Json(updated.assignment.unwrap_or_default().into()))
}

/// Deletes the assignment; the rules decide for the volume again from the next run on.
#[utoipa::path(
    delete,
    path = "/api/snapshot/assignments/{volume_id}",
    tag = "policies",
    params(("volume_id" = String, Path, description = "Cinder volume id")),
    responses(
        (status = 204, description = "deleted (snapshots:write)"),
        (status = 404, description = "none (or another project's volume)", body = ErrorBody),
    )
)]
pub async fn delete_assignment(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    Path(volume_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    fetch(&upstream, &principal, &volume_id).await?;
    upstream
        .policy()
        .delete_assignment(DeleteAssignmentRequest { volume_id, actor: principal.user_name })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
