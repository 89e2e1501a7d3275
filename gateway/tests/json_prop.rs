//! Fuzzing the gateway's JSON bodies against the real suite: every operation the OpenAPI document
//! says takes a request body gets arbitrary JSON made of the document's own property names (and
//! raw text that is not JSON at all), as the cloud admin. Nothing answers 5xx, and every 4xx is
//! the JSON error shape naming a code and a message.
//!
//! A normal run sends `PROPTEST_CASES` bodies (proptest's default, 256). Set
//! `SNAPKEEPER_FUZZ_SECONDS=300` to keep drawing fresh batches for five minutes; the count of
//! requests sent is printed either way.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::{Map, Value};
use service_kit::testing::fuzz;
use support::Suite;

/// `(METHOD, path)` of every documented operation with a request body, path parameters filled.
fn operations_with_bodies(document: &Value, volume: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            if operation.get("requestBody").is_some() {
                let path = path
                    .replace("{volume_id}", volume)
                    .replace("{id}", "1")
                    .replace("{run_id}", support::UNKNOWN_RUN);
                found.push((method.to_uppercase(), path));
            }
        }
    }
    found
}

/// Every property name any schema of the document declares.
fn property_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                names.extend(properties.keys().cloned());
            }
            map.values().for_each(|v| property_names(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| property_names(v, names)),
        _ => {}
    }
}

fn body(names: Vec<String>) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(i64::MAX), Just(i64::MIN), any::<i64>()]
            .prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec!["daily_5", "admin", "", "global", "project", "[]", "0 2 * * *"])
            .prop_map(Value::from),
        "[a-z0-9_-]{0,40}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        // Long enough to cross every field limit, short enough to stay under the body limit.
        (1usize..20).prop_map(|kib| Value::from("x".repeat(kib * 1024))),
    ];
    let key = prop_oneof![4 => prop::sample::select(names), 1 => any::<String>()];
    let json = leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    });
    prop_oneof![
        8 => json.prop_map(|value| value.to_string()),
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
}

#[test]
fn arbitrary_json_bodies_never_get_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let suite = runtime.block_on(Suite::start());
    let (_, _, document) =
        runtime.block_on(suite.call(Request::get("/api/openapi.json").body(Body::empty()).unwrap()));
    let document: Value = serde_json::from_slice(&document).unwrap();
    let operations = operations_with_bodies(&document, &suite.cloud.volume_of("lab"));
    assert!(operations.len() >= 8, "the document lists the body-taking operations: {operations:?}");
    let mut names = BTreeSet::new();
    property_names(&document, &mut names);
    let admin = suite.ks("admin");
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());

    let strategy = (prop::sample::select(operations.clone()), body(names.into_iter().collect()));
    let executions = fuzz("gateway json bodies", &strategy, |((method, path), body)| {
        let request = Request::builder()
            .method(method.as_str())
            .uri(path.as_str())
            .header("x-auth-token", &admin)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, headers, answer) = runtime.block_on(suite.call(request));
        *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
        prop_assert!(
            !status.is_server_error(),
            "{} {} answered {}: {}",
            method,
            path,
            status,
            String::from_utf8_lossy(&answer)
        );
        if status.is_client_error() {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
            prop_assert!(
                content_type.starts_with("application/json"),
                "{} {}: {} as {}",
                method,
                path,
                status,
                content_type
            );
            let error: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            prop_assert!(
                error["error"]["code"].is_string() && error["error"]["message"].is_string(),
                "{} {}: {}",
                method,
                path,
                error
            );
        }
        Ok(())
    });
    eprintln!("{} operations with bodies: {operations:?}", operations.len());
    eprintln!("answers by status: {:?}", statuses.lock().unwrap());
    assert!(executions > 0);
}
