#![allow(clippy::unwrap_used)]
//! The gRPC-backed subcommands as an operator runs them (the real binary): `policy validate`
//! against a real policy-svc started in this process, offline validation, completion scripts, and
//! the error (exit 1, service, URL, RPC, gRPC code) when a service is down or lacks the RPC.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

use clap::Parser as _;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const SEED_RULES: &str = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily + 1st + 15th", "priority": 20, "match": {},
   "policies": ["daily_5", "monthly_1st", "monthly_15th"], "auto_snapshot": true,
   "retention": {"daily_5": 5, "monthly_1st": 1, "monthly_15th": 1}}
]"#;

/// Three problems: an unknown match key, a bad regex, a policy nobody defines.
const BROKEN_RULES: &str = r#"[
  {"name": "lab", "priority": 10, "match": {"tenant": "lab"}, "policies": [], "auto_snapshot": false},
  {"name": "db", "priority": 20, "match": {"volume_name": {"regex": "db[0-9"}}, "policies": ["daily_5"]},
  {"name": "all", "priority": 30, "match": {}, "policies": ["fortnightly"]}
]"#;

/// The binary with no service settings inherited from the environment.
fn snapkeeper() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_snapkeeper"));
    for name in
        ["POLICY_SVC_URL", "IDENTITY_SVC_URL", "SNAPSHOT_SVC_URL", "AUDIT_SVC_URL", "SNAPKEEPER_TLS_CA"]
    {
        command.env_remove(name);
    }
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A real policy-svc on 127.0.0.1:0 with its own SQLite file.
struct PolicySvc {
    address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PolicySvc {
    async fn start(data_dir: &Path) -> Self {
        let database_url = format!("sqlite://{}?mode=rwc", data_dir.join("policy.db").display());
        let config = policy_svc::Config::try_parse_from([
            "policy-svc",
            "--database-url",
            &database_url,
            "--identity-url",
            "http://127.0.0.1:9",
        ])
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            policy_svc::serve(config, listener, shutdown).await.unwrap();
        });
        Self { address, stop, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn policy_validate_asks_policy_svc_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let service = PolicySvc::start(dir.path()).await;
    let good = dir.path().join("rules.json");
    std::fs::write(&good, SEED_RULES).unwrap();
    let output = snapkeeper()
        .args(["policy", "validate"])
        .arg(&good)
        .args(["--policy-url", &service.url()])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(": valid (2 rules, 0 catalog entries, sha256:"), "{stdout}");
    assert!(stdout.contains(&format!("checked by policy-svc at {}", service.url())), "{stdout}");

    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, BROKEN_RULES).unwrap();
    let output = snapkeeper()
        .args(["policy", "validate"])
        .arg(&bad)
        .args(["--policy-url", &service.url()])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let problems: Vec<&str> = stdout.lines().filter(|line| line.contains(" [")).collect();
    assert_eq!(problems.len(), 3, "{stdout}");
    assert!(problems[0].contains("broken.json: rule 0 \"lab\", match.tenant: unknown match key"), "{stdout}");
    assert!(problems[0].ends_with("[unknown_key, /0/match/tenant]"), "{stdout}");
    assert!(problems[1].contains("[bad_regex,"), "{stdout}");
    assert!(problems[2].contains("[unknown_policy,"), "{stdout}");
    assert!(stderr.contains("broken.json is invalid: 3 problem(s)"), "{stderr}");
    service.stop().await;
}

#[tokio::test]
async fn offline_validation_agrees_with_the_service_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, BROKEN_RULES).unwrap();
    let unreachable = format!("http://127.0.0.1:{}", closed_port().await);
    let output = snapkeeper()
        .args(["policy", "validate", "--offline", "--policy-url", &unreachable])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().filter(|line| line.contains(" [")).count(), 3, "{stdout}");
    assert!(stdout.contains("invalid, 3 problems (3 rules, 0 catalog entries, sha256:"), "{stdout}");
    assert!(stdout.contains("checked offline"), "{stdout}");

    let good = dir.path().join("rules.json");
    std::fs::write(&good, SEED_RULES).unwrap();
    let output = snapkeeper().args(["policy", "validate", "--offline"]).arg(&good).output().await.unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
}

#[tokio::test]
async fn completion_scripts_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let output = snapkeeper().args(["completions", shell]).output().await.unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{shell}: {stderr}");
        for word in ["check-cloud", "compliance", "forecast", "validate", "explain"] {
            assert!(stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let output = snapkeeper().args(["completions", "tcsh"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(2), "clap refuses an unknown shell");
}

#[tokio::test]
async fn a_service_that_is_down_is_named_with_its_url_and_the_code() {
    let url = format!("http://127.0.0.1:{}", closed_port().await);
    let cases: [(&[&str], &str, &str); 5] = [
        (&["runs", "--snapshot-url"], "snapshot-svc", "ListRuns"),
        (&["run", "--dry-run", "--watch", "--snapshot-url"], "snapshot-svc", "StartRun"),
        (&["forecast", "--snapshot-url"], "snapshot-svc", "ForecastQuota"),
        (&["compliance", "--csv", "--audit-url"], "audit-svc", "GetCompliance"),
        (&["policy", "explain", "vol-1", "--policy-url"], "policy-svc", "Evaluate"),
    ];
    for (args, service, rpc) in cases {
        let output = snapkeeper().args(args).arg(&url).output().await.unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
        let expected = format!("error: {service} at {url}: {rpc} failed with Unavailable: ");
        assert!(stderr.starts_with(&expected), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("(is {service} running and reachable at {url}?)")), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn an_rpc_the_server_lacks_is_reported_as_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let service = PolicySvc::start(dir.path()).await;
    // policy-svc does not serve SnapshotService: the answer is Unimplemented, not a crash.
    let output = snapkeeper().args(["runs", "--snapshot-url", &service.url()]).output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: snapshot-svc at {}: ListRuns failed with Unimplemented: ",
            service.url()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("(snapshot-svc does not offer ListRuns yet)"), "{stderr}");
    service.stop().await;
}
