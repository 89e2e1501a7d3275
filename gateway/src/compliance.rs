//! `/api/snapshot/compliance`: per enrolled (volume, policy) whether the snapshot for the latest
//! slot exists, judged by each policy's own cadence (audit-svc), with the seed's fields and
//! summary; the daily trend; and a CSV export.
//!
//! As in the seed, `tenant_id` here is the Keystone domain. A project-scoped user sees only the
//! own project's rows.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::audit::v1::{
    ComplianceOrder, ComplianceRollup, ComplianceRow, ComplianceStatus, ComplianceSummary,
    ComplianceTrendRequest, GetComplianceRequest, ManualSnapshot, TimeRange, TrendGroupBy,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::paging::{self, PageQuery};
use crate::rbac::{CanRead, Principal, ProjectFilter};
use crate::records::csv_line;
use crate::upstream::Upstream;
use crate::wire::{list, parse_time, time, word};

/// Filters and order of the compliance rows.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ComplianceQuery {
    /// Window in days for policies without a cadence (1 to 365, default 2).
    pub days: Option<i32>,
    /// Only this Keystone domain (the seed's tenant).
    pub tenant_id: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only this policy.
    pub policy: Option<String>,
    /// Comma-separated states: compliant, pending, quota_blocked, missing, excluded.
    pub status: Option<String>,
    /// Only this volume.
    pub volume_id: Option<String>,
    /// Only rows whose last good snapshot is at or after this time or date.
    pub from: Option<String>,
    /// Only rows whose last good snapshot is before the end of this time or date.
    pub to: Option<String>,
    /// Only this region.
    pub region: Option<String>,
    /// `severity` (default), `volume_name`, `project_name`, `policy_name` or `last_snapshot_at`.
    pub order_by: Option<String>,
    /// Reverse the order.
    #[serde(default)]
    pub descending: bool,
    /// Add roll-ups by domain, project and policy.
    #[serde(default)]
    pub include_rollups: bool,
    /// Add manual snapshots (default true, as the seed).
    pub include_manual_snapshots: Option<bool>,
}

/// One (volume, policy) row with the seed's fields and the cadence-aware ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceRowView {
    /// Cinder volume id.
    pub volume_id: String,
    /// Volume name (the id when it has none).
    pub volume_name: String,
    /// Volume type.
    pub volume_type: String,
    /// Keystone domain id (the seed's tenant).
    pub tenant_id: String,
    /// Domain name.
    pub tenant_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Server id.
    pub vm_id: String,
    /// Server name.
    pub vm_name: String,
    /// Policy.
    pub policy_name: String,
    /// Retention count (the seed's name; it is a count).
    pub retention_days: i32,
    /// Our available snapshots.
    pub snapshot_count: i32,
    /// Newest snapshot of ours.
    pub last_snapshot_at: Option<String>,
    /// Newest available snapshot of ours.
    pub last_good_snapshot_at: Option<String>,
    /// True when compliant.
    pub compliant: bool,
    /// `compliant`, `pending`, `quota_blocked`, `missing` or `excluded`.
    pub status: String,
    /// The policy's schedule.
    pub policy_cadence: String,
    /// The slot judged.
    pub judged_slot: Option<String>,
    /// When the next snapshot is owed.
    pub next_due_at: Option<String>,
    /// Why the status.
    pub reason: String,
    /// Region.
    pub region: String,
}

impl From<ComplianceRow> for ComplianceRowView {
    fn from(row: ComplianceRow) -> Self {
        Self {
            status: word(row.status().as_str_name(), "COMPLIANCE_STATUS_"),
            volume_id: row.volume_id,
            volume_name: row.volume_name,
            volume_type: row.volume_type,
            tenant_id: row.tenant_id,
            tenant_name: row.tenant_name,
            project_id: row.project_id,
            project_name: row.project_name,
            vm_id: row.vm_id,
            vm_name: row.vm_name,
            policy_name: row.policy_name,
            retention_days: row.retention_count,
            snapshot_count: row.snapshot_count,
            last_snapshot_at: time(row.last_snapshot_at.as_ref()),
            last_good_snapshot_at: time(row.last_good_snapshot_at.as_ref()),
            compliant: row.compliant,
            policy_cadence: row.policy_cadence,
            judged_slot: time(row.judged_slot.as_ref()),
            next_due_at: time(row.next_due_at.as_ref()),
            reason: row.reason,
            region: row.region,
        }
    }
}

