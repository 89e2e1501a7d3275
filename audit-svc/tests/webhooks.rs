//! audit-svc as its binary runs it (`audit_svc::serve`, SQLite), with the real policy-svc served
//! in-process for the catalog and exclusions, and a real HTTP receiver on 127.0.0.1:0 for the
//! webhooks: the receiver checks each signature, answers 500 twice, and must then receive each
//! notification kind exactly once; the catalog client is checked against policy-svc directly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_svc::directory::{GrpcPolicySource, PolicySource};
use audit_svc::webhooks::{DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use clap::Parser;
use secrecy::SecretString;
use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::SecurityArgs;
use snapkeeper_proto::audit::v1 as pb;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::audit::v1::event::RunDetail;
use snapkeeper_proto::audit::v1::sync_inventory_request::Message;
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::prost_types::{self, Timestamp};

const SECRET: &str = "whsec-7c1e0f2a9b";

fn stamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: 0 }
}

/// policy-svc on 127.0.0.1:0 with its own SQLite file; a catalog policy and an exclusion.
async fn start_policy_svc(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = policy_svc::Config::try_parse_from([
        "policy-svc",
        "--data-dir",
        dir.to_str().unwrap(),
        "--identity-url",
        "http://127.0.0.1:9",
    ])
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        policy_svc::serve(config, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let mut client = PolicyServiceClient::connect(url.clone()).await.unwrap();
    client
        .upsert_policy(policy::UpsertPolicyRequest {
            policy: Some(policy::Policy {
                name: "nightly".into(),
                description: "every night at 02:00 UTC".into(),
                schedule: Some(policy::Schedule {
                    kind: Some(policy::schedule::Kind::Cron(policy::CronSchedule {
                        expression: "0 2 * * *".into(),
                        time_zone: "UTC".into(),
                    })),
                }),
                retention: Some(policy::Retention { count: 7, ..Default::default() }),
                compliance_grace: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
                ..Default::default()
            }),
            actor: "test".into(),
        })
        .await
        .unwrap();
    client
        .create_exclusion(policy::CreateExclusionRequest {
            exclusion: Some(policy::Exclusion {
                scope: policy::ExclusionScope::Volume.into(),
                volume_id: "vol-excluded".into(),
                project_id: "p1".into(),
                exclusion_reason: "scratch disk".into(),
                ..Default::default()
            }),
            actor: "test".into(),
        })
        .await
        .unwrap();
    (url, tx)
}

#[tokio::test]
async fn the_catalog_client_reads_policies_and_exclusions_from_the_real_policy_svc() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_policy_svc(dir.path()).await;
    let channel = connect_lazy(&url, &SecurityArgs::default(), Timeouts::default()).unwrap();
    let directory = GrpcPolicySource::new(channel).fetch().await.unwrap();
    let nightly = &directory.policies["nightly"];
    assert_eq!(nightly.grace, chrono::Duration::hours(1));
    // Judged at 01:30 the 02:00 slot's grace has not passed: yesterday's slot is owed.
    let now: DateTime<Utc> = "2026-11-25T02:30:00Z".parse().unwrap();
    let window = directory.window("nightly", now, 2);
    assert_eq!(window.judged_slot, Some("2026-11-24T02:00:00Z".parse().unwrap()));
    assert_eq!(window.next_due_at, Some("2026-11-25T02:00:00Z".parse().unwrap()));
    let late = directory.window("nightly", "2026-11-25T03:00:01Z".parse().unwrap(), 2);
    assert_eq!(late.judged_slot, Some("2026-11-25T02:00:00Z".parse().unwrap()));
    assert_eq!(directory.exclusions.len(), 1);
    let excluded = &directory.exclusions[0];
    assert_eq!(
        (excluded.volume_id.as_str(), excluded.project_id.as_str(), excluded.reason.as_str()),
        ("vol-excluded", "p1", "scratch disk")
    );
    assert!(directory.exclusion_for("vol-excluded", "p1", now).is_some());
    assert!(directory.exclusion_for("vol-other", "p1", now).is_none());
    let _ = stop.send(());
}

/// What the receiver saw.
#[derive(Default, Clone)]
struct Received {
    /// Requests with a valid signature, in order: (type, delivery id, answered status).
    requests: Vec<(String, String, u16)>,
    /// Requests whose signature or timestamp did not check out.
    refused: usize,
}

