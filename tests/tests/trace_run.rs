//! A run-now through the gateway is ONE trace in a real OTLP receiver: the gateway's request span
//! is the root, and the run that snapshot-svc executes after answering 202 continues it through
//! policy-svc, identity-svc, audit-svc and every Keystone/Cinder call, each span's parent being
//! in the trace. Each binary exports to its own receiver, so a span's service is known for sure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use openstack_sim::{SimConfig, Simulator};
use snapkeeper_e2e::{Binaries, SuiteOptions, replace_rules, session_token, small_cloud};

const SERVICES: [&str; 5] = ["gateway", "snapshot-svc", "policy-svc", "identity-svc", "audit-svc"];
const PASSWORD: &str = "svc-pass-trace-4417";
const ADMIN_PASSWORD: &str = openstack_sim::ADMIN_PASSWORD;
const JWT_SECRET: &str = "trace-run-signing-key-of-32-bytes-or-more";
const RULES: &str = r#"[{"name": "everything", "priority": 10, "match": {}, "policies": ["daily_3"],
  "auto_snapshot": true, "retention": {"daily_3": 2}}]"#;

/// A span with the service whose receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: &'static str,
    span: ExportedSpan,
}

/// One OTLP receiver per service, drained in the background (the receiver holds only 64 spans).
async fn receivers() -> (BTreeMap<&'static str, String>, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let mut endpoints = BTreeMap::new();
    for service in SERVICES {
        let mut collector = FakeCollectorServer::start().await.unwrap();
        endpoints.insert(service, collector.endpoint());
        let spans = Arc::clone(&spans);
        tokio::spawn(async move {
            loop {
                let batch = collector.exported_spans(1, Duration::from_millis(100)).await;
                spans.lock().unwrap().extend(batch.into_iter().map(|mut span| {
                    span.attributes = span.attributes.into_iter().map(|(k, v)| (k, plain(&v))).collect();
                    Span { service, span }
                }));
            }
        });
    }
    (endpoints, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_through_the_gateway_is_one_trace_across_every_service_and_cloud_call() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig {
        scenario: small_cloud(2, 2, PASSWORD),
        snapshot_delay: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (endpoints, spans) = receivers().await;
    let data = tempfile::tempdir().unwrap();
    let options = SuiteOptions {
        auth_url: sim.auth_url(),
        admin: ("admin".to_owned(), ADMIN_PASSWORD.to_owned()),
        service_user: (snapkeeper_e2e::SERVICE_USER.to_owned(), PASSWORD.to_owned()),
        data_dir: data.path().to_owned(),
        jwt_secret: JWT_SECRET.to_owned(),
        env: vec![
            ("RUST_LOG".to_owned(), "info,h2=warn,tower=warn,hyper=warn,sqlx=warn".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
        ],
        service_env: endpoints
            .iter()
            .map(|(service, endpoint)| {
                ((*service).to_owned(), "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone())
            })
            .collect(),
        ..SuiteOptions::default()
    };
    let suite = Binaries::start(&options).await.unwrap();
    replace_rules(&suite.policy.url(), RULES).await.unwrap();

    let http = reqwest::Client::new();
    let session = session_token(JWT_SECRET, "admin").unwrap();
    let accepted = http
        .post(format!("{}/api/snapshot/run-now", suite.gateway.url()))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let run_id = accepted.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let status = loop {
        let status: serde_json::Value = http
            .get(format!("{}/api/snapshot/run-now/status", suite.gateway.url()))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["job_id"] == run_id.as_str() && status["active"] == false {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "run did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["status"], "completed", "{status}");

    // The run's last spans end with it; give the batch exporters a few flushes.
    let trace = wait_for_trace(&spans, &run_id).await;
    let by_id: BTreeMap<&str, &Span> = trace.iter().map(|s| (s.span.span_id.as_str(), s)).collect();
    let roots: Vec<&Span> = trace.iter().filter(|s| s.span.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {:?}", names(&roots));
    assert_eq!((roots[0].service, roots[0].span.name.as_str()), ("gateway", "POST /api/snapshot/run-now"));
    for span in &trace {
        if span.span.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id.get(span.span.parent_span_id.as_str());
        assert!(parent.is_some(), "{} {} has its parent in the trace", span.service, span.span.name);
        if span.span.kind == "SPAN_KIND_SERVER" && span.service != "gateway" {
            let caller = parent.unwrap();
            assert_ne!(
                caller.service, span.service,
                "{} server span {} is the child of its caller's span, not its own",
                span.service, span.span.name
            );
        }
    }
    let services: BTreeSet<&str> = trace.iter().map(|s| s.service).collect();
    assert_eq!(services, SERVICES.into_iter().collect(), "every service has spans in the trace");
    for (service, rpc) in [
        ("snapshot-svc", "snapkeeper.snapshot.v1.SnapshotService/StartRun"),
        ("policy-svc", "snapkeeper.policy.v1.PolicyService/"),
        ("identity-svc", "snapkeeper.identity.v1.IdentityService/GetAdminCredentials"),
        ("audit-svc", "snapkeeper.audit.v1.AuditService/SyncInventory"),
    ] {
        assert!(
            trace.iter().any(|s| s.service == service && s.span.name.starts_with(rpc)),
            "{service} serves {rpc} in the trace"
        );
    }

    // The run itself: a child of the run-now request, carrying the run id.
    let run = trace.iter().find(|s| s.span.name == "snapshot run").unwrap();
    assert_eq!(run.span.attributes.get("run_id").map(String::as_str), Some(run_id.as_str()));
    let creates: Vec<&Span> = trace.iter().filter(|s| s.span.name == "snapshot.create").collect();
    assert_eq!(creates.len(), 4, "one create span per due volume");
    let volumes: BTreeSet<&str> =
        creates.iter().map(|s| s.span.attributes["volume_id"].as_str()).filter(|v| !v.is_empty()).collect();
    assert_eq!(volumes.len(), 4, "each create names its volume");
    assert!(creates.iter().all(|s| s.span.attributes["run_id"] == run_id));

    // Cloud calls: method, operation, status, request id and project; the snapshot creates are
    // made in each tenant's own project.
    let calls: Vec<&Span> = trace.iter().filter(|s| s.span.attributes.contains_key("operation")).collect();
    let cinder_creates: Vec<&Span> = calls
        .iter()
        .copied()
        .filter(|s| s.span.attributes["operation"] == "cinder.snapshots.create")
        .collect();
    assert_eq!(cinder_creates.len(), 4, "{:?}", names(&calls));
    for call in &calls {
        let a = &call.span.attributes;
        for key in ["http.request.method", "http.response.status_code", "request_id", "project_id"] {
            let keystone_issue = a["operation"] == "keystone.auth.tokens.create";
            if key == "project_id" && keystone_issue {
                continue; // no token yet, so no scope to name
            }
            assert!(
                a.get(key).is_some_and(|v| !v.is_empty()),
                "{} {} has {key}: {a:?}",
                call.service,
                a["operation"]
            );
        }
    }
    for create in &cinder_creates {
        let mut ancestor = by_id[create.span.parent_span_id.as_str()];
        while ancestor.span.name != "snapshot.create" {
            ancestor = by_id[ancestor.span.parent_span_id.as_str()];
        }
        assert_eq!(
            create.span.attributes["project_id"], ancestor.span.attributes["project_id"],
            "the snapshot is made with a token of the volume's own project"
        );
    }

    // No hop lost its parent: no cloud call anywhere started a trace of its own.
    let orphans: Vec<Span> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty() && s.span.attributes.contains_key("operation"))
        .cloned()
        .collect();
    assert!(
        orphans.is_empty(),
        "cloud calls outside any trace: {:?}",
        names(&orphans.iter().collect::<Vec<_>>())
    );

    // Never a token, a password or the session in any span.
    let session_sig = session.rsplit('.').next().unwrap();
    for span in &trace {
        for (key, value) in &span.span.attributes {
            for secret in ["gAAAAA", PASSWORD, ADMIN_PASSWORD, session_sig] {
                assert!(
                    !value.contains(secret),
                    "{} {} attribute {key} leaks a secret",
                    span.service,
                    span.span.name
                );
            }
        }
    }
    let services_count: BTreeMap<&str, usize> =
        SERVICES.iter().map(|&svc| (svc, trace.iter().filter(|s| s.service == svc).count())).collect();
    println!(
        "trace {}: {} spans {services_count:?}, {} cloud calls; 202 to complete trace in {} ms",
        roots[0].span.trace_id,
        trace.len(),
        calls.len(),
        started.elapsed().as_millis()
    );
}

/// An attribute value as sent: the receiver renders it as `Some(AnyValue { value: Some(..) })`.
fn plain(rendered: &str) -> String {
    if let Some((_, rest)) = rendered.split_once("StringValue(\"")
        && let Some((text, _)) = rest.rsplit_once("\")")
    {
        return text.replace("\\\"", "\"");
    }
    for kind in ["IntValue(", "BoolValue(", "DoubleValue("] {
        if let Some((_, rest)) = rendered.split_once(kind)
            && let Some((value, _)) = rest.split_once(')')
        {
            return value.to_owned();
        }
    }
    rendered.to_owned()
}

fn names(spans: &[&Span]) -> Vec<String> {
    spans.iter().map(|s| format!("{}:{}", s.service, s.span.name)).collect()
}

/// The trace of the run-now request once its span count stops growing (all spans exported).
async fn wait_for_trace(spans: &Arc<Mutex<Vec<Span>>>, run_id: &str) -> Vec<Span> {
    let started = Instant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let all = spans.lock().unwrap().clone();
        let trace_id = all
            .iter()
            .find(|s| s.service == "gateway" && s.span.name == "POST /api/snapshot/run-now")
            .map(|s| s.span.trace_id.clone());
        if let Some(trace_id) = trace_id {
            let trace: Vec<Span> = all.into_iter().filter(|s| s.span.trace_id == trace_id).collect();
            let has_run = trace.iter().any(|s| s.span.attributes.get("run_id").is_some_and(|r| r == run_id));
            if has_run && trace.len() == last {
                return trace;
            }
            last = trace.len();
        }
        if started.elapsed() > Duration::from_secs(30) {
            let all = spans.lock().unwrap().clone();
            let summary: Vec<String> = all
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {} {}<-{} {:?}",
                        s.service,
                        s.span.name,
                        s.span.trace_id,
                        s.span.span_id,
                        s.span.parent_span_id,
                        s.span.attributes
                    )
                })
                .collect();
            panic!("the run-now trace never settled; spans:\n{}", summary.join("\n"));
        }
    }
}
