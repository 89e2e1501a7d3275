//! The UI: server-rendered askama pages (templates in `templates/`) built from the same calls as
//! the REST API, with a small script (`static/snapkeeper.js`, no build step) for what must be
//! live: run progress over Server-Sent Events, "Sync & Snapshot Now", rules validation and the
//! explain box. Pages need the session cookie; without one they redirect to the login page.

use std::fmt::Write as _;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::AppState;
use crate::auth::encode_component;
use crate::catalog::{PolicyView, catalog};
use crate::compliance::{ComplianceQuery, ComplianceRowView, SummaryView, TrendQuery, compliance, trend};
use crate::error::ApiError;
use crate::forecast::{ForecastQuery, ForecastView, forecast};
use crate::paging::PageQuery;
use crate::policy_sets::PolicySetView;
use crate::rbac::{Permission, Principal, Scope};
use crate::records::RecordView;
use crate::runs::{
    BatchView, QuotaBlockView, RunNowStatus, RunQuery, RunView, latest_manual, progress, runs_page,
};

/// What every page shows around its content.
struct Frame {
    title: &'static str,
    nav: &'static str,
    user: String,
    access: String,
    csrf: String,
    can_admin: bool,
    can_write: bool,
}

impl Frame {
    fn new(title: &'static str, nav: &'static str, principal: &Principal, csrf: String) -> Self {
        let scope = match &principal.scope {
            Scope::Global => "all projects".to_owned(),
            Scope::Project { name, .. } => format!("project {name}"),
        };
        Self {
            title,
            nav,
            user: principal.user_name.clone(),
            access: format!("{} · {scope}", principal.permission.name()),
            csrf,
            can_admin: principal.permission >= Permission::Admin,
            can_write: principal.permission >= Permission::Write,
        }
    }
}

/// The signed-in user of a page, or a redirect to the login page that comes back here.
fn session(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(Principal, String), Redirect> {
    state.auth.page_session(headers).ok_or_else(|| {
        let next = uri.path_and_query().map_or("/", |p| p.as_str());
        Redirect::to(&format!("/login?next={}", encode_component(next)))
    })
}

fn problem(error: &ApiError) -> String {
    format!("{} ({})", error.detail().message, error.detail().code)
}

// --- login -----------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<&'static str>,
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

async fn login_page(Query(query): Query<LoginQuery>) -> LoginPage {
    let error = query.error.as_deref().map(|code| match code {
        "unauthenticated" => "Wrong user name, password, domain or project.",
        "too_many_requests" => "Too many attempts. Wait a few minutes and try again.",
        "permission_denied" => "Your Keystone roles grant no Snapkeeper access here.",
        _ => "Sign-in failed. Check the fields and try again.",
    });
    let next =
        query.next.filter(|n| n.starts_with('/') && !n.starts_with("//")).unwrap_or_else(|| "/".to_owned());
    LoginPage { next, error }
}

// --- compliance ------------------------------------------------------------------------------

/// A sortable column header.
struct SortLink {
    label: &'static str,
    href: String,
    sort: &'static str,
}

/// The trend as an inline SVG polyline.
struct TrendChart {
    points: String,
    dots: Vec<(f64, f64, String)>,
    first: String,
    last: String,
    latest: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "compliance.html")]
struct CompliancePage {
    frame: Frame,
    filters: ComplianceFilters,
    summary: SummaryView,
    rows: Vec<ComplianceRowView>,
    count: i32,
    sort_links: Vec<SortLink>,
    previous: Option<String>,
    next: Option<String>,
    export: String,
    chart: Option<TrendChart>,
    domains: Vec<Choice>,
    projects: Vec<Choice>,
    policies: Vec<String>,
    error: Option<String>,
}

/// An option of a filter: the id sent, the name shown.
struct Choice {
    id: String,
    name: String,
}

/// The roll-ups as options sorted by name, keeping `current` selectable even when it has no rows.
fn choices(rollups: &[crate::compliance::RollupView], current: &str) -> Vec<Choice> {
    let mut out: Vec<Choice> =
        rollups.iter().map(|r| Choice { id: r.key.clone(), name: r.name.clone() }).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    if !current.is_empty() && !out.iter().any(|c| c.id == current) {
        out.push(Choice { id: current.to_owned(), name: current.to_owned() });
    }
    out
}

/// The form values, echoed back.
#[derive(Debug, Default, Deserialize)]
struct ComplianceFilters {
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    order_by: String,
    #[serde(default)]
    descending: bool,
    #[serde(default)]
    offset: u32,
}

