#![allow(clippy::unwrap_used)]
//! The authorization matrix: every endpoint x {no token, bad token, reader, member, admin, member
//! scoped to another project}, with session tokens from real logins (Keystone through
//! identity-svc) and Keystone tokens; and what a project-scoped member sees of other projects
//! (nothing), on the real suite of `support`.

mod support;

use std::collections::BTreeMap;

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

/// How a caller authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `Authorization: Bearer` with the gateway's session token from `/auth/login`.
    Session,
    /// `X-Auth-Token` with a Keystone token, validated through identity-svc.
    Keystone,
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
    sessions: BTreeMap<&'static str, String>,
}

impl Matrix {
    /// Signs every test user in through `/auth/login`.
    async fn new(suite: Suite) -> Self {
        let mut sessions = BTreeMap::new();
        for user in ["reader", "member", "admin", "other"] {
            let login = suite.login(user).await;
            sessions.insert(user, login["access_token"].as_str().unwrap().to_owned());
        }
        Self { suite, sessions }
    }

    fn authorization(&self, caller: Caller) -> Option<String> {
        self.credential(caller, Via::Session).map(|(_, value)| value)
    }

    /// The header `caller` authenticates with: a session token or their Keystone token.
    fn credential(&self, caller: Caller, via: Via) -> Option<(&'static str, String)> {
        let user = match (caller, via) {
            (Caller::Nobody, _) => return None,
            (Caller::BadToken, Via::Session) => {
                return Some(("authorization", "Bearer not-a-jwt".to_owned()));
            }
            (Caller::BadToken, Via::Keystone) => {
                return Some(("x-auth-token", "gAAAAAnot-a-keystone-token".to_owned()));
            }
            (Caller::Reader, _) => "reader",
            (Caller::Member, _) => "member",
            (Caller::Admin, _) => "admin",
            (Caller::OtherProjectMember, _) => "other",
        };
        Some(match via {
            Via::Session => ("authorization", format!("Bearer {}", self.sessions[user])),
            Via::Keystone => ("x-auth-token", self.suite.ks(user)),
        })
    }

    async fn send(
        &self,
        caller: Caller,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.send_via(caller, Via::Session, method, path, body).await
    }

