//! The `AuditService` gRPC API: validates each request (errors name the field), calls the store,
//! the inventory assembly or the compliance report, and converts to and from the proto messages.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use service_kit::ServiceError;
use service_kit::error::check_short_text;
use snapkeeper_proto::audit::v1::audit_service_server::AuditService;
use snapkeeper_proto::audit::v1::{self as pb, EventKind};
use snapkeeper_proto::tonic::codegen::BoxStream;
use snapkeeper_proto::tonic::{Request, Response, Status, Streaming};
use tokio_stream::wrappers::ReceiverStream;

use crate::AuditError;
use crate::compliance::{self, Group, Summary};
use crate::events::{MAX_BATCH, kind_name, stored_name, time_of, validate};
use crate::inventory::{Assembly, Step};
use crate::paging::{decode, decode_offset, encode, next_offset_token, page_size};
use crate::report::{ComplianceQuery, ComplianceReport, DEFAULT_DAYS, JudgedRow, Order};
use crate::store::{Cursor, RecordQuery, RunQuery, StagedSync, Store, SyncResult, timestamp};

/// Records per ExportRecords message.
const EXPORT_CHUNK: usize = 1000;

/// The gRPC face of audit-svc.
#[derive(Debug, Clone)]
pub struct AuditApi {
    store: Store,
    report: Arc<ComplianceReport>,
}

impl AuditApi {
    /// The API over a store and a compliance report.
    pub fn new(store: Store, report: Arc<ComplianceReport>) -> Self {
        Self { store, report }
    }
}

/// A time range's bounds: start inclusive, end exclusive; absent means open.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// One trend point being summed: counts, when recorded, and the policies in it.
type PointSum = (Summary, DateTime<Utc>, HashSet<String>);

fn range(field: &str, range: Option<&pb::TimeRange>) -> Result<Bounds, AuditError> {
    let Some(range) = range else { return Ok((None, None)) };
    let start = range.start.as_ref().map(|t| time_of(&format!("{field}.start"), t)).transpose()?;
    let end = range.end.as_ref().map(|t| time_of(&format!("{field}.end"), t)).transpose()?;
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(AuditError::invalid(format!("{field}.end"), "before start"));
    }
    Ok((start, end))
}

fn enum_name<E: TryFrom<i32>>(
    field: &str,
    value: i32,
    prefix: &str,
    name: fn(&E) -> &'static str,
) -> Result<String, AuditError> {
    match E::try_from(value) {
        Ok(e) if value != 0 => Ok(stored_name(name(&e), prefix)),
        _ => Err(AuditError::invalid(field, "unspecified or unknown value")),
    }
}

/// Refuses any present filter value that no stored id or name could equal.
fn check_filters(prefix: &str, fields: &[(&str, Option<&String>)]) -> Result<(), ServiceError> {
    for (name, value) in fields {
        if let Some(value) = value {
            check_short_text(&format!("{prefix}{name}"), value)?;
        }
    }
    Ok(())
}

fn check_record_filter(filter: Option<&pb::RecordFilter>) -> Result<(), ServiceError> {
    let Some(f) = filter else { return Ok(()) };
    check_filters(
        "filter.",
        &[
            ("run_id", f.run_id.as_ref()),
            ("volume_id", f.volume_id.as_ref()),
            ("domain_id", f.domain_id.as_ref()),
            ("project_id", f.project_id.as_ref()),
            ("policy_name", f.policy_name.as_ref()),
            ("actor", f.actor.as_ref()),
            ("snapshot_id", f.snapshot_id.as_ref()),
            ("region", f.region.as_ref()),
        ],
    )
}

fn record_query(filter: Option<&pb::RecordFilter>) -> Result<RecordQuery, AuditError> {
    let Some(f) = filter else { return Ok(RecordQuery::default()) };
    let (from, to) = range("filter.occurred", f.occurred.as_ref())?;
    let mut kinds = Vec::with_capacity(f.kinds.len());
    for (i, kind) in f.kinds.iter().enumerate() {
        kinds.push(enum_name::<EventKind>(
            &format!("filter.kinds[{i}]"),
            *kind,
            "EVENT_KIND_",
            EventKind::as_str_name,
        )?);
    }
    Ok(RecordQuery {
        run_id: f.run_id.clone(),
        volume_id: f.volume_id.clone(),
        domain_id: f.domain_id.clone(),
        project_id: f.project_id.clone(),
        kinds,
        policy_name: f.policy_name.clone(),
        from,
        to,
        actor: f.actor.clone(),
        snapshot_id: f.snapshot_id.clone(),
        region: f.region.clone(),
        dry_run: f.dry_run,
        quota_reason: None,
    })
}

