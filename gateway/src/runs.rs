//! Runs over snapshot-svc (live state) and audit-svc (their records): the list, one run with its
//! records, progress (active run or one run, with batches, quota blocks and ETA), live events as
//! Server-Sent Events, "Sync & Snapshot Now" (`run-now`, 202 / 409 with the active job id) and
//! its status, and cancelling a run.
//!
//! Runs cover many projects; a project-scoped user sees run figures but only the own project's
//! batches, quota blocks and records, and a run-now of theirs covers only their project.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use snapkeeper_proto::audit::v1::{ListRecordsRequest, RecordFilter};
use snapkeeper_proto::snapshot::v1::watch_run_response::Event as WatchEvent;
use snapkeeper_proto::snapshot::v1::{
    Batch, CancelRunRequest, GetActiveRunRequest, GetRunRequest, ListRunsRequest, QuotaBlock, Run, RunKind,
    RunProgress, RunScope, RunStatus, RunStep, StartRunRequest, TimeRange, WatchRunRequest,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody, ErrorDetail};
use crate::paging::{self, PageQuery};
use crate::rbac::{CanAdmin, CanRead, Principal};
use crate::records::RecordView;
use crate::upstream::Upstream;
use crate::wire::{list, parse_time, seconds, time, word};

/// Records shown with one run.
const RUN_RECORDS: i32 = 1000;

/// A run with the seed's fields (`snapshot_runs` and `snapshot_on_demand_runs` together).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    /// Run id (UUID); also the seed's `job_id`.
    pub id: String,
    /// `manual` or `scheduled` (the seed put the policy name here; a run now covers all).
    pub run_type: String,
    /// `pending`, `running`, `completed`, `partial`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// Dry run: nothing was changed.
    pub dry_run: bool,
    /// User name, or `scheduler`.
    pub triggered_by: String,
    /// `manual` or `scheduled`.
    pub trigger_source: String,
    /// Host executing it.
    pub execution_host: String,
    /// Policies considered.
    pub policies: Vec<String>,
    /// Projects the run was limited to; empty: all.
    pub scope_project_ids: Vec<String>,
    /// When it was queued.
    pub created_at: Option<String>,
    /// When a worker picked it up.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Enrolled volumes in scope.
    pub total_volumes: i64,
    /// Volumes done in the snapshots step.
    pub processed_volumes: i64,
    /// Snapshots created.
    pub snapshots_created: i64,
    /// Snapshots deleted by retention.
    pub snapshots_deleted: i64,
    /// Creates that failed.
    pub snapshots_failed: i64,
    /// Due pairs skipped (not quota).
    pub volumes_skipped: i64,
    /// Due pairs blocked by quota.
    pub quota_blocked: i64,
    /// Dry run: snapshots that would be created.
    pub would_create: i64,
    /// Dry run: snapshots that would be deleted.
    pub would_delete: i64,
    /// Batches planned.
    pub total_batches: i32,
    /// Batches finished.
    pub completed_batches: i32,
    /// Batch in progress (1-based; 0 before the first).
    pub current_batch: i32,
    /// Volumes per batch.
    pub batch_size_config: i32,
    /// Pause between batches in seconds.
    pub batch_delay_sec: f64,
    /// Overall progress 0 to 100.
    pub progress_pct: f64,
    /// Observed rate.
    pub volumes_per_minute: f64,
    /// Estimated finish.
    pub estimated_finish_at: Option<String>,
    /// What went wrong.
    pub error_summary: String,
    /// The four steps in order.
    pub steps: Vec<StepView>,
}

/// One step of a run (the seed's run-now steps).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    /// `policy_assign`, `inventory_pre`, `snapshots` or `inventory_post`.
    pub key: String,
    /// Display label.
    pub label: String,
    /// `pending`, `running`, `completed`, `failed` or `skipped`.
    pub status: String,
    /// When it started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Figures, e.g. "12000 volumes, 14 changed, 0 failed".
    pub detail: String,
}

