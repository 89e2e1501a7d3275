//! Webhook notifications: JSON POSTs signed with HMAC-SHA256, on a run that finished failed or
//! partial, on compliance (overall or per policy) falling below the alert threshold, and on a
//! quota forecast risk.
//!
//! The pure part decides what to send ([`event_notification`], [`crossings`]), signs it
//! ([`signature`]) and spaces retries ([`retry_delay`]). Deliveries and their attempts are rows
//! of append-only tables ([`crate::store`]): a notification is stored in the same transaction as
//! its cause, and [`deliver`] sends whatever has no final attempt, so a restart loses nothing.
//!
//! Each POST carries `X-Snapkeeper-Timestamp` (Unix seconds), `X-Snapkeeper-Delivery` (the
//! delivery id, the same on every retry) and `X-Snapkeeper-Signature: sha256=<hex>`, the
//! HMAC-SHA256 with the shared secret of `<timestamp>.<raw body>`; a receiver recomputes it and
//! refuses old timestamps, so a captured request cannot be replayed later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Sha256;
use snapkeeper_proto::audit::v1::{self as pb, EventKind, event::RunDetail};
use tokio::sync::Notify;

use crate::AuditError;
use crate::compliance::Summary;
use crate::events::{ValidEvent, stored_name};
use crate::store::{PendingDelivery, Store, ts};

/// Header with the signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-snapkeeper-signature";
/// Header with the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-snapkeeper-timestamp";
/// Header with the delivery id, unchanged across retries (receivers may drop repeats by it).
pub const DELIVERY_HEADER: &str = "x-snapkeeper-delivery";

/// Notification type of a failed or partial run.
pub const RUN_FINISHED: &str = "run.finished";
/// Notification type of compliance falling below the threshold.
pub const COMPLIANCE_BELOW: &str = "compliance.below_threshold";
/// Notification type of a quota forecast risk.
pub const QUOTA_FORECAST_RISK: &str = "quota.forecast_risk";

/// Where and how notifications go.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Receivers; each notification goes to every one.
    pub urls: Vec<String>,
    /// Shared signing secret.
    pub secret: SecretString,
    /// Compliance ratio (0 to 1) below which an alert is sent.
    pub threshold: f64,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per attempt.
    pub retry_base: Duration,
    /// Longest delay between attempts.
    pub retry_max: Duration,
    /// Time limit of one POST.
    pub timeout: Duration,
    /// How often pending deliveries are looked for when nothing wakes the sender.
    pub poll_interval: Duration,
}

/// A notification to store for every URL: what caused it (unique per cause), its type and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Cause, e.g. `run_finished:<event id>`; a cause notifies each URL once.
    pub source: String,
    /// Notification type.
    pub kind: &'static str,
    /// JSON body.
    pub body: serde_json::Value,
}