const PAGE_ROWS: u32 = 50;

impl ComplianceFilters {
    fn query(&self) -> ComplianceQuery {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        ComplianceQuery {
            tenant_id: some(&self.tenant_id),
            project_id: some(&self.project_id),
            policy: some(&self.policy),
            status: some(&self.status),
            from: some(&self.from),
            to: some(&self.to),
            order_by: some(&self.order_by),
            descending: self.descending,
            include_rollups: true,
            include_manual_snapshots: Some(false),
            ..ComplianceQuery::default()
        }
    }

    /// The query string for these filters with another order or offset.
    fn href(&self, path: &str, order_by: &str, descending: bool, offset: u32) -> String {
        let mut out = format!("{path}?");
        for (key, value) in [
            ("tenant_id", self.tenant_id.as_str()),
            ("project_id", &self.project_id),
            ("policy", &self.policy),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("order_by", order_by),
        ] {
            if !value.is_empty() {
                let _ = write!(out, "{key}={}&", encode_component(value));
            }
        }
        if descending {
            out.push_str("descending=true&");
        }
        if offset > 0 {
            let _ = write!(out, "offset={offset}&");
        }
        out.trim_end_matches(['&', '?']).to_owned()
    }
}

fn chart(points: &[(String, f64)]) -> Option<TrendChart> {
    if points.is_empty() {
        return None;
    }
    let (width, height) = (600.0, 160.0);
    let step = if points.len() > 1 { width / (points.len() - 1) as f64 } else { 0.0 };
    let mut line = String::new();
    let mut dots = Vec::new();
    for (i, (date, pct)) in points.iter().enumerate() {
        let x = 20.0 + i as f64 * step * (560.0 / width);
        let y = 10.0 + (100.0 - pct.clamp(0.0, 100.0)) / 100.0 * (height - 30.0);
        let _ = write!(line, "{x:.1},{y:.1} ");
        dots.push((x, y, format!("{date}: {pct:.1}%")));
    }
    Some(TrendChart {
        points: line.trim_end().to_owned(),
        dots,
        first: points[0].0.clone(),
        last: points[points.len() - 1].0.clone(),
        latest: format!("{:.1}%", points[points.len() - 1].1),
    })
}

async fn compliance_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Query(filters): Query<ComplianceFilters>,
) -> Response {
    let (principal, csrf) = match session(&state, &headers, &uri) {
        Ok(session) => session,
        Err(redirect) => return redirect.into_response(),
    };
    let query = filters.query();
    let page = PageQuery { limit: Some(PAGE_ROWS), offset: Some(filters.offset), page_token: None };
    let trend_query = TrendQuery {
        days: Some(30),
        group_by: None,
        tenant_id: query.tenant_id.clone(),
        project_id: query.project_id.clone(),
        policy: query.policy.clone(),
    };
    // The filter options come from the caller's whole view, not from the filtered rows.
    let everything = ComplianceQuery {
        include_rollups: true,
        include_manual_snapshots: Some(false),
        ..ComplianceQuery::default()
    };
    let one_row = PageQuery { limit: Some(1), offset: None, page_token: None };
    let (result, trend, options) = futures::join!(
        compliance(&state.upstream, &principal, &query, &page),
        trend(&state.upstream, &principal, &trend_query),
        compliance(&state.upstream, &principal, &everything, &one_row)
    );
    let (domains, projects) = match &options {
        Ok(all) => {
            (choices(&all.by_domain, &filters.tenant_id), choices(&all.by_project, &filters.project_id))
        }
        Err(_) => (choices(&[], &filters.tenant_id), choices(&[], &filters.project_id)),
    };
    let mut error = None;
    let data = match result {
        Ok(data) => Some(data),
        Err(e) => {
            error = Some(problem(&e));
            None
        }
    };
    let chart = trend.ok().and_then(|t| {
        let series = t.series.into_iter().next()?;
        chart(&series.points.iter().map(|p| (p.date.clone(), p.summary.compliance_pct)).collect::<Vec<_>>())
    });
    let columns = [
        ("Status", "severity"),
        ("Volume", "volume_name"),
        ("Project", "project_name"),
        ("Policy", "policy_name"),
        ("Last snapshot", "last_snapshot_at"),
    ];
    let current = if filters.order_by.is_empty() { "severity" } else { filters.order_by.as_str() };
    let sort_links = columns
        .iter()
        .map(|(label, key)| {
            let active = *key == current;
            let descending = active && !filters.descending;
            let sort = match (active, filters.descending) {
                (false, _) => "none",
                (true, false) => "ascending",
                (true, true) => "descending",
            };
            SortLink { label, href: filters.href("/", key, descending, 0), sort }
        })
        .collect();
    let (rows, count, summary, policies) = match data {
        Some(data) => {
            let mut policies: Vec<String> = match &options {
                Ok(all) => all.by_policy.iter().map(|r| r.key.clone()).collect(),
                Err(_) => data.rows.iter().map(|r| r.policy_name.clone()).collect(),
            };
            policies.sort();
            policies.dedup();
            (data.rows, data.count, data.summary, policies)
        }
        None => (Vec::new(), 0, SummaryView::default(), Vec::new()),
    };
    let offset = filters.offset;
    let previous = (offset > 0)
        .then(|| filters.href("/", &filters.order_by, filters.descending, offset.saturating_sub(PAGE_ROWS)));
    let next = (i64::from(offset) + i64::from(PAGE_ROWS) < i64::from(count))
        .then(|| filters.href("/", &filters.order_by, filters.descending, offset + PAGE_ROWS));
    let export = filters.href("/api/snapshot/compliance/export", &filters.order_by, filters.descending, 0);
    CompliancePage {
        frame: Frame::new("Compliance", "compliance", &principal, csrf),
        filters,
        summary,
        rows,
        count,
        sort_links,
        previous,
        next,
        export,
        chart,
        domains,
        projects,
        policies,
        error,
    }
    .into_response()
}