/// One batch of the snapshots step (whole projects).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    /// 1-based.
    pub batch_number: i32,
    /// Region.
    pub region: String,
    /// Project ids (the seed's tenant_ids).
    pub tenant_ids: Vec<String>,
    /// Project names (the seed's tenant_names).
    pub tenant_names: Vec<String>,
    /// Volumes in the batch.
    pub total_volumes: i32,
    /// Snapshots created.
    pub completed: i32,
    /// Creates failed.
    pub failed: i32,
    /// Due pairs skipped.
    pub skipped: i32,
    /// Due pairs quota-blocked.
    pub quota_blocked: i32,
    /// Snapshots deleted.
    pub deleted: i32,
    /// `pending`, `running`, `completed`, `partial`, `failed` or `cancelled`.
    pub status: String,
    /// When it started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error_message: String,
}

/// A snapshot not attempted because of quota (the seed's `snapshot_quota_blocks`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaBlockView {
    /// Cinder volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Volume size, GiB.
    pub volume_size_gb: i64,
    /// Volume type.
    pub volume_type: String,
    /// Project name (the seed's tenant_name).
    pub tenant_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Domain name.
    pub domain_name: String,
    /// Policy.
    pub policy_name: String,
    /// Gigabytes limit.
    pub quota_limit_gb: i64,
    /// Gigabytes in use.
    pub quota_used_gb: i64,
    /// Gigabytes needed.
    pub quota_needed_gb: i64,
    /// Snapshot count limit.
    pub snapshot_quota_limit: i64,
    /// Snapshots in use.
    pub snapshot_quota_used: i64,
    /// `gigabytes_exceeded`, `snapshots_exceeded`, `volume_type_gigabytes_exceeded`, ...
    pub block_reason: String,
    /// Human-readable figures.
    pub detail: String,
    /// When it was decided.
    pub occurred_at: Option<String>,
}

fn kind_word(kind: RunKind) -> String {
    word(kind.as_str_name(), "RUN_KIND_")
}

fn step_view(step: &RunStep) -> StepView {
    StepView {
        key: word(step.key().as_str_name(), "STEP_KEY_"),
        label: step.label.clone(),
        status: word(step.status().as_str_name(), "STEP_STATUS_"),
        started_at: time(step.started_at.as_ref()),
        finished_at: time(step.finished_at.as_ref()),
        error: (!step.error.is_empty()).then(|| step.error.clone()),
        detail: step.detail.clone(),
    }
}

pub(crate) fn run_view(run: &Run) -> RunView {
    let counters = run.counters.unwrap_or_default();
    let scope = run.scope.clone().unwrap_or_default();
    RunView {
        id: run.run_id.clone(),
        run_type: kind_word(run.kind()),
        status: word(run.status().as_str_name(), "RUN_STATUS_"),
        dry_run: run.dry_run,
        triggered_by: run.triggered_by.clone(),
        trigger_source: kind_word(run.kind()),
        execution_host: run.execution_host.clone(),
        policies: run.policies.clone(),
        scope_project_ids: scope.project_ids,
        created_at: time(run.created_at.as_ref()),
        started_at: time(run.started_at.as_ref()),
        finished_at: time(run.finished_at.as_ref()),
        total_volumes: counters.total_volumes,
        processed_volumes: counters.processed_volumes,
        snapshots_created: counters.snapshots_created,
        snapshots_deleted: counters.snapshots_deleted,
        snapshots_failed: counters.snapshots_failed,
        volumes_skipped: counters.volumes_skipped,
        quota_blocked: counters.quota_blocked,
        would_create: counters.would_create,
        would_delete: counters.would_delete,
        total_batches: run.total_batches,
        completed_batches: run.completed_batches,
        current_batch: run.current_batch,
        batch_size_config: run.batch_size,
        batch_delay_sec: seconds(run.batch_delay.as_ref()),
        progress_pct: run.progress_pct,
        volumes_per_minute: run.volumes_per_minute,
        estimated_finish_at: time(run.estimated_finish_at.as_ref()),
        error_summary: run.error_summary.clone(),
        steps: run.steps.iter().map(step_view).collect(),
    }
}