/// A page of records and the token to the next one.
async fn record_page(
    store: &Store,
    query: &RecordQuery,
    oldest_first: bool,
    token: &str,
    size: i32,
    filters: &str,
) -> Result<(Vec<pb::Record>, String), AuditError> {
    let limit = page_size(size)?;
    let cursor = decode(token, filters)?.map(|p| Cursor::decode(&p)).transpose()?;
    let mut records = store.list_records(query, oldest_first, cursor.as_ref(), None, limit + 1).await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next = match records.last() {
        Some(last) if more => {
            let occurred = last
                .event
                .as_ref()
                .and_then(|e| e.occurred_at.as_ref())
                .map(|t| time_of("", t))
                .transpose()?;
            let occurred_at = occurred.map(crate::store::ts).unwrap_or_default();
            encode(&Cursor { occurred_at, seq: last.id }.encode(), filters)
        }
        _ => String::new(),
    };
    Ok((records, next))
}

fn summary_out(summary: &Summary, days: u32, policies: usize) -> pb::ComplianceSummary {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    pb::ComplianceSummary {
        compliant: n(summary.compliant),
        noncompliant: n(summary.missing),
        pending: n(summary.pending),
        quota_blocked: n(summary.quota_blocked),
        excluded: n(summary.excluded),
        total: n(summary.total()),
        compliance_pct: summary.compliance_pct(),
        days: i32::try_from(days).unwrap_or(i32::MAX),
        policies: i32::try_from(policies).unwrap_or(i32::MAX),
    }
}

fn status_out(status: compliance::Status) -> pb::ComplianceStatus {
    match status {
        compliance::Status::Compliant => pb::ComplianceStatus::Compliant,
        compliance::Status::Pending => pb::ComplianceStatus::Pending,
        compliance::Status::QuotaBlocked => pb::ComplianceStatus::QuotaBlocked,
        compliance::Status::Missing => pb::ComplianceStatus::Missing,
        compliance::Status::Excluded => pb::ComplianceStatus::Excluded,
    }
}

fn status_in(field: &str, value: i32) -> Result<compliance::Status, AuditError> {
    match pb::ComplianceStatus::try_from(value) {
        Ok(pb::ComplianceStatus::Compliant) => Ok(compliance::Status::Compliant),
        Ok(pb::ComplianceStatus::Pending) => Ok(compliance::Status::Pending),
        Ok(pb::ComplianceStatus::QuotaBlocked) => Ok(compliance::Status::QuotaBlocked),
        Ok(pb::ComplianceStatus::Missing) => Ok(compliance::Status::Missing),
        Ok(pb::ComplianceStatus::Excluded) => Ok(compliance::Status::Excluded),
        _ => Err(AuditError::invalid(field, "unspecified or unknown status")),
    }
}

fn row_out(row: &JudgedRow) -> pb::ComplianceRow {
    let v = &row.volume;
    pb::ComplianceRow {
        volume_id: v.id.clone(),
        volume_name: if v.name.is_empty() { v.id.clone() } else { v.name.clone() },
        volume_type: v.volume_type.to_string(),
        tenant_id: v.domain_id.to_string(),
        tenant_name: v.domain_name.to_string(),
        project_id: v.project_id.to_string(),
        project_name: v.project_name.to_string(),
        vm_id: v.vm_id.clone(),
        vm_name: if v.vm_name.is_empty() { v.vm_id.clone() } else { v.vm_name.clone() },
        policy_name: row.policy.to_string(),
        retention_count: i32::try_from(row.retention_count).unwrap_or(i32::MAX),
        snapshot_count: i32::try_from(row.stats.available).unwrap_or(i32::MAX),
        last_snapshot_at: row.stats.last_any.map(timestamp),
        compliant: row.verdict.status == compliance::Status::Compliant,
        status: status_out(row.verdict.status).into(),
        policy_cadence: row.window.cadence.clone(),
        last_good_snapshot_at: row.stats.last_good.map(timestamp),
        judged_slot: row.window.judged_slot.map(timestamp),
        next_due_at: row.window.next_due_at.map(timestamp),
        reason: row.verdict.reason.clone(),
        region: v.region.to_string(),
        enrolled_at: row.enrolled_at.map(timestamp),
    }
}