// --- runs ------------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "runs.html")]
struct RunsPage {
    frame: Frame,
    runs: Vec<RunView>,
    latest: Option<RunNowStatus>,
    active: bool,
    error: Option<String>,
}

async fn runs_list_page(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let (principal, csrf) = match session(&state, &headers, &uri) {
        Ok(session) => session,
        Err(redirect) => return redirect.into_response(),
    };
    let query = RunQuery {
        run_type: None,
        status_filter: None,
        dry_run: None,
        triggered_by: None,
        start_date: None,
        end_date: None,
    };
    let page = PageQuery { limit: Some(50), offset: None, page_token: None };
    let (runs, latest) =
        futures::join!(runs_page(&state.upstream, &query, &page), latest_manual(&state.upstream));
    let mut error = None;
    let runs = match runs {
        Ok(list) => list.runs,
        Err(e) => {
            error = Some(problem(&e));
            Vec::new()
        }
    };
    let latest = latest.ok().filter(|l| l.job_id.is_some());
    let active = latest.as_ref().is_some_and(|l| l.active);
    RunsPage { frame: Frame::new("Runs", "runs", &principal, csrf), runs, latest, active, error }
        .into_response()
}

#[derive(Template, WebTemplate)]
#[template(path = "run.html")]
struct RunPage {
    frame: Frame,
    run: RunView,
    batches: Vec<BatchView>,
    quota_blocks: Vec<QuotaBlockView>,
    records: Vec<RecordView>,
    active: bool,
    progress: u32,
}

async fn run_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let (principal, csrf) = match session(&state, &headers, &uri) {
        Ok(session) => session,
        Err(redirect) => return redirect.into_response(),
    };
    let view = match progress(&state.upstream, &principal, &id).await {
        Ok(view) => view,
        Err(error) => return error.into_response(),
    };
    let filter = snapkeeper_proto::audit::v1::RecordFilter {
        run_id: Some(view.run.id.clone()),
        project_id: principal.own_project().map(str::to_owned),
        ..Default::default()
    };
    let records = state
        .upstream
        .audit()
        .list_records(snapkeeper_proto::audit::v1::ListRecordsRequest {
            filter: Some(filter),
            page_size: 200,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().records.into_iter().map(RecordView::from).collect())
        .unwrap_or_default();
    RunPage {
        frame: Frame::new("Run", "runs", &principal, csrf),
        progress: view.run.progress_pct.round().clamp(0.0, 100.0) as u32,
        active: view.is_active,
        run: view.run,
        batches: view.batches,
        quota_blocks: view.quota_blocks,
        records,
    }
    .into_response()
}

// --- policies --------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "policies.html")]
struct PoliciesPage {
    frame: Frame,
    rules_document: String,
    rules_version: i64,
    catalog: Vec<PolicyView>,
    policy_sets: Vec<PolicySetView>,
    assignments: Vec<crate::assignments::AssignmentView>,
    exclusions: Vec<crate::exclusions::ExclusionView>,
    errors: Vec<String>,
}

