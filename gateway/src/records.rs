//! `/api/snapshot/records`: what runs did to each volume (the seed's `snapshot_records`), from
//! audit-svc's append-only records, as JSON pages or as a CSV export streamed from
//! ExportRecords.
//!
//! As in the seed, `tenant_id`/`tenant_name` of a record are its project; the domain is given
//! separately. A project-scoped user sees only the own project's records.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use snapkeeper_proto::audit::v1::{
    EventKind, ExportRecordsRequest, ListRecordsRequest, Record, RecordFilter, TimeRange,
};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::paging::{self, PageQuery};
use crate::rbac::{CanRead, Principal, ProjectFilter};
use crate::upstream::Upstream;
use crate::wire::{parse_time, time, word};

/// A record with the seed's fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordView {
    /// Sequence number.
    pub id: i64,
    /// Run id (UUID).
    pub snapshot_run_id: String,
    /// `created`, `deleted`, `failed`, `delete_failed`, `skipped`, `quota_blocked`,
    /// `role_granted`, or `run_*` for run-level records.
    pub action: String,
    /// `OK`, `ERROR`, `SKIPPED`, `QUOTA_BLOCKED` or `DRY_RUN`.
    pub status: String,
    /// Cinder snapshot id.
    pub snapshot_id: String,
    /// Snapshot name.
    pub snapshot_name: String,
    /// Cinder volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Project id (as the seed's worker wrote it).
    pub tenant_id: String,
    /// Project name.
    pub tenant_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Keystone domain id.
    pub domain_id: String,
    /// Domain name.
    pub domain_name: String,
    /// Nova server id.
    pub vm_id: String,
    /// Server name.
    pub vm_name: String,
    /// Policy.
    pub policy_name: String,
    /// Volume size, GiB.
    pub size_gb: i64,
    /// When it happened.
    pub created_at: Option<String>,
    /// When the snapshot was deleted (deleted records).
    pub deleted_at: Option<String>,
    /// Retention count in force (the seed called it days).
    pub retention_days: i32,
    /// Error text for failures.
    pub error_message: Option<String>,
    /// Cinder's created_at of the snapshot.
    pub openstack_created_at: Option<String>,
    /// Schedule slot.
    pub slot: Option<String>,
    /// Region.
    pub region: String,
    /// Dry run.
    pub dry_run: bool,
    /// `service_user`, `admin_fallback` or `admin_only`.
    pub scope_mode: String,
    /// X-Openstack-Request-Id of the Cinder call.
    pub cinder_request_id: String,
    /// Who triggered the run.
    pub actor: String,
    /// Free text.
    pub detail: String,
}

fn action_and_status(kind: EventKind) -> (String, &'static str) {
    match kind {
        EventKind::SnapshotCreated => ("created".to_owned(), "OK"),
        EventKind::SnapshotDeleted => ("deleted".to_owned(), "OK"),
        EventKind::SnapshotFailed => ("failed".to_owned(), "ERROR"),
        EventKind::SnapshotDeleteFailed => ("delete_failed".to_owned(), "ERROR"),
        EventKind::SnapshotSkipped => ("skipped".to_owned(), "SKIPPED"),
        EventKind::SnapshotQuotaBlocked => ("quota_blocked".to_owned(), "QUOTA_BLOCKED"),
        EventKind::SnapshotDryRun => ("skipped".to_owned(), "DRY_RUN"),
        other => (word(other.as_str_name(), "EVENT_KIND_"), "OK"),
    }
}

impl From<Record> for RecordView {
    fn from(record: Record) -> Self {
        let event = record.event.unwrap_or_default();
        let (action, status) = action_and_status(event.kind());
        let occurred = time(event.occurred_at.as_ref());
        Self {
            id: record.id,
            snapshot_run_id: event.run_id.clone(),
            deleted_at: (event.kind() == EventKind::SnapshotDeleted).then(|| occurred.clone()).flatten(),
            action,
            status: status.to_owned(),
            snapshot_id: event.snapshot_id.clone(),
            snapshot_name: event.snapshot_name.clone(),
            volume_id: event.volume_id.clone(),
            volume_name: event.volume_name.clone(),
            tenant_id: event.project_id.clone(),
            tenant_name: event.project_name.clone(),
            project_id: event.project_id.clone(),
            project_name: event.project_name.clone(),
            domain_id: event.domain_id.clone(),
            domain_name: event.domain_name.clone(),
            vm_id: event.vm_id.clone(),
            vm_name: event.vm_name.clone(),
            policy_name: event.policy_name.clone(),
            size_gb: event.size_gb,
            created_at: occurred,
            retention_days: event.retention_count,
            error_message: (!event.error.is_empty()).then(|| event.error.clone()),
            openstack_created_at: time(event.snapshot_created_at.as_ref()),
            slot: time(event.slot.as_ref()),
            region: event.region.clone(),
            dry_run: event.dry_run,
            scope_mode: word(event.scope_mode().as_str_name(), "SCOPE_MODE_"),
            cinder_request_id: event.cinder_request_id.clone(),
            actor: event.actor.clone(),
            detail: event.detail,
        }
    }
}