/// A batch as `principal` may see it: `None` when none of its projects is theirs; other
/// projects' ids and names are left out.
pub(crate) fn batch_view(principal: &Principal, batch: &Batch) -> Option<BatchView> {
    let (tenant_ids, tenant_names): (Vec<String>, Vec<String>) = batch
        .project_ids
        .iter()
        .zip(batch.project_names.iter().chain(std::iter::repeat(&String::new())))
        .filter(|(id, _)| principal.sees(id))
        .map(|(id, name)| (id.clone(), name.clone()))
        .unzip();
    if tenant_ids.is_empty() && !batch.project_ids.is_empty() {
        return None;
    }
    Some(BatchView {
        batch_number: batch.batch_number,
        region: batch.region.clone(),
        tenant_ids,
        tenant_names,
        total_volumes: batch.total_volumes,
        completed: batch.completed,
        failed: batch.failed,
        skipped: batch.skipped,
        quota_blocked: batch.quota_blocked,
        deleted: batch.deleted,
        status: word(batch.status().as_str_name(), "BATCH_STATUS_"),
        started_at: time(batch.started_at.as_ref()),
        finished_at: time(batch.finished_at.as_ref()),
        error_message: batch.error_message.clone(),
    })
}

fn quota_block_view(block: &QuotaBlock) -> QuotaBlockView {
    QuotaBlockView {
        volume_id: block.volume_id.clone(),
        volume_name: block.volume_name.clone(),
        volume_size_gb: block.volume_size_gb,
        volume_type: block.volume_type.clone(),
        tenant_name: block.project_name.clone(),
        project_id: block.project_id.clone(),
        project_name: block.project_name.clone(),
        domain_name: block.domain_name.clone(),
        policy_name: block.policy_name.clone(),
        quota_limit_gb: block.quota_limit_gb,
        quota_used_gb: block.quota_used_gb,
        quota_needed_gb: block.quota_needed_gb,
        snapshot_quota_limit: block.snapshot_quota_limit,
        snapshot_quota_used: block.snapshot_quota_used,
        block_reason: word(block.reason().as_str_name(), "QUOTA_BLOCK_REASON_"),
        detail: block.detail.clone(),
        occurred_at: time(block.occurred_at.as_ref()),
    }
}

fn batches(principal: &Principal, batches: &[Batch]) -> Vec<BatchView> {
    batches.iter().filter_map(|b| batch_view(principal, b)).collect()
}

/// Checks that a path run id is a UUID.
fn run_id(text: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(text)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| ApiError::invalid("run_id", "must be a UUID"))
}

fn status_filter(text: Option<&str>) -> Result<Vec<i32>, ApiError> {
    list(text)
        .iter()
        .map(|s| {
            // The seed's UI asked for `success`, which its worker never wrote.
            let name = if s == "success" { "completed" } else { s.as_str() };
            RunStatus::from_str_name(&format!("RUN_STATUS_{}", name.to_ascii_uppercase()))
                .filter(|s| *s != RunStatus::Unspecified)
                .map(|s| s as i32)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "status_filter",
                        "use pending, running, completed, partial, failed, cancelled or interrupted",
                    )
                })
        })
        .collect()
}

fn kind_filter(text: Option<&str>) -> Result<Option<i32>, ApiError> {
    match text {
        None | Some("") => Ok(None),
        Some("manual") => Ok(Some(RunKind::Manual as i32)),
        Some("scheduled") => Ok(Some(RunKind::Scheduled as i32)),
        Some(_) => Err(ApiError::invalid("run_type", "must be manual or scheduled")),
    }
}

/// Filters of the run list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// `manual` or `scheduled`.
    pub run_type: Option<String>,
    /// Comma-separated states (`success` means `completed`).
    pub status_filter: Option<String>,
    /// Only dry runs (true) or real runs (false).
    pub dry_run: Option<bool>,
    /// Only runs triggered by this user (or `scheduler`).
    pub triggered_by: Option<String>,
    /// Only runs created at or after this time (RFC 3339 or date).
    pub start_date: Option<String>,
    /// Only runs created before the end of this time or date.
    pub end_date: Option<String>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// The runs.
    pub runs: Vec<RunView>,
    /// Rows in this page.
    pub count: usize,
    /// Runs matching the filters.
    pub total: i32,
    /// Page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// Token for the next page; null on the last.
    pub next_page_token: Option<String>,
}

