#![allow(clippy::unwrap_used)]
//! The UI in headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`):
//! sign in, filter compliance, press "Sync & Snapshot Now" and watch the progress reach 100%,
//! explain a volume. Screenshots of every page go to `target/ui-screenshots/`.
//!
//! With `CI=true` a missing chromedriver fails the test; elsewhere it is skipped with a reason.
//! Behind the gateway runs the real suite of `support` (four services over gRPC, the simulator).

mod support;

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
    let suite = Suite::start().await;
    let rules = Request::put("/api/snapshot/rules")
        .header("x-auth-token", &suite.ks("admin"))
        .body(Body::from(SEED_RULES))
        .unwrap();
    assert_eq!(suite.call(rules).await.0, 200);
    // Compliance has rows once a run has synced the inventory.
    suite.run_to_completion().await;
    let (_, compliance) =
        suite.json("GET", "/api/snapshot/compliance?limit=1000", &suite.ks("admin"), None).await;
    let rows = compliance["rows"].as_array().unwrap().clone();
    let compliant = rows.iter().filter(|r| r["status"] == "compliant").count();
    let web = suite.cloud.project("web");
    let web_rows = rows.iter().filter(|r| r["project_id"] == web.as_str()).count();
    assert!(web_rows > 0 && web_rows < rows.len(), "{compliance}");
    let base = suite.base.clone();
    let client = browser(&webdriver).await;

    // Signing in: an unauthenticated page sends the browser to the login page and back.
    client.goto(&format!("{base}/")).await.unwrap();
    client.wait().for_element(Locator::Id("login-form")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/login"));
    shot(&client, "01-login").await;
    client.find(Locator::Id("username")).await.unwrap().send_keys("admin").await.unwrap();
    client.find(Locator::Id("password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    client.find(Locator::Id("project")).await.unwrap().send_keys("admin").await.unwrap();
    client.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Id("compliance-table")).await.unwrap();
    assert_eq!(text_of(&client, "#who").await, "admin");
    assert_eq!(text_of(&client, "#sum-compliant").await, compliant.to_string());
    // A cloud this young has no daily roll-ups yet: the trend section says so instead of a chart.
    let trend = client.find(Locator::Css("section[aria-labelledby=trend-title]")).await.unwrap();
    let drawn = client.find(Locator::Css(".trend polyline")).await.is_ok();
    assert!(drawn || trend.text().await.unwrap().contains("No daily history yet"), "the trend section");
    shot(&client, "02-compliance").await;

    // Filtering compliance to one project (chosen by name, sent as its id), then to a status.
    client.find(Locator::Id("f-project")).await.unwrap().select_by_value(&web).await.unwrap();
    client.find(Locator::Id("apply-filters")).await.unwrap().click().await.unwrap();
    until(Duration::from_secs(10), "the filtered page", || async {
        client.current_url().await.is_ok_and(|u| u.query().unwrap_or_default().contains(&web))
    })
    .await;
    let shown = client.find_all(Locator::Css("#compliance-table tbody tr[data-project]")).await.unwrap();
    assert_eq!(shown.len(), web_rows);
    for row in shown {
        assert_eq!(row.attr("data-project").await.unwrap().as_deref(), Some(web.as_str()));
    }
    shot(&client, "03-compliance-by-project").await;
    client.find(Locator::Id("f-project")).await.unwrap().select_by_value("").await.unwrap();
    client.find(Locator::Id("f-status")).await.unwrap().select_by_value("pending").await.unwrap();
    client.find(Locator::Id("apply-filters")).await.unwrap().click().await.unwrap();
    until(Duration::from_secs(10), "the status-filtered page", || async {
        client.current_url().await.is_ok_and(|u| u.query().unwrap_or_default().contains("status=pending"))
    })
    .await;
    let badges = client.find_all(Locator::Css("#compliance-table tbody .badge")).await.unwrap();
    let pending = rows.iter().filter(|r| r["status"] == "pending").count();
    assert!(pending > 0);
    assert_eq!(badges.len(), pending);
    for badge in badges {
        assert_eq!(badge.text().await.unwrap(), "pending");
    }
    shot(&client, "04-compliance-filtered").await;

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
    shot(&client, "05-runs-in-progress").await;
    until(Duration::from_secs(30), "100%", || async { text_of(&client, "#run-pct").await == "100%" }).await;
    let steps = client.find_all(Locator::Css("#run-steps li.completed")).await.unwrap();
    assert_eq!(steps.len(), 4, "all four steps completed");
    until(Duration::from_secs(5), "the button to be enabled again", || async {
        client.find(Locator::Id("run-now")).await.unwrap().is_enabled().await.unwrap()
    })
    .await;
    shot(&client, "06-runs-completed").await;
    client.goto(&format!("{base}/runs")).await.unwrap();
    client.wait().for_element(Locator::Css("#runs-table tbody a")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Id("batches-table")).await.unwrap();
    assert_eq!(text_of(&client, "#run-pct").await, "100%");
    shot(&client, "07-run").await;

    // Policies: create a policy set with the form, edit it, assign a volume.
    client.goto(&format!("{base}/policies")).await.unwrap();
    client.wait().for_element(Locator::Id("set-form")).await.unwrap();
    client.find(Locator::Id("set-name")).await.unwrap().send_keys("gold").await.unwrap();
    client.find(Locator::Id("set-policies")).await.unwrap().send_keys("daily_5").await.unwrap();
    client.find(Locator::Id("set-retention")).await.unwrap().send_keys("daily_5=4").await.unwrap();
    client.find(Locator::Id("set-save")).await.unwrap().click().await.unwrap();
    let edit = client.wait().for_element(Locator::Css("#sets-table button.edit-set")).await.unwrap();
    edit.click().await.unwrap();
    let priority = client.find(Locator::Id("set-priority")).await.unwrap();
    priority.clear().await.unwrap();
    priority.send_keys("7").await.unwrap();
    client.find(Locator::Id("set-save")).await.unwrap().click().await.unwrap();
    until(Duration::from_secs(10), "the edited policy set", || async {
        text_of(&client, "#sets-table tbody tr td:nth-child(4)").await == "7"
    })
    .await;
    let web_volume = suite.cloud.volume_of("web");
    client.find(Locator::Id("assignment-volume")).await.unwrap().send_keys(&web_volume).await.unwrap();
    client.find(Locator::Id("assignment-project")).await.unwrap().send_keys(&web).await.unwrap();
    client.find(Locator::Id("assignment-policies")).await.unwrap().send_keys("weekly_4").await.unwrap();
    client.find(Locator::Id("assignment-save")).await.unwrap().click().await.unwrap();
    let selector = format!("#assignments-table tr[data-volume='{web_volume}']");
    client.wait().for_element(Locator::Css(&selector)).await.unwrap();
    let (_, sets) = suite.json("GET", "/api/snapshot/policy-sets", &suite.ks("admin"), None).await;
    assert_eq!(sets["policy_sets"][0]["name"], "gold");
    assert_eq!(sets["policy_sets"][0]["priority"], 7);
    assert_eq!(sets["policy_sets"][0]["retention_map"]["daily_5"], 4);
    let path = format!("/api/snapshot/assignments/{web_volume}");
    let (status, assignment) = suite.json("GET", &path, &suite.ks("admin"), None).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["policies"][0], "weekly_4");
    shot(&client, "08-policies-edited").await;

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
    shot(&client, "09-policies-explain").await;

    client.goto(&format!("{base}/forecast")).await.unwrap();
    client.wait().for_element(Locator::Id("forecast-table")).await.unwrap();
    shot(&client, "10-forecast").await;

    // A phone-sized window still reads.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{base}/")).await.unwrap();
    client.wait().for_element(Locator::Id("compliance-table")).await.unwrap();
    shot(&client, "11-compliance-phone").await;
    client.close().await.unwrap();
}
