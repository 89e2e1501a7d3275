//! Secrets stay secret across the whole suite. `snapkeeper up` runs with known secrets (the
//! service user's password, Fernet-encrypted under a known key, the gateway's JWT signing key, the
//! internal gRPC credential) with debug JSON logs and OTLP export; the test signs in, takes a
//! Keystone token, runs a snapshot run, reads compliance and records, and provokes errors (wrong
//! password, tampered tokens, bad bodies, missing credentials). Then every captured stdout and
//! stderr line, every exported span (attributes, events, status) and every response (headers and
//! body) is searched for each secret: none may appear. Along the way: session cookies are
//! HttpOnly, Secure (configured) and SameSite=Strict; every UI page carries the security headers;
//! the services refuse gRPC calls without the internal credential.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_opentelemetry_collector::FakeCollectorServer;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::{SecurityArgs, parse_secret};
use snapkeeper_e2e::binary;
use snapkeeper_proto::policy::v1::GetRulesRequest;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PASSWORD: &str = "Demo-Pass-91e4c7b2";
const WRONG_PASSWORD: &str = "Wrong-Pass-5d0a33e8";
const JWT_SECRET: &str = "jwt-signing-key-7c1f0e9a4b2d6c8e3f5a1b7d";
const INTERNAL_TOKEN: &str = "internal-credential-3e8b5f2a9c7d1e4b";

/// Everything the test saw: output lines, spans (as JSON) and responses.
#[derive(Default)]
struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    spans: Arc<Mutex<Vec<String>>>,
    responses: Vec<String>,
}

impl Capture {
    fn record(&mut self, what: &str, headers: &HeaderMap, body: &str) {
        let headers: Vec<String> =
            headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or(""))).collect();
        self.responses.push(format!("{what}\n{}\n{body}", headers.join("\n")));
    }
}

async fn send(
    capture: &mut Capture,
    what: &str,
    request: reqwest::RequestBuilder,
) -> (u16, HeaderMap, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    capture.record(what, &headers, &body);
    (status, headers, body)
}

/// `Process` of the e2e crate reads stdout only; this keeps stderr too, line by line.
fn spawn_up(env: &[(&str, String)], lines: &Arc<Mutex<Vec<String>>>) -> tokio::process::Child {
    let any = "127.0.0.1:0";
    let data = tempfile::tempdir().unwrap().keep();
    let mut command = Command::new(binary("snapkeeper").unwrap());
    command
        .args(["up", "--gateway-listen", any, "--policy-listen", any, "--identity-listen", any])
        .args(["--snapshot-listen", any, "--audit-listen", any, "--sim-listen", any])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines = Arc::clone(lines);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
    }
    child
}

/// The gateway URL and the simulated Keystone URL, from the banner.
async fn wait_for_banner(lines: &Arc<Mutex<Vec<String>>>) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        {
            let seen = lines.lock().unwrap();
            if seen.iter().any(|l| l.contains("Press Ctrl-C")) {
                let after = |marker: &str| {
                    let line = seen.iter().find(|l| l.contains(marker)).unwrap();
                    let rest = &line[line.find(marker).unwrap() + marker.len()..];
                    rest.split([' ', ',']).find(|w| !w.is_empty()).unwrap().trim_end_matches('/').to_owned()
                };
                let policy = after("policy-svc").replace("grpc://", "http://");
                return (after("UI and REST API"), after("simulated demo cloud"), policy);
            }
        }
        assert!(
            Instant::now() < deadline,
            "snapkeeper up did not come up:\n{}",
            lines.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn security_headers_present(page: &str, headers: &HeaderMap) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let policy = header("content-security-policy");
    assert!(
        policy.contains("default-src") && policy.contains("frame-ancestors 'none'"),
        "{page}: CSP {policy:?}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff", "{page}");
    assert_eq!(header("x-frame-options"), "DENY", "{page}");
    assert!(!header("referrer-policy").is_empty(), "{page}: Referrer-Policy");
}

