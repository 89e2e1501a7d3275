//! The quota forecast over the cloud, for ForecastQuota and for the risk records each scheduled
//! run appends: one admin listing of a region, decisions in bulk from policy-svc, each policy's
//! slots within the horizon, each project's quota with usage; the judgement itself is the pure
//! [`crate::forecast`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use policy_svc::schedule::Schedule;
use service_kit::client::ServiceChannel;
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::tonic;

use crate::SnapshotError;
use crate::cloud::{Admin, Keep, Listing};
use crate::forecast::{self, Enrolment, Severity};
use crate::quota::ProjectQuota;
use crate::run::{duration, from_duration, from_timestamp, timestamp};

/// Safety margin when none is asked for, percent.
pub const DEFAULT_MARGIN_PCT: f64 = 10.0;
/// Horizon when none is asked for.
pub const DEFAULT_HORIZON: Duration = Duration::hours(24);
/// Quota reads in flight at once during a forecast.
const QUOTA_READS_AT_ONCE: usize = 8;

/// The quota forecast of `region` at `now`: one listing, decisions in bulk, each policy's
/// slots within the horizon, each project's quota with usage, then the pure per-project
/// forecast. Only the projects in `project_ids` when any.
pub async fn forecast(
    admin: &Admin,
    policy: &PolicyServiceClient<ServiceChannel>,
    now: DateTime<Utc>,
    region: &str,
    project_ids: &[String],
    margin_pct: f64,
    horizon: Duration,
) -> Result<pb::ForecastQuotaResponse, SnapshotError> {
    let listing = Listing::fetch(admin, region, now, None, Keep::Everything).await?;
    let volumes: Vec<&openstack::Volume> = listing
        .volumes
        .iter()
        .filter(|v| project_ids.is_empty() || project_ids.iter().any(|p| Some(p) == v.project_id.as_ref()))
        .collect();
    let (decisions, _) = crate::runner::decide(policy, &listing, &volumes, now).await?;
    let available = listing.snapshots.available_counts();
    // Per project: its enrolled volumes and their (volume, policy) enrolments.
    let mut enrolled: BTreeMap<String, (i64, Vec<Enrolment>)> = BTreeMap::new();
    let mut policy_names = BTreeSet::new();
    for (volume, decision) in volumes.iter().zip(&decisions) {
        if !decision.enrolled {
            continue;
        }
        let (count, project) = enrolled.entry(volume.project_id.clone().unwrap_or_default()).or_default();
        *count += 1;
        for policy in decision.policies.iter().filter(|p| p.known) {
            policy_names.insert(policy.name.clone());
            let existing = available.get(&(volume.id.clone(), policy.name.clone())).copied().unwrap_or(0);
            project.push(Enrolment {
                size_gb: i64::try_from(volume.size).unwrap_or(i64::MAX),
                volume_type: volume.volume_type.clone().unwrap_or_default(),
                policy: policy.name.clone(),
                retention_count: u32::try_from(policy.retention_count).unwrap_or(1),
                existing: u32::try_from(existing).unwrap_or(u32::MAX),
            });
        }
    }
    let slots = slots_within(policy, &policy_names, now, now + horizon).await?;
    let quotas: BTreeMap<String, Result<ProjectQuota, SnapshotError>> =
        futures::stream::iter(enrolled.keys().cloned())
            .map(|project_id: String| async move {
                let id = project_id.as_str();
                let read = admin
                    .call(region, |client| async move { client.cinder().quota_set(id, true).await })
                    .await;
                (project_id, read.map(|set| ProjectQuota::from_quota_set(&set)))
            })
            .buffer_unordered(QUOTA_READS_AT_ONCE)
            .collect()
            .await;
    let mut alerts = Vec::new();
    let mut ok_projects = Vec::new();
    let mut summary = pb::ForecastSummary {
        total_projects_scanned: enrolled.len() as i32,
        safety_margin_pct: margin_pct,
        horizon: Some(duration(horizon)),
        ..pb::ForecastSummary::default()
    };
    for (project_id, (volume_count, enrolments)) in &enrolled {
        let (project_name, domain_id, domain_name) = listing.project_names(project_id);
        let mut message = pb::ProjectForecast {
            project_id: project_id.clone(),
            project_name,
            domain_id,
            domain_name,
            enrolled_volumes: *volume_count,
            ..pb::ProjectForecast::default()
        };
        summary.total_snapshot_volumes += message.enrolled_volumes;
        let severity = match quotas.get(project_id) {
            Some(Ok(quota)) => {
                let result = forecast::forecast(enrolments, &slots, quota, margin_pct);
                message.resources = result.resources.iter().map(resource_message).collect();
                message.policies = result
                    .policies
                    .iter()
                    .map(|(name, demand)| pb::PolicyDemand {
                        policy_name: name.clone(),
                        slots_in_horizon: i32::try_from(demand.slots).unwrap_or(i32::MAX),
                        volumes: demand.volumes,
                        snapshots_needed: demand.snapshots_needed,
                        gigabytes_needed: demand.gigabytes_needed,
                        snapshots_freed: demand.snapshots_freed,
                        gigabytes_freed: demand.gigabytes_freed,
                    })
                    .collect();
                result.severity
            }
            Some(Err(error)) => {
                // The seed's quota_fetch_failed: a warning, so nobody mistakes it for room.
                message.error = format!("quota_fetch_failed: {error}");
                summary.quota_fetch_failures += 1;
                Severity::Warning
            }
            None => Severity::Warning,
        };
        message.severity = severity_message(severity).into();
        match severity {
            Severity::Ok => {
                summary.projects_ok += 1;
                ok_projects.push(message);
            }
            Severity::Warning => {
                summary.warning_count += 1;
                alerts.push(message);
            }
            Severity::Critical => {
                summary.critical_count += 1;
                alerts.push(message);
            }
        }
    }
    summary.projects_at_risk = summary.warning_count + summary.critical_count;
    // Critical first (the enum orders by badness), then by project name.
    alerts.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.project_name.cmp(&b.project_name)));
    ok_projects.sort_by(|a, b| a.project_name.cmp(&b.project_name));
    Ok(pb::ForecastQuotaResponse {
        alerts,
        ok_projects,
        summary: Some(summary),
        generated_at: Some(timestamp(now)),
    })
}

