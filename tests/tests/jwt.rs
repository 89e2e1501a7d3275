//! The gateway's session tokens are checked before anything else runs: a token with a wrong
//! signature, `alg: none`, another HMAC algorithm, an expiry in the past or missing, another issuer
//! or an audience is refused with 401 and the JSON error shape, whether it comes as a Bearer token
//! or as the session cookie, and the refusal does not echo the token. A well-formed token passes
//! the check (the gateway then finds no services behind it, which is not a 401).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use clap::Parser as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "jwt-test-signing-key-of-at-least-32-bytes";

fn claims(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": "snapkeeper-gateway",
        "sub": "id-admin",
        "name": "admin",
        "roles": ["admin"],
        "global": true,
        "csrf": "csrf-token",
        "iat": now,
        "exp": now + 600,
    });
    change(claims.as_object_mut().unwrap());
    claims
}

fn sign(algorithm: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap()
}

/// `{"alg":"none","typ":"JWT"}`, base64url-encoded.
const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// The claims of a signed token under an `alg: none` header, without a signature.
fn unsigned(claims: &Value) -> String {
    let signed = sign(Algorithm::HS256, SECRET, claims);
    let payload = signed.split('.').nth(1).unwrap();
    format!("{NONE_HEADER}.{payload}.")
}

/// The gateway alone on a free port, its services pointing at ports nothing listens on.
async fn gateway() -> String {
    let nowhere = "http://127.0.0.1:9";
    let config = gateway::Config::try_parse_from([
        "gateway",
        "--jwt-secret",
        SECRET,
        "--policy-url",
        nowhere,
        "--identity-url",
        nowhere,
        "--snapshot-url",
        nowhere,
        "--audit-url",
        nowhere,
    ])
    .unwrap();
    let app = gateway::app(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    base
}

#[tokio::test]
async fn forged_expired_and_foreign_session_tokens_are_refused_with_401() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = gateway().await;
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let refused = [
        (
            "wrong signature",
            sign(Algorithm::HS256, "another-key-of-at-least-32-bytes-long!", &claims(|_| {})),
        ),
        ("alg none", unsigned(&claims(|_| {}))),
        ("HS512 with the right key", sign(Algorithm::HS512, SECRET, &claims(|_| {}))),
        (
            "expired",
            sign(Algorithm::HS256, SECRET, &claims(|c| drop(c.insert("exp".into(), json!(now - 120))))),
        ),
        ("no expiry", sign(Algorithm::HS256, SECRET, &claims(|c| drop(c.remove("exp"))))),
        (
            "wrong issuer",
            sign(Algorithm::HS256, SECRET, &claims(|c| drop(c.insert("iss".into(), json!("keystone"))))),
        ),
        (
            "an audience",
            sign(Algorithm::HS256, SECRET, &claims(|c| drop(c.insert("aud".into(), json!("other-app"))))),
        ),
        ("not a token", "not.a.token".to_owned()),
    ];
    for (what, token) in &refused {
        let bearer = http
            .get(format!("{base}/api/snapshot/runs"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let cookie = http
            .get(format!("{base}/api/snapshot/runs"))
            .header("cookie", format!("sk_session={token}"))
            .send()
            .await
            .unwrap();
        for (via, response) in [("bearer", bearer), ("cookie", cookie)] {
            assert_eq!(response.status(), 401, "{what} as {via}");
            let body = response.text().await.unwrap();
            assert!(!body.contains(token.as_str()), "{what} as {via}: the token is echoed: {body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert!(
                error["error"]["code"].is_string() && error["error"]["message"].is_string(),
                "{what}: {body}"
            );
        }
    }

    let valid = sign(Algorithm::HS256, SECRET, &claims(|_| {}));
    let response = http
        .get(format!("{base}/api/snapshot/runs"))
        .header("authorization", format!("Bearer {valid}"))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 401, "a well-formed token passes the check");
    let response = http
        .get(format!("{base}/auth/session"))
        .header("authorization", format!("Bearer {valid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the session of a well-formed token is known without any service");
}
