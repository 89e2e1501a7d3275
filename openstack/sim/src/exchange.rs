//! What every simulated request goes through, in the order the real stack does it: count it,
//! inject faults, check the Cinder microversion, resolve the token (keystonemiddleware), run the
//! handler against the world, and answer with a request id and the error body of the service.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::faults::{Decision, FaultState};
use crate::state::{TokenScope, World};

/// Cinder microversions this simulator speaks (the same window as Cinder 29).
pub(crate) const CINDER_MIN: (u32, u32) = (3, 0);
pub(crate) const CINDER_MAX: (u32, u32) = (3, 71);

/// Start-up timing settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) snapshot_delay: Duration,
    pub(crate) volume_delay: Duration,
    pub(crate) token_ttl: Duration,
    pub(crate) keystone_list_limit: Option<usize>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) stats: Mutex<BTreeMap<String, u64>>,
    pub(crate) base_url: String,
    pub(crate) timing: Timing,
}

pub(crate) type Sim = Arc<Shared>;

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn fault_state(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn token_ttl(&self) -> Duration {
        self.fault_state()
            .faults
            .token_ttl_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(self.timing.token_ttl, Duration::from_secs_f64)
    }
}

/// Which service's conventions apply (error body shape, headers, microversions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Keystone,
    Cinder,
    Nova,
}

/// The identity behind a valid token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: String,
    pub(crate) user_id: String,
    pub(crate) scope: TokenScope,
    pub(crate) roles: Vec<String>,
}

impl Caller {
    /// Cinder and Keystone default policy: the admin role on any scope is cloud admin.
    pub(crate) fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    pub(crate) fn can_write(&self) -> bool {
        self.roles.iter().any(|r| matches!(r.as_str(), "admin" | "member" | "manager"))
    }

    pub(crate) fn project_id(&self) -> Option<&str> {
        match &self.scope {
            TokenScope::Project(p) => Some(p),
            _ => None,
        }
    }
}

/// Request context handed to handlers.
pub(crate) struct Ctx {
    pub(crate) caller: Option<Caller>,
    pub(crate) microversion: (u32, u32),
    pub(crate) now: Instant,
    pub(crate) headers: HeaderMap,
    pub(crate) base_url: String,
    pub(crate) timing: Timing,
    pub(crate) token_ttl: Duration,
}

impl Ctx {
    pub(crate) fn caller(&self) -> Result<&Caller, Failure> {
        self.caller.as_ref().ok_or_else(Failure::unauthorized)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A successful answer.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Option<Value>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self { status, body: Some(body), headers: Vec::new() }
    }

    pub(crate) fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub(crate) fn empty(status: StatusCode) -> Self {
        Self { status, body: None, headers: Vec::new() }
    }
}

/// An error answer; rendered in the calling service's error shape.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    /// Cinder/Nova fault name (`itemNotFound`, `badRequest`, `overLimit`, ...).
    pub(crate) name: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        Self { status, name, message: message.into() }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "itemNotFound", message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "badRequest", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflictingRequest", message)
    }

    pub(crate) fn over_limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "overLimit", message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The request you have made requires authentication.",
        )
    }

    /// Cinder's policy refusal.
    pub(crate) fn policy(rule: &str) -> Self {
        Self::forbidden(format!("Policy doesn't allow {rule} to be performed."))
    }

    /// Keystone's policy refusal.
    pub(crate) fn identity_policy(rule: &str) -> Self {
        Self::forbidden(format!("You are not authorized to perform the requested action: identity:{rule}."))
    }

    fn body(&self, api: Api) -> Value {
        let code = self.status.as_u16();
        // keystonemiddleware answers 401 for Cinder and Nova too, in Keystone's shape.
        if api == Api::Keystone || self.status == StatusCode::UNAUTHORIZED {
            let title = self.status.canonical_reason().unwrap_or("Error");
            json!({"error": {"code": code, "title": title, "message": self.message}})
        } else {
            json!({ self.name: {"code": code, "message": self.message} })
        }
    }
}

/// Parses a JSON request body the way the services do (400 on garbage).
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|_| Failure::bad_request("Malformed request body"))
}

fn microversion(headers: &HeaderMap) -> Result<(u32, u32), Failure> {
    let Some(value) = headers.get("openstack-api-version").and_then(|v| v.to_str().ok()) else {
        return Ok(CINDER_MIN);
    };
    let version = value.trim().strip_prefix("volume").map_or(value.trim(), str::trim);
    if version.eq_ignore_ascii_case("latest") {
        return Ok(CINDER_MAX);
    }
    let parsed = version.split_once('.').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    let Some(v) = parsed else {
        return Err(Failure::bad_request(format!(
            "API Version String {version} is of invalid format. Must be of format MajorNum.MinorNum."
        )));
    };
    if v < CINDER_MIN || v > CINDER_MAX {
        return Err(Failure::new(
            StatusCode::NOT_ACCEPTABLE,
            "computeFault",
            format!(
                "Version {}.{} is not supported by the API. Minimum is {}.{} and maximum is {}.{}.",
                v.0, v.1, CINDER_MIN.0, CINDER_MIN.1, CINDER_MAX.0, CINDER_MAX.1
            ),
        ));
    }
    Ok(v)
}

