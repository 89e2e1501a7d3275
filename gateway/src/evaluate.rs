//! `POST /api/snapshot/evaluate`: "explain this volume" — which exclusion, assignment or rule
//! decides its snapshot policies and why earlier rules did not match. Nothing is written.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::evaluate_request::Target;
use snapkeeper_proto::policy::v1::{EvaluateRequest, EvaluateResponse, Volume};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::rbac::CanRead;
use crate::upstream::Upstream;
use crate::wire::{parse_time, seconds, word};

/// What to explain: a Cinder volume id (looked up), or the volume's facts given inline.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EvaluateBody {
    /// Cinder volume id to look up.
    #[serde(default)]
    pub volume_id: Option<String>,
    /// Volume facts; nothing is looked up.
    #[serde(default)]
    pub volume: Option<VolumeFacts>,
    /// Cinder region of the lookup; the service's default when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// Decide as of this time (RFC 3339); now when absent.
    #[serde(default)]
    pub at: Option<String>,
}

/// The facts of a volume that rules match on.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct VolumeFacts {
    /// Cinder volume id.
    pub id: String,
    /// Volume name.
    #[serde(default)]
    pub name: String,
    /// Keystone project id.
    #[serde(default)]
    pub project_id: String,
    /// Project name (`tenant_name` in rules).
    #[serde(default)]
    pub project_name: String,
    /// Keystone domain id.
    #[serde(default)]
    pub domain_id: String,
    /// Domain name.
    #[serde(default)]
    pub domain_name: String,
    /// Volume type.
    #[serde(default)]
    pub volume_type: String,
    /// Size in GiB.
    #[serde(default)]
    pub size_gb: i64,
    /// Bootable flag.
    #[serde(default)]
    pub bootable: bool,
    /// Availability zone.
    #[serde(default)]
    pub availability_zone: String,
    /// Cinder status.
    #[serde(default)]
    pub status: String,
    /// Volume metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl From<Volume> for VolumeFacts {
    fn from(v: Volume) -> Self {
        Self {
            id: v.id,
            name: v.name,
            project_id: v.project_id,
            project_name: v.project_name,
            domain_id: v.domain_id,
            domain_name: v.domain_name,
            volume_type: v.volume_type,
            size_gb: v.size_gb,
            bootable: v.bootable,
            availability_zone: v.availability_zone,
            status: v.status,
            metadata: v.metadata.into_iter().collect(),
        }
    }
}

impl From<VolumeFacts> for Volume {
    fn from(v: VolumeFacts) -> Self {
        Self {
            id: v.id,
            name: v.name,
            project_id: v.project_id,
            project_name: v.project_name,
            domain_id: v.domain_id,
            domain_name: v.domain_name,
            volume_type: v.volume_type,
            size_gb: v.size_gb,
            bootable: v.bootable,
            availability_zone: v.availability_zone,
            status: v.status,
            metadata: v.metadata.into_iter().collect(),
        }
    }
}

/// The decision and its explanation.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationView {
    /// What decided: `exclusion`, `assignment`, `rule` or `none`.
    pub source: String,
    /// Value of the auto_snapshot key after the decision.
    pub auto_snapshot: bool,
    /// True when snapshots will be taken.
    pub enrolled: bool,
    /// Policies with their effective retention.
    pub policies: Vec<DecidedPolicy>,
    /// Name of the matching rule.
    pub matched_rule_name: Option<String>,
    /// 0-based index of the matching rule.
    pub matched_rule_index: Option<i32>,
    /// Id of the deciding exclusion.
    pub exclusion_id: Option<i64>,
    /// Id of the deciding assignment.
    pub assignment_id: Option<i64>,
    /// Rule set version used.
    pub rule_set_version: i64,
    /// One sentence.
    pub summary: String,
    /// Rules checked in evaluation order, up to the match.
    pub rule_checks: Vec<RuleCheckView>,
    /// The volume facts the decision was made on.
    pub volume: VolumeFacts,
    /// Metadata changes the next policy assignment would write.
    pub metadata_changes: Vec<MetadataChangeView>,
}

/// One policy of a decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecidedPolicy {
    /// Policy name.
    pub name: String,
    /// Snapshots kept.
    pub retention_count: i32,
    /// Where the count comes from, e.g. `rule`, `catalog`, `legacy_default`.
    pub retention_source: String,
    /// Age limit in seconds, when the catalog sets one.
    pub max_age_seconds: Option<f64>,
    /// False for names neither in the catalog nor legacy.
    pub known: bool,
}

