#![allow(clippy::unwrap_used)]
//! Every REST endpoint through HTTP: status codes, the seed's field names, errors naming the
//! field; against the real suite (`support`: the four services over gRPC, the simulated cloud).

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::{PASSWORD, Suite, UNKNOWN_RUN};

/// The seed's rules file (exclusion first, then a catch-all), as the tests store it.
const SEED_RULES: &str = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily + 1st + 15th", "priority": 20, "match": {},
   "policies": ["daily_5", "monthly_1st", "monthly_15th"], "auto_snapshot": true,
   "retention": {"daily_5": 5, "monthly_1st": 1, "monthly_15th": 1}}
]"#;

async fn put_rules(suite: &Suite, document: &str) -> (StatusCode, Value) {
    let request = Request::put("/api/snapshot/rules")
        .header("x-auth-token", &suite.ks("admin"))
        .header("content-type", "application/json")
        .body(Body::from(document.to_owned()))
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn login_issues_a_short_lived_token_and_a_strict_http_only_cookie() {
    let suite = Suite::start().await;
    let request = Request::post("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"username": "member", "password": PASSWORD, "domain": "Default", "project": "admin"})
                .to_string(),
        ))
        .unwrap();
    let (status, headers, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["user"]["permission"], "write");
    assert_eq!(body["user"]["scope"]["kind"], "global");
    assert!(!body.to_string().contains(PASSWORD), "the password is never echoed");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("sk_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");

    let token = body["access_token"].as_str().unwrap();
    let request = Request::get("/auth/session")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["name"], "member");

    // A form login (the page without scripts) redirects with the cookie; a wrong one comes back.
    let form = Request::post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("username=admin&password={PASSWORD}&project=admin&next=%2Fruns")))
        .unwrap();
    let (status, headers, _) = suite.call(form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/runs");
    assert!(headers.contains_key("set-cookie"));
    let wrong = Request::post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("username=admin&password=nope"))
        .unwrap();
    let (status, headers, _) = suite.call(wrong).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers["location"].to_str().unwrap().starts_with("/login?error=unauthenticated"));

    // Without a project (the test cloud's users have no default project) Keystone issues an
    // unscoped token, which carries no roles: refused, naming what is missing.
    let unscoped = Request::post("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"username": "member", "password": PASSWORD}).to_string()))
        .unwrap();
    let (status, _, body) = suite.call(unscoped).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("project"), "{body}");
    // A project the user has no role on is a wrong login, not a server error.
    let foreign = Request::post("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"username": "other", "password": PASSWORD, "project": "db"}).to_string()))
        .unwrap();
    assert_eq!(suite.call(foreign).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_throttled_and_missing_fields_are_named() {
    let suite = Suite::start().await;
    let login = |password: &str| {
        Request::post("/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(json!({"username": "reader", "password": password}).to_string()))
            .unwrap()
    };
    for _ in 0..5 {
        let (status, _, body) = suite.call(login("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!String::from_utf8_lossy(&body).contains("wrong\""));
    }
    let (status, headers, _) = suite.call(login(PASSWORD)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the user is locked out for a while");
    assert!(headers.contains_key("retry-after"));

    let missing = Request::post("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"username": "reader"}).to_string()))
        .unwrap();
    let (status, _, body) = suite.call(missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["field"], "password");
}

#[tokio::test]
async fn cookie_authenticated_writes_need_the_csrf_token_and_the_same_origin() {
    let suite = Suite::start().await;
    let request = Request::post("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"username": "member", "password": PASSWORD, "project": "admin"}).to_string()))
        .unwrap();
    let (_, headers, body) = suite.call(request).await;
    let csrf = serde_json::from_slice::<Value>(&body).unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let cookie = headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let create = |csrf: Option<&str>, origin: Option<&str>| {
        let mut request = Request::post("/api/snapshot/policy-sets")
            .header("cookie", &cookie)
            .header("host", "gateway.test")
            .header("content-type", "application/json");
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request
            .body(Body::from(
                json!({"name": "csrf", "policies": ["daily_5"], "retention_map": {"daily_5": 5}}).to_string(),
            ))
            .unwrap()
    };
    assert_eq!(suite.call(create(None, None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(suite.call(create(Some("forged"), None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(suite.call(create(Some(&csrf), Some("https://evil.example"))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(suite.call(create(Some(&csrf), Some("http://gateway.test"))).await.0, StatusCode::CREATED);
    // Reads with the cookie need no token.
    let read =
        Request::get("/api/snapshot/policy-sets").header("cookie", &cookie).body(Body::empty()).unwrap();
    assert_eq!(suite.call(read).await.0, StatusCode::OK);
}

#[tokio::test]
async fn rules_are_validated_with_every_problem_and_a_rejected_set_changes_nothing() {
    let suite = Suite::start().await;
    let (status, empty) = suite.json("GET", "/api/snapshot/rules", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["version"], 0);

    let broken =
        r#"[{"name": "a", "match": {"size": 3, "volume_name": {"regex": "("}}, "policies": ["daily_5"]}]"#;
    let request = Request::post("/api/snapshot/rules/validate")
        .header("x-auth-token", &suite.ks("member"))
        .header("content-type", "application/json")
        .body(Body::from(broken))
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["error"]["code"], "invalid_argument");
    let problems = body["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "every problem, not only the first: {problems:?}");
    assert!(problems.iter().any(|p| p["code"] == "unknown_key"));
    assert!(problems.iter().any(|p| p["code"] == "bad_regex"));

    let request = Request::post("/api/snapshot/rules/validate")
        .header("x-auth-token", &suite.ks("member"))
        .header("content-type", "application/json")
        .body(Body::from(SEED_RULES))
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["rule_count"], 2);

    let (status, replaced) = put_rules(&suite, SEED_RULES).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["active_version"]["version"], 1);
    let (status, rejected) = put_rules(&suite, broken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!rejected["problems"].as_array().unwrap().is_empty());
    let (_, active) = suite.json("GET", "/api/snapshot/rules", &suite.ks("reader"), None).await;
    assert_eq!(active["version"], 1, "the rejected document left the active set alone");
    assert_eq!(active["document"][0]["name"], "Exclude lab / playground tenants");

    let request = Request::put("/api/snapshot/rules?expected_version=7")
        .header("x-auth-token", &suite.ks("admin"))
        .body(Body::from(SEED_RULES))
        .unwrap();
    assert_eq!(suite.call(request).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn policy_sets_keep_the_seed_fields_defaults_and_conflicts() {
    let suite = Suite::start().await;
    let body = json!({"name": "gold", "description": "d", "policies": ["daily_5"], "retention_map": {"daily_5": 5}, "priority": 10});
    let (status, created) =
        suite.json("POST", "/api/snapshot/policy-sets", &suite.ks("member"), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for field in [
        "id",
        "name",
        "description",
        "is_global",
        "tenant_id",
        "tenant_name",
        "policies",
        "retention_map",
        "priority",
        "is_active",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
    ] {
        assert!(created.get(field).is_some(), "field {field} in {created}");
    }
    assert_eq!(created["is_global"], true, "is_global defaults to true as in the seed");
    assert_eq!(created["created_by"], "member");
    let id = created["id"].as_i64().unwrap();
    let (status, _) = suite.json("POST", "/api/snapshot/policy-sets", &suite.ks("member"), Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, list) =
        suite.json("GET", "/api/snapshot/policy-sets?is_global=true", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 1);
    assert_eq!(list["policy_sets"][0]["name"], "gold");

    let (status, patched) = suite
        .json(
            "PATCH",
            &format!("/api/snapshot/policy-sets/{id}"),
            &suite.ks("member"),
            Some(json!({"priority": 99})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["priority"], 99);
    let (status, empty) = suite
        .json("PATCH", &format!("/api/snapshot/policy-sets/{id}"), &suite.ks("member"), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty["error"]["field"], "body");

    let bad = json!({"name": "bad", "policies": ["daily_5"], "retention_map": {"weekly_4": 2}});
    let (status, error) =
        suite.json("POST", "/api/snapshot/policy-sets", &suite.ks("member"), Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error["error"]["field"].as_str().unwrap().contains("retention_map"), "{error}");
    let (status, error) =
        suite.json("POST", "/api/snapshot/policy-sets", &suite.ks("member"), Some(json!({"name": 5}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["error"]["field"].is_string());

    assert_eq!(
        suite.json("DELETE", &format!("/api/snapshot/policy-sets/{id}"), &suite.ks("member"), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        suite.json("DELETE", &format!("/api/snapshot/policy-sets/{id}"), &suite.ks("admin"), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        suite.json("GET", &format!("/api/snapshot/policy-sets/{id}"), &suite.ks("reader"), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        suite.json("GET", "/api/snapshot/policy-sets/0", &suite.ks("reader"), None).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn assignments_and_exclusions_round_trip_with_the_seed_fields() {
    let suite = Suite::start().await;
    let volume = suite.cloud.volume_of("web");
    let web = suite.cloud.project("web");
    let body = json!({"volume_id": volume, "project_id": web, "policies": ["daily_5"], "retention_map": {"daily_5": 3}});
    let (status, created) =
        suite.json("POST", "/api/snapshot/assignments", &suite.ks("member"), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["auto_snapshot"], true, "auto_snapshot defaults to true as in the seed");
    assert_eq!(created["assignment_source"], "manual");
    assert_eq!(
        suite.json("POST", "/api/snapshot/assignments", &suite.ks("member"), Some(body)).await.0,
        StatusCode::CONFLICT
    );
    let (status, list) = suite
        .json("GET", &format!("/api/snapshot/assignments?project_id={web}"), &suite.ks("reader"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 1);
    for field in ["assignments", "count", "limit", "offset"] {
        assert!(list.get(field).is_some(), "{field}");
    }
    let path = format!("/api/snapshot/assignments/{volume}");
    let (status, patched) = suite
        .json(
            "PATCH",
            &path,
            &suite.ks("member"),
            Some(json!({"auto_snapshot": false, "policies": [], "retention_map": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["auto_snapshot"], false);
    assert_eq!(suite.json("GET", &path, &suite.ks("reader"), None).await.0, StatusCode::OK);
    assert_eq!(suite.json("DELETE", &path, &suite.ks("member"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(suite.json("GET", &path, &suite.ks("reader"), None).await.0, StatusCode::NOT_FOUND);

    let exclusion = json!({"volume_id": volume, "project_id": web, "exclusion_reason": "migration"});
    let (status, created) =
        suite.json("POST", "/api/snapshot/exclusions", &suite.ks("member"), Some(exclusion.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["scope"], "volume");
    assert_eq!(created["exclusion_source"], "manual");
    assert_eq!(
        suite.json("POST", "/api/snapshot/exclusions", &suite.ks("member"), Some(exclusion)).await.0,
        StatusCode::CONFLICT
    );
    let (_, list) = suite.json("GET", "/api/snapshot/exclusions", &suite.ks("reader"), None).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["exclusions"][0]["exclusion_reason"], "migration");
    let past = json!({"volume_id": "x", "project_id": web, "expires_at": "2001-01-01"});
    let (status, error) =
        suite.json("POST", "/api/snapshot/exclusions", &suite.ks("member"), Some(past)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "expires_at");
    let path = format!("/api/snapshot/exclusions/{volume}");
    assert_eq!(suite.json("DELETE", &path, &suite.ks("member"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(suite.json("DELETE", &path, &suite.ks("member"), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn evaluate_explains_a_volume_looked_up_in_the_cloud_and_the_catalog_shows_next_slots() {
    let suite = Suite::start().await;
    assert_eq!(put_rules(&suite, SEED_RULES).await.0, StatusCode::OK);
    let lab = suite.cloud.volume_of("lab");
    let (status, explained) = suite
        .json("POST", "/api/snapshot/evaluate", &suite.ks("reader"), Some(json!({"volume_id": lab})))
        .await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    assert_eq!(explained["source"], "rule");
    assert_eq!(explained["matched_rule_name"], "Exclude lab / playground tenants");
    assert_eq!(explained["enrolled"], false);
    assert_eq!(explained["volume"]["project_name"], "lab");
    assert!(!explained["summary"].as_str().unwrap().is_empty());
    let web = suite.cloud.volume_of("web");
    let (_, explained) = suite
        .json("POST", "/api/snapshot/evaluate", &suite.ks("reader"), Some(json!({"volume_id": web})))
        .await;
    assert_eq!(
        explained["rule_checks"][0]["matched"], false,
        "the exclusion rule was checked first and failed"
    );
    assert_eq!(explained["rule_checks"][0]["failed_key"], "tenant_name");
    assert_eq!(explained["policies"].as_array().unwrap().len(), 3);

    let (status, _) = suite
        .json(
            "POST",
            "/api/snapshot/evaluate",
            &suite.ks("reader"),
            Some(json!({"volume_id": "no-such-volume"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) =
        suite.json("POST", "/api/snapshot/evaluate", &suite.ks("reader"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "volume_id");

    let (status, catalog) = suite.json("GET", "/api/snapshot/policies", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    let daily =
        catalog["policies"].as_array().unwrap().iter().find(|p| p["name"] == "daily_5").unwrap().clone();
    assert_eq!(daily["next_slots"].as_array().unwrap().len(), 3);
    assert_eq!(daily["source"], "legacy_name");
}

#[tokio::test]
async fn run_now_is_accepted_once_refused_while_active_and_completes_all_four_steps() {
    let suite = Suite::start().await;
    let (_, idle) = suite.json("GET", "/api/snapshot/run-now/status", &suite.ks("reader"), None).await;
    assert_eq!(idle["status"], "idle");
    let (status, accepted) = suite.json("POST", "/api/snapshot/run-now", &suite.ks("admin"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["status"], "pending");
    let job = accepted["job_id"].as_str().unwrap().to_owned();
    let (status, conflict) = suite.json("POST", "/api/snapshot/run-now", &suite.ks("admin"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["job_id"], job.as_str(), "the 409 carries the active job id");
    assert_eq!(conflict["error"]["code"], "already_exists");
    let (_, active) =
        suite.json("GET", "/api/snapshot/runs/active/progress", &suite.ks("reader"), None).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["run"]["id"], job.as_str());

    let finished = suite.wait_until_finished(&job).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    suite.wait_for_records(&job).await;
    assert_eq!(finished["job_id"], job.as_str());
    assert_eq!(finished["triggered_by"], "admin");
    let steps = finished["steps"].as_array().unwrap();
    let keys: Vec<&str> = steps.iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["policy_assign", "inventory_pre", "snapshots", "inventory_post"]);
    assert!(steps.iter().all(|s| s["status"] == "completed"));
    assert_eq!(finished["progress_pct"], 100.0);

    let (_, active) =
        suite.json("GET", "/api/snapshot/runs/active/progress", &suite.ks("reader"), None).await;
    assert_eq!(active["active"], false);
    assert!(active["run"].is_null());
    let (status, list) =
        suite.json("GET", "/api/snapshot/runs?status_filter=success", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 1);
    for field in [
        "id",
        "run_type",
        "started_at",
        "finished_at",
        "status",
        "total_volumes",
        "snapshots_created",
        "snapshots_deleted",
        "snapshots_failed",
        "volumes_skipped",
        "dry_run",
        "triggered_by",
        "trigger_source",
        "execution_host",
        "error_summary",
        "created_at",
    ] {
        assert!(list["runs"][0].get(field).is_some(), "run field {field}");
    }
    let (status, detail) =
        suite.json("GET", &format!("/api/snapshot/runs/{job}"), &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, progress) =
        suite.json("GET", &format!("/api/snapshot/runs/{job}/progress"), &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(progress["is_active"], false);
    let batches = progress["batches"].as_array().unwrap();
    assert!(batches.len() >= 2, "8 enrolled volumes in batches of 4: {progress}");
    assert_eq!(progress["run"]["completed_batches"], batches.len());
    assert!(progress["quota_blocks"].as_array().unwrap().is_empty(), "{progress}");
    // One snapshot per volume enrolled by metadata (two in each of the four projects).
    assert_eq!(detail["snapshots_created"], 8, "{detail}");
    let records = detail["records"].as_array().unwrap();
    assert_eq!(records.iter().filter(|r| r["action"] == "created").count(), 8, "{detail}");
    assert_eq!(
        suite.json("GET", &format!("/api/snapshot/runs/{UNKNOWN_RUN}"), &suite.ks("reader"), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, error) =
        suite.json("GET", "/api/snapshot/runs/not-a-uuid/progress", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "run_id");
    assert_eq!(
        suite.json("POST", &format!("/api/snapshot/runs/{job}/cancel"), &suite.ks("admin"), None).await.0,
        StatusCode::CONFLICT
    );

    // The slot is free again.
    assert_eq!(
        suite.json("POST", "/api/snapshot/run-now", &suite.ks("admin"), None).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn run_events_stream_as_sse_until_the_run_finishes_and_resume_after_last_event_id() {
    let suite = Suite::start().await;
    let (_, accepted) = suite.json("POST", "/api/snapshot/run-now", &suite.ks("admin"), None).await;
    let job = accepted["job_id"].as_str().unwrap().to_owned();
    let request = Request::get(format!("/api/snapshot/runs/{job}/events"))
        .header("x-auth-token", &suite.ks("reader"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) =
        tokio::time::timeout(Duration::from_secs(20), suite.call(request)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("id: 1\nevent: snapshot\n") || text.contains("event: snapshot"), "{text}");
    for event in ["step_changed", "batch_started", "batch_finished", "run_finished"] {
        assert!(text.contains(&format!("event: {event}")), "{event} in {text}");
    }
    let last = text.lines().rev().find_map(|l| l.strip_prefix("id: ")).unwrap().parse::<i64>().unwrap();
    assert!(text.contains("\"progress_pct\":100.0"));

    let resumed = Request::get(format!("/api/snapshot/runs/{job}/events"))
        .header("x-auth-token", &suite.ks("reader"))
        .header("last-event-id", (last - 1).to_string())
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = suite.call(resumed).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids, [last.to_string()], "only the events after Last-Event-ID");

    let bad = Request::get(format!("/api/snapshot/runs/{job}/events"))
        .header("x-auth-token", &suite.ks("reader"))
        .header("last-event-id", "soon")
        .body(Body::empty())
        .unwrap();
    assert_eq!(suite.call(bad).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = Request::get(format!("/api/snapshot/runs/{UNKNOWN_RUN}/events"))
        .header("x-auth-token", &suite.ks("reader"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(suite.call(unknown).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn records_page_with_the_seed_fields_and_export_as_csv() {
    let suite = Suite::start().await;
    // db has no snapshot quota left: its volumes are recorded as quota-blocked.
    suite.set_snapshot_quota("db", 0).await;
    let run = suite.run().await;
    assert_eq!(run["status"], "partial", "{run}");
    let run_id = run["job_id"].as_str().unwrap().to_owned();
    let (_, all) = suite.json("GET", "/api/snapshot/records?limit=1000", &suite.ks("reader"), None).await;
    let total = all["count"].as_u64().unwrap();
    assert!(total > 5, "the run recorded its snapshots and quota blocks: {all}");
    let (status, page) = suite.json("GET", "/api/snapshot/records?limit=5", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["count"], 5);
    assert!(page["next_page_token"].is_string());
    for field in [
        "id",
        "snapshot_run_id",
        "action",
        "snapshot_id",
        "snapshot_name",
        "volume_id",
        "volume_name",
        "tenant_id",
        "tenant_name",
        "project_id",
        "project_name",
        "vm_id",
        "vm_name",
        "policy_name",
        "size_gb",
        "created_at",
        "deleted_at",
        "retention_days",
        "status",
        "error_message",
        "openstack_created_at",
    ] {
        assert!(page["records"][0].get(field).is_some(), "record field {field}");
    }
    let (_, offset) =
        suite.json("GET", "/api/snapshot/records?limit=5&offset=5", &suite.ks("reader"), None).await;
    assert_ne!(offset["records"][0]["id"], page["records"][0]["id"]);
    let token = page["next_page_token"].as_str().unwrap();
    let (_, next) = suite
        .json("GET", &format!("/api/snapshot/records?limit=5&page_token={token}"), &suite.ks("reader"), None)
        .await;
    assert_eq!(next["records"][0]["id"], offset["records"][0]["id"], "offset and page_token agree");
    let (_, created_records) = suite
        .json(
            "GET",
            &format!("/api/snapshot/records?action=created&snapshot_run_id={run_id}"),
            &suite.ks("reader"),
            None,
        )
        .await;
    let created = created_records["records"].as_array().unwrap();
    assert_eq!(created.len(), 6, "one snapshot per enrolled volume outside db: {created_records}");
    assert!(created.iter().all(|r| r["snapshot_run_id"] == run_id.as_str() && r["action"] == "created"));
    let db = suite.cloud.project("db");
    assert!(created.iter().all(|r| r["project_id"] != db.as_str()), "db had no quota left");
    let (_, other_run) = suite
        .json(
            "GET",
            &format!("/api/snapshot/records?snapshot_run_id={UNKNOWN_RUN}"),
            &suite.ks("reader"),
            None,
        )
        .await;
    assert_eq!(other_run["count"], 0);

    let (status, error) =
        suite.json("GET", "/api/snapshot/records?limit=5000", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "limit");
    let (status, error) =
        suite.json("GET", "/api/snapshot/records?limit=many", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "limit");
    let (status, error) =
        suite.json("GET", "/api/snapshot/records?action=exploded", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "action");

    let request = Request::get("/api/snapshot/records/export")
        .header("x-auth-token", &suite.ks("reader"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(headers["content-disposition"].to_str().unwrap().contains("snapshot_records_"));
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,snapshot_run_id,created_at,action,status"));
    assert_eq!(lines.len() as u64, total + 1, "header and every record: {text}");
}

#[tokio::test]
async fn compliance_keeps_the_seed_fields_filters_and_has_a_trend_and_an_export() {
    let suite = Suite::start().await;
    suite.set_snapshot_quota("db", 0).await;
    assert_eq!(suite.run().await["status"], "partial");
    let (status, all) = suite
        .json("GET", "/api/snapshot/compliance?include_rollups=true&limit=1000", &suite.ks("reader"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let rows = all["rows"].as_array().unwrap();
    assert_eq!(all["count"], rows.len());
    for field in ["compliant", "noncompliant", "pending", "quota_blocked", "days"] {
        assert!(all["summary"].get(field).is_some(), "summary field {field}");
    }
    let with_status = |status: &str| rows.iter().filter(|r| r["status"] == status).count();
    assert_eq!(all["summary"]["compliant"], with_status("compliant"), "{all}");
    assert_eq!(all["summary"]["pending"], with_status("pending"), "{all}");
    assert_eq!(all["summary"]["total"], rows.len(), "{all}");
    for field in [
        "volume_id",
        "volume_name",
        "volume_type",
        "tenant_id",
        "tenant_name",
        "project_id",
        "project_name",
        "vm_id",
        "vm_name",
        "policy_name",
        "retention_days",
        "snapshot_count",
        "last_snapshot_at",
        "compliant",
        "status",
    ] {
        assert!(rows[0].get(field).is_some(), "row field {field}");
    }
    // One row per enrolled (volume, policy) pair: two volumes in each of four projects, first
    // seen enrolled by this run's inventory sync, so nothing is owed before the next daily slot.
    assert_eq!(rows.len(), 8, "{all}");
    assert!(rows.iter().all(|r| r["policy_name"] == "daily_5" && r["status"] == "pending"), "{all}");
    let web = suite.cloud.project("web");
    let db = suite.cloud.project("db");
    let by_project = all["by_project"].as_array().unwrap();
    assert_eq!(by_project.len(), 4, "{all}");
    let web_rollup = by_project.iter().find(|p| p["key"] == web.as_str()).unwrap();
    assert_eq!(web_rollup["name"], "web");
    assert_eq!(web_rollup["summary"]["total"], 2);
    let snapshotted =
        rows.iter().filter(|r| r["project_id"] == web.as_str() && r["last_snapshot_at"].is_string());
    assert_eq!(snapshotted.count(), 2, "the run's snapshots of web were synced: {all}");
    let blocked = rows.iter().filter(|r| r["project_id"] == db.as_str() && r["last_snapshot_at"].is_null());
    assert_eq!(blocked.count(), 2, "db had no snapshot quota: {all}");

    let (_, filtered) = suite
        .json(
            "GET",
            &format!("/api/snapshot/compliance?project_id={db}&status=pending,quota_blocked"),
            &suite.ks("reader"),
            None,
        )
        .await;
    assert_eq!(filtered["count"], 2, "{filtered}");
    assert!(
        filtered["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["project_name"] == "db" && r["compliant"] == false)
    );
    let (_, none) = suite
        .json(
            "GET",
            &format!("/api/snapshot/compliance?project_id={db}&status=compliant"),
            &suite.ks("reader"),
            None,
        )
        .await;
    assert_eq!(none["count"], 0, "{none}");
    let acme = suite.cloud.domain("acme");
    let (_, domain) = suite
        .json(
            "GET",
            &format!("/api/snapshot/compliance?tenant_id={acme}&limit=1000"),
            &suite.ks("reader"),
            None,
        )
        .await;
    let domain_rows = domain["rows"].as_array().unwrap();
    assert!(!domain_rows.is_empty(), "{domain}");
    assert!(domain_rows.iter().all(|r| r["tenant_id"] == acme.as_str()), "{domain}");
    assert_eq!(domain_rows.len(), rows.iter().filter(|r| r["tenant_id"] == acme.as_str()).count());
    let (status, error) =
        suite.json("GET", "/api/snapshot/compliance?days=0", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "days");
    let (status, error) =
        suite.json("GET", "/api/snapshot/compliance?status=great", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "status");

    let (status, trend) =
        suite.json("GET", "/api/snapshot/compliance/trend?days=7", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::OK);
    // audit-svc keeps daily points from its roll-ups; a cloud this young has none or today's.
    assert_eq!(trend["days"], 7, "{trend}");
    assert_eq!(trend["group_by"], "overall", "{trend}");
    for series in trend["series"].as_array().unwrap() {
        let points = series["points"].as_array().unwrap();
        assert!(points.len() <= 7 && points.iter().all(|p| p["compliance_pct"].is_number()), "{trend}");
    }
    let (status, _) =
        suite.json("GET", "/api/snapshot/compliance/trend?group_by=galaxy", &suite.ks("reader"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let request = Request::get("/api/snapshot/compliance/export?status=pending")
        .header("x-auth-token", &suite.ks("reader"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("Status,Volume,Volume ID"));
    assert_eq!(text.lines().count(), with_status("pending") + 1, "header and the pending rows: {text}");

    // A filter audit-svc refuses is a 4xx with the JSON error before any CSV is sent, not a 200
    // whose body breaks off.
    let request = Request::get("/api/snapshot/compliance/export?tenant_id=E%08x")
        .header("x-auth-token", &suite.ks("admin"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert!(status.is_client_error(), "{status}");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
}

#[tokio::test]
async fn quota_forecast_keeps_the_runbook_fields() {
    let suite = Suite::start().await;
    // Two enrolled volumes keeping 5 snapshots each do not fit in a quota of 1.
    suite.set_snapshot_quota("db", 1).await;
    let (status, forecast) = suite
        .json(
            "GET",
            "/api/snapshot/quota-forecast?safety_margin_pct=20&horizon_hours=48",
            &suite.ks("reader"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let db = suite.cloud.project("db");
    let alerts = forecast["alerts"].as_array().unwrap();
    assert!(
        alerts.iter().any(|a| a["project_id"] == db.as_str() && a["severity"] == "critical"),
        "db has no snapshot quota for its enrolled volumes: {forecast}"
    );
    let ok: Vec<&str> = forecast["ok_projects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["project_name"].as_str())
        .collect();
    assert!(ok.contains(&"web"), "{forecast}");
    assert_eq!(forecast["summary"]["safety_margin_pct"], 20.0);
    assert_eq!(forecast["summary"]["horizon_hours"], 48.0);
    for field in [
        "total_projects_scanned",
        "projects_at_risk",
        "projects_ok",
        "critical_count",
        "warning_count",
        "total_snapshot_volumes",
        "safety_margin_pct",
    ] {
        assert!(forecast["summary"].get(field).is_some(), "summary field {field}");
    }
    let (status, error) = suite
        .json("GET", "/api/snapshot/quota-forecast?safety_margin_pct=300", &suite.ks("reader"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "safety_margin_pct");
}

#[tokio::test]
async fn responses_carry_request_ids_security_headers_and_body_limits_hold() {
    let suite = Suite::start().await;
    let request = Request::get("/healthz").header("x-request-id", "req-42").body(Body::empty()).unwrap();
    let (_, headers, _) = suite.call(request).await;
    assert_eq!(headers["x-request-id"], "req-42", "a caller's request id is kept");
    let request = Request::get("/login").body(Body::empty()).unwrap();
    let (status, headers, _) = suite.call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers["x-request-id"].is_empty(), "one is made up otherwise");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.contains_key("referrer-policy"));

    let huge = "x".repeat(3 * 1024 * 1024);
    let request = Request::post("/api/snapshot/rules/validate")
        .header("x-auth-token", &suite.ks("member"))
        .header("content-type", "application/json")
        .body(Body::from(huge))
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"], "payload_too_large");
    let request = Request::post("/api/snapshot/policy-sets")
        .header("x-auth-token", &suite.ks("member"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, _, body) = suite.call(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"], "bad_request");
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_endpoint() {
    let suite = Suite::start().await;
    let (status, _, body) = suite.call(Request::get("/api/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let document: Value = serde_json::from_slice(&body).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/auth/login", &["post"][..]),
        ("/api/snapshot/rules", &["get", "put"]),
        ("/api/snapshot/rules/validate", &["post"]),
        ("/api/snapshot/policies", &["get"]),
        ("/api/snapshot/policy-sets", &["get", "post"]),
        ("/api/snapshot/policy-sets/{id}", &["get", "patch", "delete"]),
        ("/api/snapshot/assignments", &["get", "post"]),
        ("/api/snapshot/assignments/{volume_id}", &["get", "patch", "delete"]),
        ("/api/snapshot/exclusions", &["get", "post"]),
        ("/api/snapshot/exclusions/{volume_id}", &["delete"]),
        ("/api/snapshot/evaluate", &["post"]),
        ("/api/snapshot/runs", &["get"]),
        ("/api/snapshot/runs/{run_id}", &["get"]),
        ("/api/snapshot/runs/active/progress", &["get"]),
        ("/api/snapshot/runs/{run_id}/progress", &["get"]),
        ("/api/snapshot/runs/{run_id}/events", &["get"]),
        ("/api/snapshot/run-now", &["post"]),
        ("/api/snapshot/run-now/status", &["get"]),
        ("/api/snapshot/records", &["get"]),
        ("/api/snapshot/records/export", &["get"]),
        ("/api/snapshot/compliance", &["get"]),
        ("/api/snapshot/compliance/trend", &["get"]),
        ("/api/snapshot/compliance/export", &["get"]),
        ("/api/snapshot/quota-forecast", &["get"]),
    ] {
        for method in methods {
            assert!(paths.get(path).and_then(|p| p.get(*method)).is_some(), "{method} {path} documented");
        }
    }
    // No GET endpoint changes anything: the only non-GET methods are the documented writes.
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
}