fn rollups_out(groups: &BTreeMap<String, Group>, days: u32) -> Vec<pb::ComplianceRollup> {
    let mut out: Vec<pb::ComplianceRollup> = groups
        .iter()
        .map(|(key, group)| pb::ComplianceRollup {
            key: key.clone(),
            name: group.name.clone(),
            summary: Some(summary_out(&group.summary, days, 0)),
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.key).cmp(&(&b.name, &b.key)));
    out
}

/// The stage of a sync being received, discarded when the guard drops still holding it: when the
/// sync failed, and also when the server drops the request because the client went away.
struct StageGuard {
    store: Store,
    staged: Option<StagedSync>,
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        let Some(staged) = self.staged.take() else { return };
        // A dropped request runs no more of its own code, so the discarding gets a task of its own.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let store = self.store.clone();
        runtime.spawn(async move {
            if let Err(err) = store.discard_sync(&staged).await {
                tracing::warn!(sync_id = %staged.header.sync_id, error = %err, "discarding a failed inventory sync failed");
            }
        });
    }
}

impl AuditApi {
    /// Receives a SyncInventory stream, staging each chunk as it arrives (so memory holds one
    /// chunk, whatever the inventory's size), and applies the sync at its end. `staged` is the
    /// sync's stage once the header came, for the caller to discard on failure.
    async fn receive_sync(
        &self,
        stream: &mut Streaming<pb::SyncInventoryRequest>,
        staged: &mut Option<StagedSync>,
    ) -> Result<(pb::SyncEnd, SyncResult), Status> {
        let mut assembly = Assembly::default();
        while let Some(message) = stream.message().await? {
            match (assembly.accept(message)?, staged.as_ref()) {
                (Step::Header(header), _) => {
                    *staged = Some(self.store.begin_sync(header, self.report.now()).await?);
                }
                (Step::Chunk(number, chunk), Some(sync)) => {
                    self.store.stage_chunk(sync, number, &chunk, self.report.now()).await?;
                }
                (Step::Chunk(..) | Step::End, _) => {}
            }
        }
        let received = assembly.finish()?;
        let sync =
            staged.as_ref().ok_or_else(|| AuditError::invalid("header", "stream closed without a header"))?;
        let result = self.store.apply_sync(sync, received, self.report.now()).await?;
        Ok((received, result))
    }