/// The notification an appended event causes, if any: a run finished failed or partial, or a
/// quota forecast risk.
pub fn event_notification(valid: &ValidEvent) -> Option<Notification> {
    let event = &valid.event;
    let occurred_at = valid.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match (valid.kind, &event.run_detail) {
        (EventKind::RunFinished, Some(RunDetail::RunFinished(finished))) => {
            let status = finished.status();
            if !matches!(status, pb::RunStatus::Failed | pb::RunStatus::Partial) {
                return None;
            }
            let counters = finished.counters.unwrap_or_default();
            Some(Notification {
                source: format!("run_finished:{}", event.event_id),
                kind: RUN_FINISHED,
                body: json!({
                    "type": RUN_FINISHED,
                    "occurred_at": occurred_at,
                    "run_id": event.run_id,
                    "status": stored_name(status.as_str_name(), "RUN_STATUS_"),
                    "duration_seconds": finished.duration.map(|d| d.seconds),
                    "error_summary": finished.error_summary,
                    "counters": {
                        "snapshots_created": counters.snapshots_created,
                        "snapshots_deleted": counters.snapshots_deleted,
                        "snapshots_failed": counters.snapshots_failed,
                        "quota_blocked": counters.quota_blocked,
                    },
                }),
            })
        }
        (EventKind::QuotaForecastRisk, _) => {
            let quota = event.quota.clone().unwrap_or_default();
            Some(Notification {
                source: format!("quota_forecast_risk:{}", event.event_id),
                kind: QUOTA_FORECAST_RISK,
                body: json!({
                    "type": QUOTA_FORECAST_RISK,
                    "occurred_at": occurred_at,
                    "run_id": event.run_id,
                    "region": event.region,
                    "domain_id": event.domain_id,
                    "project_id": event.project_id,
                    "project_name": event.project_name,
                    "reason": stored_name(quota.reason().as_str_name(), "QUOTA_BLOCK_REASON_"),
                    "volume_type": quota.volume_type,
                    "quota_limit_gb": quota.quota_limit_gb,
                    "quota_used_gb": quota.quota_used_gb,
                    "quota_needed_gb": quota.quota_needed_gb,
                    "snapshot_quota_limit": quota.snapshot_quota_limit,
                    "snapshot_quota_used": quota.snapshot_quota_used,
                    "snapshot_quota_needed": quota.snapshot_quota_needed,
                    "detail": event.detail,
                }),
            })
        }
        _ => None,
    }
}

/// Compliant over owed (compliant, missing, quota blocked); 1 when nothing is owed.
pub fn ratio(summary: &Summary) -> f64 {
    summary.compliance_pct() / 100.0
}

/// The scope of the overall ratio; per-policy scopes are `policy:<name>`.
pub const OVERALL: &str = "overall";

/// A scope whose side of the threshold changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    /// `overall` or `policy:<name>`.
    pub scope: String,
    /// Now below the threshold (false: back at or above it).
    pub below: bool,
    /// The ratio now.
    pub ratio: f64,
}

/// The scopes whose side of `threshold` differs from `previous` (a scope never seen counts as
/// at or above it, so a first look below alerts). `current` maps each scope to its ratio.
pub fn crossings(
    previous: &BTreeMap<String, bool>,
    current: &BTreeMap<String, f64>,
    threshold: f64,
) -> Vec<Crossing> {
    current
        .iter()
        .filter_map(|(scope, &ratio)| {
            let below = ratio < threshold;
            let was_below = previous.get(scope).copied().unwrap_or(false);
            (below != was_below).then(|| Crossing { scope: scope.clone(), below, ratio })
        })
        .collect()
}

/// One notification for the scopes of a check that fell below the threshold (`summaries` holds
/// each scope's counts); `cause` tells the check apart. `None` when none fell.
pub fn compliance_notification(
    crossed: &[Crossing],
    threshold: f64,
    summaries: &BTreeMap<String, Summary>,
    observed_at: DateTime<Utc>,
    cause: &str,
) -> Option<Notification> {
    let below: Vec<serde_json::Value> = crossed
        .iter()
        .filter(|c| c.below)
        .map(|c| {
            let summary = summaries.get(&c.scope).copied().unwrap_or_default();
            let policy = c.scope.strip_prefix("policy:");
            json!({
                "scope": if policy.is_some() { "policy" } else { OVERALL },
                "policy": policy,
                "ratio": c.ratio,
                "compliant": summary.compliant,
                "missing": summary.missing,
                "quota_blocked": summary.quota_blocked,
                "pending": summary.pending,
                "excluded": summary.excluded,
            })
        })
        .collect();
    if below.is_empty() {
        return None;
    }
    Some(Notification {
        source: format!("compliance:{cause}"),
        kind: COMPLIANCE_BELOW,
        body: json!({
            "type": COMPLIANCE_BELOW,
            "occurred_at": observed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "threshold": threshold,
            "below": below,
        }),
    })
}

