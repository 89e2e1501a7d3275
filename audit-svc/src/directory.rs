//! What compliance needs from policy-svc: the policy catalog (each policy's schedule and grace)
//! and the active exclusions. Fetched with ListPolicies / ListExclusions and reused for a TTL; when
//! policy-svc is down the last fetch keeps serving, and with nothing fetched yet compliance is
//! Unavailable. Legacy names (daily_N, ...) resolve without a catalog entry via policy-svc's
//! pure catalog module.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use futures::future::BoxFuture;
use policy_svc::catalog::{DEFAULT_GRACE, legacy_policy};
use policy_svc::schedule::Schedule;
use service_kit::client::ServiceChannel;
use snapkeeper_proto::policy::v1 as pb;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::AuditError;
use crate::compliance::{Exclusion, Window};

/// A policy as compliance uses it.
#[derive(Debug, Clone)]
pub struct CatalogPolicy {
    /// When slots occur.
    pub schedule: Schedule,
    /// How long after a slot a missing snapshot is not yet judged.
    pub grace: chrono::Duration,
    /// Human-readable schedule.
    pub cadence: String,
}

/// An active exclusion: of one volume, or (empty `volume_id`) of a whole project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExclusionEntry {
    /// Excluded volume; empty for a project-wide exclusion.
    pub volume_id: String,
    /// Project of the exclusion.
    pub project_id: String,
    /// When it stops applying.
    pub until: Option<DateTime<Utc>>,
    /// Why.
    pub reason: String,
}

/// The catalog and exclusions of one fetch.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Catalog entries by name (stored, rules document, and legacy names in use).
    pub policies: HashMap<String, CatalogPolicy>,
    /// Exclusions active when fetched.
    pub exclusions: Vec<ExclusionEntry>,
}

impl Directory {
    /// The window `name` is judged in at `now`: its own schedule and grace when the catalog (or a
    /// legacy name) defines it, else the seed's window of `days`.
    pub fn window(&self, name: &str, now: DateTime<Utc>, days: u32) -> Window {
        if let Some(policy) = self.policies.get(name) {
            return Window::of_schedule(&policy.schedule, policy.grace, policy.cadence.clone(), now);
        }
        if let Some(legacy) = legacy_policy(name) {
            let cadence = legacy.schedule.cadence();
            return Window::of_schedule(&legacy.schedule, legacy.compliance_grace, cadence, now);
        }
        // Unknown names would move their window every call; whole minutes keep results cacheable.
        Window::of_days(days, now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now))
    }

    /// The exclusion covering a volume of a project at `now`: the volume's own first, then its
    /// project's.
    pub fn exclusion_for(&self, volume_id: &str, project_id: &str, now: DateTime<Utc>) -> Option<Exclusion> {
        let active = |e: &&ExclusionEntry| e.until.is_none_or(|until| until > now);
        let own = self.exclusions.iter().filter(active).find(|e| e.volume_id == volume_id);
        let project = || {
            self.exclusions
                .iter()
                .filter(active)
                .find(|e| e.volume_id.is_empty() && e.project_id == project_id)
        };
        own.or_else(project).map(|e| Exclusion { until: e.until, reason: e.reason.clone() })
    }
}

/// Where the directory comes from.
pub trait PolicySource: Send + Sync + fmt::Debug {
    /// Fetches the whole catalog and the active exclusions.
    fn fetch(&self) -> BoxFuture<'_, Result<Directory, AuditError>>;
}

/// policy-svc over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcPolicySource {
    client: PolicyServiceClient<ServiceChannel>,
}

impl GrpcPolicySource {
    /// A source calling policy-svc on `channel`.
    pub fn new(channel: ServiceChannel) -> Self {
        Self { client: PolicyServiceClient::new(channel) }
    }

