//! `/api/snapshot/exclusions`: volumes or whole projects that get no automatic snapshots until
//! the exclusion expires (the seed's `snapshot_exclusions`, now enforced), over policy-svc.
//!
//! A project-scoped user lists and changes only the own project's exclusions.

use std::sync::atomic::{AtomicI32, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::delete_exclusion_request::Selector;
use snapkeeper_proto::policy::v1::{
    CreateExclusionRequest, DeleteExclusionRequest, Exclusion, ExclusionScope, ExclusionSource,
    ListExclusionsRequest,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::evaluate::volume_project;
use crate::paging::{self, PageQuery};
use crate::rbac::{CanRead, CanWrite, ProjectFilter};
use crate::upstream::Upstream;
use crate::wire::{parse_time, time, word};

/// An exclusion as the seed's API showed it, plus its scope and whether it applies now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExclusionView {
    /// Id.
    pub id: i64,
    /// `volume` or `project`.
    pub scope: String,
    /// Cinder volume id (empty for a project exclusion).
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Keystone domain id.
    pub tenant_id: String,
    /// Domain name.
    pub tenant_name: String,
    /// Keystone project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Why.
    pub exclusion_reason: String,
    /// `manual`, `metadata_tag` or `api`.
    pub exclusion_source: String,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When it stops applying; null: never.
    pub expires_at: Option<String>,
    /// True while it applies.
    pub active: bool,
}

impl From<Exclusion> for ExclusionView {
    fn from(e: Exclusion) -> Self {
        let source = match e.exclusion_source() {
            ExclusionSource::Unspecified => "manual".to_owned(),
            other => word(other.as_str_name(), "EXCLUSION_SOURCE_"),
        };
        Self {
            id: e.id,
            scope: word(e.scope().as_str_name(), "EXCLUSION_SCOPE_"),
            volume_id: e.volume_id,
            volume_name: e.volume_name,
            tenant_id: e.tenant_id,
            tenant_name: e.tenant_name,
            project_id: e.project_id,
            project_name: e.project_name,
            exclusion_reason: e.exclusion_reason,
            exclusion_source: source,
            created_at: time(e.created_at.as_ref()),
            created_by: e.created_by,
            expires_at: time(e.expires_at.as_ref()),
            active: e.active,
        }
    }
}

/// Filters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExclusionQuery {
    /// Only this volume.
    pub volume_id: Option<String>,
    /// Only this Keystone domain id.
    pub tenant_id: Option<String>,
    /// Only this project (project-wide ones and those of its volumes).
    pub project_id: Option<String>,
    /// Only `volume` or `project` exclusions.
    pub scope: Option<String>,
    /// Also expired ones. Default false.
    #[serde(default)]
    pub include_expired: bool,
}

/// A page of exclusions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExclusionList {
    /// The exclusions.
    pub exclusions: Vec<ExclusionView>,
    /// Rows in this page.
    pub count: usize,
    /// Exclusions matching the filters.
    pub total: i32,
    /// Page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// Token for the next page; null on the last.
    pub next_page_token: Option<String>,
}

/// A new exclusion.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewExclusion {
    /// `volume` (default) or `project`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Cinder volume id (volume exclusions).
    #[serde(default)]
    pub volume_id: Option<String>,
    /// Volume name.
    #[serde(default)]
    pub volume_name: Option<String>,
    /// Keystone domain id.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Domain name.
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// Keystone project id (required for project exclusions).
    #[serde(default)]
    pub project_id: Option<String>,
    /// Project name.
    #[serde(default)]
    pub project_name: Option<String>,
    /// Why, at most 1024 characters.
    #[serde(default)]
    pub exclusion_reason: Option<String>,
    /// `manual` (default), `metadata_tag` or `api`.
    #[serde(default)]
    pub exclusion_source: Option<String>,
    /// When it stops applying (RFC 3339, in the future); absent: never.
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn scope(text: Option<&str>, field: &str) -> Result<ExclusionScope, ApiError> {
    match text.unwrap_or("volume") {
        "volume" => Ok(ExclusionScope::Volume),
        "project" => Ok(ExclusionScope::Project),
        _ => Err(ApiError::invalid(field, "must be volume or project")),
    }
}