/// Runs, newest first.
#[utoipa::path(
    get,
    path = "/api/snapshot/runs",
    tag = "runs",
    params(RunQuery, PageQuery),
    responses(
        (status = 200, description = "a page (snapshots:read); default limit 100", body = RunList),
        (status = 422, description = "bad filter or paging; the parameter is named", body = ErrorBody),
    )
)]
pub async fn list_runs(
    State(upstream): State<Upstream>,
    CanRead(_principal): CanRead,
    ApiQuery(query): ApiQuery<RunQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<RunList>, ApiError> {
    Ok(Json(runs_page(&upstream, &query, &page).await?))
}

/// One page of runs (shared with the runs page).
pub(crate) async fn runs_page(
    upstream: &Upstream,
    query: &RunQuery,
    page: &PageQuery,
) -> Result<RunList, ApiError> {
    let paging = page.paging(100)?;
    let kind = kind_filter(query.run_type.as_deref())?;
    let statuses = status_filter(query.status_filter.as_deref())?;
    let start = query.start_date.as_deref().map(|t| parse_time("start_date", t, false)).transpose()?;
    let end = query.end_date.as_deref().map(|t| parse_time("end_date", t, true)).transpose()?;
    let created = (start.is_some() || end.is_some()).then_some(TimeRange { start, end });
    let client = upstream.snapshot();
    let total = std::sync::atomic::AtomicI32::new(0);
    let page = paging::read(&paging, |page_size, page_token| {
        let mut client = client.clone();
        let request = ListRunsRequest {
            kind,
            statuses: statuses.clone(),
            created,
            dry_run: query.dry_run,
            triggered_by: query.triggered_by.clone(),
            page_size,
            page_token,
        };
        let total = &total;
        async move {
            let response = client.list_runs(request).await?.into_inner();
            total.store(response.total_count, std::sync::atomic::Ordering::Relaxed);
            Ok((response.runs, response.next_page_token))
        }
    })
    .await?;
    let runs: Vec<RunView> = page.rows.iter().map(run_view).collect();
    Ok(RunList {
        count: runs.len(),
        runs,
        total: total.load(std::sync::atomic::Ordering::Relaxed),
        limit: paging.limit,
        offset: paging.offset,
        next_page_token: page.next_page_token,
    })
}

/// One run with its records.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunView,
    /// Its records (the caller's projects only), newest first, at most 1000.
    pub records: Vec<RecordView>,
}

/// One run with its snapshot records.
#[utoipa::path(
    get,
    path = "/api/snapshot/runs/{run_id}",
    tag = "runs",
    params(("run_id" = String, Path, description = "run id (UUID)")),
    responses(
        (status = 200, description = "the run (snapshots:read)", body = RunDetail),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 422, description = "run_id is not a UUID", body = ErrorBody),
    )
)]
pub async fn get_run(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let id = run_id(&id)?;
    let run = upstream
        .snapshot()
        .get_run(GetRunRequest { run_id: id.clone(), ..GetRunRequest::default() })
        .await?
        .into_inner()
        .run
        .unwrap_or_default();
    let filter = RecordFilter {
        run_id: Some(id),
        project_id: principal.own_project().map(str::to_owned),
        ..RecordFilter::default()
    };
    let records = upstream
        .audit()
        .list_records(ListRecordsRequest {
            filter: Some(filter),
            page_size: RUN_RECORDS,
            ..ListRecordsRequest::default()
        })
        .await?
        .into_inner()
        .records;
    Ok(Json(RunDetail { run: run_view(&run), records: records.into_iter().map(RecordView::from).collect() }))
}

/// The active run's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveProgress {
    /// True while a run is pending or running.
    pub active: bool,
    /// The run; null when none is active.
    pub run: Option<RunView>,
    /// Its batches (the caller's projects).
    pub batches: Vec<BatchView>,
}

/// Progress of the active run (a manual one is preferred). Reads only: a run whose worker died
/// is marked interrupted by snapshot-svc's heartbeat check, never by this GET.
#[utoipa::path(
    get,
    path = "/api/snapshot/runs/active/progress",
    tag = "runs",
    responses((status = 200, description = "the active run, if any (snapshots:read)", body = ActiveProgress))
)]
pub async fn active_progress(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
) -> Result<Json<ActiveProgress>, ApiError> {
    let response = upstream
        .snapshot()
        .get_active_run(GetActiveRunRequest { include_batches: true, ..GetActiveRunRequest::default() })
        .await?
        .into_inner();
    let run = response.run.filter(|_| response.active);
    Ok(Json(ActiveProgress {
        active: run.is_some(),
        run: run.as_ref().map(run_view),
        batches: if run.is_some() { batches(&principal, &response.batches) } else { Vec::new() },
    }))
}