/// Counts of the states.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct SummaryView {
    /// Compliant rows.
    pub compliant: i32,
    /// Missing rows (the seed's noncompliant).
    pub noncompliant: i32,
    /// Pending rows.
    pub pending: i32,
    /// Quota-blocked rows.
    pub quota_blocked: i32,
    /// Excluded rows.
    pub excluded: i32,
    /// All rows.
    pub total: i32,
    /// compliant / (compliant + missing + quota_blocked) * 100.
    pub compliance_pct: f64,
    /// Window used for policies without cadence.
    pub days: i32,
    /// Distinct policies.
    pub policies: i32,
}

impl From<ComplianceSummary> for SummaryView {
    fn from(s: ComplianceSummary) -> Self {
        Self {
            compliant: s.compliant,
            noncompliant: s.noncompliant,
            pending: s.pending,
            quota_blocked: s.quota_blocked,
            excluded: s.excluded,
            total: s.total,
            compliance_pct: s.compliance_pct,
            days: s.days,
            policies: s.policies,
        }
    }
}

/// Counts of one domain, project or policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollupView {
    /// Domain id, project id or policy name.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Counts.
    pub summary: SummaryView,
}

impl From<ComplianceRollup> for RollupView {
    fn from(r: ComplianceRollup) -> Self {
        Self { key: r.key, name: r.name, summary: r.summary.unwrap_or_default().into() }
    }
}

/// A snapshot not created by Snapkeeper (never deleted or counted by it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ManualSnapshotView {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Snapshot name.
    pub snapshot_name: String,
    /// Volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Domain id.
    pub tenant_id: String,
    /// Domain name.
    pub tenant_name: String,
    /// Size, GiB.
    pub size_gb: i64,
    /// Cinder status.
    pub status: String,
    /// Created.
    pub created_at: Option<String>,
}

impl From<ManualSnapshot> for ManualSnapshotView {
    fn from(m: ManualSnapshot) -> Self {
        Self {
            snapshot_id: m.snapshot_id,
            snapshot_name: m.snapshot_name,
            volume_id: m.volume_id,
            volume_name: m.volume_name,
            project_id: m.project_id,
            project_name: m.project_name,
            tenant_id: m.tenant_id,
            tenant_name: m.tenant_name,
            size_gb: m.size_gb,
            status: m.status,
            created_at: time(m.created_at.as_ref()),
        }
    }
}

/// Compliance rows with summary and roll-ups.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceView {
    /// Rows of this page.
    pub rows: Vec<ComplianceRowView>,
    /// Rows matching, over all pages (the seed's count).
    pub count: i32,
    /// Page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// Token for the next page; null on the last.
    pub next_page_token: Option<String>,
    /// Counts over every matching row.
    pub summary: SummaryView,
    /// Per domain (with include_rollups).
    pub by_domain: Vec<RollupView>,
    /// Per project (with include_rollups).
    pub by_project: Vec<RollupView>,
    /// Per policy (with include_rollups).
    pub by_policy: Vec<RollupView>,
    /// Manual snapshots of the matching projects.
    pub manual_snapshots: Vec<ManualSnapshotView>,
    /// When the judgement was made.
    pub evaluated_at: Option<String>,
    /// When the inventory was listed; null before the first sync.
    pub inventory_synced_at: Option<String>,
}