/// Exclusions, newest first; expired ones only on request.
#[utoipa::path(
    get,
    path = "/api/snapshot/exclusions",
    tag = "policies",
    params(ExclusionQuery, PageQuery),
    responses(
        (status = 200, description = "a page (snapshots:read); default limit 1000", body = ExclusionList),
        (status = 422, description = "bad filter or paging", body = ErrorBody),
    )
)]
pub async fn list_exclusions(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<ExclusionQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ExclusionList>, ApiError> {
    let paging = page.paging(1000)?;
    let scope_filter = match query.scope.as_deref() {
        None => None,
        some => Some(scope(some, "scope")? as i32),
    };
    let ProjectFilter::Use(project_id) = principal.project_filter(query.project_id.clone()) else {
        return Ok(Json(ExclusionList {
            exclusions: Vec::new(),
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
        let request = ListExclusionsRequest {
            volume_id: query.volume_id.clone(),
            project_id: project_id.clone(),
            tenant_id: query.tenant_id.clone(),
            scope: scope_filter,
            include_expired: query.include_expired,
            page_size,
            page_token,
        };
        let total = &total;
        async move {
            let response = client.list_exclusions(request).await?.into_inner();
            total.store(response.total_count, Ordering::Relaxed);
            Ok((response.exclusions, response.next_page_token))
        }
    })
    .await?;
    let exclusions: Vec<ExclusionView> = page.rows.into_iter().map(ExclusionView::from).collect();
    Ok(Json(ExclusionList {
        count: exclusions.len(),
        exclusions,
        total: total.load(Ordering::Relaxed),
        limit: paging.limit,
        offset: paging.offset,
        next_page_token: page.next_page_token,
    }))
}

/// Excludes a volume or a project from automatic snapshots.
#[utoipa::path(
    post,
    path = "/api/snapshot/exclusions",
    tag = "policies",
    request_body = NewExclusion,
    responses(
        (status = 201, description = "created (snapshots:write)", body = ExclusionView),
        (status = 403, description = "not your project", body = ErrorBody),
        (status = 409, description = "the volume or project already has one", body = ErrorBody),
        (status = 422, description = "invalid; the field is named", body = ErrorBody),
    )
)]
pub async fn create_exclusion(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    ApiJson(body): ApiJson<NewExclusion>,
) -> Result<(StatusCode, Json<ExclusionView>), ApiError> {
    let scope = scope(body.scope.as_deref(), "scope")?;
    let volume_id = body.volume_id.unwrap_or_default();
    let mut project_id = body.project_id.unwrap_or_default();
    if let Some(own) = principal.own_project() {
        if scope == ExclusionScope::Volume {
            if volume_id.is_empty() {
                return Err(ApiError::invalid("volume_id", "required for a volume exclusion"));
            }
            let actual = volume_project(&upstream, &volume_id).await?;
            if actual != own || !(project_id.is_empty() || project_id == own) {
                return Err(ApiError::forbidden("volume_id: the volume is not in your project"));
            }
        } else if !(project_id.is_empty() || project_id == own) {
            return Err(ApiError::forbidden("project_id: not your project"));
        }
        own.clone_into(&mut project_id);
    }
    let expires_at = body.expires_at.as_deref().map(|t| parse_time("expires_at", t, false)).transpose()?;
    let source = match body.exclusion_source.as_deref().unwrap_or("manual") {
        "manual" => ExclusionSource::Manual,
        "metadata_tag" | "metadata-tag" => ExclusionSource::MetadataTag,
        "api" => ExclusionSource::Api,
        _ => return Err(ApiError::invalid("exclusion_source", "must be manual, metadata_tag or api")),
    };
    let exclusion = Exclusion {
        scope: scope as i32,
        volume_id,
        volume_name: body.volume_name.unwrap_or_default(),
        tenant_id: body.tenant_id.unwrap_or_default(),
        tenant_name: body.tenant_name.unwrap_or_default(),
        project_id,
        project_name: body.project_name.unwrap_or_default(),
        exclusion_reason: body.exclusion_reason.unwrap_or_default(),
        exclusion_source: source as i32,
        expires_at,
        ..Exclusion::default()
    };
    let created = upstream
        .policy()
        .create_exclusion(CreateExclusionRequest { exclusion: Some(exclusion), actor: principal.user_name })
        .await
        .map_err(|e| ApiError::from(e).in_body("exclusion"))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(created.exclusion.unwrap_or_default().into())))
}

/// Deletes the exclusion of a volume (expired ones included).
#[utoipa::path(
    delete,
    path = "/api/snapshot/exclusions/{volume_id}",
    tag = "policies",
    params(("volume_id" = String, Path, description = "Cinder volume id")),
    responses(
        (status = 204, description = "deleted (snapshots:write)"),
        (status = 404, description = "none (or another project's volume)", body = ErrorBody),
    )
)]
pub async fn delete_exclusion(
    State(upstream): State<Upstream>,
    CanWrite(principal): CanWrite,
    Path(volume_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = upstream
        .policy()
        .list_exclusions(ListExclusionsRequest {
            volume_id: Some(volume_id.clone()),
            scope: Some(ExclusionScope::Volume as i32),
            include_expired: true,
            page_size: 1,
            ..ListExclusionsRequest::default()
        })
        .await?
        .into_inner()
        .exclusions;
    if !found.iter().any(|e| principal.sees(&e.project_id)) {
        return Err(ApiError::not_found("exclusion of volume", volume_id));
    }
    upstream
        .policy()
        .delete_exclusion(DeleteExclusionRequest {
            selector: Some(Selector::VolumeId(volume_id)),
            actor: principal.user_name,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
