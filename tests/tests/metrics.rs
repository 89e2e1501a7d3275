//! Prometheus metrics as an operator scrapes them: after a real run on `snapkeeper up` (simulated
//! demo cloud), the counters on each service's `/metrics` equal what the audit records say, the
//! OpenStack latency histogram has samples for the Cinder calls a run makes, and every series
//! the shipped alert rules use is exposed.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::SecurityArgs;
use snapkeeper_e2e::Process;
use snapkeeper_proto::audit::v1 as audit;
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::snapshot::v1 as snapshot;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;

/// One sample line of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: the samples and the declared families (`# TYPE name kind`).
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    families: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines() {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                scrape.families.insert(declaration.split_whitespace().next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let value = if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap() };
            scrape.samples.push(Sample { name: name.to_owned(), labels, value });
        }
        scrape
    }

    /// Sum of the samples named `name` whose labels include every pair of `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// [`Scrape::sum`] of a counter, as the whole number it is.
    fn total(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.sum(name, with).round() as u64
    }

    /// Whether the exposition names `series`: a sample of it, or the family it belongs to.
    fn exposes(&self, series: &str) -> bool {
        if self.samples.iter().any(|s| s.name == series) {
            return true;
        }
        let mut candidates = vec![series.to_owned()];
        for suffix in ["_total", "_bucket", "_count", "_sum"] {
            if let Some(family) = series.strip_suffix(suffix) {
                candidates.push(family.to_owned());
            }
        }
        candidates.iter().any(|c| self.families.contains(c))
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').unwrap();
        labels.insert(key.trim_start_matches(',').to_owned(), after[..end].to_owned());
        rest = &after[end + 1..];
    }
    labels
}

/// `name  grpc://addr` and `name  metrics http://addr/metrics` from the banner.
fn banner_addresses(banner: &[String]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut grpc = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for line in banner {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [name, address] if address.starts_with("grpc://") => {
                grpc.insert((*name).to_owned(), format!("http://{}", address.trim_start_matches("grpc://")));
            }
            [name, "metrics", url] => {
                metrics.insert((*name).to_owned(), (*url).to_owned());
            }
            ["UI", "and", "REST", "API", url, ..] => {
                grpc.insert("gateway".to_owned(), url.trim_end_matches('/').to_owned());
            }
            _ => {}
        }
    }
    (grpc, metrics)
}

fn status_label(status: i32) -> &'static str {
    match snapshot::RunStatus::try_from(status).unwrap() {
        snapshot::RunStatus::Completed => "completed",
        snapshot::RunStatus::Partial => "partial",
        snapshot::RunStatus::Failed => "failed",
        snapshot::RunStatus::Cancelled => "cancelled",
        snapshot::RunStatus::Interrupted => "interrupted",
        other => panic!("run not finished: {other:?}"),
    }
}

fn kind_label(kind: i32) -> &'static str {
    match snapshot::RunKind::try_from(kind).unwrap() {
        snapshot::RunKind::Manual => "manual",
        snapshot::RunKind::Scheduled => "scheduled",
        snapshot::RunKind::Unspecified => panic!("run without a kind"),
    }
}

fn finished(run: &snapshot::Run) -> bool {
    !matches!(
        snapshot::RunStatus::try_from(run.status),
        Ok(snapshot::RunStatus::Pending | snapshot::RunStatus::Running | snapshot::RunStatus::Unspecified)
    )
}

async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{url}: {content_type}");
    Scrape::parse(&response.text().await.unwrap())
}

