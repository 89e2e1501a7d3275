//! `/api/snapshot/rules`: the rule set that decides which volumes get which policies.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::GetRulesRequest;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::upstream::Upstream;

/// Which rule set version to read.
#[derive(Debug, Deserialize, IntoParams)]
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
    /// Number of rules.
    pub rule_count: i32,
    /// The rules document as submitted.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// The active rule set, or a stored version.
#[utoipa::path(
    get,
    path = "/api/snapshot/rules",
    tag = "policies",
    params(RulesQuery),
    responses(
        (status = 200, description = "the rule set", body = RuleSetView),
        (status = 404, description = "no such version", body = ErrorBody),
        (status = 503, description = "policy-svc unreachable", body = ErrorBody),
    )
)]
pub async fn get_rules(
    State(upstream): State<Upstream>,
    Query(query): Query<RulesQuery>,
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
        checksum: version.checksum,
        created_at: version.created_at.and_then(rfc3339),
        created_by: version.created_by,
        rule_count: version.rule_count,
        document,
    }))
}

fn rfc3339(timestamp: prost_types::Timestamp) -> Option<String> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    chrono::DateTime::from_timestamp(timestamp.seconds, nanos).map(|t| t.to_rfc3339())
}
