//! `/api/snapshot/rules`: the rule set that decides which volumes get which policies — read it,
//! check a document (every problem at once), or replace it (a rejected document leaves the active
//! set untouched).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::{
    GetRulesRequest, ReplaceRulesRequest, RuleProblem, RuleSetVersion, ValidateRulesRequest,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ApiText, ErrorBody, ErrorDetail};
use crate::rbac::{CanAdmin, CanRead, CanWrite};
use crate::upstream::Upstream;
use crate::wire::{time, word};

/// Which rule set version to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RulesQuery {
    /// A stored version; the active one when absent.
    pub version: Option<i64>,
}

/// A stored rule set.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleSetView {
    /// Version number; 0 when no rule set was stored yet.
    pub version: i64,
    /// `sha256:` and the hex digest of the document.
    pub checksum: String,
    /// When it was stored (RFC 3339).
    pub created_at: Option<String>,
    /// Who stored it, or `file:<path>`.
    pub created_by: String,
    /// `api` or `file`.
    pub source: String,
    /// Why it changed.
    pub comment: String,
    /// True for the version in force.
    pub active: bool,
    /// Number of rules.
    pub rule_count: i32,
    /// Number of catalog entries the document defines.
    pub policy_count: i32,
    /// The rules document as submitted.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// A version record.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// Version number.
    pub version: i64,
    /// Checksum of the document.
    pub checksum: String,
    /// When it was stored.
    pub created_at: Option<String>,
    /// Who stored it.
    pub created_by: String,
    /// Number of rules.
    pub rule_count: i32,
}

impl From<RuleSetVersion> for VersionView {
    fn from(v: RuleSetVersion) -> Self {
        Self {
            version: v.version,
            checksum: v.checksum,
            created_at: time(v.created_at.as_ref()),
            created_by: v.created_by,
            rule_count: v.rule_count,
        }
    }
}

/// One problem of a rules document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemView {
    /// Kind, e.g. `unknown_key`, `bad_regex`, `unknown_policy`.
    pub code: String,
    /// 0-based rule index; null for document or catalog problems.
    pub rule_index: Option<i32>,
    /// Rule name.
    pub rule_name: String,
    /// Catalog entry, for catalog problems.
    pub policy_name: String,
    /// Offending key, e.g. `match.volume_type`.
    pub key: String,
    /// JSON Pointer to the offending value.
    pub path: String,
    /// Why.
    pub reason: String,
    /// 1-based line, 0 when unknown.
    pub line: i32,
}

impl From<RuleProblem> for ProblemView {
    fn from(p: RuleProblem) -> Self {
        Self {
            code: word(p.code().as_str_name(), "PROBLEM_CODE_"),
            rule_index: p.rule_index,
            rule_name: p.rule_name,
            policy_name: p.policy_name,
            key: p.key,
            path: p.path,
            reason: p.reason,
            line: p.line,
        }
    }
}

/// A document that passed validation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationView {
    /// True.
    pub valid: bool,
    /// Number of rules.
    pub rule_count: i32,
    /// Number of catalog entries.
    pub policy_count: i32,
    /// Checksum it would be stored under.
    pub checksum: String,
    /// Empty.
    pub problems: Vec<ProblemView>,
}

/// A rejected document: the error and every problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesRejected {
    /// `invalid_argument`, naming the first problem's path.
    pub error: ErrorDetail,
    /// False.
    pub valid: bool,
    /// Every problem in document order.
    pub problems: Vec<ProblemView>,
}

/// The outcome of a replace.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplaceView {
    /// True.
    pub accepted: bool,
    /// True when the document equals the active one (no new version).
    pub unchanged: bool,
    /// The version now active.
    pub active_version: VersionView,
}

/// Options of a replace.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplaceQuery {
    /// Refuse (409) unless this is the active version.
    pub expected_version: Option<i64>,
    /// Why it changes (stored with the version).
    pub comment: Option<String>,
}

fn rejected(problems: Vec<RuleProblem>) -> Response {
    let problems: Vec<ProblemView> = problems.into_iter().map(ProblemView::from).collect();
    let first = problems.first();
    let error = ErrorDetail {
        code: "invalid_argument",
        message: format!(
            "the rules document has {} problem(s){}",
            problems.len(),
            first.map(|p| format!("; first: {}", p.reason)).unwrap_or_default()
        ),
        field: first.map(|p| if p.path.is_empty() { "document".to_owned() } else { p.path.clone() }),
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(RulesRejected { error, valid: false, problems })).into_response()
}