/// One run's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunProgressView {
    /// The run.
    pub run: RunView,
    /// Its batches (the caller's projects).
    pub batches: Vec<BatchView>,
    /// Its quota blocks (the caller's projects).
    pub quota_blocks: Vec<QuotaBlockView>,
    /// True while pending or running.
    pub is_active: bool,
}

/// Progress of one run with batches and quota blocks.
#[utoipa::path(
    get,
    path = "/api/snapshot/runs/{run_id}/progress",
    tag = "runs",
    params(("run_id" = String, Path, description = "run id (UUID)")),
    responses(
        (status = 200, description = "the run's progress (snapshots:read)", body = RunProgressView),
        (status = 404, description = "no such run", body = ErrorBody),
    )
)]
pub async fn run_progress(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    Path(id): Path<String>,
) -> Result<Json<RunProgressView>, ApiError> {
    Ok(Json(progress(&upstream, &principal, &id).await?))
}

/// One run's progress (shared with the run page).
pub(crate) async fn progress(
    upstream: &Upstream,
    principal: &Principal,
    id: &str,
) -> Result<RunProgressView, ApiError> {
    let id = run_id(id)?;
    let response = upstream
        .snapshot()
        .get_run(GetRunRequest { run_id: id, include_batches: true, include_quota_blocks: true })
        .await?
        .into_inner();
    let run = response.run.unwrap_or_default();
    Ok(RunProgressView {
        run: run_view(&run),
        batches: batches(principal, &response.batches),
        quota_blocks: response
            .quota_blocks
            .iter()
            .filter(|b| principal.sees(&b.project_id))
            .map(quota_block_view)
            .collect(),
        is_active: response.active,
    })
}

/// Progress figures of a running run, as sent in `progress` events.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressEvent {
    /// 0 to 100.
    pub progress_pct: f64,
    /// Step being executed.
    pub current_step: String,
    /// Batches finished.
    pub completed_batches: i32,
    /// Batches planned.
    pub total_batches: i32,
    /// Batch in progress.
    pub current_batch: i32,
    /// Observed rate.
    pub volumes_per_minute: f64,
    /// Estimated finish.
    pub estimated_finish_at: Option<String>,
    /// Seconds since the run started.
    pub elapsed_seconds: f64,
    /// Snapshots created so far.
    pub snapshots_created: i64,
    /// Volumes done so far.
    pub processed_volumes: i64,
    /// Enrolled volumes in scope.
    pub total_volumes: i64,
}

fn progress_event(progress: &RunProgress) -> ProgressEvent {
    let counters = progress.counters.unwrap_or_default();
    ProgressEvent {
        progress_pct: progress.progress_pct,
        current_step: word(progress.current_step().as_str_name(), "STEP_KEY_"),
        completed_batches: progress.completed_batches,
        total_batches: progress.total_batches,
        current_batch: progress.current_batch,
        volumes_per_minute: progress.volumes_per_minute,
        estimated_finish_at: time(progress.estimated_finish_at.as_ref()),
        elapsed_seconds: seconds(progress.elapsed.as_ref()),
        snapshots_created: counters.snapshots_created,
        processed_volumes: counters.processed_volumes,
        total_volumes: counters.total_volumes,
    }
}

/// Where to resume an event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this event id (same as the `Last-Event-ID` header, which wins).
    pub after: Option<i64>,
}

/// The SSE event for one WatchRun message; `None` for events the caller may not see.
fn sse_event(
    principal: &Principal,
    message: snapkeeper_proto::snapshot::v1::WatchRunResponse,
) -> Option<Event> {
    let (name, data) = match message.event? {
        WatchEvent::Snapshot(run) => ("snapshot", serde_json::to_value(run_view(&run))),
        WatchEvent::StepChanged(step) => ("step_changed", serde_json::to_value(step_view(&step))),
        WatchEvent::BatchStarted(batch) => {
            ("batch_started", serde_json::to_value(batch_view(principal, &batch)?))
        }
        WatchEvent::BatchFinished(batch) => {
            ("batch_finished", serde_json::to_value(batch_view(principal, &batch)?))
        }
        WatchEvent::Progress(progress) => ("progress", serde_json::to_value(progress_event(&progress))),
        WatchEvent::RunFinished(run) => ("run_finished", serde_json::to_value(run_view(&run))),
        // Not requested (include_volume_events is false).
        WatchEvent::VolumeProcessed(_) => return None,
    };
    let data = data.ok()?;
    Some(Event::default().id(message.sequence.to_string()).event(name).data(data.to_string()))
}

