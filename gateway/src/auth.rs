//! Who is calling: `POST /auth/login` checks Keystone credentials through identity-svc and issues
//! a short-lived HS256 session token (returned, and set as an HttpOnly SameSite=Strict cookie for
//! the UI); requests then present `Authorization: Bearer <token>`, the cookie, or a Keystone token
//! in `X-Auth-Token` (validated through identity-svc, cached briefly by its SHA-256).
//!
//! Cookie-authenticated writes must carry the session's CSRF token in `X-CSRF-Token` (it is inside
//! the signed session, so a forged cookie cannot carry a matching one) and, when the browser sends
//! `Origin`, come from this host. Passwords and tokens are never logged or echoed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use service_kit::client::ServiceChannel;
use sha2::{Digest, Sha256};
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::identity::v1::{
    AuthenticateUserRequest, TokenScope, UserIdentity, ValidateUserTokenRequest,
};
use utoipa::ToSchema;

use crate::AppState;
use crate::config::AuthArgs;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::rbac::{CanAdmin, CanRead, CanWrite, Permission, Principal, RoleMap, Scope};
use crate::throttle::Throttle;
use crate::upstream::Upstream;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sk_session";
/// Header carrying the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Issuer written into and required of session tokens.
const ISSUER: &str = "snapkeeper-gateway";
/// Shortest accepted signing key.
const MIN_SECRET_BYTES: usize = 32;
/// Validated Keystone tokens remembered at most.
const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Why the gateway cannot set up authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// No signing key and a listener other people can reach.
    #[error(
        "GATEWAY_JWT_SECRET or GATEWAY_JWT_SECRET_FILE is required when listening on {0} \
         (a generated key is only used on loopback)"
    )]
    MissingSecret(SocketAddr),
    /// The key is too short to be safe for HS256.
    #[error("{0} must be at least 32 bytes")]
    ShortSecret(&'static str),
    /// The key file could not be read.
    #[error("reading GATEWAY_JWT_SECRET_FILE {path}: {source}")]
    SecretFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Session signing, role mapping, login throttling and the Keystone token cache.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    role_map: RoleMap,
    global_projects: Vec<String>,
    secure_cookies: bool,
    per_user: Throttle,
    per_address: Throttle,
    token_cache_ttl: Duration,
    token_cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    identity: IdentityServiceClient<ServiceChannel>,
}