/// Every record of `kinds`, across pages.
async fn records(
    client: &mut AuditServiceClient<service_kit::client::ServiceChannel>,
    kinds: &[audit::EventKind],
) -> Vec<audit::Record> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let filter =
            audit::RecordFilter { kinds: kinds.iter().map(|k| *k as i32).collect(), ..Default::default() };
        let page = client
            .list_records(audit::ListRecordsRequest {
                filter: Some(filter),
                oldest_first: true,
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.records);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn counters_after_a_run_match_the_audit_records_and_alert_series_are_exposed() {
    let data = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0";
    let mut args = vec!["up", "--data-dir", data.path().to_str().unwrap()];
    for flag in [
        "--gateway-listen",
        "--policy-listen",
        "--identity-listen",
        "--snapshot-listen",
        "--audit-listen",
        "--sim-listen",
        "--gateway-metrics-listen",
        "--policy-metrics-listen",
        "--identity-metrics-listen",
        "--snapshot-metrics-listen",
        "--audit-metrics-listen",
    ] {
        args.extend([flag, any]);
    }
    let mut up = Process::spawn(
        "snapkeeper",
        &args,
        &[
            ("RUST_LOG", "warn"),
            ("OS_CLOUD", ""),
            ("OS_AUTH_URL", ""),
            ("PF9_AUTH_URL", ""),
            // Compliance is judged for the metrics every second instead of every minute.
            ("AUDIT_COMPLIANCE_METRICS_INTERVAL_SECS", "1"),
        ],
    )
    .unwrap();
    up.wait_for_line(Duration::from_secs(30), |line| line.contains("Press Ctrl-C")).await.unwrap();
    let (grpc, metrics) = banner_addresses(&up.seen);
    let components = ["gateway", "policy-svc", "identity-svc", "snapshot-svc", "audit-svc"];
    for name in components {
        assert!(metrics.contains_key(name), "banner names {name}'s metrics: {:?}", up.seen);
    }

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let health = http.get(format!("{}/healthz", grpc["gateway"])).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let security = SecurityArgs::default();
    let mut runs = SnapshotServiceClient::new(
        connect_lazy(&grpc["snapshot-svc"], &security, Timeouts::default()).unwrap(),
    );
    let mut audit_client =
        AuditServiceClient::new(connect_lazy(&grpc["audit-svc"], &security, Timeouts::default()).unwrap());
    let started = runs
        .start_run(snapshot::StartRunRequest {
            kind: snapshot::RunKind::Manual as i32,
            triggered_by: "metrics-test".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();

    // The scheduler may have queued its own first run: wait until every run has finished and
    // audit-svc holds each one's run_finished record (delivered after its volume records).
    let deadline = Instant::now() + Duration::from_mins(3);
    let (all_runs, manual) = loop {
        assert!(Instant::now() < deadline, "runs did not finish and reach audit-svc in time");
        let listed = runs
            .list_runs(snapshot::ListRunsRequest { page_size: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .runs;
        let delivered = records(&mut audit_client, &[audit::EventKind::RunFinished]).await;
        let delivered: BTreeSet<&str> =
            delivered.iter().filter_map(|r| r.event.as_ref()).map(|e| e.run_id.as_str()).collect();
        if listed.iter().all(|r| finished(r) && delivered.contains(r.run_id.as_str())) {
            let manual = listed.iter().find(|r| r.run_id == started.run_id).cloned().unwrap();
            break (listed, manual);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let volume_kinds = [
        audit::EventKind::SnapshotCreated,
        audit::EventKind::SnapshotDeleted,
        audit::EventKind::SnapshotFailed,
        audit::EventKind::SnapshotDeleteFailed,
        audit::EventKind::SnapshotQuotaBlocked,
    ];
    let mut audited: BTreeMap<i32, u64> = BTreeMap::new();
    let mut created_by_policy: BTreeMap<String, u64> = BTreeMap::new();
    for record in records(&mut audit_client, &volume_kinds).await {
        let event = record.event.unwrap();
        if event.kind == audit::EventKind::SnapshotCreated as i32 {
            *created_by_policy.entry(event.policy_name.clone()).or_default() += 1;
        }
        *audited.entry(event.kind).or_default() += 1;
    }
    let count = |kind: audit::EventKind| audited.get(&(kind as i32)).copied().unwrap_or(0);
    assert!(
        count(audit::EventKind::SnapshotCreated) > 0,
        "the demo cloud's run creates snapshots: {audited:?}"
    );

    eprintln!("audit records by kind: {audited:?}; created by policy: {created_by_policy:?}");
    let svc = scrape(&http, &metrics["snapshot-svc"]).await;
    assert_eq!(
        svc.total("snapkeeper_snapshots_created_total", &[]),
        count(audit::EventKind::SnapshotCreated)
    );
    for (policy, created) in &created_by_policy {
        assert_eq!(
            svc.total("snapkeeper_snapshots_created_total", &[("policy", policy)]),
            *created,
            "{policy}"
        );
    }
    assert_eq!(
        svc.total("snapkeeper_snapshots_deleted_total", &[]),
        count(audit::EventKind::SnapshotDeleted)
    );
    assert_eq!(
        svc.total("snapkeeper_snapshots_failed_total", &[("action", "create")]),
        count(audit::EventKind::SnapshotFailed)
    );
    assert_eq!(
        svc.total("snapkeeper_snapshots_failed_total", &[("action", "delete")]),
        count(audit::EventKind::SnapshotDeleteFailed)
    );
    assert_eq!(
        svc.total("snapkeeper_quota_blocks_total", &[]),
        count(audit::EventKind::SnapshotQuotaBlocked)
    );

    // Runs by kind and result, as snapshot-svc reports them; our manual run among them.
    let mut expected_runs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for run in &all_runs {
        *expected_runs.entry((kind_label(run.kind), status_label(run.status))).or_default() += 1;
    }
    for ((kind, result), n) in &expected_runs {
        assert_eq!(
            svc.total("snapkeeper_runs_total", &[("kind", kind), ("result", result)]),
            *n,
            "{kind} {result}"
        );
    }
    assert_eq!(svc.total("snapkeeper_runs_total", &[]), all_runs.len() as u64);
    let manual_result = status_label(manual.status);
    assert!(svc.total("snapkeeper_runs_total", &[("kind", "manual"), ("result", manual_result)]) >= 1);
    assert_eq!(svc.total("snapkeeper_run_duration_seconds_count", &[]), all_runs.len() as u64);

    // The Cinder calls of a run: listing volumes and snapshots, creating snapshots.
    for operation in ["cinder.volumes.list", "cinder.snapshots.list", "cinder.snapshots.create"] {
        let attempts = svc.total(
            "snapkeeper_openstack_request_duration_seconds_count",
            &[("service", "volumev3"), ("operation", operation)],
        );
        assert!(attempts > 0, "{operation} has latency samples");
        let le_inf = svc.total(
            "snapkeeper_openstack_request_duration_seconds_bucket",
            &[("service", "volumev3"), ("operation", operation), ("le", "+Inf")],
        );
        assert_eq!(le_inf, attempts, "{operation}: +Inf bucket holds every attempt");
    }
    let created_ok = svc.total(
        "snapkeeper_openstack_request_duration_seconds_count",
        &[("operation", "cinder.snapshots.create"), ("status", "202")],
    );
    assert!(
        created_ok
            >= count(audit::EventKind::SnapshotCreated)
                .saturating_sub(count_recovered(&mut audit_client).await)
    );
    for sample in &svc.samples {
        for value in sample.labels.values() {
            assert!(!value.starts_with("gAAAA") && value.len() < 200, "no token-like label: {sample:?}");
        }
    }

    // audit-svc publishes compliance from its judgement once the runs' inventory is in.
    let deadline = Instant::now() + Duration::from_secs(30);
    let compliance = loop {
        let scraped = scrape(&http, &metrics["audit-svc"]).await;
        if scraped.samples.iter().any(|s| s.name == "snapkeeper_compliance_ratio") {
            break scraped;
        }
        assert!(Instant::now() < deadline, "audit-svc published no compliance ratio");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for sample in compliance.samples.iter().filter(|s| s.name == "snapkeeper_compliance_ratio") {
        assert!((0.0..=1.0).contains(&sample.value), "{sample:?}");
    }
    let judged = compliance.sum("snapkeeper_compliance_volumes", &[]);
    assert!(judged > 0.0, "the demo cloud's enrolled volumes are judged");

    // Every snapkeeper_* series the alert rules use is exposed by some component.
    let mut scrapes = Vec::new();
    for name in components {
        scrapes.push(scrape(&http, &metrics[name]).await);
    }
    let gateway = &scrapes[0];
    assert!(
        gateway.sum("snapkeeper_http_requests_total", &[("route", "/healthz"), ("status", "200")]) >= 1.0,
        "the gateway counts /healthz by its route"
    );
    let identity = &scrapes[2];
    assert!(
        identity.sum("snapkeeper_openstack_request_duration_seconds_count", &[("service", "identity")]) > 0.0,
        "identity-svc's Keystone calls are measured"
    );
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus/alerts.yaml"))
            .unwrap();
    let mut alert_series = BTreeSet::new();
    for (start, _) in rules.match_indices("snapkeeper_") {
        let name: String =
            rules[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.len() > "snapkeeper_".len() {
            alert_series.insert(name);
        }
    }
    assert!(alert_series.len() >= 8, "{alert_series:?}");
    for series in &alert_series {
        assert!(scrapes.iter().any(|s| s.exposes(series)), "alert series {series} is in no scrape");
    }

    let status = up.interrupt(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status}");
}

/// Snapshots found after an interruption count as created without a new create call.
async fn count_recovered(client: &mut AuditServiceClient<service_kit::client::ServiceChannel>) -> u64 {
    records(client, &[audit::EventKind::SnapshotCreated])
        .await
        .iter()
        .filter(|r| r.event.as_ref().is_some_and(|e| e.recovered))
        .count() as u64
}