    async fn send_via(
        &self,
        caller: Caller,
        via: Via,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some((name, value)) = self.credential(caller, via) {
            request = request.header(name, value);
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
    let suite = Suite::start().await;
    let web = suite.cloud.project("web");
    let web_volume = suite.cloud.volume_of("web");
    let matrix = Matrix::new(suite).await;
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
        for (caller, via) in callers.iter().flat_map(|c| [(*c, Via::Session), (*c, Via::Keystone)]) {
            let (status, answer) = matrix.send_via(caller, via, method, path, *body).await;
            let ok = match allowed(caller, *needs) {
                Some(expected) => status == expected && answer["error"]["code"].is_string(),
                None => {
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !status.is_server_error()
                }
            };
            if !ok {
                failures.push(format!("{method} {path} as {caller:?} via {via:?}: {status} {answer}"));
            }
        }
    }
    assert!(failures.is_empty(), "unexpected answers:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn bad_expired_and_foreign_tokens_are_refused_and_keystone_tokens_map_roles() {
    let suite = Suite::start().await;
    for token in [
        session_token(JWT_SECRET, "admin", "admin", None, -120),
        session_token("another-secret-of-at-least-32-bytes!!", "admin", "admin", None, 600),
        session_token(JWT_SECRET, "nobody", "creator", None, 600),
    ] {
        let request = Request::get("/api/snapshot/runs")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = suite.call(request).await;
        assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN, "{status}");
    }
    let request =
        Request::get("/api/snapshot/runs").header("x-auth-token", "revoked").body(Body::empty()).unwrap();
    assert_eq!(suite.call(request).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = suite.json("POST", "/api/snapshot/run-now", &suite.ks("member"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "member maps to snapshots:write");
    let (status, _) =
        suite.json("POST", "/api/snapshot/policy-sets", &suite.ks("reader"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reader maps to snapshots:read");
    // Keystone's own answer decides: the sessions of the cloud's tokens carry their real scope.
    let (_, me) = suite.json("GET", "/auth/session", &suite.ks("other"), None).await;
    assert_eq!(me["name"], "other");
    assert_eq!(me["scope"]["kind"], "project", "{me}");
    assert_eq!(me["scope"]["id"], suite.cloud.project("web").as_str(), "{me}");
    let (_, me) = suite.json("GET", "/auth/session", &suite.ks("webreader"), None).await;
    assert_eq!(me["permission"], "read", "{me}");
    let (_, me) = suite.json("GET", "/auth/session", &suite.ks("admin"), None).await;
    assert_eq!(me["permission"], "admin", "{me}");
    assert_eq!(me["scope"]["kind"], "global", "{me}");
}

#[tokio::test]
async fn a_member_scoped_to_another_project_sees_and_changes_nothing_of_other_projects() {
    let suite = Suite::start().await;
    let web = suite.cloud.project("web");
    let db = suite.cloud.project("db");
    let db_volume = suite.cloud.volume_of("db");
    let web_volume = suite.cloud.volume_of("web");
    // db's volumes are quota-blocked, so the run has blocks to hide from web's member.
    suite.set_snapshot_quota("db", 0).await;
    assert_eq!(suite.run().await["status"], "partial");
    let matrix = Matrix::new(suite).await;
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
    let exclusion = json!({"volume_id": db_volume, "project_id": db, "exclusion_reason": "db only"});
    assert_eq!(
        matrix.send(Caller::Admin, "POST", "/api/snapshot/exclusions", Some(&exclusion)).await.0,
        StatusCode::CREATED
    );

    // What the admin sees of both projects, and what the web member sees: web only.
    let (_, everything) =
        matrix.send(Caller::Admin, "GET", "/api/snapshot/compliance?limit=1000", None).await;
    let all_rows = everything["rows"].as_array().unwrap();
    assert!(all_rows.iter().any(|r| r["project_id"] == db.as_str()), "{everything}");
    let web_rows = all_rows.iter().filter(|r| r["project_id"] == web.as_str()).count();
    assert!(web_rows > 0);
    let (_, compliance) = matrix.send(other, "GET", "/api/snapshot/compliance?limit=1000", None).await;
    assert_eq!(compliance["count"], web_rows, "{compliance}");
    assert!(compliance["rows"].as_array().unwrap().iter().all(|r| r["project_id"] == web.as_str()));
    let (_, compliance) =
        matrix.send(other, "GET", &format!("/api/snapshot/compliance?project_id={db}"), None).await;
    assert_eq!(compliance["count"], 0, "asking for another project returns nothing");
    let (_, records) = matrix.send(Caller::Admin, "GET", "/api/snapshot/records?limit=1000", None).await;
    assert!(records["records"].as_array().unwrap().iter().any(|r| r["project_id"] == db.as_str()));
    let (_, records) = matrix.send(other, "GET", "/api/snapshot/records?limit=1000", None).await;
    assert!(!records["records"].as_array().unwrap().is_empty());
    assert!(records["records"].as_array().unwrap().iter().all(|r| r["project_id"] == web.as_str()));
    let (_, records) =
        matrix.send(other, "GET", &format!("/api/snapshot/records?project_id={db}"), None).await;
    assert_eq!(records["count"], 0);
    let request = Request::get("/api/snapshot/records/export")
        .header("authorization", matrix.authorization(other).unwrap())
        .body(Body::empty())
        .unwrap();
    let csv = String::from_utf8(matrix.suite.call(request).await.2).unwrap();
    assert!(!csv.contains(&db) && csv.contains(&web));
    let request = Request::get("/api/snapshot/compliance/export")
        .header("authorization", matrix.authorization(other).unwrap())
        .body(Body::empty())
        .unwrap();
    let csv = String::from_utf8(matrix.suite.call(request).await.2).unwrap();
    assert!(!csv.contains(&db) && !csv.contains(&db_volume) && csv.contains(&web_volume), "{csv}");
    let (_, assignments) = matrix.send(other, "GET", "/api/snapshot/assignments", None).await;
    assert_eq!(assignments["count"], 0);
    let (_, assignments) =
        matrix.send(other, "GET", &format!("/api/snapshot/assignments?project_id={db}"), None).await;
    assert_eq!(assignments["count"], 0);
    let (_, exclusions) = matrix.send(other, "GET", "/api/snapshot/exclusions", None).await;
    assert_eq!(exclusions["count"], 0, "{exclusions}");
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
    let projects: Vec<&Value> = forecast["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(forecast["ok_projects"].as_array().unwrap())
        .collect();
    assert!(!projects.is_empty(), "{forecast}");
    assert!(
        projects.iter().all(|p| p["project_id"] == web.as_str()),
        "db's forecast is not shown: {forecast}"
    );
    assert_eq!(
        matrix.send(other, "POST", "/api/snapshot/evaluate", Some(&json!({"volume_id": db_volume}))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        matrix.send(other, "POST", "/api/snapshot/evaluate", Some(&json!({"volume_id": web_volume}))).await.0,
        StatusCode::OK
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
    let (_, runs) = matrix.send(Caller::Admin, "GET", "/api/snapshot/runs", None).await;
    let job = runs["runs"][0]["id"].as_str().unwrap().to_owned();
    let (_, progress) = matrix.send(other, "GET", &format!("/api/snapshot/runs/{job}/progress"), None).await;
    let batches = progress["batches"].as_array().unwrap();
    assert!(!batches.is_empty(), "{progress}");
    assert!(
        batches.iter().all(|b| b["tenant_ids"].as_array().unwrap().iter().all(|t| t == web.as_str())),
        "{progress}"
    );
    assert!(progress["quota_blocks"].as_array().unwrap().is_empty(), "db's blocks are not shown: {progress}");
    let (_, admin_view) =
        matrix.send(Caller::Admin, "GET", &format!("/api/snapshot/runs/{job}/progress"), None).await;
    assert!(admin_view["batches"].as_array().unwrap().len() > batches.len(), "{admin_view}");
    assert!(!admin_view["quota_blocks"].as_array().unwrap().is_empty(), "{admin_view}");
    let (_, detail) = matrix.send(other, "GET", &format!("/api/snapshot/runs/{job}"), None).await;
    assert!(
        detail["records"].as_array().unwrap().iter().all(|r| r["project_id"] == web.as_str()),
        "{detail}"
    );
}