/// One rule checked against the volume.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleCheckView {
    /// 0-based index.
    pub rule_index: i32,
    /// Rule name.
    pub rule_name: String,
    /// Priority.
    pub priority: i32,
    /// True when every key held.
    pub matched: bool,
    /// First key that failed.
    pub failed_key: String,
    /// Why it failed.
    pub reason: String,
}

/// A change of one metadata key.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetadataChangeView {
    /// Key.
    pub key: String,
    /// Current value; null when added.
    pub old_value: Option<String>,
    /// New value; null when removed.
    pub new_value: Option<String>,
}

fn view(response: EvaluateResponse) -> EvaluationView {
    let decision = response.decision.unwrap_or_default();
    let explanation = decision.explanation.clone().unwrap_or_default();
    EvaluationView {
        source: word(decision.source().as_str_name(), "DECISION_SOURCE_"),
        auto_snapshot: decision.auto_snapshot,
        enrolled: decision.enrolled,
        policies: decision
            .policies
            .iter()
            .map(|p| DecidedPolicy {
                name: p.name.clone(),
                retention_count: p.retention_count,
                retention_source: word(p.retention_source().as_str_name(), "RETENTION_SOURCE_"),
                max_age_seconds: p.max_age.as_ref().map(|d| seconds(Some(d))),
                known: p.known,
            })
            .collect(),
        matched_rule_name: (!decision.matched_rule_name.is_empty())
            .then(|| decision.matched_rule_name.clone()),
        matched_rule_index: decision.matched_rule_index,
        exclusion_id: decision.exclusion_id,
        assignment_id: decision.assignment_id,
        rule_set_version: decision.rule_set_version,
        summary: explanation.summary,
        rule_checks: explanation
            .rule_checks
            .into_iter()
            .map(|c| RuleCheckView {
                rule_index: c.rule_index,
                rule_name: c.rule_name,
                priority: c.priority,
                matched: c.matched,
                failed_key: c.failed_key,
                reason: c.reason,
            })
            .collect(),
        volume: response.volume.unwrap_or_default().into(),
        metadata_changes: response
            .metadata_changes
            .into_iter()
            .map(|c| MetadataChangeView { key: c.key, old_value: c.old_value, new_value: c.new_value })
            .collect(),
    }
}

/// Decides for one volume and explains the decision; changes nothing.
#[utoipa::path(
    post,
    path = "/api/snapshot/evaluate",
    tag = "policies",
    request_body = EvaluateBody,
    responses(
        (status = 200, description = "the decision (snapshots:read)", body = EvaluationView),
        (status = 404, description = "no such volume (or another project's)", body = ErrorBody),
        (status = 422, description = "neither volume_id nor volume", body = ErrorBody),
        (status = 503, description = "Cinder unreachable", body = ErrorBody),
    )
)]
pub async fn evaluate(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiJson(body): ApiJson<EvaluateBody>,
) -> Result<Json<EvaluationView>, ApiError> {
    let target = match (body.volume_id.filter(|id| !id.trim().is_empty()), body.volume) {
        (Some(id), None) => Target::VolumeId(id.trim().to_owned()),
        (None, Some(volume)) => {
            if volume.id.is_empty() {
                return Err(ApiError::invalid("volume.id", "required"));
            }
            if !principal.sees(&volume.project_id) {
                return Err(ApiError::not_found("volume", &volume.id));
            }
            Target::Volume(volume.into())
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("volume_id", "give volume_id or volume, not both"));
        }
        (None, None) => return Err(ApiError::invalid("volume_id", "give volume_id or volume")),
    };
    let at = body.at.as_deref().map(|t| parse_time("at", t, false)).transpose()?;
    let shown_id = match &target {
        Target::VolumeId(id) => id.clone(),
        Target::Volume(volume) => volume.id.clone(),
    };
    let response = upstream
        .policy()
        .evaluate(EvaluateRequest { target: Some(target), region: body.region.unwrap_or_default(), at })
        .await?
        .into_inner();
    let project = response.volume.as_ref().map(|v| v.project_id.as_str()).unwrap_or_default();
    if !principal.sees(project) {
        return Err(ApiError::not_found("volume", shown_id));
    }
    Ok(Json(view(response)))
}

/// The project Cinder places a volume in (through policy-svc's lookup), for checking that a
/// project-scoped user's change concerns the own project.
pub(crate) async fn volume_project(upstream: &Upstream, volume_id: &str) -> Result<String, ApiError> {
    let response = upstream
        .policy()
        .evaluate(EvaluateRequest {
            target: Some(Target::VolumeId(volume_id.to_owned())),
            ..EvaluateRequest::default()
        })
        .await?
        .into_inner();
    Ok(response.volume.unwrap_or_default().project_id)
}
