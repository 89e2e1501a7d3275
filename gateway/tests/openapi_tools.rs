#![allow(clippy::unwrap_used)]
//! The OpenAPI document against outside tools, on the real suite of `support`:
//! `openapi-spec-validator` accepts it, and a bounded `schemathesis` run (every documented
//! operation, generated valid and invalid inputs, an admin's session token) gets no 5xx answer.
//!
//! Both tools come from PyPI (`pip install openapi-spec-validator schemathesis`). With `CI=true`
//! a missing tool fails the test; elsewhere the test is skipped with the reason.

mod support;

use std::path::Path;
use std::process::Output;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use support::Suite;
use tokio::process::Command;

/// Runs `program args` in `dir` (schemathesis leaves its state in the working directory);
/// `None` (test skipped) when the tool is not installed outside CI.
async fn run_tool(dir: &Path, program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).current_dir(dir).kill_on_drop(true).output().await {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !service_kit::testing::in_ci(),
                "CI=true but {program} is missing: pip install openapi-spec-validator schemathesis"
            );
            eprintln!("skipping: {program} not installed (pip install openapi-spec-validator schemathesis)");
            None
        }
        Err(error) => panic!("{program}: {error}"),
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_schemathesis_finds_no_server_error() {
    let suite = Suite::start().await;
    let (status, _, document) =
        suite.call(Request::get("/api/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &document).unwrap();

    let Some(validated) =
        run_tool(dir.path(), "openapi-spec-validator", &["--schema", "3.1", file.to_str().unwrap()]).await
    else {
        return;
    };
    assert!(validated.status.success(), "openapi-spec-validator refused the document:\n{}", text(&validated));

    let token = suite.login("admin").await["access_token"].as_str().unwrap().to_owned();
    let authorization = format!("Authorization: Bearer {token}");
    let location = format!("{}/api/openapi.json", suite.base);
    let args = [
        "run",
        &location,
        "--checks",
        "not_a_server_error",
        "--header",
        &authorization,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "8",
        "--max-time",
        "60",
        "--workers",
        "1",
        "--request-timeout",
        "15",
        "--generation-database",
        "none",
        "--no-color",
    ];
    // A crash inside the tool itself (seen once under heavy load) gets one more try; a 5xx
    // answer never does.
    for attempt in 1..=2 {
        let Some(fuzzed) = run_tool(dir.path(), "schemathesis", &args).await else { return };
        let output = text(&fuzzed);
        eprintln!("{output}");
        assert!(!output.contains("Server error"), "schemathesis got a 5xx:\n{output}");
        if fuzzed.status.success() {
            let figure = |label: &str| {
                output.lines().find_map(|l| l.trim().strip_prefix(label)).map(|v| v.trim().to_owned())
            };
            let selected = figure("Selected:").unwrap_or_default();
            let tested = figure("Tested:").unwrap_or_default();
            assert!(
                !tested.is_empty() && selected == format!("{tested}/{tested}"),
                "every operation ran:\n{output}"
            );
            return;
        }
        assert!(attempt < 2, "schemathesis failed:\n{output}");
    }
}