/// `sha256=<hex>`: HMAC-SHA256 with `secret` of `<timestamp>.<body>`.
pub fn signature(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Delay before attempt `attempt + 1` after `attempt` failed ones: `base` doubled per attempt,
/// at most `max`.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(max)
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// HTTP status; 0 when there was no answer.
    pub status_code: u16,
    /// Why it failed; empty when delivered.
    pub error: String,
}

impl AttemptResult {
    /// Whether the receiver accepted it (any 2xx).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// Sends pending deliveries until aborted: at every wake-up of `wake` or `poll_interval`, each
/// due delivery is POSTed once and its attempt appended.
pub async fn deliver(store: Store, settings: Arc<WebhookSettings>, wake: Arc<Notify>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(settings.timeout).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook HTTP client; no webhooks are sent");
            return;
        }
    };
    loop {
        if let Err(err) = deliver_due(&store, &settings, &client).await {
            tracing::warn!(error = %err, "webhook delivery pass failed; retrying later");
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

async fn deliver_due(
    store: &Store,
    settings: &WebhookSettings,
    client: &reqwest::Client,
) -> Result<(), AuditError> {
    let now = Utc::now();
    for pending in store.pending_deliveries(now).await? {
        let result = post(client, settings, &pending).await;
        let attempt = pending.attempts + 1;
        let (outcome, next) = if result.delivered() {
            ("delivered", None)
        } else if attempt >= settings.max_attempts {
            ("gave_up", None)
        } else {
            let delay = retry_delay(attempt, settings.retry_base, settings.retry_max);
            ("retry", Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)))
        };
        let (id, kind, error) = (&pending.delivery_id, &pending.kind, &result.error);
        if outcome == "delivered" {
            tracing::info!(delivery_id = %id, %kind, attempt, "webhook delivered");
        } else if outcome == "gave_up" {
            tracing::warn!(delivery_id = %id, %kind, attempt, %error, "webhook given up");
        } else {
            tracing::warn!(delivery_id = %id, %kind, attempt, %error, "webhook failed; will retry");
        }
        store.append_attempt(&pending.delivery_id, Utc::now(), &result, outcome, next).await?;
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    settings: &WebhookSettings,
    pending: &PendingDelivery,
) -> AttemptResult {
    let timestamp = Utc::now().timestamp();
    let body = pending.body.clone().into_bytes();
    let signed = signature(&settings.secret, timestamp, &body);
    let sent = client
        .post(&pending.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(DELIVERY_HEADER, &pending.delivery_id)
        .header(SIGNATURE_HEADER, signed)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => {
            AttemptResult { status_code: response.status().as_u16(), error: String::new() }
        }
        Ok(response) => AttemptResult {
            status_code: response.status().as_u16(),
            error: format!("receiver answered {}", response.status()),
        },
        // Without the URL: it may carry credentials of the receiver.
        Err(err) => AttemptResult { status_code: 0, error: describe(&err) },
    }
}

fn describe(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(err) {
        Some(source) => format!("{what}: {source}"),
        None => what.to_owned(),
    }
}

/// Stores a notification per URL, ids new, at `now`: the rows [`Store`] inserts.
pub fn delivery_rows(notification: &Notification, urls: &[String], now: DateTime<Utc>) -> Vec<NewDelivery> {
    let body = notification.body.to_string();
    urls.iter()
        .map(|url| NewDelivery {
            delivery_id: uuid::Uuid::now_v7().to_string(),
            url: url.clone(),
            source: notification.source.clone(),
            kind: notification.kind,
            body: body.clone(),
            created_at: ts(now),
        })
        .collect()
}

/// One delivery row to insert.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// New UUID v7.
    pub delivery_id: String,
    /// Receiver.
    pub url: String,
    /// Cause.
    pub source: String,
    /// Notification type.
    pub kind: &'static str,
    /// JSON body.
    pub body: String,
    /// When stored.
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let secret = SecretString::from("k".to_owned());
        let a = signature(&secret, 1_700_000_000, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature(&secret, 1_700_000_001, b"{}"));
        assert_ne!(a, signature(&secret, 1_700_000_000, b"{ }"));
        assert_ne!(a, signature(&SecretString::from("other".to_owned()), 1_700_000_000, b"{}"));
        // Computed independently (Python's hmac module) over "1700000000.what do ya want for nothing?".
        let jefe = SecretString::from("Jefe".to_owned());
        assert_eq!(
            signature(&jefe, 1_700_000_000, b"what do ya want for nothing?"),
            "sha256=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let delays: Vec<u128> = (1..=6).map(|n| retry_delay(n, base, max).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(retry_delay(200, base, max), max);
    }

    #[test]
    fn only_a_crossing_notifies() {
        let current: BTreeMap<String, f64> = [
            ("overall".to_owned(), 0.9),
            ("policy:daily".to_owned(), 0.99),
            ("policy:weekly".to_owned(), 0.5),
        ]
        .into();
        let first = crossings(&BTreeMap::new(), &current, 0.95);
        let scopes: Vec<(&str, bool)> = first.iter().map(|c| (c.scope.as_str(), c.below)).collect();
        assert_eq!(scopes, [("overall", true), ("policy:weekly", true)]);
        let state: BTreeMap<String, bool> = first.iter().map(|c| (c.scope.clone(), c.below)).collect();
        assert!(crossings(&state, &current, 0.95).is_empty(), "still below: no new alert");
        let summaries = BTreeMap::from([(
            "overall".to_owned(),
            Summary { compliant: 9, missing: 1, ..Summary::default() },
        )]);
        let alert = compliance_notification(&first, 0.95, &summaries, Utc::now(), "c1").unwrap();
        assert_eq!(alert.body["below"].as_array().map(Vec::len), Some(2));
        assert_eq!(alert.body["below"][0]["missing"].as_u64(), Some(1));
        assert_eq!(alert.body["below"][1]["policy"].as_str(), Some("weekly"));
        let recovered: BTreeMap<String, f64> = [("overall".to_owned(), 0.96)].into();
        let back = crossings(&state, &recovered, 0.95);
        assert_eq!(back, [Crossing { scope: "overall".into(), below: false, ratio: 0.96 }]);
        assert!(
            compliance_notification(&back, 0.95, &summaries, Utc::now(), "c2").is_none(),
            "recovery is not alerted"
        );
    }

    fn valid(kind: EventKind, detail: Option<RunDetail>) -> ValidEvent {
        let event = pb::Event {
            event_id: "e1".into(),
            kind: kind.into(),
            run_id: "r1".into(),
            project_id: "p1".into(),
            quota: Some(pb::QuotaFigures {
                quota_limit_gb: 100,
                quota_used_gb: 90,
                quota_needed_gb: 20,
                ..Default::default()
            }),
            run_detail: detail,
            ..Default::default()
        };
        ValidEvent { event, kind, occurred_at: Utc::now(), slot: None, snapshot_created_at: None }
    }

    #[test]
    fn failed_and_partial_runs_and_forecast_risks_notify() {
        let finished = |status: pb::RunStatus| {
            Some(RunDetail::RunFinished(pb::RunFinished { status: status.into(), ..Default::default() }))
        };
        let partial =
            event_notification(&valid(EventKind::RunFinished, finished(pb::RunStatus::Partial))).unwrap();
        assert_eq!((partial.kind, partial.body["status"].as_str()), (RUN_FINISHED, Some("partial")));
        assert!(
            event_notification(&valid(EventKind::RunFinished, finished(pb::RunStatus::Failed))).is_some()
        );
        assert!(
            event_notification(&valid(EventKind::RunFinished, finished(pb::RunStatus::Completed))).is_none()
        );
        let risk = event_notification(&valid(EventKind::QuotaForecastRisk, None)).unwrap();
        assert_eq!((risk.kind, risk.body["quota_needed_gb"].as_i64()), (QUOTA_FORECAST_RISK, Some(20)));
        assert!(event_notification(&valid(EventKind::SnapshotCreated, None)).is_none());
    }
}