/// Per policy, its slots in `(from, to]`; a policy policy-svc does not know has none.
async fn slots_within(
    policy: &PolicyServiceClient<ServiceChannel>,
    names: &BTreeSet<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<String, u32>, SnapshotError> {
    let mut slots = BTreeMap::new();
    for name in names {
        let request = policy::NextSlotsRequest {
            target: Some(policy::next_slots_request::Target::PolicyName(name.clone())),
            after: Some(timestamp(from)),
            count: 1,
        };
        let mut client = policy.clone();
        let resolved = match client.next_slots(request).await {
            Ok(response) => response.into_inner().policy,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(SnapshotError::upstream("policy-svc", &status)),
        };
        let count =
            resolved.as_ref().and_then(schedule_of).map_or(0, |s| forecast::slots_within(&s, from, to));
        slots.insert(name.clone(), count);
    }
    Ok(slots)
}

/// The schedule of a policy as policy-svc resolved it; `None` when it carries none usable.
fn schedule_of(policy: &policy::Policy) -> Option<Schedule> {
    match policy.schedule.as_ref()?.kind.as_ref()? {
        policy::schedule::Kind::Cron(cron) => Schedule::cron(&cron.expression, &cron.time_zone).ok(),
        policy::schedule::Kind::Interval(interval) => {
            let every = from_duration(interval.every.as_ref()?)?;
            let anchor = interval.anchor.as_ref().and_then(from_timestamp);
            Schedule::interval(every, anchor).ok()
        }
    }
}

fn severity_message(severity: Severity) -> pb::ForecastSeverity {
    match severity {
        Severity::Ok => pb::ForecastSeverity::Ok,
        Severity::Warning => pb::ForecastSeverity::Warning,
        Severity::Critical => pb::ForecastSeverity::Critical,
    }
}

/// One resource of the pure forecast in the contract's terms (`gigabytes_<type>` splits into
/// the per-type resource and its volume type).
fn resource_message(resource: &forecast::ResourceForecast) -> pb::ResourceForecast {
    let (kind, volume_type) = match resource.resource.as_str() {
        "gigabytes" => (pb::QuotaResource::Gigabytes, ""),
        "snapshots" => (pb::QuotaResource::Snapshots, ""),
        other => match (other.strip_prefix("gigabytes_"), other.strip_prefix("snapshots_")) {
            (Some(kind), _) => (pb::QuotaResource::VolumeTypeGigabytes, kind),
            (_, Some(kind)) => (pb::QuotaResource::VolumeTypeSnapshots, kind),
            _ => (pb::QuotaResource::Unspecified, other),
        },
    };
    pb::ResourceForecast {
        resource: kind.into(),
        volume_type: volume_type.to_owned(),
        limit: resource.limit,
        used: resource.used,
        available: if resource.limit < 0 { -1 } else { resource.limit - resource.used },
        needed: resource.needed,
        needed_with_margin: resource.needed_with_margin,
        pct_used: resource.pct_used,
        pct_after_snapshots: resource.pct_after,
        shortfall: resource.shortfall,
        severity: severity_message(resource.severity).into(),
    }
}