async fn policy_rules_status(url: &str, token: Option<&str>) -> tonic::Code {
    let security =
        SecurityArgs { internal_token: token.and_then(|t| parse_secret(t).ok()), ..SecurityArgs::default() };
    let channel = connect_lazy(url, &security, Timeouts::default()).unwrap();
    match PolicyServiceClient::new(channel).get_rules(GetRulesRequest::default()).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_a_span_or_a_response() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fernet_key = fernet::Fernet::generate_key();
    let encrypted_password = fernet::Fernet::new(&fernet_key).unwrap().encrypt(PASSWORD.as_bytes());
    let mut capture = Capture::default();

    let mut collector = FakeCollectorServer::start().await.unwrap();
    let endpoint = collector.endpoint();
    let spans = Arc::clone(&capture.spans);
    let drain = tokio::spawn(async move {
        loop {
            let batch = collector.exported_spans(1, Duration::from_millis(200)).await;
            spans.lock().unwrap().extend(batch.iter().map(|span| serde_json::to_string(span).unwrap()));
        }
    });

    let env = [
        ("SNAPKEEPER_DEMO_PASSWORD", PASSWORD.to_owned()),
        ("SNAPSHOT_SERVICE_USER_EMAIL", "snapkeeper-svc".to_owned()),
        ("SNAPSHOT_USER_PASSWORD_ENCRYPTED", encrypted_password.clone()),
        ("SNAPSHOT_PASSWORD_KEY", fernet_key.clone()),
        ("GATEWAY_JWT_SECRET", JWT_SECRET.to_owned()),
        ("GATEWAY_SECURE_COOKIES", "true".to_owned()),
        ("SNAPKEEPER_INTERNAL_TOKEN", INTERNAL_TOKEN.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OS_CLOUD", String::new()),
        ("OS_AUTH_URL", String::new()),
        ("PF9_AUTH_URL", String::new()),
    ];
    let mut up = spawn_up(&env, &capture.lines);
    let (gateway, keystone, policy_url) = wait_for_banner(&capture.lines).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // A Keystone token of the cloud's admin, as a user of the API would hold one.
    let auth = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "demo-admin", "domain": {"name": "Default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
    let (status, headers, _) =
        send(&mut capture, "keystone token", http.post(format!("{keystone}/auth/tokens")).json(&auth)).await;
    assert_eq!(status, 201);
    let keystone_token = headers["x-subject-token"].to_str().unwrap().to_owned();
    capture.responses.pop(); // The token is that response's very purpose.

    let login = json!({"username": "demo-admin", "password": PASSWORD, "project": "admin"});
    let response = http.post(format!("{gateway}/auth/login")).json(&login).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "session cookie without {flag}: {cookie}");
    }
    let session_cookie = cookie.split(';').next().unwrap().to_owned();
    let login_answer: Value = response.json().await.unwrap();
    let session = login_answer["access_token"].as_str().unwrap().to_owned();
    assert!(!login_answer.to_string().contains(PASSWORD));

    let bearer = format!("Bearer {session}");
    let wrong = json!({"username": "demo-admin", "password": WRONG_PASSWORD, "project": "admin"});
    let (status, _, _) =
        send(&mut capture, "wrong login", http.post(format!("{gateway}/auth/login")).json(&wrong)).await;
    assert_eq!(status, 401);
    let (status, _, _) = send(
        &mut capture,
        "tampered keystone token",
        http.get(format!("{gateway}/api/snapshot/runs")).header("x-auth-token", format!("{keystone_token}x")),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = send(
        &mut capture,
        "tampered session",
        http.get(format!("{gateway}/api/snapshot/runs")).header("authorization", format!("{bearer}x")),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = send(
        &mut capture,
        "bad body",
        http.post(format!("{gateway}/api/snapshot/policy-sets"))
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body(format!("{{\"name\": \"{PASSWORD}\", ")),
    )
    .await;
    assert_eq!(status, 400);

    let (status, _, body) = send(
        &mut capture,
        "run-now",
        http.post(format!("{gateway}/api/snapshot/run-now")).header("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let job = serde_json::from_str::<Value>(&body).unwrap()["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_mins(4);
    loop {
        let (_, _, body) = send(
            &mut capture,
            "run status",
            http.get(format!("{gateway}/api/snapshot/run-now/status"))
                .header("x-auth-token", &keystone_token),
        )
        .await;
        let status: Value = serde_json::from_str(&body).unwrap();
        if status["job_id"] == job.as_str() && status["active"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for path in [
        "/api/snapshot/compliance",
        "/api/snapshot/records",
        "/api/snapshot/runs",
        &format!("/api/snapshot/runs/{job}"),
        "/api/snapshot/quota-forecast",
        "/auth/session",
    ] {
        let (status, _, body) = send(
            &mut capture,
            path,
            http.get(format!("{gateway}{path}")).header("x-auth-token", &keystone_token),
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // Paging limits hold on every listing: out-of-range limits and offsets are named, not served.
    for listing in [
        "/api/snapshot/records",
        "/api/snapshot/runs",
        "/api/snapshot/assignments",
        "/api/snapshot/compliance",
    ] {
        for (query, field) in [("limit=0", "limit"), ("limit=1001", "limit"), ("offset=100001", "offset")] {
            let path = format!("{listing}?{query}");
            let (status, _, body) = send(
                &mut capture,
                &path,
                http.get(format!("{gateway}{path}")).header("authorization", &bearer),
            )
            .await;
            assert_eq!(status, 422, "{path}: {body}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["field"], field, "{path}");
        }
        let path = format!("{listing}?limit=1000");
        let (status, _, body) =
            send(&mut capture, &path, http.get(format!("{gateway}{path}")).header("authorization", &bearer))
                .await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    for page in ["/", "/runs", &format!("/runs/{job}"), "/policies", "/forecast", "/login"] {
        let (status, headers, _) =
            send(&mut capture, page, http.get(format!("{gateway}{page}")).header("cookie", &session_cookie))
                .await;
        assert_eq!(status, 200, "{page}");
        security_headers_present(page, &headers);
    }
    let (status, headers, _) =
        send(&mut capture, "anonymous page", http.get(format!("{gateway}/runs"))).await;
    assert!(status == 303 || status == 200, "{status}");
    security_headers_present("/runs without a session", &headers);

    assert_eq!(policy_rules_status(&policy_url, None).await, tonic::Code::Unauthenticated);
    assert_eq!(
        policy_rules_status(&policy_url, Some("internal-credential-wrong")).await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(policy_rules_status(&policy_url, Some(INTERNAL_TOKEN)).await, tonic::Code::Ok);

    let pid = up.id().unwrap();
    Command::new("kill").args(["-INT", &pid.to_string()]).status().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), up.wait()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    drain.abort();

    let secrets = [
        ("service user password", PASSWORD.to_owned()),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("Fernet key", fernet_key),
        ("encrypted password", encrypted_password),
        ("JWT signing key", JWT_SECRET.to_owned()),
        ("internal credential", INTERNAL_TOKEN.to_owned()),
        ("Keystone token", keystone_token),
        ("session token", session),
    ];
    let lines = capture.lines.lock().unwrap().clone();
    let spans = capture.spans.lock().unwrap().clone();
    let mut leaks = Vec::new();
    for (name, secret) in &secrets {
        for (source, texts) in [("log line", &lines), ("span", &spans), ("response", &capture.responses)] {
            if let Some(text) = texts.iter().find(|text| text.contains(secret.as_str())) {
                leaks.push(format!("{name} in a {source}: {}", text.chars().take(400).collect::<String>()));
            }
        }
    }
    eprintln!(
        "checked {} secrets in {} log lines, {} spans and {} responses",
        secrets.len(),
        lines.len(),
        spans.len(),
        capture.responses.len()
    );
    assert!(lines.len() > 100 && spans.len() > 50, "too little was captured to prove anything");
    // The captures hold the flow itself, so a secret that went the same way would have been seen.
    assert!(lines.iter().any(|line| line.contains("demo-admin")), "the sign-in is in the logs");
    assert!(spans.iter().any(|span| span.contains(&job)), "the run is in the spans");
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