impl ComplianceView {
    fn empty(limit: u32, offset: u32, days: i32) -> Self {
        Self {
            rows: Vec::new(),
            count: 0,
            limit,
            offset,
            next_page_token: None,
            summary: SummaryView { days, compliance_pct: 100.0, ..SummaryView::default() },
            by_domain: Vec::new(),
            by_project: Vec::new(),
            by_policy: Vec::new(),
            manual_snapshots: Vec::new(),
            evaluated_at: None,
            inventory_synced_at: None,
        }
    }
}

fn statuses(text: Option<&str>) -> Result<Vec<i32>, ApiError> {
    list(text)
        .iter()
        .map(|s| {
            ComplianceStatus::from_str_name(&format!("COMPLIANCE_STATUS_{}", s.to_ascii_uppercase()))
                .filter(|s| *s != ComplianceStatus::Unspecified)
                .map(|s| s as i32)
                .ok_or_else(|| {
                    ApiError::invalid("status", "use compliant, pending, quota_blocked, missing or excluded")
                })
        })
        .collect()
}

fn order(text: Option<&str>) -> Result<ComplianceOrder, ApiError> {
    match text.unwrap_or("severity") {
        "severity" => Ok(ComplianceOrder::Severity),
        "volume_name" => Ok(ComplianceOrder::VolumeName),
        "project_name" => Ok(ComplianceOrder::ProjectName),
        "policy_name" => Ok(ComplianceOrder::PolicyName),
        "last_snapshot_at" => Ok(ComplianceOrder::LastSnapshotAt),
        _ => Err(ApiError::invalid(
            "order_by",
            "use severity, volume_name, project_name, policy_name or last_snapshot_at",
        )),
    }
}

/// The request for a query, or `None` when the caller asked for a project they cannot see.
fn request(principal: &Principal, query: &ComplianceQuery) -> Result<Option<GetComplianceRequest>, ApiError> {
    if let Some(days) = query.days
        && !(1..=365).contains(&days)
    {
        return Err(ApiError::invalid("days", "must be from 1 to 365"));
    }
    let ProjectFilter::Use(project_id) = principal.project_filter(query.project_id.clone()) else {
        return Ok(None);
    };
    let from = query.from.as_deref().map(|t| parse_time("from", t, false)).transpose()?;
    let to = query.to.as_deref().map(|t| parse_time("to", t, true)).transpose()?;
    Ok(Some(GetComplianceRequest {
        days: query.days,
        tenant_id: query.tenant_id.clone(),
        project_id,
        policy: query.policy.clone(),
        statuses: statuses(query.status.as_deref())?,
        volume_id: query.volume_id.clone(),
        last_good_snapshot: (from.is_some() || to.is_some()).then_some(TimeRange { start: from, end: to }),
        region: query.region.clone(),
        order_by: order(query.order_by.as_deref())? as i32,
        descending: query.descending,
        include_rollups: query.include_rollups,
        include_manual_snapshots: query.include_manual_snapshots.unwrap_or(true),
        manual_snapshots_limit: 100,
        page_size: 0,
        page_token: String::new(),
    }))
}

