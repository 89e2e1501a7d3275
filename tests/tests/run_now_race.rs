//! 50 people press "Sync & Snapshot Now" at the same moment: the gateway answers exactly one 202
//! and 49 409s naming the run that was queued, and snapshot-svc holds exactly one run. Checked on
//! SQLite and on PostgreSQL, each with the real binaries and real HTTP and gRPC.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use openstack_sim::{SimConfig, Simulator};
use service_kit::testing::TestPostgres;
use snapkeeper_e2e::{Binaries, SuiteOptions, replace_rules, session_token, small_cloud};
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;

const PASSWORD: &str = "svc-pass-race";
const JWT_SECRET: &str = "run-now-race-signing-key-of-32-bytes-or-more";
const RULES: &str = r#"[{"name": "everything", "priority": 10, "match": {}, "policies": ["daily_3"],
  "auto_snapshot": true, "retention": {"daily_3": 2}}]"#;
const CALLERS: usize = 50;

async fn race(database_url: Option<String>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Snapshots stay `creating` for a while, so the run is still active when the last caller
    // is answered: a second 202 would be a bug, not a finished run.
    let sim = Simulator::start(SimConfig {
        scenario: small_cloud(2, 2, PASSWORD),
        snapshot_delay: Duration::from_secs(3),
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
        database_url,
        jwt_secret: JWT_SECRET.to_owned(),
        env: vec![("RUST_LOG".to_owned(), "info,h2=warn,sqlx=warn".to_owned())],
        ..SuiteOptions::default()
    };
    let suite = Binaries::start(&options).await.unwrap();
    replace_rules(&suite.policy.url(), RULES).await.unwrap();

    let http = reqwest::Client::new();
    let session = session_token(JWT_SECRET, "admin").unwrap();
    let url = format!("{}/api/snapshot/run-now", suite.gateway.url());
    let started = Instant::now();
    let presses = (0..CALLERS).map(|_| {
        let request = http.post(&url).bearer_auth(&session).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(presses).await;
    let elapsed = started.elapsed();

    let accepted: Vec<&serde_json::Value> =
        answers.iter().filter(|(s, _)| *s == 202).map(|(_, b)| b).collect();
    let conflicts: Vec<&serde_json::Value> =
        answers.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b).collect();
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(accepted.len(), 1, "exactly one 202: {statuses:?}");
    assert_eq!(conflicts.len(), CALLERS - 1, "every other caller gets 409: {statuses:?}");
    let job = accepted[0]["job_id"].as_str().unwrap();
    for conflict in &conflicts {
        assert_eq!(conflict["job_id"], job, "a 409 names the active run to attach to: {conflict}");
    }

    let mut snapshot = SnapshotServiceClient::connect(suite.snapshot.url()).await.unwrap();
    let runs = snapshot
        .list_runs(pb::ListRunsRequest { page_size: 100, ..pb::ListRunsRequest::default() })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [job], "only one run exists");
    println!(
        "{CALLERS} concurrent run-now on {}: 1 x 202, {} x 409 in {} ms",
        if options.database_url.is_some() { "PostgreSQL" } else { "SQLite" },
        conflicts.len(),
        elapsed.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_run_now_on_sqlite_queue_exactly_one_run() {
    race(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_run_now_on_postgres_queue_exactly_one_run() {
    let Some(database) = TestPostgres::create().await else { return };
    race(Some(database.url().to_owned())).await;
    database.drop_database().await;
}