    async fn get_compliance_inner(
        &self,
        request: pb::GetComplianceRequest,
    ) -> Result<pb::GetComplianceResponse, AuditError> {
        let days = match request.days {
            None => DEFAULT_DAYS,
            Some(d) if (1..=365).contains(&d) => d.unsigned_abs(),
            Some(_) => return Err(AuditError::invalid("days", "must be 1 to 365")),
        };
        let limit = page_size(request.page_size)?;
        let manual_limit = match request.manual_snapshots_limit {
            0 => 100,
            n if (1..=1000).contains(&n) => n.unsigned_abs() as usize,
            _ => return Err(AuditError::invalid("manual_snapshots_limit", "must be 0 to 1000")),
        };
        let mut statuses = Vec::with_capacity(request.statuses.len());
        for (i, status) in request.statuses.iter().enumerate() {
            statuses.push(status_in(&format!("statuses[{i}]"), *status)?);
        }
        let (good_from, good_to) = range("last_good_snapshot", request.last_good_snapshot.as_ref())?;
        let order = match pb::ComplianceOrder::try_from(request.order_by) {
            Ok(pb::ComplianceOrder::Unspecified | pb::ComplianceOrder::Severity) => Order::Severity,
            Ok(pb::ComplianceOrder::VolumeName) => Order::VolumeName,
            Ok(pb::ComplianceOrder::ProjectName) => Order::ProjectName,
            Ok(pb::ComplianceOrder::PolicyName) => Order::PolicyName,
            Ok(pb::ComplianceOrder::LastSnapshotAt) => Order::LastSnapshotAt,
            Err(_) => return Err(AuditError::invalid("order_by", "unknown order")),
        };
        let filters = format!(
            "{:?}",
            pb::GetComplianceRequest { page_token: String::new(), page_size: 0, ..request.clone() }
        );
        let offset = decode_offset(&request.page_token, &filters)?;
        let query = ComplianceQuery {
            tenant_id: request.tenant_id.clone(),
            project_id: request.project_id.clone(),
            policy: request.policy.clone(),
            statuses,
            volume_id: request.volume_id.clone(),
            good_from,
            good_to,
            region: request.region.clone(),
            order,
            descending: request.descending,
        };
        let indexed = self.report.judge_indexed(days).await?;
        let judgement = &indexed.judgement;
        let evaluated_at = self.report.now();
        let selection = query.select_indexed(&indexed, request.include_rollups);
        let total = selection.rows.len();
        let rows: Vec<pb::ComplianceRow> =
            selection.rows.iter().skip(offset).take(limit).map(|r| row_out(r)).collect();
        let mut response = pb::GetComplianceResponse {
            next_page_token: next_offset_token(offset, rows.len(), total, &filters),
            rows,
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
            summary: Some(summary_out(&selection.summary, days, selection.policies)),
            by_domain: rollups_out(&selection.by_domain, days),
            by_project: rollups_out(&selection.by_project, days),
            by_policy: rollups_out(&selection.by_policy, days),
            evaluated_at: Some(timestamp(evaluated_at)),
            inventory_synced_at: judgement.synced_at.map(timestamp),
            ..pb::GetComplianceResponse::default()
        };
        if request.include_manual_snapshots && judgement.synced_at.is_some() {
            // Projects of the matching rows, or every project when only region/domain narrow it.
            let narrowed =
                request.project_id.is_some() || request.tenant_id.is_some() || request.policy.is_some();
            let projects: Option<HashSet<String>> = if narrowed {
                let mut set: HashSet<String> =
                    selection.rows.iter().map(|r| r.volume.project_id.to_string()).collect();
                set.extend(request.project_id.clone());
                Some(set)
            } else {
                None
            };
            let since = evaluated_at - Duration::days(i64::from(days));
            let (manual, manual_total) = self
                .store
                .manual_snapshots(projects.as_ref(), request.region.as_ref(), since, manual_limit)
                .await?;
            response.manual_snapshots = manual;
            response.manual_snapshots_total = i32::try_from(manual_total).unwrap_or(i32::MAX);
        }
        Ok(response)
    }