/// The active rule set, or a stored version.
#[utoipa::path(
    get,
    path = "/api/snapshot/rules",
    tag = "policies",
    params(RulesQuery),
    responses(
        (status = 200, description = "the rule set (snapshots:read)", body = RuleSetView),
        (status = 404, description = "no such version", body = ErrorBody),
        (status = 503, description = "policy-svc unreachable", body = ErrorBody),
    )
)]
pub async fn get_rules(
    State(upstream): State<Upstream>,
    CanRead(_principal): CanRead,
    ApiQuery(query): ApiQuery<RulesQuery>,
) -> Result<Json<RuleSetView>, ApiError> {
    let response =
        upstream.policy().get_rules(GetRulesRequest { version: query.version }).await?.into_inner();
    let rule_set = response.rule_set.unwrap_or_default();
    let version = rule_set.version.unwrap_or_default();
    // An empty document (nothing stored yet) reads as an empty rule list.
    let document = if rule_set.document.trim().is_empty() {
        serde_json::Value::Array(Vec::new())
    } else {
        serde_json::from_str(&rule_set.document).unwrap_or(serde_json::Value::String(rule_set.document))
    };
    Ok(Json(RuleSetView {
        version: version.version,
        checksum: version.checksum.clone(),
        created_at: time(version.created_at.as_ref()),
        created_by: version.created_by.clone(),
        source: word(version.source().as_str_name(), "RULE_SET_SOURCE_"),
        comment: version.comment,
        active: version.active,
        rule_count: version.rule_count,
        policy_count: version.policy_count,
        document,
    }))
}

/// Checks a rules document (the request body, JSON) without storing it.
#[utoipa::path(
    post,
    path = "/api/snapshot/rules/validate",
    tag = "policies",
    request_body(content = Object, content_type = "application/json",
                 description = "the rules document: the seed's array, or {policies, rules}"),
    responses(
        (status = 200, description = "valid (snapshots:write)", body = ValidationView),
        (status = 422, description = "every problem found", body = RulesRejected),
    )
)]
pub async fn validate_rules(
    State(upstream): State<Upstream>,
    CanWrite(_principal): CanWrite,
    ApiText(document): ApiText,
) -> Result<Response, ApiError> {
    if document.trim().is_empty() {
        return Err(ApiError::invalid("document", "the body must be the rules document"));
    }
    let response = upstream.policy().validate_rules(ValidateRulesRequest { document }).await?.into_inner();
    if !response.valid {
        return Ok(rejected(response.problems));
    }
    Ok(Json(ValidationView {
        valid: true,
        rule_count: response.rule_count,
        policy_count: response.policy_count,
        checksum: response.checksum,
        problems: Vec::new(),
    })
    .into_response())
}

/// Replaces the active rule set with the request body (JSON) when it has no problems.
#[utoipa::path(
    put,
    path = "/api/snapshot/rules",
    tag = "policies",
    params(ReplaceQuery),
    request_body(content = Object, content_type = "application/json",
                 description = "the rules document: the seed's array, or {policies, rules}"),
    responses(
        (status = 200, description = "active now (snapshots:admin, every project)", body = ReplaceView),
        (status = 403, description = "needs snapshots:admin over every project", body = ErrorBody),
        (status = 409, description = "expected_version is not the active version", body = ErrorBody),
        (status = 422, description = "rejected; the active set is unchanged", body = RulesRejected),
    )
)]
pub async fn replace_rules(
    State(upstream): State<Upstream>,
    CanAdmin(principal): CanAdmin,
    ApiQuery(query): ApiQuery<ReplaceQuery>,
    ApiText(document): ApiText,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    if document.trim().is_empty() {
        return Err(ApiError::invalid("document", "the body must be the rules document"));
    }
    let response = upstream
        .policy()
        .replace_rules(ReplaceRulesRequest {
            document,
            expected_version: query.expected_version,
            actor: principal.user_name.clone(),
            comment: query.comment.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if !response.accepted {
        return Ok(rejected(response.problems));
    }
    tracing::info!(user = %principal.user_name, unchanged = response.unchanged, "rules replaced");
    Ok(Json(ReplaceView {
        accepted: true,
        unchanged: response.unchanged,
        active_version: response.active_version.unwrap_or_default().into(),
    })
    .into_response())
}