fn requested_version(headers: &HeaderMap) -> Option<(u32, u32)> {
    let value = headers.get("openstack-api-version")?.to_str().ok()?;
    let (major, minor) = value.trim().strip_prefix("volume")?.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn resolve_caller(world: &World, headers: &HeaderMap) -> Option<Caller> {
    let token = headers.get("x-auth-token")?.to_str().ok()?;
    let record = world.tokens.get(token)?;
    if record.expires_at <= chrono::Utc::now() {
        return None;
    }
    let user = world.users.get(&record.user_id)?;
    if !user.enabled {
        return None;
    }
    Some(Caller {
        token: token.to_owned(),
        user_id: record.user_id.clone(),
        scope: record.scope.clone(),
        roles: world.token_roles(record),
    })
}

/// Runs one request through the whole pipeline.
pub(crate) async fn handle<F>(
    sim: &Sim,
    operation: &str,
    api: Api,
    headers: &HeaderMap,
    auth_required: bool,
    handler: F,
) -> Response
where
    F: FnOnce(&mut World, &Ctx) -> Result<Reply, Failure>,
{
    *sim.stats().entry(operation.to_owned()).or_default() += 1;
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    let (latency, decision) = sim.fault_state().decide(operation);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut version = None;
    let outcome = match decision {
        Decision::ServerError => Err((
            Failure::new(StatusCode::SERVICE_UNAVAILABLE, "computeFault", "Service Unavailable (injected)"),
            None,
        )),
        Decision::RateLimited { retry_after_secs } => Err((
            Failure::new(StatusCode::TOO_MANY_REQUESTS, "overLimit", "This request was rate-limited."),
            Some(retry_after_secs),
        )),
        Decision::Proceed | Decision::LateAnswer(_) => {
            let mv = if api == Api::Cinder { microversion(headers) } else { Ok(CINDER_MIN) };
            match mv {
                Err(failure) => {
                    // Cinder echoes the version it was asked for, even when refusing it.
                    version = requested_version(headers);
                    Err((failure, None))
                }
                Ok(mv) => {
                    version = Some(mv);
                    let mut world = sim.world();
                    let caller = resolve_caller(&world, headers);
                    if auth_required && caller.is_none() {
                        Err((Failure::unauthorized(), None))
                    } else {
                        let ctx = Ctx {
                            caller,
                            microversion: mv,
                            now: Instant::now(),
                            headers: headers.clone(),
                            base_url: sim.base_url.clone(),
                            timing: sim.timing,
                            token_ttl: sim.token_ttl(),
                        };
                        handler(&mut world, &ctx).map_err(|f| (f, None))
                    }
                }
            }
        }
    };
    if let Decision::LateAnswer(delay) = decision {
        tokio::time::sleep(delay).await;
    }
    let mut response = match outcome {
        Ok(reply) => {
            let mut response = match reply.body {
                Some(body) => (reply.status, axum::Json(body)).into_response(),
                None => reply.status.into_response(),
            };
            for (name, value) in reply.headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(HeaderName::from_static(name), value);
                }
            }
            response
        }
        Err((failure, retry_after)) => {
            if failure.status.is_server_error() || failure.status == StatusCode::TOO_MANY_REQUESTS {
                tracing::debug!(operation, status = failure.status.as_u16(), "injected fault");
            }
            let mut body = failure.body(api);
            if let (Some(secs), Some(inner)) = (retry_after, body.get_mut(failure.name)) {
                inner["retryAfter"] = json!(secs.to_string());
            }
            let mut response = (failure.status, axum::Json(body)).into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            if failure.status == StatusCode::UNAUTHORIZED
                && api != Api::Keystone
                && let Ok(v) = HeaderValue::from_str(&format!("Keystone uri=\"{}/v3\"", sim.base_url))
            {
                response.headers_mut().insert("www-authenticate", v);
            }
            response
        }
    };
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-openstack-request-id", id.clone());
        if api != Api::Keystone {
            headers.insert("x-compute-request-id", id);
        }
    }
    if api == Api::Cinder {
        let (major, minor) = version.unwrap_or(CINDER_MIN);
        if let Ok(v) = HeaderValue::from_str(&format!("volume {major}.{minor}")) {
            headers.insert("openstack-api-version", v);
            headers.insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions_outside_the_window_are_406() {
        let mut headers = HeaderMap::new();
        assert_eq!(microversion(&headers).ok(), Some((3, 0)));
        headers.insert("openstack-api-version", HeaderValue::from_static("volume 3.60"));
        assert_eq!(microversion(&headers).ok(), Some((3, 60)));
        headers.insert("openstack-api-version", HeaderValue::from_static("volume 3.999"));
        let failure = microversion(&headers).expect_err("406");
        assert_eq!(failure.status, StatusCode::NOT_ACCEPTABLE);
        assert!(failure.message.contains("maximum is 3.71"));
        headers.insert("openstack-api-version", HeaderValue::from_static("volume three"));
        assert_eq!(microversion(&headers).err().map(|f| f.status), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn error_bodies_follow_each_service() {
        let f = Failure::not_found("Volume x could not be found.");
        assert_eq!(f.body(Api::Cinder)["itemNotFound"]["code"], 404);
        assert_eq!(f.body(Api::Keystone)["error"]["title"], "Not Found");
        assert_eq!(Failure::unauthorized().body(Api::Cinder)["error"]["code"], 401);
    }
}