    async fn trend_inner(
        &self,
        request: pb::ComplianceTrendRequest,
    ) -> Result<pb::ComplianceTrendResponse, AuditError> {
        let days = match request.days {
            0 => 30,
            d if (1..=366).contains(&d) => d,
            _ => return Err(AuditError::invalid("days", "must be 1 to 366")),
        };
        let group_by = match pb::TrendGroupBy::try_from(request.group_by) {
            Ok(pb::TrendGroupBy::Unspecified) | Err(_) => {
                return Err(AuditError::invalid("group_by", "required: overall, domain, project or policy"));
            }
            Ok(g) => g,
        };
        let limit = page_size(request.page_size)?;
        let filters = format!(
            "{:?}",
            pb::ComplianceTrendRequest { page_token: String::new(), page_size: 0, ..request.clone() }
        );
        let offset = decode_offset(&request.page_token, &filters)?;
        let first_day =
            (self.report.now() - Duration::days(i64::from(days) - 1)).format("%Y-%m-%d").to_string();
        let rows = self
            .store
            .rollups_since(
                &first_day,
                request.tenant_id.as_ref(),
                request.project_id.as_ref(),
                request.policy.as_ref(),
            )
            .await?;
        // key -> (name, day -> (summary, recorded_at, policies))
        let mut series: BTreeMap<String, (String, BTreeMap<String, PointSum>)> = BTreeMap::new();
        for row in &rows {
            let (key, name) = match group_by {
                pb::TrendGroupBy::Domain => (row.domain_id.clone(), row.domain_name.clone()),
                pb::TrendGroupBy::Project => (row.project_id.clone(), row.project_name.clone()),
                pb::TrendGroupBy::Policy => (row.policy_name.clone(), row.policy_name.clone()),
                _ => ("overall".to_owned(), "overall".to_owned()),
            };
            let entry = series.entry(key).or_insert_with(|| (name, BTreeMap::new()));
            let point = entry
                .1
                .entry(row.day.clone())
                .or_insert_with(|| (Summary::default(), row.recorded_at, HashSet::new()));
            let s = &row.summary;
            point.0.compliant += s.compliant;
            point.0.missing += s.missing;
            point.0.pending += s.pending;
            point.0.quota_blocked += s.quota_blocked;
            point.0.excluded += s.excluded;
            point.2.insert(row.policy_name.clone());
        }
        let mut all: Vec<pb::TrendSeries> = series
            .into_iter()
            .map(|(key, (name, points))| pb::TrendSeries {
                key,
                name,
                points: points
                    .into_iter()
                    .map(|(date, (summary, recorded_at, policies))| pb::TrendPoint {
                        date,
                        summary: Some(summary_out(&summary, DEFAULT_DAYS, policies.len())),
                        recorded_at: Some(timestamp(recorded_at)),
                    })
                    .collect(),
            })
            .collect();
        all.sort_by(|a, b| (&a.name, &a.key).cmp(&(&b.name, &b.key)));
        let total = all.len();
        let page: Vec<pb::TrendSeries> = all.into_iter().skip(offset).take(limit).collect();
        Ok(pb::ComplianceTrendResponse {
            next_page_token: next_offset_token(offset, page.len(), total, &filters),
            series: page,
        })
    }
}

