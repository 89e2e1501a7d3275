//! Chaos run: the suite's binaries on the simulator with 10% 5xx, 5% 429 (Retry-After), 2% late
//! answers and 30 s tokens; audit-svc killed for 60 s once the snapshots step runs; the
//! PostgreSQL that snapshot-svc and audit-svc use restarted mid-run (a private cluster, never the
//! machine's server). The run finishes; every enrolled due volume has exactly one record
//! (created, failed with its reason, or quota_blocked); the cloud has no duplicate snapshot; the
//! outbox drains to zero once audit-svc is back.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openstack::{CloudConfig, OpenStack, SnapshotQuery, VolumeQuery};
use openstack_sim::{Faults, OpFaults, QuotaSpec, SimConfig, Simulator};
use service_kit::testing::in_ci;
use snapkeeper_e2e::{Binaries, PrivatePostgres, SuiteOptions, replace_rules, session_token, small_cloud};
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;

const PASSWORD: &str = "svc-pass-chaos";
const JWT_SECRET: &str = "chaos-run-signing-key-of-32-bytes-or-more";
const RULES: &str = r#"[{"name": "everything", "priority": 10, "match": {}, "policies": ["daily_3"],
  "auto_snapshot": true, "retention": {"daily_3": 2}}]"#;
const PROJECTS: usize = 8;
const VOLUMES: usize = 3;
const SEED: u64 = 11;
const AUDIT_OUTAGE: Duration = Duration::from_mins(1);

fn faults() -> Faults {
    Faults {
        seed: SEED,
        default: OpFaults {
            error_rate: 0.10,
            rate_limit_rate: 0.05,
            retry_after_secs: 1,
            timeout_rate: 0.02,
            timeout_ms: 2_000,
            ..OpFaults::default()
        },
        token_ttl_secs: Some(30.0),
        ..Faults::default()
    }
}