#[derive(Clone)]
struct Receiver {
    secret: SecretString,
    received: Arc<Mutex<Received>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let timestamp: i64 = header(TIMESTAMP_HEADER).parse().unwrap_or(0);
    let fresh = (Utc::now().timestamp() - timestamp).abs() < 300;
    let mut received = receiver.received.lock().unwrap();
    if !fresh || header(SIGNATURE_HEADER) != signature(&receiver.secret, timestamp, &body) {
        received.refused += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // The first two valid requests fail, so a delivery must be retried.
    let status = if received.requests.len() < 2 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    received.requests.push((
        json["type"].as_str().unwrap_or("").to_owned(),
        header(DELIVERY_HEADER),
        status.as_u16(),
    ));
    status
}

fn start_receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    start_receiver_on(tokio::net::TcpListener::from_std(listener).unwrap())
}

fn start_receiver_on(listener: tokio::net::TcpListener) -> (SocketAddr, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let receiver =
        Receiver { secret: SecretString::from(SECRET.to_owned()), received: Arc::clone(&received) };
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver);
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, received)
}

fn event(n: u32, kind: pb::EventKind) -> pb::Event {
    pb::Event {
        event_id: format!("01932c07-5a3e-7b4c-9d2e-{n:012x}"),
        occurred_at: Some(stamp(Utc::now())),
        kind: kind.into(),
        run_id: format!("01932c07-0000-7000-8000-{n:012x}"),
        actor: "scheduler".into(),
        region: "RegionOne".into(),
        project_id: "p1".into(),
        ..Default::default()
    }
}

fn finished(n: u32, status: pb::RunStatus) -> pb::Event {
    let mut e = event(n, pb::EventKind::RunFinished);
    e.run_detail = Some(RunDetail::RunFinished(pb::RunFinished {
        status: status.into(),
        error_summary: "2 snapshots failed".into(),
        ..Default::default()
    }));
    e
}

/// A view of two volumes enrolled in the catalog's nightly policy three days ago, without a
/// snapshot: both owe one, so compliance is 0.
fn inventory(sync: u32) -> Vec<pb::SyncInventoryRequest> {
    let listed = Utc::now() - chrono::Duration::days(3) + chrono::Duration::seconds(i64::from(sync));
    let volumes = ["vol-a", "vol-b"]
        .iter()
        .map(|id| {
            let mut v = pb::InventoryVolume {
                id: (*id).into(),
                name: (*id).into(),
                project_id: "p1".into(),
                status: "in-use".into(),
                size_gb: 10,
                ..Default::default()
            };
            v.metadata.insert("auto_snapshot".into(), "true".into());
            v.metadata.insert("snapshot_policies".into(), "nightly".into());
            v
        })
        .collect();
    let header = pb::SyncHeader {
        sync_id: uuid::Uuid::now_v7().to_string(),
        region: "RegionOne".into(),
        listed_at: Some(stamp(listed)),
        source: "test".into(),
        ..Default::default()
    };
    let chunk = pb::InventoryChunk {
        domains: vec![pb::InventoryDomain { id: "d1".into(), name: "Default".into(), enabled: true }],
        projects: vec![pb::InventoryProject {
            id: "p1".into(),
            name: "prod".into(),
            domain_id: "d1".into(),
            enabled: true,
        }],
        volumes,
        ..Default::default()
    };
    let end = pb::SyncEnd { domain_count: 1, project_count: 1, volume_count: 2, ..Default::default() };
    vec![
        pb::SyncInventoryRequest { message: Some(Message::Header(header)) },
        pb::SyncInventoryRequest { message: Some(Message::Chunk(chunk)) },
        pb::SyncInventoryRequest { message: Some(Message::End(end)) },
    ]
}