/// One page of compliance (shared with the compliance page).
pub(crate) async fn compliance(
    upstream: &Upstream,
    principal: &Principal,
    query: &ComplianceQuery,
    page: &PageQuery,
) -> Result<ComplianceView, ApiError> {
    let paging = page.paging(500)?;
    let Some(base) = request(principal, query)? else {
        return Ok(ComplianceView::empty(paging.limit, paging.offset, query.days.unwrap_or(2)));
    };
    let client = upstream.audit();
    let first = std::sync::Mutex::new(None);
    let page = paging::read(&paging, |page_size, page_token| {
        let mut client = client.clone();
        let request = GetComplianceRequest { page_size, page_token, ..base.clone() };
        let first = &first;
        async move {
            let mut response = client.get_compliance(request).await?.into_inner();
            let rows = std::mem::take(&mut response.rows);
            let next = std::mem::take(&mut response.next_page_token);
            let mut kept = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if kept.is_none() {
                *kept = Some(response);
            }
            Ok((rows, next))
        }
    })
    .await?;
    let response = first.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).unwrap_or_default();
    let mut summary = SummaryView::from(response.summary.unwrap_or_default());
    if summary.days == 0 {
        summary.days = query.days.unwrap_or(2);
    }
    Ok(ComplianceView {
        rows: page.rows.into_iter().map(ComplianceRowView::from).collect(),
        count: response.total_count,
        limit: paging.limit,
        offset: paging.offset,
        next_page_token: page.next_page_token,
        summary,
        by_domain: response.by_domain.into_iter().map(RollupView::from).collect(),
        by_project: response.by_project.into_iter().map(RollupView::from).collect(),
        by_policy: response.by_policy.into_iter().map(RollupView::from).collect(),
        manual_snapshots: response.manual_snapshots.into_iter().map(ManualSnapshotView::from).collect(),
        evaluated_at: time(response.evaluated_at.as_ref()),
        inventory_synced_at: time(response.inventory_synced_at.as_ref()),
    })
}

/// Compliance per enrolled (volume, policy), seed-compatible.
#[utoipa::path(
    get,
    path = "/api/snapshot/compliance",
    tag = "audit",
    params(ComplianceQuery, PageQuery),
    responses(
        (status = 200, description = "rows, summary, roll-ups (snapshots:read); default limit 500", body = ComplianceView),
        (status = 422, description = "bad filter; the parameter is named", body = ErrorBody),
    )
)]
pub async fn get_compliance(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<ComplianceQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ComplianceView>, ApiError> {
    Ok(Json(compliance(&upstream, &principal, &query, &page).await?))
}

/// Trend options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// Days back including today, 1 to 366 (default 30).
    pub days: Option<i32>,
    /// `overall` (default), `domain`, `project` or `policy`.
    pub group_by: Option<String>,
    /// Only this Keystone domain.
    pub tenant_id: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only this policy.
    pub policy: Option<String>,
}

/// One day of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendPointView {
    /// UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// That day's counts.
    #[serde(flatten)]
    pub summary: SummaryView,
}

/// One series.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendSeriesView {
    /// Domain id, project id, policy name or `overall`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Days with a stored roll-up, oldest first.
    pub points: Vec<TrendPointView>,
}

/// Daily compliance series.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendView {
    /// Days covered.
    pub days: i32,
    /// Grouping.
    pub group_by: String,
    /// Series by name.
    pub series: Vec<TrendSeriesView>,
}

/// The trend (shared with the compliance page).
pub(crate) async fn trend(
    upstream: &Upstream,
    principal: &Principal,
    query: &TrendQuery,
) -> Result<TrendView, ApiError> {
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "must be from 1 to 366"));
    }
    let group = query.group_by.as_deref().unwrap_or("overall");
    let group_by = match group {
        "overall" => TrendGroupBy::Overall,
        "domain" => TrendGroupBy::Domain,
        "project" => TrendGroupBy::Project,
        "policy" => TrendGroupBy::Policy,
        _ => return Err(ApiError::invalid("group_by", "use overall, domain, project or policy")),
    };
    let ProjectFilter::Use(project_id) = principal.project_filter(query.project_id.clone()) else {
        return Ok(TrendView { days, group_by: group.to_owned(), series: Vec::new() });
    };
    let client = upstream.audit();
    let series = paging::read_all(1000, |page_size, page_token| {
        let mut client = client.clone();
        let request = ComplianceTrendRequest {
            days,
            group_by: group_by as i32,
            tenant_id: query.tenant_id.clone(),
            project_id: project_id.clone(),
            policy: query.policy.clone(),
            page_size,
            page_token,
        };
        async move {
            let response = client.compliance_trend(request).await?.into_inner();
            Ok((response.series, response.next_page_token))
        }
    })
    .await?;
    Ok(TrendView {
        days,
        group_by: group.to_owned(),
        series: series
            .into_iter()
            .map(|s| TrendSeriesView {
                key: s.key,
                name: s.name,
                points: s
                    .points
                    .into_iter()
                    .map(|p| TrendPointView { date: p.date, summary: p.summary.unwrap_or_default().into() })
                    .collect(),
            })
            .collect(),
    })
}