/// Live events of a run as Server-Sent Events: `snapshot` (the run), `step_changed`,
/// `batch_started`, `batch_finished`, `progress`, and finally `run_finished`; each with its
/// sequence number as event id, so a reconnecting browser resumes after `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/api/snapshot/runs/{run_id}/events",
    tag = "runs",
    params(("run_id" = String, Path, description = "run id (UUID)"), EventsQuery,
           ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event id")),
    responses(
        (status = 200, description = "text/event-stream until the run finishes (snapshots:read)",
         content_type = "text/event-stream", body = String),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 422, description = "bad run id or Last-Event-ID", body = ErrorBody),
    )
)]
pub async fn run_events(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = run_id(&id)?;
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a non-negative event id"))?,
        None => query.after.unwrap_or(0),
    };
    if after < 0 {
        return Err(ApiError::invalid("after", "must be non-negative"));
    }
    // Opening the stream before answering turns NotFound into a 404 rather than a broken stream.
    let stream = upstream
        .snapshot()
        .watch_run(WatchRunRequest { run_id: id, after_sequence: after, include_volume_events: false })
        .await?
        .into_inner();
    let events = stream
        .map(move |item| match item {
            Ok(message) => sse_event(&principal, message),
            Err(status) => {
                let error = ApiError::from(status);
                let data = serde_json::to_string(error.detail()).unwrap_or_default();
                Some(Event::default().event("error").data(data))
            }
        })
        .filter_map(|event| async move { event.map(Ok) });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Options of "Sync & Snapshot Now"; the body may be empty (the seed sent none).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RunNowBody {
    /// Plan only; change nothing anywhere.
    #[serde(default)]
    pub dry_run: bool,
    /// Only these projects (a project-scoped user's run covers the own project only).
    #[serde(default)]
    pub project_ids: Vec<String>,
    /// Only these policies.
    #[serde(default)]
    pub policy_names: Vec<String>,
}

/// A queued run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunNowAccepted {
    /// Run id; poll `/api/snapshot/run-now/status` or stream `/api/snapshot/runs/{job_id}/events`.
    pub job_id: String,
    /// `pending`.
    pub status: String,
    /// What happens next.
    pub message: String,
}

/// Another manual run is active.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunNowConflict {
    /// `already_exists`.
    pub error: ErrorDetail,
    /// The active run's id, to attach to it.
    pub job_id: Option<String>,
    /// Its state.
    pub status: Option<String>,
}

/// "Sync & Snapshot Now": queues a manual run of the four steps.
#[utoipa::path(
    post,
    path = "/api/snapshot/run-now",
    tag = "runs",
    request_body(content = RunNowBody, description = "optional"),
    responses(
        (status = 202, description = "queued (snapshots:admin)", body = RunNowAccepted),
        (status = 403, description = "needs snapshots:admin", body = ErrorBody),
        (status = 409, description = "a manual run is pending or running; its id is given", body = RunNowConflict),
        (status = 422, description = "invalid option; the field is named", body = ErrorBody),
    )
)]
pub async fn run_now(
    State(upstream): State<Upstream>,
    CanAdmin(principal): CanAdmin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let options: RunNowBody = if body.iter().all(u8::is_ascii_whitespace) {
        RunNowBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body: {e}"), Some("body".to_owned())))?
    };
    let mut project_ids = options.project_ids;
    if let Some(own) = principal.own_project() {
        if project_ids.iter().any(|p| p != own) {
            return Err(ApiError::forbidden("project_ids: a project-scoped run covers the own project only"));
        }
        project_ids = vec![own.to_owned()];
    }
    let request = StartRunRequest {
        kind: RunKind::Manual as i32,
        dry_run: options.dry_run,
        scope: Some(RunScope { project_ids, policy_names: options.policy_names, region_names: Vec::new() }),
        triggered_by: principal.user_name.clone(),
    };
    match upstream.snapshot().start_run(request).await {
        Ok(response) => {
            let run = response.into_inner().run.unwrap_or_default();
            tracing::info!(user = %principal.user_name, run_id = %run.run_id, "manual run queued");
            let accepted = RunNowAccepted {
                job_id: run.run_id,
                status: "pending".to_owned(),
                message: "Snapshot pipeline queued; it starts within seconds. Follow it at \
                          /api/snapshot/runs/{job_id}/events or poll /api/snapshot/run-now/status."
                    .to_owned(),
            };
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            let error = ApiError::from(status);
            let active = upstream
                .snapshot()
                .get_active_run(GetActiveRunRequest {
                    kind: Some(RunKind::Manual as i32),
                    ..GetActiveRunRequest::default()
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().run);
            let conflict = RunNowConflict {
                error: error.detail().clone(),
                job_id: active.as_ref().map(|r| r.run_id.clone()),
                status: active.as_ref().map(|r| word(r.status().as_str_name(), "RUN_STATUS_")),
            };
            Ok((StatusCode::CONFLICT, Json(conflict)).into_response())
        }
        Err(status) => Err(status.into()),
    }
}

/// The latest manual run, as the seed's run-now status showed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunNowStatus {
    /// Run id; null when no manual run was ever started.
    pub job_id: Option<String>,
    /// `idle` when none, else the run's state.
    pub status: String,
    /// Who started it.
    pub triggered_by: Option<String>,
    /// When it started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// The four steps.
    pub steps: Vec<StepView>,
    /// What went wrong.
    pub error: Option<String>,
    /// Overall progress 0 to 100.
    pub progress_pct: f64,
    /// True while pending or running.
    pub active: bool,
    /// Set when idle.
    pub message: Option<String>,
}