/// The faults the simulator injected into its first `requests` requests since `faults()` was
/// set: its draws are seeded (three per request, in arrival order), so replaying them counts
/// exactly what the suite met.
fn injected(requests: u64) -> BTreeMap<&'static str, u64> {
    let settings = faults().default;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut counts = BTreeMap::from([("5xx", 0), ("429", 0), ("late answer", 0)]);
    for _ in 0..requests {
        let (error, limit, late) = (rng.f64(), rng.f64(), rng.f64());
        let kind = if error < settings.error_rate {
            "5xx"
        } else if limit < settings.rate_limit_rate {
            "429"
        } else if late < settings.timeout_rate {
            "late answer"
        } else {
            continue;
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

async fn run_status(http: &reqwest::Client, gateway: &str, session: &str) -> serde_json::Value {
    loop {
        match http.get(format!("{gateway}/api/snapshot/run-now/status")).bearer_auth(session).send().await {
            Ok(response) if response.status() == 200 => return response.json().await.unwrap(),
            // The gateway answers 503 while snapshot-svc's database restarts: ask again.
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn step<'a>(status: &'a serde_json::Value, key: &str) -> &'a str {
    status["steps"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap()["status"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_finishes_with_one_record_per_volume_no_duplicates_and_a_drained_outbox() {
    let Some(bin) = PrivatePostgres::binaries() else {
        assert!(!in_ci(), "CI must install PostgreSQL server binaries (initdb, pg_ctl)");
        eprintln!("skipping the chaos run: no /usr/lib/postgresql/*/bin/initdb (install postgresql)");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let postgres = PrivatePostgres::start(bin).await.unwrap();

    let mut scenario = small_cloud(PROJECTS, VOLUMES, PASSWORD);
    // One tight project, so quota blocks are among the outcomes.
    scenario.quotas.insert("p07".to_owned(), QuotaSpec { snapshots: Some(1), ..QuotaSpec::default() });
    let sim = Simulator::start(SimConfig {
        scenario,
        snapshot_delay: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let options = SuiteOptions {
        auth_url: sim.auth_url(),
        admin: ("admin".to_owned(), openstack_sim::ADMIN_PASSWORD.to_owned()),
        service_user: (snapkeeper_e2e::SERVICE_USER.to_owned(), PASSWORD.to_owned()),
        data_dir: data.path().to_owned(),
        database_url: Some(postgres.url()),
        jwt_secret: JWT_SECRET.to_owned(),
        env: vec![("RUST_LOG".to_owned(), "warn,service_kit::server=info,gateway=info".to_owned())],
        // One project per batch with a pause between batches: the snapshots step outlasts the
        // audit outage, so audit-svc is down in the middle of it.
        snapshot_args: ["--batch-size", "1", "--batch-delay-secs", "9", "--concurrency", "2"]
            .map(str::to_owned)
            .to_vec(),
        ..SuiteOptions::default()
    };
    let mut suite = Binaries::start(&options).await.unwrap();
    replace_rules(&suite.policy.url(), RULES).await.unwrap();
    sim.set_faults(faults());
    sim.reset_stats();

    let http = reqwest::Client::new();
    let gateway = suite.gateway.url();
    let session = session_token(JWT_SECRET, "admin").unwrap();
    let accepted =
        http.post(format!("{gateway}/api/snapshot/run-now")).bearer_auth(&session).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let run_id = accepted.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    let run_started = Instant::now();

    loop {
        let status = run_status(&http, &gateway, &session).await;
        assert_eq!(status["job_id"], run_id.as_str());
        if step(&status, "snapshots") == "running" {
            break;
        }
        assert_eq!(status["active"], true, "the run ended before its snapshots step: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    suite.audit.kill().await.unwrap();
    let audit_down = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    postgres.restart().await.unwrap();
    let postgres_restarted_at = run_started.elapsed();
    tokio::time::sleep(AUDIT_OUTAGE.saturating_sub(audit_down.elapsed())).await;
    suite.audit.restart().await.unwrap();
    let audit_outage = audit_down.elapsed();

    let finished = loop {
        let status = run_status(&http, &gateway, &session).await;
        if status["active"] == false {
            break status;
        }
        assert!(run_started.elapsed() < Duration::from_mins(10), "the run did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let run_duration = run_started.elapsed();
    let outcome = finished["status"].as_str().unwrap();
    assert!(matches!(outcome, "completed" | "partial"), "the run finishes: {finished}");
    let requests: u64 = sim.stats().values().sum();
    let tokens_issued = sim.stats().get("keystone.auth.tokens.create").copied().unwrap_or(0);
    sim.set_faults(Faults::default());

    // The outbox drains once audit-svc is back (the relay's backoff decides how soon).
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let drain_started = Instant::now();
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM snapshot.outbox").fetch_one(&pool).await.unwrap();
        if waiting == 0 {
            break;
        }
        assert!(drain_started.elapsed() < Duration::from_mins(4), "{waiting} events still in the outbox");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let drain = drain_started.elapsed();

    // Exactly one outcome record per enrolled due volume (all of them: none had a snapshot).
    let mut client = AuditServiceClient::connect(suite.audit.url()).await.unwrap();
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_records(audit::ListRecordsRequest {
                filter: Some(audit::RecordFilter {
                    run_id: Some(run_id.clone()),
                    ..audit::RecordFilter::default()
                }),
                page_size: 500,
                page_token: page_token.clone(),
                ..audit::ListRecordsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        records.extend(page.records.into_iter().filter_map(|r| r.event));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let outcomes = [
        audit::EventKind::SnapshotCreated,
        audit::EventKind::SnapshotFailed,
        audit::EventKind::SnapshotQuotaBlocked,
    ];
    let mut per_volume: BTreeMap<String, Vec<&audit::Event>> = BTreeMap::new();
    for event in records.iter().filter(|e| outcomes.iter().any(|k| *k as i32 == e.kind)) {
        per_volume.entry(event.volume_id.clone()).or_default().push(event);
    }
    let mut admin_config = CloudConfig::password(
        &sim.auth_url(),
        "admin",
        "Default",
        openstack_sim::ADMIN_PASSWORD,
        "admin",
        "Default",
    );
    admin_config.resilience.requests_per_second = None;
    let admin = OpenStack::connect(admin_config).await.unwrap();
    let volumes =
        admin.cinder().volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() }).await.unwrap();
    assert_eq!(volumes.len(), PROJECTS * VOLUMES);
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for volume in &volumes {
        let found = per_volume.get(&volume.id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(found.len(), 1, "volume {} has exactly one outcome record: {found:?}", volume.name);
        let record = found[0];
        let kind = audit::EventKind::try_from(record.kind).unwrap();
        if kind == audit::EventKind::SnapshotFailed {
            assert!(!record.error.is_empty(), "a failure says why: {record:?}");
        }
        *by_kind.entry(kind.as_str_name()).or_default() += 1;
    }
    assert!(by_kind.contains_key("EVENT_KIND_SNAPSHOT_QUOTA_BLOCKED"), "{by_kind:?}");

    // The cloud: one snapshot per created record, none without one, never two for a volume.
    let snapshots = admin
        .cinder()
        .snapshots(&SnapshotQuery { all_tenants: true, ..SnapshotQuery::default() })
        .await
        .unwrap();
    let mut per_volume_snapshots: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for snapshot in &snapshots {
        per_volume_snapshots.entry(snapshot.volume_id.as_str()).or_default().push(snapshot.id.as_str());
    }
    let duplicates: Vec<_> = per_volume_snapshots.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(duplicates.is_empty(), "duplicate snapshots: {duplicates:?}");
    for volume in &volumes {
        let record = per_volume[&volume.id][0];
        let made = per_volume_snapshots.get(volume.id.as_str()).cloned().unwrap_or_default();
        if record.kind == audit::EventKind::SnapshotCreated as i32 {
            assert_eq!(made, [record.snapshot_id.as_str()], "the created record names the snapshot");
        } else {
            assert!(made.is_empty(), "no snapshot behind a {:?} record: {made:?}", record.kind);
        }
    }

    let faults = injected(requests);
    println!(
        "chaos run {outcome} in {} s: {requests} cloud requests, faults injected {faults:?}, {tokens_issued} tokens \
         issued (30 s lifetime); audit-svc down {} s; PostgreSQL restarted at +{} s; {} records checked \
         ({by_kind:?}) for {} volumes, {} snapshots, 0 duplicates; outbox drained {} s after the run; \
         test wall time {} s",
        run_duration.as_secs(),
        audit_outage.as_secs(),
        postgres_restarted_at.as_secs(),
        records.len(),
        volumes.len(),
        snapshots.len(),
        drain.as_secs(),
        started.elapsed().as_secs()
    );
    assert!(faults.values().all(|n| *n > 0), "every kind of fault was met: {faults:?}");
}