/// Daily compliance series for the last N days.
#[utoipa::path(
    get,
    path = "/api/snapshot/compliance/trend",
    tag = "audit",
    params(TrendQuery),
    responses(
        (status = 200, description = "series (snapshots:read)", body = TrendView),
        (status = 422, description = "bad option; the parameter is named", body = ErrorBody),
    )
)]
pub async fn compliance_trend(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<TrendQuery>,
) -> Result<Json<TrendView>, ApiError> {
    Ok(Json(trend(&upstream, &principal, &query).await?))
}

/// The seed UI's compliance CSV columns.
const CSV_COLUMNS: [&str; 12] = [
    "Status",
    "Volume",
    "Volume ID",
    "VM",
    "VM ID",
    "Tenant",
    "Project",
    "Policy",
    "Retention (count)",
    "Snapshots",
    "Last Snapshot",
    "Reason",
];

/// Every matching compliance row as CSV, read page by page.
#[utoipa::path(
    get,
    path = "/api/snapshot/compliance/export",
    tag = "audit",
    params(ComplianceQuery),
    responses(
        (status = 200, description = "text/csv (snapshots:read)", content_type = "text/csv", body = String),
        (status = 422, description = "bad filter", body = ErrorBody),
    )
)]
pub async fn export_compliance(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<ComplianceQuery>,
) -> Result<Response, ApiError> {
    let header_line = csv_line(&CSV_COLUMNS.map(str::to_owned));
    let filename = format!("snapshot_compliance_{}.csv", chrono::Utc::now().format("%Y-%m-%d"));
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
    ];
    let Some(base) = request(&principal, &query)? else {
        return Ok((headers, header_line).into_response());
    };
    let base = GetComplianceRequest { include_manual_snapshots: false, include_rollups: false, ..base };
    let page = move |page_token: String| GetComplianceRequest {
        page_size: paging::MAX_LIMIT as i32,
        page_token,
        ..base.clone()
    };
    let mut client = upstream.audit();
    // The first page is read before answering, so a filter audit-svc refuses is a 4xx with its
    // reason instead of a 200 whose body breaks off.
    let first = client.get_compliance(page(String::new())).await?.into_inner();
    let first_text = compliance_csv(first.rows);
    // Later pages are read as the body is sent: (client, next token; empty when finished).
    let rest = futures::stream::unfold((client, first.next_page_token), move |(mut client, token)| {
        let request = page(token.clone());
        async move {
            if token.is_empty() {
                return None;
            }
            match client.get_compliance(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    Some((Ok(compliance_csv(response.rows)), (client, response.next_page_token)))
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "compliance export failed");
                    Some((Err(std::io::Error::other("audit-svc compliance failed")), (client, String::new())))
                }
            }
        }
    });
    let body = futures::stream::iter([Ok(header_line + &first_text)]).chain(rest);
    Ok((headers, Body::from_stream(body)).into_response())
}

/// One CSV line per compliance row, in [`CSV_COLUMNS`] order.
fn compliance_csv(rows: Vec<ComplianceRow>) -> String {
    rows.into_iter()
        .map(|row| {
            let row = ComplianceRowView::from(row);
            csv_line(&[
                row.status,
                row.volume_name,
                row.volume_id,
                row.vm_name,
                row.vm_id,
                row.tenant_name,
                row.project_name,
                row.policy_name,
                row.retention_days.to_string(),
                row.snapshot_count.to_string(),
                row.last_snapshot_at.unwrap_or_default(),
                row.reason,
            ])
        })
        .collect()
}
