//! The `SnapshotService` gRPC API: validates every request (errors name the field), queues and
//! reports runs from the store, and streams a run's events. Runs are executed by the worker, not
//! here, so any replica can answer for any run.

use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::Stream;
use service_kit::client::ServiceChannel;
use service_kit::clock::Clock;
use service_kit::error::short_text_problem;
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::snapshot_service_server::SnapshotService;
use snapkeeper_proto::snapshot::v1::watch_run_response::Event as WatchEvent;
use snapkeeper_proto::tonic::{self, Request, Response, Status};

use crate::SnapshotError;
use crate::cloud::Admin;
use crate::quota_outlook;
use crate::run::{Run, RunKind, RunStatus, Scope, duration, from_duration, from_timestamp, timestamp};
use crate::store::{NewRun, RunFilter, Store};
use crate::worker::SCHEDULER_LEASE;

type RpcResult<T> = Result<Response<T>, Status>;

/// The stream WatchRun answers with.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRunResponse, Status>> + Send>>;

/// How often WatchRun looks for new events.
const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// ForecastQuota's horizon bounds.
const MIN_HORIZON: Duration = Duration::hours(1);
const MAX_HORIZON: Duration = Duration::days(31);

/// What the API needs.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The tables.
    pub store: Store,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// policy-svc, for scope validation and schedules.
    pub policy: PolicyServiceClient<ServiceChannel>,
    /// The cloud's admin access (regions, forecasts).
    pub admin: Admin,
    /// This replica's name.
    pub host: String,
    /// SNAPSHOT_SCHEDULER_ENABLED.
    pub scheduler_enabled: bool,
    /// AUTO_SNAPSHOT_INTERVAL_MINUTES.
    pub snapshot_interval: Duration,
    /// POLICY_ASSIGN_INTERVAL_MINUTES.
    pub policy_assign_interval: Duration,
    /// AUTO_SNAPSHOT_BATCH_SIZE.
    pub batch_size: i64,
    /// AUTO_SNAPSHOT_BATCH_DELAY.
    pub batch_delay: Duration,
}

/// The gRPC face of snapshot-svc.
#[derive(Debug, Clone)]
pub struct SnapshotApi {
    settings: Arc<ApiSettings>,
}

impl SnapshotApi {
    /// The API over its settings.
    pub fn new(settings: ApiSettings) -> Self {
        Self { settings: Arc::new(settings) }
    }

    async fn run_message(&self, run: &Run) -> Result<pb::Run, SnapshotError> {
        let steps = self.settings.store.steps(&run.id).await?;
        Ok(run.to_proto(&steps))
    }

    async fn load(&self, run_id: &str) -> Result<Run, SnapshotError> {
        check_run_id(run_id)?;
        self.settings.store.run(run_id).await?.ok_or_else(|| SnapshotError::not_found("run", run_id))
    }

    async fn check_scope(&self, scope: &Scope) -> Result<(), SnapshotError> {
        check_list("scope.project_ids", &scope.project_ids, 1000)?;
        check_list("scope.policy_names", &scope.policy_names, 100)?;
        check_list("scope.region_names", &scope.region_names, 20)?;
        if !scope.region_names.is_empty() {
            // Without SNAPKEEPER_REGIONS the only region is the admin session's default one,
            // whose name only identity-svc knows.
            let regions = self.settings.admin.regions().await?;
            for (i, region) in scope.region_names.iter().enumerate() {
                if !regions.contains(region) {
                    return Err(SnapshotError::NotFound(format!(
                        "scope.region_names[{i}]: region {region} is not configured (SNAPKEEPER_REGIONS)"
                    )));
                }
            }
        }
        for (i, name) in scope.policy_names.iter().enumerate() {
            let mut client = self.settings.policy.clone();
            match client.get_policy(policy::GetPolicyRequest { name: name.clone() }).await {
                Ok(_) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(SnapshotError::NotFound(format!(
                        "scope.policy_names[{i}]: policy {name} is neither in the catalog nor a legacy name"
                    )));
                }
                Err(status) => return Err(SnapshotError::upstream("policy-svc", &status)),
            }
        }
        Ok(())
    }
}