#[snapkeeper_proto::tonic::async_trait]
impl AuditService for AuditApi {
    #[tracing::instrument(skip_all, fields(events = request.get_ref().events.len()))]
    async fn append_events(
        &self,
        request: Request<pb::AppendEventsRequest>,
    ) -> Result<Response<pb::AppendEventsResponse>, Status> {
        let events = request.into_inner().events;
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(AuditError::invalid(
                "events",
                format!("{} events; send 1 to {MAX_BATCH}", events.len()),
            )
            .into());
        }
        let mut valid = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            valid.push(validate(&format!("events[{i}]"), event)?);
        }
        let appended = self.store.append(&valid, self.report.now()).await?;
        Ok(Response::new(pb::AppendEventsResponse {
            inserted: i32::try_from(appended.inserted).unwrap_or(i32::MAX),
            duplicates: i32::try_from(appended.duplicates.len()).unwrap_or(i32::MAX),
            duplicate_event_ids: appended.duplicates,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let request = request.into_inner();
        check_filters(
            "",
            &[("triggered_by", request.triggered_by.as_ref()), ("run_id", request.run_id.as_ref())],
        )?;
        let limit = page_size(request.page_size)?;
        let filters = format!(
            "{:?}",
            pb::ListRunsRequest { page_token: String::new(), page_size: 0, ..request.clone() }
        );
        let offset = decode_offset(&request.page_token, &filters)?;
        let (from, to) = range("started", request.started.as_ref())?;
        let kind = match request.kind {
            Some(k) => Some(enum_name::<pb::RunKind>("kind", k, "RUN_KIND_", pb::RunKind::as_str_name)?),
            None => None,
        };
        let mut statuses = Vec::new();
        for (i, s) in request.statuses.iter().enumerate() {
            statuses.push(enum_name::<pb::RunStatus>(
                &format!("statuses[{i}]"),
                *s,
                "RUN_STATUS_",
                pb::RunStatus::as_str_name,
            )?);
        }
        let query = RunQuery {
            kind,
            statuses,
            from,
            to,
            dry_run: request.dry_run,
            triggered_by: request.triggered_by.clone(),
            run_id: request.run_id.clone(),
        };
        let (runs, total) = self.store.list_runs(&query, offset, limit).await?;
        Ok(Response::new(pb::ListRunsResponse {
            next_page_token: next_offset_token(offset, runs.len(), total, &filters),
            runs,
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let request = request.into_inner();
        check_record_filter(request.filter.as_ref())?;
        let query = record_query(request.filter.as_ref())?;
        let filters = format!("{:?}/{}", request.filter, request.oldest_first);
        let (records, next_page_token) = record_page(
            &self.store,
            &query,
            request.oldest_first,
            &request.page_token,
            request.page_size,
            &filters,
        )
        .await?;
        Ok(Response::new(pb::ListRecordsResponse { records, next_page_token }))
    }

    #[tracing::instrument(skip_all)]
    async fn export_records(
        &self,
        request: Request<pb::ExportRecordsRequest>,
    ) -> Result<Response<BoxStream<pb::ExportRecordsResponse>>, Status> {
        let request = request.into_inner();
        check_record_filter(request.filter.as_ref())?;
        let query = record_query(request.filter.as_ref())?;
        let limit = usize::try_from(request.limit)
            .map_err(|_| AuditError::invalid("limit", "must not be negative"))?;
        // The newest record now bounds the stream: later appends are not part of this export.
        let up_to = self.store.records_high_water().await?;
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut cursor: Option<Cursor> = None;
            let mut sent = 0usize;
            loop {
                let want = if limit == 0 { EXPORT_CHUNK } else { EXPORT_CHUNK.min(limit - sent) };
                if want == 0 {
                    break;
                }
                let records = match store.list_records(&query, true, cursor.as_ref(), Some(up_to), want).await
                {
                    Ok(records) => records,
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(err))).await;
                        break;
                    }
                };
                let Some(last) = records.last() else { break };
                let occurred_at = last
                    .event
                    .as_ref()
                    .and_then(|e| e.occurred_at.as_ref())
                    .and_then(|t| time_of("", t).ok())
                    .map(crate::store::ts)
                    .unwrap_or_default();
                cursor = Some(Cursor { occurred_at, seq: last.id });
                sent += records.len();
                let full = records.len() == want;
                if tx.send(Ok(pb::ExportRecordsResponse { records })).await.is_err() || !full {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn get_compliance(
        &self,
        request: Request<pb::GetComplianceRequest>,
    ) -> Result<Response<pb::GetComplianceResponse>, Status> {
        let request = request.into_inner();
        check_filters(
            "",
            &[
                ("tenant_id", request.tenant_id.as_ref()),
                ("project_id", request.project_id.as_ref()),
                ("policy", request.policy.as_ref()),
                ("volume_id", request.volume_id.as_ref()),
                ("region", request.region.as_ref()),
            ],
        )?;
        Ok(Response::new(self.get_compliance_inner(request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn compliance_trend(
        &self,
        request: Request<pb::ComplianceTrendRequest>,
    ) -> Result<Response<pb::ComplianceTrendResponse>, Status> {
        let request = request.into_inner();
        check_filters(
            "",
            &[
                ("tenant_id", request.tenant_id.as_ref()),
                ("project_id", request.project_id.as_ref()),
                ("policy", request.policy.as_ref()),
            ],
        )?;
        Ok(Response::new(self.trend_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn record_compliance_snapshot(
        &self,
        request: Request<pb::RecordComplianceSnapshotRequest>,
    ) -> Result<Response<pb::RecordComplianceSnapshotResponse>, Status> {
        let actor = request.into_inner().actor;
        check_short_text("actor", &actor)?;
        let (date, rows, summary, recorded_at) = self.report.record_snapshot().await?;
        let policies: HashSet<&str> = rows.iter().map(|r| r.policy_name.as_str()).collect();
        tracing::info!(%date, rows = rows.len(), %actor, "recorded a compliance roll-up");
        Ok(Response::new(pb::RecordComplianceSnapshotResponse {
            date,
            rows_written: i64::try_from(rows.len()).unwrap_or(i64::MAX),
            recorded_at: Some(timestamp(recorded_at)),
            summary: Some(summary_out(&summary, DEFAULT_DAYS, policies.len())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn sync_inventory(
        &self,
        request: Request<Streaming<pb::SyncInventoryRequest>>,
    ) -> Result<Response<pb::SyncInventoryResponse>, Status> {
        let mut stream = request.into_inner();
        let mut stage = StageGuard { store: self.store.clone(), staged: None };
        let (received, result) = self.receive_sync(&mut stream, &mut stage.staged).await?;
        // Applied, or answered from before: either way nothing of it is staged any more.
        let staged = stage.staged.take();
        let report = Arc::clone(&self.report);
        tokio::spawn(async move {
            if let Err(err) = report.after_sync().await {
                tracing::warn!(error = %err, "judging the synced inventory failed");
            }
        });
        if let Some(staged) = staged {
            tracing::info!(
                sync_id = %staged.header.sync_id,
                region = %staged.header.region,
                applied = result.applied,
                volumes = received.volume_count,
                disappeared = result.response.volumes_disappeared,
                "inventory sync"
            );
        }
        Ok(Response::new(result.response))
    }

    #[tracing::instrument(skip_all)]
    async fn list_quota_blocks(
        &self,
        request: Request<pb::ListQuotaBlocksRequest>,
    ) -> Result<Response<pb::ListQuotaBlocksResponse>, Status> {
        let request = request.into_inner();
        check_filters(
            "",
            &[
                ("run_id", request.run_id.as_ref()),
                ("project_id", request.project_id.as_ref()),
                ("domain_id", request.domain_id.as_ref()),
                ("volume_id", request.volume_id.as_ref()),
                ("policy_name", request.policy_name.as_ref()),
            ],
        )?;
        let (from, to) = range("occurred", request.occurred.as_ref())?;
        let quota_reason = match request.reason {
            Some(r) => Some(enum_name::<pb::QuotaBlockReason>(
                "reason",
                r,
                "QUOTA_BLOCK_REASON_",
                pb::QuotaBlockReason::as_str_name,
            )?),
            None => None,
        };
        let query = RecordQuery {
            run_id: request.run_id.clone(),
            project_id: request.project_id.clone(),
            domain_id: request.domain_id.clone(),
            volume_id: request.volume_id.clone(),
            policy_name: request.policy_name.clone(),
            kinds: vec![kind_name(EventKind::SnapshotQuotaBlocked)],
            from,
            to,
            quota_reason,
            ..RecordQuery::default()
        };
        let filters = format!(
            "{:?}",
            pb::ListQuotaBlocksRequest { page_token: String::new(), page_size: 0, ..request.clone() }
        );
        let (quota_blocks, next_page_token) =
            record_page(&self.store, &query, false, &request.page_token, request.page_size, &filters).await?;
        Ok(Response::new(pb::ListQuotaBlocksResponse { quota_blocks, next_page_token }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_orphans(
        &self,
        request: Request<pb::ListOrphansRequest>,
    ) -> Result<Response<pb::ListOrphansResponse>, Status> {
        let request = request.into_inner();
        check_filters(
            "",
            &[
                ("project_id", request.project_id.as_ref()),
                ("domain_id", request.domain_id.as_ref()),
                ("region", request.region.as_ref()),
            ],
        )?;
        let limit = page_size(request.page_size)?;
        let filters = format!(
            "{:?}",
            pb::ListOrphansRequest { page_token: String::new(), page_size: 0, ..request.clone() }
        );
        let offset = decode_offset(&request.page_token, &filters)?;
        let reason = match request.reason {
            Some(r) => Some(enum_name::<pb::OrphanReason>(
                "reason",
                r,
                "ORPHAN_REASON_",
                pb::OrphanReason::as_str_name,
            )?),
            None => None,
        };
        let orphans = self
            .store
            .orphans(
                request.project_id.as_ref(),
                request.domain_id.as_ref(),
                request.region.as_ref(),
                reason.as_ref(),
            )
            .await?;
        let total = orphans.len();
        let total_size_gb = orphans.iter().map(|o| o.size_gb).sum();
        let page: Vec<pb::Orphan> = orphans.into_iter().skip(offset).take(limit).collect();
        Ok(Response::new(pb::ListOrphansResponse {
            next_page_token: next_offset_token(offset, page.len(), total, &filters),
            orphans: page,
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
            total_size_gb,
        }))
    }
}
