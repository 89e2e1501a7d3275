//! `GET /api/snapshot/policies`: the policy catalog (stored entries, entries of the rules
//! document, legacy names in use) with each policy's current and next slots.

use axum::Json;
use axum::extract::State;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::policy::v1::{ListPoliciesRequest, NextSlotsRequest, Policy, next_slots_request};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::paging;
use crate::rbac::CanRead;
use crate::upstream::Upstream;
use crate::wire::{seconds, time, word};

/// Most catalog entries listed.
const MAX_POLICIES: usize = 5_000;

/// Options of the catalog listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Also legacy names in use without a catalog entry. Default true.
    pub include_legacy: Option<bool>,
    /// Next slots to show per policy, 0 to 10. Default 3.
    pub next_slots: Option<u8>,
}

/// One policy of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Human-readable schedule, e.g. "daily at 00:00 UTC".
    pub cadence: String,
    /// `catalog`, `rules_file` or `legacy_name`.
    pub source: String,
    /// Snapshots kept per volume.
    pub retention_count: i32,
    /// Age limit in seconds.
    pub max_age_seconds: Option<f64>,
    /// Grace before a missing snapshot counts, in seconds.
    pub compliance_grace_seconds: Option<f64>,
    /// Latest slot at or before now.
    pub current_slot: Option<String>,
    /// The next slots.
    pub next_slots: Vec<String>,
    /// Why slots could not be computed.
    pub error: Option<String>,
}

/// The catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// Policies by name.
    pub policies: Vec<PolicyView>,
    /// How many.
    pub count: usize,
}

/// The policy catalog with next slots.
#[utoipa::path(
    get,
    path = "/api/snapshot/policies",
    tag = "policies",
    params(CatalogQuery),
    responses(
        (status = 200, description = "the catalog (snapshots:read)", body = PolicyList),
        (status = 401, description = "not signed in", body = ErrorBody),
    )
)]
pub async fn list_policies(
    State(upstream): State<Upstream>,
    CanRead(_principal): CanRead,
    ApiQuery(query): ApiQuery<CatalogQuery>,
) -> Result<Json<PolicyList>, ApiError> {
    Ok(Json(catalog(&upstream, query.include_legacy.unwrap_or(true), query.next_slots.unwrap_or(3)).await?))
}

/// The catalog with up to `slots` next slots per policy (shared with the policies page).
pub(crate) async fn catalog(
    upstream: &Upstream,
    include_legacy: bool,
    slots: u8,
) -> Result<PolicyList, ApiError> {
    if slots > 10 {
        return Err(ApiError::invalid("next_slots", "must be from 0 to 10"));
    }
    let client = upstream.policy();
    let policies = paging::read_all(MAX_POLICIES, |page_size, page_token| {
        let mut client = client.clone();
        async move {
            let response = client
                .list_policies(ListPoliciesRequest { include_legacy, page_size, page_token })
                .await?
                .into_inner();
            Ok((response.policies, response.next_page_token))
        }
    })
    .await?;
    let views = join_all(policies.into_iter().map(|policy| with_slots(upstream, policy, slots))).await;
    Ok(PolicyList { count: views.len(), policies: views })
}

async fn with_slots(upstream: &Upstream, policy: Policy, slots: u8) -> PolicyView {
    let mut view = PolicyView {
        source: word(policy.source().as_str_name(), "POLICY_SOURCE_"),
        retention_count: policy.retention.as_ref().map_or(0, |r| r.count),
        max_age_seconds: policy.retention.as_ref().and_then(|r| r.max_age.as_ref()).map(|d| seconds(Some(d))),
        compliance_grace_seconds: policy.compliance_grace.as_ref().map(|d| seconds(Some(d))),
        name: policy.name.clone(),
        description: policy.description,
        cadence: policy.cadence,
        current_slot: None,
        next_slots: Vec::new(),
        error: None,
    };
    if slots == 0 {
        return view;
    }
    let request = NextSlotsRequest {
        target: Some(next_slots_request::Target::PolicyName(policy.name)),
        after: None,
        count: i32::from(slots),
    };
    match upstream.policy().next_slots(request).await {
        Ok(response) => {
            let response = response.into_inner();
            view.current_slot = time(response.current_slot.as_ref());
            view.next_slots = response.next_slots.iter().filter_map(|t| time(Some(t))).collect();
        }
        // One policy without slots should not hide the catalog.
        Err(status) => view.error = Some(status.message().to_owned()),
    }
    view
}