impl Auth {
    /// Sets up authentication for a gateway listening on `listen`.
    pub fn new(args: &AuthArgs, listen: SocketAddr, upstream: &Upstream) -> Result<Self, AuthSetupError> {
        let secret = signing_key(args, listen)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            ttl: Duration::from_secs(args.jwt_ttl_seconds),
            role_map: args.role_map.clone(),
            global_projects: args.global_projects.clone(),
            secure_cookies: args.secure_cookies,
            per_user: Throttle::new(args.login_failures_per_user, Duration::from_mins(5)),
            per_address: Throttle::new(args.login_attempts_per_address, Duration::from_mins(1)),
            token_cache_ttl: Duration::from_secs(args.token_cache_seconds),
            token_cache: Mutex::new(HashMap::new()),
            identity: upstream.identity(),
        })
    }

    /// The principal of a Keystone identity, or 403 when no role maps to a permission or the token
    /// is not scoped to a project (or the system).
    fn principal(&self, identity: &UserIdentity) -> Result<Principal, ApiError> {
        if !matches!(identity.scope(), TokenScope::System | TokenScope::Project) {
            return Err(ApiError::forbidden(
                "the token is not scoped to a project: name a project to sign in to (the account has no default project)",
            ));
        }
        let permission = self.role_map.permission(&identity.roles).ok_or_else(|| {
            ApiError::forbidden("none of the user's Keystone roles grants a snapkeeper permission")
        })?;
        let scope = match identity.scope() {
            TokenScope::System => Scope::Global,
            TokenScope::Project => {
                let listed = self
                    .global_projects
                    .iter()
                    .any(|p| *p == identity.project_id || *p == identity.project_name);
                if listed || (identity.is_admin_project && permission == Permission::Admin) {
                    Scope::Global
                } else {
                    Scope::Project { id: identity.project_id.clone(), name: identity.project_name.clone() }
                }
            }
            _ => return Err(ApiError::forbidden("the token must be scoped to a project")),
        };
        Ok(Principal {
            user_id: identity.user_id.clone(),
            user_name: identity.user_name.clone(),
            permission,
            scope,
        })
    }

    fn issue(&self, principal: &Principal, roles: &[String]) -> Result<(String, Claims), ApiError> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let (project_id, project_name) = match &principal.scope {
            Scope::Global => (None, None),
            Scope::Project { id, name } => (Some(id.clone()), Some(name.clone())),
        };
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: principal.user_id.clone(),
            name: principal.user_name.clone(),
            roles: roles.to_vec(),
            global: principal.scope == Scope::Global,
            pid: project_id,
            pname: project_name,
            csrf: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok((token, claims))
    }

    fn verify(&self, token: &str) -> Result<(Principal, Claims), ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::unauthenticated("invalid or expired session token"))?
            .claims;
        // Permissions follow the role map in force now, so a changed map applies to live sessions.
        let permission = self.role_map.permission(&claims.roles).ok_or_else(|| {
            ApiError::forbidden("none of the user's Keystone roles grants a snapkeeper permission")
        })?;
        let scope = match (&claims.pid, &claims.pname) {
            (Some(id), Some(name)) if !claims.global => Scope::Project { id: id.clone(), name: name.clone() },
            _ => Scope::Global,
        };
        let principal =
            Principal { user_id: claims.sub.clone(), user_name: claims.name.clone(), permission, scope };
        Ok((principal, claims))
    }

    async fn keystone(&self, token: &str) -> Result<Principal, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        {
            let cache = self.token_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((principal, until)) = cache.get(&key)
                && *until > now
            {
                return Ok(principal.clone());
            }
        }
        let answer = self
            .identity
            .clone()
            .validate_user_token(ValidateUserTokenRequest { token: token.to_owned() })
            .await;
        let identity = match answer {
            Ok(response) => response.into_inner().identity.unwrap_or_default(),
            Err(status)
                if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::InvalidArgument) =>
            {
                return Err(ApiError::unauthenticated("invalid or expired Keystone token"));
            }
            Err(status) => return Err(status.into()),
        };
        let principal = self.principal(&identity)?;
        let remaining = crate::wire::to_datetime(identity.expires_at.as_ref())
            .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
            .unwrap_or(self.token_cache_ttl);
        let until = now + self.token_cache_ttl.min(remaining);
        let mut cache = self.token_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= TOKEN_CACHE_ENTRIES {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= TOKEN_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (principal.clone(), until));
        Ok(principal)
    }

    /// Authenticates a request by bearer token, Keystone token or session cookie (with the CSRF
    /// checks for cookie-authenticated writes).
    pub async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let headers = &parts.headers;
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .ok_or_else(|| ApiError::unauthenticated("Authorization must be `Bearer <token>`"))?;
            return self.verify(token.trim()).map(|(principal, _)| principal);
        }
        if let Some(value) = headers.get("x-auth-token") {
            let token = value.to_str().map_err(|_| ApiError::unauthenticated("malformed X-Auth-Token"))?;
            return self.keystone(token.trim()).await;
        }
        let Some(token) = cookie(headers, SESSION_COOKIE) else {
            return Err(ApiError::unauthenticated(
                "sign in: send Authorization: Bearer <token>, X-Auth-Token, or the session cookie",
            ));
        };
        let (principal, claims) = self.verify(token)?;
        if !is_safe(&parts.method) {
            if !same_origin(headers) {
                return Err(ApiError::forbidden("cross-origin request refused"));
            }
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), claims.csrf.as_bytes()) {
                return Err(ApiError::forbidden(
                    "missing or wrong X-CSRF-Token for a cookie-authenticated write",
                ));
            }
        }
        Ok(principal)
    }

    /// The signed-in user of a page request (session cookie only) and the CSRF token for its
    /// scripts; `None` when there is no valid session.
    pub fn page_session(&self, headers: &HeaderMap) -> Option<(Principal, String)> {
        let token = cookie(headers, SESSION_COOKIE)?;
        self.verify(token).ok().map(|(principal, claims)| (principal, claims.csrf))
    }

    fn session_cookie(&self, headers: &HeaderMap, value: &str, max_age: u64) -> HeaderValue {
        let forwarded_https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
        let secure = if self.secure_cookies || forwarded_https { "; Secure" } else { "" };
        let cookie =
            format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("sk_session=; Max-Age=0"))
    }
}