/// Status of the latest manual run ("Sync & Snapshot Now").
#[utoipa::path(
    get,
    path = "/api/snapshot/run-now/status",
    tag = "runs",
    responses((status = 200, description = "the latest manual run or idle (snapshots:read)", body = RunNowStatus))
)]
pub async fn run_now_status(
    State(upstream): State<Upstream>,
    CanRead(_principal): CanRead,
) -> Result<Json<RunNowStatus>, ApiError> {
    Ok(Json(latest_manual(&upstream).await?))
}

/// The latest manual run (shared with the runs page).
pub(crate) async fn latest_manual(upstream: &Upstream) -> Result<RunNowStatus, ApiError> {
    let response = upstream
        .snapshot()
        .get_active_run(GetActiveRunRequest {
            kind: Some(RunKind::Manual as i32),
            include_latest_finished: true,
            include_batches: false,
        })
        .await?
        .into_inner();
    let Some(run) = response.run else {
        return Ok(RunNowStatus {
            job_id: None,
            status: "idle".to_owned(),
            triggered_by: None,
            started_at: None,
            finished_at: None,
            steps: Vec::new(),
            error: None,
            progress_pct: 0.0,
            active: false,
            message: Some("No on-demand run has been triggered yet.".to_owned()),
        });
    };
    let view = run_view(&run);
    Ok(RunNowStatus {
        job_id: Some(view.id),
        status: view.status,
        triggered_by: Some(view.triggered_by),
        started_at: view.started_at,
        finished_at: view.finished_at,
        steps: view.steps,
        error: (!view.error_summary.is_empty()).then_some(view.error_summary),
        progress_pct: view.progress_pct,
        active: response.active,
        message: None,
    })
}

/// Why a run is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CancelBody {
    /// Added to the run's error summary.
    #[serde(default)]
    pub reason: String,
}

/// Asks a pending or running run to stop between volumes.
#[utoipa::path(
    post,
    path = "/api/snapshot/runs/{run_id}/cancel",
    tag = "runs",
    params(("run_id" = String, Path, description = "run id (UUID)")),
    request_body(content = CancelBody, description = "optional"),
    responses(
        (status = 202, description = "stopping (snapshots:admin, every project)", body = RunView),
        (status = 404, description = "no such run", body = ErrorBody),
        (status = 409, description = "the run has already finished", body = ErrorBody),
    )
)]
pub async fn cancel_run(
    State(upstream): State<Upstream>,
    CanAdmin(principal): CanAdmin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    principal.require_global()?;
    let id = run_id(&id)?;
    let options: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body: {e}"), Some("body".to_owned())))?
    };
    let run = upstream
        .snapshot()
        .cancel_run(CancelRunRequest { run_id: id, actor: principal.user_name, reason: options.reason })
        .await?
        .into_inner()
        .run
        .unwrap_or_default();
    Ok((StatusCode::ACCEPTED, Json(run_view(&run))))
}
