//! `GET /api/snapshot/quota-forecast`: whether the snapshots due within a horizon fit each
//! project's Cinder quota with a safety margin (snapshot-svc; reads only). The seed ran this as a
//! runbook; its output fields are kept.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::snapshot::v1::{ForecastQuotaRequest, ProjectForecast};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::rbac::{CanRead, Principal, ProjectFilter};
use crate::upstream::Upstream;
use crate::wire::{seconds, time, word};

/// Forecast options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForecastQuery {
    /// Extra room required, percent 0 to 100 (default 10).
    pub safety_margin_pct: Option<f64>,
    /// How far ahead, in hours, 1 to 744 (default 24).
    pub horizon_hours: Option<u32>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Region; the service's default when absent.
    pub region: Option<String>,
}

/// One quota resource of one project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceView {
    /// `gigabytes`, `snapshots`, `volume_type_gigabytes` or `volume_type_snapshots`.
    pub resource: String,
    /// Volume type of per-type resources.
    pub volume_type: String,
    /// Limit; -1 unlimited.
    pub limit: i64,
    /// In use.
    pub used: i64,
    /// limit - used; -1 unlimited.
    pub available: i64,
    /// Needed within the horizon.
    pub needed: i64,
    /// Needed with the margin.
    pub needed_with_margin: i64,
    /// used / limit * 100.
    pub pct_used: f64,
    /// (used + needed) / limit * 100.
    pub pct_after_snapshots: f64,
    /// What is missing.
    pub shortfall: i64,
    /// `ok`, `warning` or `critical`.
    pub severity: String,
}

/// One project's forecast.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectForecastView {
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Domain id.
    pub domain_id: String,
    /// Domain name.
    pub domain_name: String,
    /// `ok`, `warning` or `critical`.
    pub severity: String,
    /// Enrolled volumes.
    pub enrolled_volumes: i64,
    /// Per resource.
    pub resources: Vec<ResourceView>,
    /// Why the quota could not be read (the seed's quota_fetch_failed).
    pub error: Option<String>,
}

impl From<ProjectForecast> for ProjectForecastView {
    fn from(p: ProjectForecast) -> Self {
        Self {
            severity: word(p.severity().as_str_name(), "FORECAST_SEVERITY_"),
            project_id: p.project_id,
            project_name: p.project_name,
            domain_id: p.domain_id,
            domain_name: p.domain_name,
            enrolled_volumes: p.enrolled_volumes,
            resources: p
                .resources
                .into_iter()
                .map(|r| ResourceView {
                    resource: word(r.resource().as_str_name(), "QUOTA_RESOURCE_"),
                    severity: word(r.severity().as_str_name(), "FORECAST_SEVERITY_"),
                    volume_type: r.volume_type,
                    limit: r.limit,
                    used: r.used,
                    available: r.available,
                    needed: r.needed,
                    needed_with_margin: r.needed_with_margin,
                    pct_used: r.pct_used,
                    pct_after_snapshots: r.pct_after_snapshots,
                    shortfall: r.shortfall,
                })
                .collect(),
            error: (!p.error.is_empty()).then_some(p.error),
        }
    }
}

/// Totals.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ForecastSummaryView {
    /// Projects examined.
    pub total_projects_scanned: i32,
    /// Projects at risk.
    pub projects_at_risk: i32,
    /// Projects fine.
    pub projects_ok: i32,
    /// Critical projects.
    pub critical_count: i32,
    /// Warning projects.
    pub warning_count: i32,
    /// Enrolled volumes.
    pub total_snapshot_volumes: i64,
    /// Margin used.
    pub safety_margin_pct: f64,
    /// Horizon used, hours.
    pub horizon_hours: f64,
    /// Projects whose quota could not be read.
    pub quota_fetch_failures: i32,
}

/// The forecast, as the seed's runbook reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastView {
    /// Projects at risk, critical first.
    pub alerts: Vec<ProjectForecastView>,
    /// Projects whose quota suffices.
    pub ok_projects: Vec<ProjectForecastView>,
    /// Totals.
    pub summary: ForecastSummaryView,
    /// When computed.
    pub generated_at: Option<String>,
}

/// The forecast (shared with the forecast page).
pub(crate) async fn forecast(
    upstream: &Upstream,
    principal: &Principal,
    query: &ForecastQuery,
) -> Result<ForecastView, ApiError> {
    if let Some(margin) = query.safety_margin_pct
        && !(0.0..=100.0).contains(&margin)
    {
        return Err(ApiError::invalid("safety_margin_pct", "must be from 0 to 100"));
    }
    let hours = query.horizon_hours.unwrap_or(24);
    if !(1..=744).contains(&hours) {
        return Err(ApiError::invalid("horizon_hours", "must be from 1 to 744"));
    }
    let ProjectFilter::Use(project) = principal.project_filter(query.project_id.clone()) else {
        return Ok(ForecastView {
            alerts: Vec::new(),
            ok_projects: Vec::new(),
            summary: ForecastSummaryView::default(),
            generated_at: None,
        });
    };
    let response = upstream
        .snapshot()
        .forecast_quota(ForecastQuotaRequest {
            safety_margin_pct: query.safety_margin_pct,
            horizon: Some(prost_types::Duration { seconds: i64::from(hours) * 3600, nanos: 0 }),
            project_ids: project.into_iter().collect(),
            region: query.region.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    let summary = response.summary.unwrap_or_default();
    Ok(ForecastView {
        alerts: response.alerts.into_iter().map(ProjectForecastView::from).collect(),
        ok_projects: response.ok_projects.into_iter().map(ProjectForecastView::from).collect(),
        summary: ForecastSummaryView {
            total_projects_scanned: summary.total_projects_scanned,
            projects_at_risk: summary.projects_at_risk,
            projects_ok: summary.projects_ok,
            critical_count: summary.critical_count,
            warning_count: summary.warning_count,
            total_snapshot_volumes: summary.total_snapshot_volumes,
            safety_margin_pct: summary.safety_margin_pct,
            horizon_hours: seconds(summary.horizon.as_ref()) / 3600.0,
            quota_fetch_failures: summary.quota_fetch_failures,
        },
        generated_at: time(response.generated_at.as_ref()),
    })
}

/// Quota forecast per project for the snapshots due within the horizon.
#[utoipa::path(
    get,
    path = "/api/snapshot/quota-forecast",
    tag = "runs",
    params(ForecastQuery),
    responses(
        (status = 200, description = "the forecast (snapshots:read)", body = ForecastView),
        (status = 422, description = "bad option; the parameter is named", body = ErrorBody),
        (status = 503, description = "Cinder, Keystone or policy-svc unreachable", body = ErrorBody),
    )
)]
pub async fn quota_forecast(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<ForecastQuery>,
) -> Result<Json<ForecastView>, ApiError> {
    Ok(Json(forecast(&upstream, &principal, &query).await?))
}