fn signing_key(args: &AuthArgs, listen: SocketAddr) -> Result<Vec<u8>, AuthSetupError> {
    if let Some(secret) = &args.jwt_secret {
        let bytes = secret.expose_secret().as_bytes().to_vec();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(AuthSetupError::ShortSecret("GATEWAY_JWT_SECRET"));
        }
        tracing::info!("session tokens signed with GATEWAY_JWT_SECRET");
        return Ok(bytes);
    }
    if let Some(path) = &args.jwt_secret_file {
        let mut bytes = std::fs::read(path)
            .map_err(|source| AuthSetupError::SecretFile { path: path.display().to_string(), source })?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(AuthSetupError::ShortSecret("GATEWAY_JWT_SECRET_FILE"));
        }
        tracing::info!(path = %path.display(), "session tokens signed with the key file");
        return Ok(bytes);
    }
    if !listen.ip().is_loopback() {
        return Err(AuthSetupError::MissingSecret(listen));
    }
    // Loopback only (`snapkeeper up`): a random key per start; sessions end with the process.
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    tracing::warn!(
        %listen,
        "no GATEWAY_JWT_SECRET set: signing sessions with a key generated for this start (loopback only)"
    );
    Ok(key)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.auth.authenticate(parts).await
    }
}

/// Extractors that authenticate and check one permission, so a caller without it gets 403
/// before anything of the request body is read or validated.
macro_rules! permission_extractor {
    ($extractor:ident, $permission:expr) => {
        impl FromRequestParts<AppState> for $extractor {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let principal = state.auth.authenticate(parts).await?;
                principal.require($permission)?;
                Ok(Self(principal))
            }
        }
    };
}

permission_extractor!(CanRead, Permission::Read);
permission_extractor!(CanWrite, Permission::Write);
permission_extractor!(CanAdmin, Permission::Admin);

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

/// What a session token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    name: String,
    roles: Vec<String>,
    global: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pname: Option<String>,
    csrf: String,
    iat: u64,
    exp: u64,
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The value of cookie `name`, when sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// True unless the browser says the request comes from another origin than this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let origin = origin.to_str().unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, authority)| authority.trim_end_matches('/') == host)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && !b.is_empty() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Credentials for `POST /auth/login`, as JSON or as a form (the login page without scripts).
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Keystone user name.
    pub username: String,
    /// Password; never logged or stored.
    pub password: String,
    /// Keystone domain of the user; `Default` when absent.
    #[serde(default)]
    pub domain: Option<String>,
    /// Project name to scope the session to (in the user's domain); absent: the user's default
    /// project.
    #[serde(default)]
    pub project: Option<String>,
    /// Domain of the project when it is not the user's domain.
    #[serde(default)]
    pub project_domain: Option<String>,
    /// Where the login form returns to (a path on this site).
    #[serde(default)]
    #[schema(ignore)]
    pub next: Option<String>,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The session token for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// Token for `X-CSRF-Token` on cookie-authenticated writes.
    pub csrf_token: String,
    /// Who signed in.
    pub user: SessionUser,
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionUser {
    /// Keystone user id.
    pub id: String,
    /// Keystone user name.
    pub name: String,
    /// Highest permission, `read`, `write` or `admin`.
    pub permission: Permission,
    /// `snapshots:read` etc.
    pub permission_name: &'static str,
    /// Which projects the user reaches.
    pub scope: Scope,
}

impl From<&Principal> for SessionUser {
    fn from(principal: &Principal) -> Self {
        Self {
            id: principal.user_id.clone(),
            name: principal.user_name.clone(),
            permission: principal.permission,
            permission_name: principal.permission.name(),
            scope: principal.scope.clone(),
        }
    }
}

/// Signs in with Keystone credentials; returns a session token and sets the session cookie.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "signed in", body = LoginResponse),
        (status = 401, description = "wrong credentials", body = ErrorBody),
        (status = 403, description = "no Snapkeeper role, or a cross-origin form", body = ErrorBody),
        (status = 422, description = "a field is missing or too long", body = ErrorBody),
        (status = 429, description = "too many attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let headers = request.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        axum::Form::<LoginRequest>::from_request(request, &())
            .await
            .map(|f| f.0)
            .map_err(|e| ApiError::bad_request(e.body_text(), None))
    } else {
        ApiJson::<LoginRequest>::from_request(request, &()).await.map(|j| j.0)
    };
    let next = body.as_ref().ok().and_then(|b| b.next.clone()).filter(|n| is_local_path(n));
    let outcome = match body {
        Ok(body) => sign_in(&state.auth, &headers, address, body).await,
        Err(error) => Err(error),
    };
    match (outcome, is_form) {
        (Ok((cookie, response)), false) => (
            [(header::SET_COOKIE, cookie), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(response),
        )
            .into_response(),
        (Ok((cookie, _)), true) => {
            let target = next.unwrap_or_else(|| "/".to_owned());
            ([(header::SET_COOKIE, cookie)], Redirect::to(&target)).into_response()
        }
        (Err(error), false) => error.into_response(),
        (Err(error), true) => {
            let reason = error.detail().code;
            let back = match next {
                Some(next) => format!("/login?error={reason}&next={}", encode_component(&next)),
                None => format!("/login?error={reason}"),
            };
            Redirect::to(&back).into_response()
        }
    }
}