async fn policies_page(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    use snapkeeper_proto::policy::v1::{
        GetRulesRequest, ListAssignmentsRequest, ListExclusionsRequest, ListPolicySetsRequest,
    };
    let (principal, csrf) = match session(&state, &headers, &uri) {
        Ok(session) => session,
        Err(redirect) => return redirect.into_response(),
    };
    let upstream = &state.upstream;
    let own = principal.own_project().map(str::to_owned);
    let (rules, catalog, sets, assignments, exclusions) = futures::join!(
        async { upstream.policy().get_rules(GetRulesRequest { version: None }).await },
        catalog(upstream, true, 3),
        async {
            upstream
                .policy()
                .list_policy_sets(ListPolicySetsRequest { page_size: 200, ..Default::default() })
                .await
        },
        async {
            upstream
                .policy()
                .list_assignments(ListAssignmentsRequest {
                    project_id: own.clone(),
                    page_size: 200,
                    ..Default::default()
                })
                .await
        },
        async {
            upstream
                .policy()
                .list_exclusions(ListExclusionsRequest {
                    project_id: own.clone(),
                    page_size: 200,
                    ..Default::default()
                })
                .await
        },
    );
    let mut errors = Vec::new();
    let (rules_document, rules_version) = match rules {
        Ok(r) => {
            let set = r.into_inner().rule_set.unwrap_or_default();
            let pretty = serde_json::from_str::<serde_json::Value>(&set.document)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(set.document);
            (pretty, set.version.map_or(0, |v| v.version))
        }
        Err(e) => {
            errors.push(problem(&ApiError::from(e)));
            (String::new(), 0)
        }
    };
    let catalog = match catalog {
        Ok(list) => list.policies,
        Err(e) => {
            errors.push(problem(&e));
            Vec::new()
        }
    };
    let policy_sets = match sets {
        Ok(s) => s
            .into_inner()
            .policy_sets
            .into_iter()
            .filter(|s| s.is_global || principal.sees(&s.tenant_id))
            .map(PolicySetView::from)
            .collect(),
        Err(e) => {
            errors.push(problem(&ApiError::from(e)));
            Vec::new()
        }
    };
    let assignments = match assignments {
        Ok(a) => a.into_inner().assignments.into_iter().map(Into::into).collect(),
        Err(e) => {
            errors.push(problem(&ApiError::from(e)));
            Vec::new()
        }
    };
    let exclusions = match exclusions {
        Ok(x) => x.into_inner().exclusions.into_iter().map(Into::into).collect(),
        Err(e) => {
            errors.push(problem(&ApiError::from(e)));
            Vec::new()
        }
    };
    PoliciesPage {
        frame: Frame::new("Policies", "policies", &principal, csrf),
        rules_document,
        rules_version,
        catalog,
        policy_sets,
        assignments,
        exclusions,
        errors,
    }
    .into_response()
}

// --- forecast --------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "forecast.html")]
struct ForecastPage {
    frame: Frame,
    margin: f64,
    hours: u32,
    forecast: Option<ForecastView>,
    error: Option<String>,
}

async fn forecast_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<ForecastQuery>,
) -> Response {
    let (principal, csrf) = match session(&state, &headers, &uri) {
        Ok(session) => session,
        Err(redirect) => return redirect.into_response(),
    };
    let (margin, hours) = (query.safety_margin_pct.unwrap_or(10.0), query.horizon_hours.unwrap_or(24));
    let (forecast, error) = match forecast(&state.upstream, &principal, &query).await {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(problem(&e))),
    };
    ForecastPage {
        frame: Frame::new("Quota forecast", "forecast", &principal, csrf),
        margin,
        hours,
        forecast,
        error,
    }
    .into_response()
}

// --- static files ----------------------------------------------------------------------------

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../static/snapkeeper.css"))
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../static/snapkeeper.js"))
}

/// The UI's routes.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(compliance_page))
        .route("/login", get(login_page))
        .route("/runs", get(runs_list_page))
        .route("/runs/{id}", get(run_page))
        .route("/policies", get(policies_page))
        .route("/forecast", get(forecast_page))
        .route("/static/snapkeeper.css", get(stylesheet))
        .route("/static/snapkeeper.js", get(script))
        .with_state(state)
}