/// Filters of the records (the seed's plus more).
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// Only this run.
    pub snapshot_run_id: Option<String>,
    /// Only this volume.
    pub volume_id: Option<String>,
    /// Only this project (the seed's tenant_id was the project).
    pub tenant_id: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only projects of this Keystone domain.
    pub domain_id: Option<String>,
    /// Comma-separated actions: created, deleted, failed, delete_failed, skipped, quota_blocked,
    /// dry_run, role_granted.
    pub action: Option<String>,
    /// Only this policy.
    pub policy: Option<String>,
    /// Only records at or after this time (RFC 3339 or date).
    pub since: Option<String>,
    /// Only records before the end of this time or date.
    pub until: Option<String>,
}

/// A page of records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordList {
    /// The records.
    pub records: Vec<RecordView>,
    /// Rows in this page.
    pub count: usize,
    /// Page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// Token for the next page; null on the last.
    pub next_page_token: Option<String>,
}

fn kinds(actions: Option<&str>) -> Result<Vec<i32>, ApiError> {
    let mut kinds = Vec::new();
    for action in crate::wire::list(actions) {
        let more: &[EventKind] = match action.as_str() {
            "created" => &[EventKind::SnapshotCreated],
            "deleted" => &[EventKind::SnapshotDeleted],
            "failed" => &[EventKind::SnapshotFailed],
            "delete_failed" => &[EventKind::SnapshotDeleteFailed],
            "skipped" => &[EventKind::SnapshotSkipped, EventKind::SnapshotDryRun],
            "quota_blocked" => &[EventKind::SnapshotQuotaBlocked],
            "dry_run" => &[EventKind::SnapshotDryRun],
            "role_granted" => &[EventKind::RoleGranted],
            _ => {
                return Err(ApiError::invalid(
                    "action",
                    "use created, deleted, failed, delete_failed, skipped, quota_blocked, dry_run or role_granted",
                ));
            }
        };
        kinds.extend(more.iter().map(|k| *k as i32));
    }
    Ok(kinds)
}

/// The audit filter for a query, or `None` when the caller asked for a project they cannot see.
pub(crate) fn filter(principal: &Principal, query: &RecordQuery) -> Result<Option<RecordFilter>, ApiError> {
    let requested = query.project_id.clone().or_else(|| query.tenant_id.clone());
    let ProjectFilter::Use(project_id) = principal.project_filter(requested) else {
        return Ok(None);
    };
    let since = query.since.as_deref().map(|t| parse_time("since", t, false)).transpose()?;
    let until = query.until.as_deref().map(|t| parse_time("until", t, true)).transpose()?;
    Ok(Some(RecordFilter {
        run_id: query.snapshot_run_id.clone(),
        volume_id: query.volume_id.clone(),
        domain_id: query.domain_id.clone(),
        project_id,
        kinds: kinds(query.action.as_deref())?,
        policy_name: query.policy.clone(),
        occurred: (since.is_some() || until.is_some()).then_some(TimeRange { start: since, end: until }),
        ..RecordFilter::default()
    }))
}

/// Snapshot records, newest first.
#[utoipa::path(
    get,
    path = "/api/snapshot/records",
    tag = "audit",
    params(RecordQuery, PageQuery),
    responses(
        (status = 200, description = "a page (snapshots:read); default limit 500", body = RecordList),
        (status = 422, description = "bad filter or paging; the parameter is named", body = ErrorBody),
    )
)]
pub async fn list_records(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<RecordQuery>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<RecordList>, ApiError> {
    let paging = page.paging(500)?;
    let Some(filter) = filter(&principal, &query)? else {
        return Ok(axum::Json(RecordList {
            records: Vec::new(),
            count: 0,
            limit: paging.limit,
            offset: paging.offset,
            next_page_token: None,
        }));
    };
    let client = upstream.audit();
    let page = paging::read(&paging, |page_size, page_token| {
        let mut client = client.clone();
        let request =
            ListRecordsRequest { filter: Some(filter.clone()), oldest_first: false, page_size, page_token };
        async move {
            let response = client.list_records(request).await?.into_inner();
            Ok((response.records, response.next_page_token))
        }
    })
    .await?;
    let records: Vec<RecordView> = page.rows.into_iter().map(RecordView::from).collect();
    Ok(axum::Json(RecordList {
        count: records.len(),
        records,
        limit: paging.limit,
        offset: paging.offset,
        next_page_token: page.next_page_token,
    }))
}

/// Export options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Stop after this many records; absent or 0: all.
    pub max_rows: Option<i64>,
}