async fn sign_in(
    auth: &Auth,
    headers: &HeaderMap,
    address: Option<std::net::IpAddr>,
    body: LoginRequest,
) -> Result<(HeaderValue, LoginResponse), ApiError> {
    if !same_origin(headers) {
        return Err(ApiError::forbidden("cross-origin login refused"));
    }
    let domain = body.domain.filter(|d| !d.trim().is_empty()).unwrap_or_else(|| "Default".to_owned());
    for (field, value, max) in
        [("username", &body.username, 255), ("password", &body.password, 4096), ("domain", &domain, 255)]
    {
        if value.is_empty() {
            return Err(ApiError::invalid(field, "required"));
        }
        if value.len() > max {
            return Err(ApiError::invalid(field, format!("at most {max} bytes")));
        }
    }
    let now = Instant::now();
    if let Some(address) = address {
        let key = address.to_string();
        if let Err(wait) = auth.per_address.check(&key, now) {
            tracing::warn!(%address, "login throttled for the address");
            return Err(ApiError::too_many_requests("too many login attempts from this address", wait));
        }
        auth.per_address.record(&key, now);
    }
    let user_key = format!("{}\u{0}{}", domain.to_lowercase(), body.username.to_lowercase());
    if let Err(wait) = auth.per_user.check(&user_key, now) {
        tracing::warn!(user = %body.username, %domain, "login throttled for the user");
        return Err(ApiError::too_many_requests("too many failed logins for this user", wait));
    }
    let request = AuthenticateUserRequest {
        username: body.username.clone(),
        password: body.password,
        user_domain_name: domain.clone(),
        project_name: body.project.filter(|p| !p.trim().is_empty()).unwrap_or_default(),
        project_domain_name: body.project_domain.filter(|d| !d.trim().is_empty()).unwrap_or_default(),
        ..AuthenticateUserRequest::default()
    };
    let identity = match auth.identity.clone().authenticate_user(request).await {
        Ok(response) => response.into_inner().identity.unwrap_or_default(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            auth.per_user.record(&user_key, now);
            tracing::warn!(user = %body.username, %domain, "login refused: wrong credentials");
            return Err(ApiError::unauthenticated("wrong user name, password, domain or project"));
        }
        Err(status) => return Err(status.into()),
    };
    let principal = auth.principal(&identity)?;
    let (token, claims) = auth.issue(&principal, &identity.roles)?;
    tracing::info!(user = %principal.user_name, permission = principal.permission.name(), "signed in");
    let cookie = auth.session_cookie(headers, &token, auth.ttl.as_secs());
    let response = LoginResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: auth.ttl.as_secs(),
        csrf_token: claims.csrf,
        user: SessionUser::from(&principal),
    };
    Ok((cookie, response))
}

/// Ends the browser session (clears the cookie). Session tokens expire on their own.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    responses((status = 303, description = "signed out; back to the login page"))
)]
pub async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let cookie = auth.session_cookie(&headers, "", 0);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/auth/session",
    tag = "auth",
    responses(
        (status = 200, description = "the caller", body = SessionUser),
        (status = 401, description = "not signed in", body = ErrorBody),
    )
)]
pub async fn session(principal: Principal) -> Json<SessionUser> {
    Json(SessionUser::from(&principal))
}

/// True for `/path` on this site (not `//host` or a full URL), so redirects stay here.
fn is_local_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') && !path.contains("://")
}

/// Percent-encodes a query component.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_origins_and_redirect_targets_are_read_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; sk_session=abc; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        headers.insert(header::HOST, HeaderValue::from_static("gw.example:8000"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://gw.example:8000"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
        assert!(is_local_path("/runs?x=1"));
        assert!(!is_local_path("//evil.example/"));
        assert!(!is_local_path("https://evil.example/"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"", b""));
    }
}
