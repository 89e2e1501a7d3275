#![allow(clippy::unwrap_used)]
//! `snapkeeper check-cloud` as an operator runs it (the real binary), against the simulated demo
//! cloud always, and against real Keystone + Cinder when `SNAPKEEPER_OS_CLOUD_TESTS=1` with the
//! `OS_*` variables of `/tmp/realos/endpoints.env` (CI sets both).

use std::time::Duration;

use openstack::{CloudConfig, NewUser, OpenStack, SecretString};
use openstack_sim::{Scenario, SimConfig, Simulator};
use serde_json::Value;
use tokio::process::Command;

/// The binary with no cloud, service-user or suite variables inherited from the environment.
fn snapkeeper_without_cloud_env() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_snapkeeper"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OS_") || name.starts_with("PF9_") || name.starts_with("SNAPSHOT_") {
            command.env_remove(name);
        }
    }
    command
}

fn demo_cloud_env(command: &mut Command, auth_url: &str, password: &str) {
    command
        .env("OS_AUTH_URL", auth_url)
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", password)
        .env("OS_PROJECT_NAME", "admin")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default");
}

/// Every check's status by name, from `--json` output.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (check["name"].as_str().unwrap().to_owned(), check["status"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn assert_every_check_passes(report: &Value) {
    let not_passing: Vec<_> =
        report["checks"].as_array().unwrap().iter().filter(|check| check["status"] != "pass").collect();
    assert!(not_passing.is_empty(), "checks not passing: {not_passing:#?}");
    assert_eq!(report["passed"], true);
    assert_eq!(statuses(report).len(), 10, "{report:#}");
}

#[tokio::test]
async fn every_check_passes_on_the_simulated_demo_cloud_and_the_probe_leaves_nothing_behind() {
    let sim = Simulator::start(SimConfig {
        scenario: Scenario::demo_with_password("demo"),
        snapshot_delay: Duration::from_millis(50),
        volume_delay: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let projects_before = sim.counts().projects;
    let mut command = snapkeeper_without_cloud_env();
    demo_cloud_env(&mut command, &sim.auth_url(), "demo");
    let output = command
        .env("SNAPSHOT_SERVICE_USER_EMAIL", "snapkeeper-svc@example.com")
        .args(["check-cloud", "--probe-grant", "--json"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_every_check_passes(&report);
    let detail = |name: &str| {
        report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(detail("keystone.projects").starts_with("20 projects in 3 domains"), "{report:#}");
    assert!(detail("cinder.volumes").starts_with("200 volumes in 18 projects"), "{report:#}");
    assert!(detail("keystone.service_user").contains("user snapkeeper-svc"), "{report:#}");
    assert!(detail("keystone.role_grant").contains("for service user snapkeeper-svc"), "{report:#}");
    assert_eq!(sim.counts().projects, projects_before, "the throwaway project must be deleted");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_failed_login_fails_the_report_and_skips_the_rest_with_a_readable_table() {
    let sim = Simulator::start(SimConfig {
        scenario: Scenario::demo_with_password("demo"),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut command = snapkeeper_without_cloud_env();
    demo_cloud_env(&mut command, &sim.auth_url(), "wrong-password");
    let output = command.arg("check-cloud").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAIL    auth"), "{stdout}");
    assert!(
        stdout.lines().any(|line| line.starts_with("SKIP")
            && line.contains(" cinder.volumes ")
            && line.ends_with("not run: the login failed")),
        "{stdout}"
    );
    assert!(stdout.contains("10 checks: 0 passed, 0 with warnings, 9 skipped, 1 failed"), "{stdout}");
    assert!(stderr.contains("error: 1 of 10 cloud checks failed"), "{stderr}");
    assert!(!stdout.contains("wrong-password") && !stderr.contains("wrong-password"));
    sim.shutdown().await;
}

/// The real stack when CI (or a developer) asks for it; a skip with the reason otherwise.
fn real_stack_enabled() -> bool {
    if std::env::var("SNAPKEEPER_OS_CLOUD_TESTS").is_ok_and(|v| v == "1") {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !in_ci,
        "CI is set but SNAPKEEPER_OS_CLOUD_TESTS is not 1: check-cloud must run against the real stack"
    );
    eprintln!(
        "SKIP check-cloud against real OpenStack: SNAPKEEPER_OS_CLOUD_TESTS is not 1 \
         (source /tmp/realos/endpoints.env and set it to run)"
    );
    false
}

#[tokio::test]
async fn every_check_passes_against_real_keystone_and_cinder() {
    if !real_stack_enabled() {
        return;
    }
    // A service user of its own, so the lookup and the grant probe run for real.
    let admin = OpenStack::connect(CloudConfig::from_env().unwrap()).await.unwrap();
    let name = format!("skc-check-svc-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let user = admin
        .keystone()
        .create_user(&NewUser {
            name: name.clone(),
            domain_id: "default".into(),
            password: SecretString::from(uuid::Uuid::new_v4().to_string()),
            email: Some(format!("{name}@example.com")),
        })
        .await
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_snapkeeper"))
        .env("SNAPSHOT_SERVICE_USER_EMAIL", format!("{name}@example.com"))
        .env_remove("SNAPSHOT_SERVICE_USER_DOMAIN")
        .env_remove("SNAPSHOT_SERVICE_USER_ROLE")
        .args(["check-cloud", "--probe-grant", "--json"])
        .output()
        .await;
    admin.keystone().delete_user(&user.id).await.unwrap();
    let output = output.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_every_check_passes(&report);
}