async fn start_audit(
    dir: &std::path::Path,
    policy_url: &str,
    hook: &str,
) -> (
    AuditServiceClient<snapkeeper_proto::tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = audit_svc::Config::try_parse_from([
        "audit-svc",
        "--data-dir",
        dir.to_str().unwrap(),
        "--policy-url",
        policy_url,
        "--policy-cache-ttl-secs",
        "0",
        "--webhook-urls",
        hook,
        "--webhook-secret",
        SECRET,
        "--compliance-alert-threshold",
        "0.9",
        "--webhook-retry-base-ms",
        "50",
        "--webhook-poll-interval-ms",
        "50",
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        audit_svc::serve(config, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let client = AuditServiceClient::connect(format!("http://{address}")).await.unwrap();
    (client, tx, served)
}

/// Waits until `done` holds for what the receiver saw (at most 20 s).
async fn wait_for(received: &Arc<Mutex<Received>>, done: impl Fn(&Received) -> bool) {
    for _ in 0..400 {
        if done(&received.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = received.lock().unwrap();
    panic!("receiver saw {:?} (refused {})", r.requests, r.refused);
}

fn accepted(r: &Received) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (kind, _, status) in &r.requests {
        if *status == 200 {
            *counts.entry(kind.clone()).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_sent_once_per_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (policy_url, stop_policy) = start_policy_svc(dir.path()).await;
    let (address, received) = start_receiver();
    let hook = format!("http://{address}/hook");
    let (mut client, stop, served) = start_audit(dir.path(), &policy_url, &hook).await;

    // A partial run, a completed one (no webhook) and a quota forecast risk, sent twice.
    let mut risk = event(3, pb::EventKind::QuotaForecastRisk);
    risk.quota = Some(pb::QuotaFigures {
        reason: pb::QuotaBlockReason::GigabytesExceeded.into(),
        quota_limit_gb: 500,
        quota_used_gb: 470,
        quota_needed_gb: 80,
        ..Default::default()
    });
    let events = vec![finished(1, pb::RunStatus::Partial), finished(2, pb::RunStatus::Completed), risk];
    for _ in 0..2 {
        client.append_events(pb::AppendEventsRequest { events: events.clone() }).await.unwrap();
    }
    // Nothing compliant: the check after the sync finds both scopes below 0.9.
    client.sync_inventory(futures::stream::iter(inventory(1))).await.unwrap();
    wait_for(&received, |r| accepted(r).len() == 3).await;

    // Still below at the daily roll-up and after another sync: no new alert.
    client
        .record_compliance_snapshot(pb::RecordComplianceSnapshotRequest { actor: "ops".into() })
        .await
        .unwrap();
    client.sync_inventory(futures::stream::iter(inventory(2))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = stop.send(());
    let _ = served.await;
    let _ = stop_policy.send(());

    let r = received.lock().unwrap().clone();
    assert_eq!(r.refused, 0, "every request carried a valid signature and a fresh timestamp");
    let counts = accepted(&r);
    assert_eq!(
        counts,
        BTreeMap::from([
            ("compliance.below_threshold".to_owned(), 1),
            ("quota.forecast_risk".to_owned(), 1),
            ("run.finished".to_owned(), 1),
        ])
    );
    // The failed attempts are rows with the receiver's answer, and no error text holds the secret.
    let store = open_store(dir.path()).await;
    let attempts = store.delivery_attempts().await.unwrap();
    let failed: Vec<_> = attempts.iter().filter(|a| a.3 == "retry").collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|a| a.1 == 500 && a.2.contains("500") && !a.2.contains(SECRET)));
    assert_eq!(attempts.iter().filter(|a| a.3 == "delivered").count(), 3);
    // The two refused requests were retried under the same delivery id.
    let failed: Vec<&String> = r.requests.iter().filter(|(_, _, s)| *s == 500).map(|(_, id, _)| id).collect();
    assert_eq!(failed.len(), 2);
    for id in failed {
        assert!(r.requests.iter().any(|(_, other, s)| other == id && *s == 200), "delivery {id} was retried");
    }
}

async fn open_store(dir: &std::path::Path) -> audit_svc::store::Store {
    let url = format!("sqlite://{}?mode=rwc", dir.join("audit.db").display());
    let database = service_kit::db::Database::connect(&url, audit_svc::SCHEMA, 1).await.unwrap();
    audit_svc::store::Store::open(database).await.unwrap()
}

#[tokio::test]
async fn a_delivery_pending_at_shutdown_is_sent_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (policy_url, stop_policy) = start_policy_svc(dir.path()).await;
    // A receiver address with nobody listening yet: every attempt fails to connect.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let hook = format!("http://{address}/hook");
    let (mut client, stop, served) = start_audit(dir.path(), &policy_url, &hook).await;
    client
        .append_events(pb::AppendEventsRequest { events: vec![finished(7, pb::RunStatus::Failed)] })
        .await
        .unwrap();
    let store = open_store(dir.path()).await;
    for _ in 0..100 {
        if !store.delivery_attempts().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    let _ = served.await;
    let attempts = store.delivery_attempts().await.unwrap();
    assert!(!attempts.is_empty() && attempts.iter().all(|a| a.1 == 0 && a.3 == "retry"), "{attempts:?}");
    assert!(attempts.iter().all(|a| !a.2.contains(SECRET) && !a.2.is_empty()));

    // The receiver comes up on that address and audit-svc restarts on the same database.
    let listener = std::net::TcpListener::bind(address).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (_, received) = start_receiver_on(tokio::net::TcpListener::from_std(listener).unwrap());
    let (_client, stop, served) = start_audit(dir.path(), &policy_url, &hook).await;
    wait_for(&received, |r| r.requests.iter().filter(|(_, _, s)| *s == 200).count() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    let _ = served.await;
    let _ = stop_policy.send(());
    let r = received.lock().unwrap();
    // The receiver fails its first two requests, so the same delivery arrives three times.
    assert_eq!(r.requests.len(), 3);
    assert!(r.requests.iter().all(|(kind, id, _)| kind == "run.finished" && *id == r.requests[0].1));
    assert_eq!(r.refused, 0);
}