/// The CSV columns, in order (the seed UI's export, with the run id under its real name).
const CSV_COLUMNS: [&str; 19] = [
    "id",
    "snapshot_run_id",
    "created_at",
    "action",
    "status",
    "domain_name",
    "tenant_id",
    "tenant_name",
    "vm_id",
    "vm_name",
    "volume_id",
    "volume_name",
    "policy_name",
    "snapshot_id",
    "snapshot_name",
    "size_gb",
    "retention_days",
    "error_message",
    "dry_run",
];

fn csv_row(record: &RecordView) -> String {
    let fields = [
        record.id.to_string(),
        record.snapshot_run_id.clone(),
        record.created_at.clone().unwrap_or_default(),
        record.action.clone(),
        record.status.clone(),
        record.domain_name.clone(),
        record.tenant_id.clone(),
        record.tenant_name.clone(),
        record.vm_id.clone(),
        record.vm_name.clone(),
        record.volume_id.clone(),
        record.volume_name.clone(),
        record.policy_name.clone(),
        record.snapshot_id.clone(),
        record.snapshot_name.clone(),
        record.size_gb.to_string(),
        record.retention_days.to_string(),
        record.error_message.clone().unwrap_or_default(),
        record.dry_run.to_string(),
    ];
    csv_line(&fields)
}

/// One CSV line: fields quoted when needed, and cells a spreadsheet would run as a formula
/// defused with a leading quote.
pub(crate) fn csv_line(fields: &[String]) -> String {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let mut value = field.clone();
        if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
            value.insert(0, '\'');
        }
        if value.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&value.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(&value);
        }
    }
    line.push_str("\r\n");
    line
}

/// The records as CSV, oldest first, streamed as audit-svc sends them.
#[utoipa::path(
    get,
    path = "/api/snapshot/records/export",
    tag = "audit",
    params(RecordQuery, ExportQuery),
    responses(
        (status = 200, description = "text/csv (snapshots:read)", content_type = "text/csv", body = String),
        (status = 422, description = "bad filter", body = ErrorBody),
    )
)]
pub async fn export_records(
    State(upstream): State<Upstream>,
    CanRead(principal): CanRead,
    ApiQuery(query): ApiQuery<RecordQuery>,
    ApiQuery(export): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let limit = export.max_rows.unwrap_or(0);
    if limit < 0 {
        return Err(ApiError::invalid("max_rows", "must not be negative"));
    }
    let header_line = csv_line(&CSV_COLUMNS.map(str::to_owned));
    let filename = format!("snapshot_records_{}.csv", chrono::Utc::now().format("%Y-%m-%d"));
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
    ];
    let Some(filter) = filter(&principal, &query)? else {
        return Ok((headers, header_line).into_response());
    };
    let stream = upstream
        .audit()
        .export_records(ExportRecordsRequest { filter: Some(filter), limit })
        .await?
        .into_inner();
    let rows = stream.map(|chunk| match chunk {
        Ok(chunk) => {
            let text: String = chunk.records.into_iter().map(|r| csv_row(&RecordView::from(r))).collect();
            Ok::<_, std::io::Error>(text)
        }
        // The header has gone out; ending the body early tells the client the export is cut.
        Err(status) => {
            tracing::warn!(code = ?status.code(), "records export stream failed");
            Err(std::io::Error::other("audit-svc export failed"))
        }
    });
    let body = futures::stream::once(async move { Ok(header_line) }).chain(rows);
    Ok((headers, Body::from_stream(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let line = csv_line(&["a,b".into(), "say \"hi\"".into(), "=cmd()".into(), "-5".into()]);
        assert_eq!(line, "\"a,b\",\"say \"\"hi\"\"\",'=cmd(),-5\r\n");
    }
}