    async fn fetch_all(&self) -> Result<Directory, AuditError> {
        let unavailable = |what: &str, status: snapkeeper_proto::tonic::Status| {
            AuditError::Unavailable(format!("policy-svc {what}: {}", status.message()))
        };
        let mut client = self.client.clone();
        let mut directory = Directory::default();
        let mut page_token = String::new();
        loop {
            let request = pb::ListPoliciesRequest { include_legacy: true, page_size: 1000, page_token };
            let page = client.list_policies(request).await.map_err(|s| unavailable("ListPolicies", s))?;
            let page = page.into_inner();
            for policy in page.policies {
                match catalog_policy(&policy) {
                    Ok(entry) => {
                        directory.policies.insert(policy.name.clone(), entry);
                    }
                    Err(reason) => tracing::warn!(policy = %policy.name, %reason, "ignoring unusable policy"),
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let mut page_token = String::new();
        loop {
            let request = pb::ListExclusionsRequest {
                page_size: 1000,
                page_token,
                ..pb::ListExclusionsRequest::default()
            };
            let page = client.list_exclusions(request).await.map_err(|s| unavailable("ListExclusions", s))?;
            let page = page.into_inner();
            directory.exclusions.extend(page.exclusions.iter().filter(|e| e.active).map(exclusion_entry));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(directory)
    }
}

impl PolicySource for GrpcPolicySource {
    fn fetch(&self) -> BoxFuture<'_, Result<Directory, AuditError>> {
        Box::pin(self.fetch_all())
    }
}

fn time(t: &snapkeeper_proto::prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

fn duration(d: &snapkeeper_proto::prost_types::Duration) -> chrono::Duration {
    chrono::Duration::seconds(d.seconds) + chrono::Duration::nanoseconds(i64::from(d.nanos))
}

/// A catalog entry as policy-svc sends it (already validated there).
fn catalog_policy(policy: &pb::Policy) -> Result<CatalogPolicy, String> {
    let schedule = match policy.schedule.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(pb::schedule::Kind::Cron(cron)) => Schedule::cron(&cron.expression, &cron.time_zone),
        Some(pb::schedule::Kind::Interval(interval)) => {
            let every = interval.every.as_ref().map(duration).ok_or("interval without every")?;
            Schedule::interval(every, interval.anchor.as_ref().and_then(time))
        }
        None => return Err("no schedule".to_owned()),
    }
    .map_err(|e| e.to_string())?;
    let cadence = if policy.cadence.is_empty() { schedule.cadence() } else { policy.cadence.clone() };
    let grace = policy.compliance_grace.as_ref().map_or(DEFAULT_GRACE, duration);
    Ok(CatalogPolicy { schedule, grace, cadence })
}

fn exclusion_entry(exclusion: &pb::Exclusion) -> ExclusionEntry {
    let project_wide = exclusion.scope == i32::from(pb::ExclusionScope::Project);
    ExclusionEntry {
        volume_id: if project_wide { String::new() } else { exclusion.volume_id.clone() },
        project_id: exclusion.project_id.clone(),
        until: exclusion.expires_at.as_ref().and_then(time),
        reason: exclusion.exclusion_reason.clone(),
    }
}

/// The last fetch and when it was made.
#[derive(Debug)]
struct Cached {
    fetched_at: Instant,
    directory: Arc<Directory>,
    generation: u64,
}

/// A [`PolicySource`] reused for a TTL.
#[derive(Debug)]
pub struct CachedDirectory {
    source: Arc<dyn PolicySource>,
    ttl: Duration,
    cached: Mutex<Option<Cached>>,
}

impl CachedDirectory {
    /// A cache over `source` refetching after `ttl`.
    pub fn new(source: Arc<dyn PolicySource>, ttl: Duration) -> Self {
        Self { source, ttl, cached: Mutex::new(None) }
    }

    /// The directory and its generation (which changes with every successful fetch).
    pub async fn get(&self) -> Result<(Arc<Directory>, u64), AuditError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fetched_at.elapsed() < self.ttl
        {
            return Ok((Arc::clone(&c.directory), c.generation));
        }
        match self.source.fetch().await {
            Ok(directory) => {
                let generation = cached.as_ref().map_or(1, |c| c.generation + 1);
                let directory = Arc::new(directory);
                *cached = Some(Cached {
                    fetched_at: Instant::now(),
                    directory: Arc::clone(&directory),
                    generation,
                });
                Ok((directory, generation))
            }
            Err(err) => match cached.as_ref() {
                Some(c) => {
                    tracing::warn!(error = %err, "policy-svc unreachable; using the cached catalog");
                    Ok((Arc::clone(&c.directory), c.generation))
                }
                None => Err(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn catalog_entries_legacy_names_and_unknown_names_get_their_windows() {
        let mut directory = Directory::default();
        let policy = pb::Policy {
            name: "gold".into(),
            schedule: Some(pb::Schedule {
                kind: Some(pb::schedule::Kind::Cron(pb::CronSchedule {
                    expression: "0 3 * * *".into(),
                    time_zone: "Europe/Berlin".into(),
                })),
            }),
            compliance_grace: Some(snapkeeper_proto::prost_types::Duration { seconds: 3600, nanos: 0 }),
            cadence: "cron '0 3 * * *' Europe/Berlin".into(),
            ..pb::Policy::default()
        };
        directory.policies.insert("gold".into(), catalog_policy(&policy).unwrap());
        let now = at("2026-11-25T12:00:30Z");
        assert_eq!(directory.window("gold", now, 2).judged_slot, Some(at("2026-11-25T02:00:00Z")));
        assert_eq!(directory.window("monthly_1st", now, 2).judged_slot, Some(at("2026-11-01T00:00:00Z")));
        let unknown = directory.window("mystery", now, 3);
        assert_eq!(unknown.judged_slot, Some(at("2026-11-22T12:00:00Z")));
        assert_eq!(unknown.cadence, "window 3 days");
    }

    #[test]
    fn volume_exclusions_win_over_project_ones_and_expire() {
        let directory = Directory {
            policies: HashMap::new(),
            exclusions: vec![
                ExclusionEntry {
                    volume_id: String::new(),
                    project_id: "p1".into(),
                    until: None,
                    reason: "lab".into(),
                },
                ExclusionEntry {
                    volume_id: "v1".into(),
                    project_id: "p1".into(),
                    until: Some(at("2026-12-01T00:00:00Z")),
                    reason: "migration".into(),
                },
            ],
        };
        let now = at("2026-11-25T00:00:00Z");
        assert_eq!(directory.exclusion_for("v1", "p1", now).unwrap().reason, "migration");
        assert_eq!(directory.exclusion_for("v2", "p1", now).unwrap().reason, "lab");
        assert!(directory.exclusion_for("v3", "p2", now).is_none());
        assert_eq!(directory.exclusion_for("v1", "p1", at("2026-12-02T00:00:00Z")).unwrap().reason, "lab");
    }
}
