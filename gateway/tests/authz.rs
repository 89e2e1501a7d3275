#![allow(clippy::unwrap_used)]
//! The authorization matrix: every endpoint x {no token, bad token, reader, member, admin, member
//! scoped to another project}, with session tokens signed here as the gateway signs them; and
//! what a project-scoped member sees of other projects (nothing). policy-svc is real; identity,
//! snapshot and audit are the stand-ins of `support`.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{JWT_SECRET, Suite, UNKNOWN_RUN};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    BadToken,
    Reader,
    Member,
    Admin,
    OtherProjectMember,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    Read,
    Write,
    Admin,
}

/// A session token as the gateway issues it, signed with `secret`.
fn session_token(
    secret: &str,
    name: &str,
    role: &str,
    project: Option<(&str, &str)>,
    expires_in: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": "snapkeeper-gateway",
        "sub": format!("id-{name}"),
        "name": name,
        "roles": [role],
        "global": project.is_none(),
        "pid": project.map(|p| p.0),
        "pname": project.map(|p| p.1),
        "csrf": "not-used-with-bearer",
        "iat": now,
        "exp": now + expires_in,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

struct Matrix {
    suite: Suite,
    web: String,
}

impl Matrix {
    fn authorization(&self, caller: Caller) -> Option<String> {
        let web = self.web.as_str();
        let token = match caller {
            Caller::Nobody => return None,
            Caller::BadToken => "not-a-jwt".to_owned(),
            Caller::Reader => session_token(JWT_SECRET, "reader", "reader", None, 600),
            Caller::Member => session_token(JWT_SECRET, "member", "member", None, 600),
            Caller::Admin => session_token(JWT_SECRET, "admin", "admin", None, 600),
            Caller::OtherProjectMember => {
                session_token(JWT_SECRET, "other", "member", Some((web, "web")), 600)
            }
        };
        Some(format!("Bearer {token}"))
    }

    async fn send(
        &self,
        caller: Caller,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(authorization) = self.authorization(caller) {
            request = request.header("authorization", authorization);
        }
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let (status, _, bytes) = self.suite.call(request.body(body).unwrap()).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

fn allowed(caller: Caller, needs: Needs) -> Option<StatusCode> {
    let granted = match caller {
        Caller::Nobody | Caller::BadToken => return Some(StatusCode::UNAUTHORIZED),
        Caller::Reader => Needs::Read,
        Caller::Member | Caller::OtherProjectMember => Needs::Write,
        Caller::Admin => Needs::Admin,
    };
    if needs <= granted { None } else { Some(StatusCode::FORBIDDEN) }
}

#[tokio::test]
async fn every_endpoint_answers_each_kind_of_caller_as_its_permission_says() {
    let suite = Suite::start(Duration::from_millis(50)).await;
    let web = suite.cloud.project("web");
    let web_volume = suite.cloud.volume_of("web");
    let matrix = Matrix { suite, web: web.clone() };
    let rules =
        json!([{"name": "all", "priority": 1, "match": {}, "policies": ["daily_5"], "auto_snapshot": true}]);
    let set = json!({"name": "matrix", "is_global": false, "tenant_id": web, "policies": ["daily_5"], "retention_map": {"daily_5": 2}});
    let assignment = json!({"volume_id": web_volume, "project_id": web, "policies": ["daily_5"], "retention_map": {"daily_5": 2}});
    let exclusion = json!({"volume_id": web_volume, "project_id": web});
    let evaluate = json!({"volume_id": web_volume});
    let priority = json!({"priority": 1});
    let enrol = json!({"auto_snapshot": true});
    let unknown_run = format!("/api/snapshot/runs/{UNKNOWN_RUN}");
    let endpoints: Vec<(&str, String, Option<&Value>, Needs)> = vec![
        ("GET", "/auth/session".into(), None, Needs::Read),
        ("GET", "/api/snapshot/rules".into(), None, Needs::Read),
        ("POST", "/api/snapshot/rules/validate".into(), Some(&rules), Needs::Write),
        ("PUT", "/api/snapshot/rules".into(), Some(&rules), Needs::Admin),
        ("GET", "/api/snapshot/policies".into(), None, Needs::Read),
        ("GET", "/api/snapshot/policy-sets".into(), None, Needs::Read),
        ("POST", "/api/snapshot/policy-sets".into(), Some(&set), Needs::Write),
        ("GET", "/api/snapshot/policy-sets/999999".into(), None, Needs::Read),
        ("PATCH", "/api/snapshot/policy-sets/999999".into(), Some(&priority), Needs::Write),
        ("DELETE", "/api/snapshot/policy-sets/999999".into(), None, Needs::Admin),
        ("GET", "/api/snapshot/assignments".into(), None, Needs::Read),
        ("POST", "/api/snapshot/assignments".into(), Some(&assignment), Needs::Write),
        ("GET", "/api/snapshot/assignments/no-such-volume".into(), None, Needs::Read),
        ("PATCH", "/api/snapshot/assignments/no-such-volume".into(), Some(&enrol), Needs::Write),
        ("DELETE", "/api/snapshot/assignments/no-such-volume".into(), None, Needs::Write),
        ("GET", "/api/snapshot/exclusions".into(), None, Needs::Read),
        ("POST", "/api/snapshot/exclusions".into(), Some(&exclusion), Needs::Write),
        ("DELETE", "/api/snapshot/exclusions/no-such-volume".into(), None, Needs::Write),
        ("POST", "/api/snapshot/evaluate".into(), Some(&evaluate), Needs::Read),
        ("GET", "/api/snapshot/runs".into(), None, Needs::Read),
        ("GET", unknown_run.clone(), None, Needs::Read),
        ("GET", "/api/snapshot/runs/active/progress".into(), None, Needs::Read),
        ("GET", format!("{unknown_run}/progress"), None, Needs::Read),
        ("GET", format!("{unknown_run}/events"), None, Needs::Read),
        ("POST", format!("{unknown_run}/cancel"), None, Needs::Admin),
        ("POST", "/api/snapshot/run-now".into(), None, Needs::Admin),
        ("GET", "/api/snapshot/run-now/status".into(), None, Needs::Read),
        ("GET", "/api/snapshot/records".into(), None, Needs::Read),
        ("GET", "/api/snapshot/records/export".into(), None, Needs::Read),
        ("GET", "/api/snapshot/compliance".into(), None, Needs::Read),
        ("GET", "/api/snapshot/compliance/trend".into(), None, Needs::Read),
        ("GET", "/api/snapshot/compliance/export".into(), None, Needs::Read),
        ("GET", "/api/snapshot/quota-forecast".into(), None, Needs::Read),
    ];
    let callers = [
        Caller::Nobody,
        Caller::BadToken,
        Caller::Reader,
        Caller::Member,
        Caller::Admin,
        Caller::OtherProjectMember,
    ];
    let mut failures = Vec::new();
    for (method, path, body, needs) in &endpoints {
        for caller in callers {
            let (status, answer) = matrix.send(caller, method, path, *body).await;
            let ok = match allowed(caller, *needs) {
                Some(expected) => status == expected && answer["error"]["code"].is_string(),
                None => {
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !status.is_server_error()
                }
            };
            if !ok {
                failures.push(format!("{method} {path} as {caller:?}: {status} {answer}"));
            }
        }
    }
    assert!(failures.is_empty(), "unexpected answers:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn bad_expired_and_foreign_tokens_are_refused_and_keystone_tokens_map_roles() {
    let suite = Suite::start(Duration::from_millis(50)).await;
    let web = suite.cloud.project("web");
    let matrix = Matrix { suite, web };
    for token in [
        session_token(JWT_SECRET, "admin", "admin", None, -120),
        session_token("another-secret-of-at-least-32-bytes!!", "admin", "admin", None, 600),
        session_token(JWT_SECRET, "nobody", "creator", None, 600),
    ] {
        let request = Request::get("/api/snapshot/runs")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = matrix.suite.call(request).await;
        assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN, "{status}");
    }
    let request =
        Request::get("/api/snapshot/runs").header("x-auth-token", "revoked").body(Body::empty()).unwrap();
    assert_eq!(matrix.suite.call(request).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = matrix.suite.json("POST", "/api/snapshot/run-now", "ks-member", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "member maps to snapshots:write");
    let (status, _) =
        matrix.suite.json("POST", "/api/snapshot/policy-sets", "ks-reader", Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reader maps to snapshots:read");
}

#[tokio::test]
async fn a_member_scoped_to_another_project_sees_and_changes_nothing_of_other_projects() {
    let suite = Suite::start(Duration::from_millis(50)).await;
    let web = suite.cloud.project("web");
    let db = suite.cloud.project("db");
    let db_volume = suite.cloud.volume_of("db");
    let matrix = Matrix { suite, web: web.clone() };
    let other = Caller::OtherProjectMember;

    // Data of project db made by a global admin.
    let body = json!({"volume_id": db_volume, "project_id": db, "policies": ["daily_5"], "retention_map": {"daily_5": 2}});
    assert_eq!(
        matrix.send(Caller::Admin, "POST", "/api/snapshot/assignments", Some(&body)).await.0,
        StatusCode::CREATED
    );
    let set = json!({"name": "db-only", "is_global": false, "tenant_id": db, "policies": ["daily_5"], "retention_map": {"daily_5": 2}});
    let (status, created) = matrix.send(Caller::Admin, "POST", "/api/snapshot/policy-sets", Some(&set)).await;
    assert_eq!(status, StatusCode::CREATED);
    let set_id = created["id"].as_i64().unwrap();

    let (_, compliance) = matrix.send(other, "GET", "/api/snapshot/compliance", None).await;
    assert_eq!(compliance["count"], 4);
    assert!(compliance["rows"].as_array().unwrap().iter().all(|r| r["project_id"] == web.as_str()));
    let (_, compliance) =
        matrix.send(other, "GET", &format!("/api/snapshot/compliance?project_id={db}"), None).await;
    assert_eq!(compliance["count"], 0, "asking for another project returns nothing");
    let (_, records) = matrix.send(other, "GET", "/api/snapshot/records", None).await;
    assert!(!records["records"].as_array().unwrap().is_empty());
    assert!(records["records"].as_array().unwrap().iter().all(|r| r["project_id"] == web.as_str()));
    let request = Request::get("/api/snapshot/records/export")
        .header("authorization", matrix.authorization(other).unwrap())
        .body(Body::empty())
        .unwrap();
    let csv = String::from_utf8(matrix.suite.call(request).await.2).unwrap();
    assert!(!csv.contains(&db) && csv.contains(&web));
    let (_, assignments) = matrix.send(other, "GET", "/api/snapshot/assignments", None).await;
    assert_eq!(assignments["count"], 0);
    let (_, assignments) =
        matrix.send(other, "GET", &format!("/api/snapshot/assignments?project_id={db}"), None).await;
    assert_eq!(assignments["count"], 0);
    let path = format!("/api/snapshot/assignments/{db_volume}");
    assert_eq!(matrix.send(other, "GET", &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(matrix.send(other, "DELETE", &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(matrix.send(Caller::Admin, "GET", &path, None).await.0, StatusCode::OK, "still there");
    let (_, sets) = matrix.send(other, "GET", "/api/snapshot/policy-sets", None).await;
    assert!(sets["policy_sets"].as_array().unwrap().iter().all(|s| s["tenant_id"] != db.as_str()));
    assert_eq!(
        matrix.send(other, "GET", &format!("/api/snapshot/policy-sets/{set_id}"), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, forecast) = matrix.send(other, "GET", "/api/snapshot/quota-forecast", None).await;
    assert!(forecast["ok_projects"].as_array().unwrap().is_empty(), "db's forecast is not shown");
    assert_eq!(forecast["alerts"][0]["project_id"], web.as_str());
    assert_eq!(
        matrix.send(other, "POST", "/api/snapshot/evaluate", Some(&json!({"volume_id": db_volume}))).await.0,
        StatusCode::NOT_FOUND
    );

    // Changes aimed at db are refused, even when the body claims the own project.
    let claim = json!({"volume_id": db_volume, "project_id": web, "policies": ["daily_5"], "retention_map": {"daily_5": 2}});
    assert_eq!(
        matrix.send(other, "POST", "/api/snapshot/assignments", Some(&claim)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        matrix
            .send(other, "POST", "/api/snapshot/exclusions", Some(&json!({"volume_id": db_volume})))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let global = json!({"name": "sneaky", "policies": ["daily_5"], "retention_map": {"daily_5": 2}});
    assert_eq!(
        matrix.send(other, "POST", "/api/snapshot/policy-sets", Some(&global)).await.0,
        StatusCode::FORBIDDEN
    );

    // A run's batches and quota blocks show only the own project.
    let (status, accepted) = matrix.send(Caller::Admin, "POST", "/api/snapshot/run-now", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = accepted["job_id"].as_str().unwrap();
    for _ in 0..100 {
        if matrix.suite.runs.run(job).is_some_and(|r| r.finished_at.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, progress) = matrix.send(other, "GET", &format!("/api/snapshot/runs/{job}/progress"), None).await;
    let batches = progress["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["tenant_ids"][0], web.as_str());
    assert!(progress["quota_blocks"].as_array().unwrap().iter().all(|b| b["project_id"] == web.as_str()));
    let (_, admin_view) =
        matrix.send(Caller::Admin, "GET", &format!("/api/snapshot/runs/{job}/progress"), None).await;
    assert_eq!(admin_view["batches"].as_array().unwrap().len(), 2);
}
