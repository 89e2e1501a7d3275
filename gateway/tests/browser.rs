#![allow(clippy::unwrap_used)]
//! The UI in headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`):
//! sign in, filter compliance, press "Sync & Snapshot Now" and watch the progress reach 100%,
//! explain a volume. Screenshots of every page go to `target/ui-screenshots/`.
//!
//! With `CI=true` a missing chromedriver fails the test; elsewhere it is skipped with a reason.
//! policy-svc is real; identity, snapshot and audit are the stand-ins of `support`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use fantoccini::{Client, ClientBuilder, Locator};
use support::{PASSWORD, Suite};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The seed's rules, so the explain box has rules to explain with.
const SEED_RULES: &str = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily", "priority": 20, "match": {}, "policies": ["daily_5"], "auto_snapshot": true}
]"#;

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn start_driver() -> Option<(Driver, String)> {
    if !Path::new(CHROMEDRIVER).exists() {
        assert!(
            !service_kit::testing::in_ci(),
            "CI=true but {CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver"
        );
        eprintln!(
            "skipping browser test: {CHROMEDRIVER} not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((driver, format!("http://127.0.0.1:{port}")))
}

async fn browser(webdriver: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,900"],
            "binary": "/usr/bin/chromium",
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(webdriver)
        .await
        .unwrap()
}

/// Waits until `check` holds, up to `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_filter_compliance_run_now_to_100_percent_and_explain_a_volume() {
    let Some((_driver, webdriver)) = start_driver().await else { return };
    let suite = Suite::start(Duration::from_millis(700)).await;
    let rules = Request::put("/api/snapshot/rules")
        .header("x-auth-token", "ks-admin")
        .body(Body::from(SEED_RULES))
        .unwrap();
    assert_eq!(suite.call(rules).await.0, 200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = suite.app.clone();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    let client = browser(&webdriver).await;

    // Signing in: an unauthenticated page sends the browser to the login page and back.
    client.goto(&format!("{base}/")).await.unwrap();
    client.wait().for_element(Locator::Id("login-form")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/login"));
    shot(&client, "01-login").await;
    client.find(Locator::Id("username")).await.unwrap().send_keys("admin").await.unwrap();
    client.find(Locator::Id("password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    client.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Id("compliance-table")).await.unwrap();
    assert_eq!(text_of(&client, "#who").await, "admin");
    assert_eq!(text_of(&client, "#sum-compliant").await, "3");
    assert!(client.find(Locator::Css(".trend polyline")).await.is_ok(), "the trend chart is drawn");
    shot(&client, "02-compliance").await;

    // Filtering compliance to the missing rows.
    client.find(Locator::Id("f-status")).await.unwrap().select_by_value("missing").await.unwrap();
    client.find(Locator::Id("apply-filters")).await.unwrap().click().await.unwrap();
    until(Duration::from_secs(10), "the filtered page", || async {
        client.current_url().await.is_ok_and(|u| u.query().unwrap_or_default().contains("status=missing"))
    })
    .await;
    let badges = client.find_all(Locator::Css("#compliance-table tbody .badge")).await.unwrap();
    assert_eq!(badges.len(), 3);
    for badge in badges {
        assert_eq!(badge.text().await.unwrap(), "missing");
    }
    shot(&client, "03-compliance-filtered").await;

    // Sync & Snapshot Now: the four steps go live and the progress reaches 100%.
    client.goto(&format!("{base}/runs")).await.unwrap();
    let button = client.wait().for_element(Locator::Id("run-now")).await.unwrap();
    assert!(button.is_enabled().await.unwrap());
    button.click().await.unwrap();
    until(Duration::from_secs(5), "the button to be disabled while the run is active", || async {
        !client.find(Locator::Id("run-now")).await.unwrap().is_enabled().await.unwrap()
    })
    .await;
    until(Duration::from_secs(10), "a running step", || async {
        client.find(Locator::Css("#run-steps li.running, #run-steps li.completed")).await.is_ok()
    })
    .await;
    shot(&client, "04-runs-in-progress").await;
    until(Duration::from_secs(30), "100%", || async { text_of(&client, "#run-pct").await == "100%" }).await;
    let steps = client.find_all(Locator::Css("#run-steps li.completed")).await.unwrap();
    assert_eq!(steps.len(), 4, "all four steps completed");
    until(Duration::from_secs(5), "the button to be enabled again", || async {
        client.find(Locator::Id("run-now")).await.unwrap().is_enabled().await.unwrap()
    })
    .await;
    shot(&client, "05-runs-completed").await;
    client.goto(&format!("{base}/runs")).await.unwrap();
    client.wait().for_element(Locator::Css("#runs-table tbody a")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Id("batches-table")).await.unwrap();
    assert_eq!(text_of(&client, "#run-pct").await, "100%");
    shot(&client, "06-run").await;

    // Explain a volume of the excluded lab project.
    client.goto(&format!("{base}/policies")).await.unwrap();
    client.wait().for_element(Locator::Id("explain-form")).await.unwrap();
    let lab = suite.cloud.volume_of("lab");
    client.find(Locator::Id("explain-volume")).await.unwrap().send_keys(&lab).await.unwrap();
    client.find(Locator::Id("explain")).await.unwrap().click().await.unwrap();
    let decision = client.wait().for_element(Locator::Id("explain-decision")).await.unwrap();
    let decision = decision.text().await.unwrap();
    assert!(decision.contains("Exclude lab / playground tenants"), "{decision}");
    assert!(decision.contains("enrolled: no"), "{decision}");
    shot(&client, "07-policies-explain").await;

    client.goto(&format!("{base}/forecast")).await.unwrap();
    client.wait().for_element(Locator::Id("forecast-table")).await.unwrap();
    shot(&client, "08-forecast").await;

    // A phone-sized window still reads.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{base}/")).await.unwrap();
    client.wait().for_element(Locator::Id("compliance-table")).await.unwrap();
    shot(&client, "09-compliance-phone").await;
    client.close().await.unwrap();
}