fn check_run_id(run_id: &str) -> Result<(), SnapshotError> {
    if run_id.is_empty() {
        return Err(SnapshotError::invalid("run_id", "must not be empty"));
    }
    uuid::Uuid::parse_str(run_id).map_err(|_| SnapshotError::invalid("run_id", "must be a UUID"))?;
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), SnapshotError> {
    if required && value.trim().is_empty() {
        return Err(SnapshotError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(SnapshotError::invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

fn check_list(field: &str, values: &[String], max: usize) -> Result<(), SnapshotError> {
    if values.len() > max {
        return Err(SnapshotError::invalid(field, format!("at most {max} entries")));
    }
    for (i, value) in values.iter().enumerate() {
        if value.trim().is_empty() {
            return Err(SnapshotError::invalid(format!("{field}[{i}]"), "must not be empty"));
        }
        check_filter(&format!("{field}[{i}]"), value)?;
    }
    Ok(())
}

/// Refuses an id or name no stored one could equal.
fn check_filter(field: &str, value: &str) -> Result<(), SnapshotError> {
    short_text_problem(value).map_or(Ok(()), |problem| Err(SnapshotError::invalid(field, problem)))
}

/// Page token: the offset and a fingerprint of the filters it belongs to.
fn page_token(offset: i64, fingerprint: u64) -> String {
    format!("{offset}.{fingerprint:x}")
}

fn parse_page_token(token: &str, fingerprint: u64) -> Result<i64, SnapshotError> {
    if token.is_empty() {
        return Ok(0);
    }
    let malformed = || SnapshotError::invalid("page_token", "malformed or from other filters");
    let (offset, print) = token.split_once('.').ok_or_else(malformed)?;
    let offset: i64 = offset.parse().map_err(|_| malformed())?;
    if offset < 0 || u64::from_str_radix(print, 16).map_err(|_| malformed())? != fingerprint {
        return Err(malformed());
    }
    Ok(offset)
}

fn time_bound(
    field: &str,
    t: Option<&snapkeeper_proto::prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, SnapshotError> {
    t.map(|t| from_timestamp(t).ok_or_else(|| SnapshotError::invalid(field, "out of range"))).transpose()
}

#[tonic::async_trait]
impl SnapshotService for SnapshotApi {
    #[tracing::instrument(skip_all, fields(kind = request.get_ref().kind, dry_run = request.get_ref().dry_run))]
    async fn start_run(&self, request: Request<pb::StartRunRequest>) -> RpcResult<pb::StartRunResponse> {
        let request = request.into_inner();
        let kind = pb::RunKind::try_from(request.kind)
            .ok()
            .and_then(RunKind::from_proto)
            .ok_or_else(|| SnapshotError::invalid("kind", "must be RUN_KIND_MANUAL or RUN_KIND_SCHEDULED"))?;
        check_text("triggered_by", &request.triggered_by, 255, true)?;
        let scope = Scope::from_proto(request.scope.as_ref());
        self.check_scope(&scope).await?;
        if kind == RunKind::Scheduled && !self.settings.scheduler_enabled {
            return Err(SnapshotError::FailedPrecondition(
                "scheduled runs are off (SNAPSHOT_SCHEDULER_ENABLED=false)".to_owned(),
            )
            .into());
        }
        let new = NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            dry_run: request.dry_run,
            triggered_by: request.triggered_by,
            scope,
            batch_size: self.settings.batch_size,
            batch_delay: self.settings.batch_delay,
            created_at: self.settings.clock.now(),
        };
        let run = self.settings.store.create_run(&new).await?;
        // The run executes later on a worker: it continues this request's trace.
        if let Some(traceparent) = service_kit::telemetry::current_traceparent() {
            self.settings.store.set_trace_parent(&run.id, &traceparent).await?;
        }
        Ok(Response::new(pb::StartRunResponse { run: Some(self.run_message(&run).await?) }))
    }

    #[tracing::instrument(skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> RpcResult<pb::GetRunResponse> {
        let request = request.into_inner();
        let run = self.load(&request.run_id).await?;
        let batches = if request.include_batches {
            self.settings.store.batches(&run.id).await?.iter().map(crate::run::Batch::to_proto).collect()
        } else {
            Vec::new()
        };
        let quota_blocks = if request.include_quota_blocks {
            self.settings.store.quota_blocks(&run.id, 10_000).await?
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetRunResponse {
            active: run.status.is_active(),
            run: Some(self.run_message(&run).await?),
            batches,
            quota_blocks,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_runs(&self, request: Request<pb::ListRunsRequest>) -> RpcResult<pb::ListRunsResponse> {
        let request = request.into_inner();
        if let Some(triggered_by) = &request.triggered_by {
            check_filter("triggered_by", triggered_by)?;
        }
        if request.page_size < 0 {
            return Err(SnapshotError::invalid("page_size", "must not be negative").into());
        }
        let kind = match request.kind {
            Some(kind) => Some(
                pb::RunKind::try_from(kind)
                    .ok()
                    .and_then(RunKind::from_proto)
                    .ok_or_else(|| SnapshotError::invalid("kind", "unknown run kind"))?,
            ),
            None => None,
        };
        let mut statuses = Vec::new();
        for (i, status) in request.statuses.iter().enumerate() {
            let status = pb::RunStatus::try_from(*status)
                .ok()
                .and_then(RunStatus::from_proto)
                .ok_or_else(|| SnapshotError::invalid(format!("statuses[{i}]"), "unknown run status"))?;
            statuses.push(status);
        }
        let range = request.created.unwrap_or_default();
        let created_from = time_bound("created.start", range.start.as_ref())?;
        let created_to = time_bound("created.end", range.end.as_ref())?;
        if let (Some(start), Some(end)) = (created_from, created_to)
            && end < start
        {
            return Err(SnapshotError::invalid("created.end", "is before created.start").into());
        }
        let filter = RunFilter {
            kind,
            statuses,
            created_from,
            created_to,
            dry_run: request.dry_run,
            triggered_by: request.triggered_by,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format!("{filter:?}").hash(&mut hasher);
        let fingerprint = hasher.finish();
        let offset = parse_page_token(&request.page_token, fingerprint)?;
        let limit = match request.page_size {
            0 => 100,
            n => i64::from(n.min(1000)),
        };
        let (runs, total) = self.settings.store.list_runs(&filter, offset, limit).await?;
        let next = offset + runs.len() as i64;
        let mut messages = Vec::with_capacity(runs.len());
        for run in &runs {
            messages.push(self.run_message(run).await?);
        }
        Ok(Response::new(pb::ListRunsResponse {
            runs: messages,
            next_page_token: if next < total { page_token(next, fingerprint) } else { String::new() },
            total_count: total as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn cancel_run(&self, request: Request<pb::CancelRunRequest>) -> RpcResult<pb::CancelRunResponse> {
        let request = request.into_inner();
        check_run_id(&request.run_id)?;
        check_text("actor", &request.actor, 255, true)?;
        check_text("reason", &request.reason, 1024, false)?;
        let run = self
            .settings
            .store
            .request_cancel(&request.run_id, &request.actor, &request.reason, self.settings.clock.now())
            .await?;
        Ok(Response::new(pb::CancelRunResponse { run: Some(self.run_message(&run).await?) }))
    }

    #[tracing::instrument(skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn watch_run(&self, request: Request<pb::WatchRunRequest>) -> RpcResult<WatchStream> {
        let request = request.into_inner();
        if request.after_sequence < 0 {
            return Err(SnapshotError::invalid("after_sequence", "must not be negative").into());
        }
        let run = self.load(&request.run_id).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let api = self.clone();
        tokio::spawn(async move {
            if let Err(error) =
                api.watch(run, request.after_sequence, request.include_volume_events, &sender).await
            {
                let _ = sender.send(Err(error.into())).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    #[tracing::instrument(skip_all)]
    async fn get_active_run(
        &self,
        request: Request<pb::GetActiveRunRequest>,
    ) -> RpcResult<pb::GetActiveRunResponse> {
        let request = request.into_inner();
        let kind = match request.kind {
            Some(kind) => Some(
                pb::RunKind::try_from(kind)
                    .ok()
                    .and_then(RunKind::from_proto)
                    .ok_or_else(|| SnapshotError::invalid("kind", "unknown run kind"))?,
            ),
            None => None,
        };
        let store = &self.settings.store;
        let (active, run) = match store.active_run(kind).await? {
            Some(run) => (true, Some(run)),
            None if request.include_latest_finished => (false, store.latest_finished(kind).await?),
            None => (false, None),
        };
        let Some(run) = run else { return Ok(Response::new(pb::GetActiveRunResponse::default())) };
        let batches = if request.include_batches {
            store.batches(&run.id).await?.iter().map(crate::run::Batch::to_proto).collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetActiveRunResponse {
            active,
            run: Some(self.run_message(&run).await?),
            batches,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> RpcResult<pb::GetScheduleResponse> {
        let request = request.into_inner();
        let at = time_bound("at", request.at.as_ref())?.unwrap_or_else(|| self.settings.clock.now());
        let store = &self.settings.store;
        let lease = store.lease(SCHEDULER_LEASE).await?;
        let now = self.settings.clock.now();
        let live_lease = lease.as_ref().filter(|l| l.expires_at > now);
        let last_tick = lease.as_ref().and_then(|l| l.last_tick_at);
        let enabled = self.settings.scheduler_enabled;
        let next_tick = enabled.then(|| last_tick.map_or(now, |t| t + self.settings.snapshot_interval));
        let active = store.active_run(Some(RunKind::Scheduled)).await?;
        let latest = match store.latest_finished(None).await? {
            Some(run) => Some(run),
            None => active.clone(),
        };
        let mut policies = Vec::new();
        let latest = latest.map(|r| r.policy_volumes).unwrap_or_default();
        for (name, enrolled_volumes) in latest {
            let mut client = self.settings.policy.clone();
            let request = policy::NextSlotsRequest {
                target: Some(policy::next_slots_request::Target::PolicyName(name.clone())),
                after: Some(timestamp(at)),
                count: 1,
            };
            let entry = match client.next_slots(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let next_slot = response.next_slots.first().and_then(from_timestamp);
                    pb::PolicySchedule {
                        policy_name: name,
                        cadence: response.policy.map(|p| p.cadence).unwrap_or_default(),
                        current_slot: response.current_slot,
                        next_slot: next_slot.map(timestamp),
                        next_run_at: next_slot.and_then(|slot| {
                            next_tick.map(|tick| {
                                timestamp(first_tick_at_or_after(tick, self.settings.snapshot_interval, slot))
                            })
                        }),
                        enrolled_volumes,
                        error: String::new(),
                    }
                }
                Err(status) if status.code() == tonic::Code::NotFound => pb::PolicySchedule {
                    policy_name: name,
                    error: "unknown policy".to_owned(),
                    ..pb::PolicySchedule::default()
                },
                Err(status) => return Err(SnapshotError::upstream("policy-svc", &status).into()),
            };
            policies.push(entry);
        }
        policies.sort_by_key(|p| p.next_run_at.as_ref().map(|t| (t.seconds, t.nanos)));
        Ok(Response::new(pb::GetScheduleResponse {
            scheduler_enabled: enabled,
            leader: live_lease.is_some_and(|l| l.holder == self.settings.host),
            leader_host: live_lease.map(|l| l.holder.clone()).unwrap_or_default(),
            snapshot_interval: Some(duration(self.settings.snapshot_interval)),
            policy_assign_interval: Some(duration(self.settings.policy_assign_interval)),
            last_tick_at: last_tick.map(timestamp),
            next_tick_at: next_tick.map(timestamp),
            next_policy_assign_at: enabled.then(|| {
                let last_assign = lease.as_ref().and_then(|l| l.last_assign_at).or(last_tick);
                timestamp(last_assign.map_or(now, |t| t + self.settings.policy_assign_interval))
            }),
            active_scheduled_run_id: active.map(|r| r.id).unwrap_or_default(),
            policies,
        }))
    }

    #[tracing::instrument(skip_all, fields(region = %request.get_ref().region))]
    async fn forecast_quota(
        &self,
        request: Request<pb::ForecastQuotaRequest>,
    ) -> RpcResult<pb::ForecastQuotaResponse> {
        let request = request.into_inner();
        let margin = request.safety_margin_pct.unwrap_or(quota_outlook::DEFAULT_MARGIN_PCT);
        if !(margin.is_finite() && (0.0..=100.0).contains(&margin)) {
            return Err(SnapshotError::invalid("safety_margin_pct", "must be 0 to 100").into());
        }
        let horizon = match request.horizon.as_ref() {
            None => quota_outlook::DEFAULT_HORIZON,
            Some(d) => from_duration(d).ok_or_else(|| SnapshotError::invalid("horizon", "out of range"))?,
        };
        if !(MIN_HORIZON..=MAX_HORIZON).contains(&horizon) {
            return Err(SnapshotError::invalid("horizon", "must be 1 hour to 31 days").into());
        }
        check_list("project_ids", &request.project_ids, 1000)?;
        check_filter("region", &request.region)?;
        let regions = self.settings.admin.regions().await?;
        let region = if request.region.is_empty() {
            regions.into_iter().next().unwrap_or_default()
        } else if regions.contains(&request.region) {
            request.region
        } else {
            return Err(SnapshotError::NotFound(format!(
                "region: region {} is not configured (SNAPKEEPER_REGIONS)",
                request.region
            ))
            .into());
        };
        let settings = &self.settings;
        let forecast = quota_outlook::forecast(
            &settings.admin,
            &settings.policy,
            settings.clock.now(),
            &region,
            &request.project_ids,
            margin,
            horizon,
        )
        .await?;
        Ok(Response::new(forecast))
    }
}

/// The first tick `tick + k * interval` (k >= 0) at or after `slot`.
fn first_tick_at_or_after(tick: DateTime<Utc>, interval: Duration, slot: DateTime<Utc>) -> DateTime<Utc> {
    if slot <= tick || interval <= Duration::zero() {
        return tick;
    }
    let steps = (slot - tick).num_seconds().div_euclid(interval.num_seconds().max(1));
    let candidate = tick + interval * (steps as i32);
    if candidate < slot { candidate + interval } else { candidate }
}

impl SnapshotApi {
    /// Streams a run's events: a snapshot first (unless resuming with kept events), then every
    /// event after it, until run_finished.
    async fn watch(
        &self,
        run: Run,
        after: i64,
        include_volume: bool,
        sender: &tokio::sync::mpsc::Sender<Result<pb::WatchRunResponse, Status>>,
    ) -> Result<(), SnapshotError> {
        let store = &self.settings.store;
        let (newest, oldest) = store.event_bounds(&run.id).await?;
        let mut cursor = after;
        if after == 0 || after < oldest.saturating_sub(1) || after > newest {
            let snapshot = pb::WatchRunResponse {
                sequence: newest,
                time: Some(timestamp(self.settings.clock.now())),
                run_id: run.id.clone(),
                event: Some(WatchEvent::Snapshot(self.run_message(&run).await?)),
            };
            if sender.send(Ok(snapshot)).await.is_err() {
                return Ok(());
            }
            cursor = newest;
        }
        loop {
            let events = store.events_after(&run.id, cursor, include_volume, 500).await?;
            for event in events {
                cursor = event.sequence;
                let last = matches!(event.event, Some(WatchEvent::RunFinished(_)));
                if sender.send(Ok(event)).await.is_err() || last {
                    return Ok(());
                }
            }
            let current =
                store.run(&run.id).await?.ok_or_else(|| SnapshotError::not_found("run", &run.id))?;
            if !current.status.is_active()
                && store.events_after(&run.id, cursor, include_volume, 1).await?.is_empty()
            {
                // Finished without a run_finished event (cancelled while pending, interrupted).
                let finished = pb::WatchRunResponse {
                    sequence: cursor,
                    time: Some(timestamp(self.settings.clock.now())),
                    run_id: run.id.clone(),
                    event: Some(WatchEvent::RunFinished(self.run_message(&current).await?)),
                };
                let _ = sender.send(Ok(finished)).await;
                return Ok(());
            }
            if sender.is_closed() {
                return Ok(());
            }
            tokio::time::sleep(WATCH_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_belong_to_their_filters() {
        let token = page_token(200, 0xabc);
        assert_eq!(parse_page_token(&token, 0xabc).unwrap(), 200);
        assert!(parse_page_token(&token, 0xabd).is_err());
        assert!(parse_page_token("garbage", 1).is_err());
        assert_eq!(parse_page_token("", 1).unwrap(), 0);
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        assert!(check_run_id("").unwrap_err().to_string().starts_with("run_id"));
        assert!(check_run_id("not-a-uuid").is_err());
        assert!(check_run_id("01890a5d-ac96-774b-bcce-b302099a8057").is_ok());
        let error = check_list("scope.policy_names", &["a".to_owned(), " ".to_owned()], 100).unwrap_err();
        assert!(error.to_string().starts_with("scope.policy_names[1]"));
        assert!(check_text("actor", &"x".repeat(256), 255, true).is_err());
        let error = check_list("project_ids", &["p1".to_owned(), "x".repeat(300)], 1000).unwrap_err();
        assert!(error.to_string().starts_with("project_ids[1]: "), "{error}");
        assert!(check_filter("region", "Region\u{1b}One").is_err());
        assert!(check_filter("region", "RegionOne").is_ok());
    }

    #[test]
    fn next_run_is_the_first_tick_after_the_slot() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().to_utc();
        let tick = at("2026-03-01T10:20:00Z");
        assert_eq!(
            first_tick_at_or_after(tick, Duration::hours(1), at("2026-03-02T00:00:00Z")),
            at("2026-03-02T00:20:00Z")
        );
        assert_eq!(first_tick_at_or_after(tick, Duration::hours(1), at("2026-03-01T09:00:00Z")), tick);
    }
}
