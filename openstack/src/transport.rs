//! One HTTP call, made resilient: a process-wide rate limit and concurrency limit, a tracing span
//! per attempt, and retries with jittered exponential backoff where a retry cannot duplicate work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::{Instrument, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{CloudConfig, Resilience};
use crate::error::{ApiFailure, Error, service_message};
use crate::metrics;

/// Cinder microversion sent with every block-storage call: 3.60 is the first with metadata
/// list filters that behave, and both Cinder 29 (max 3.71) and the simulator accept it.
pub const CINDER_MICROVERSION: &str = "volume 3.60";

/// Whether a call may be repeated without changing the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// GET, PUT, DELETE, HEAD, and POSTs that merge (metadata): retried on 5xx and timeouts.
    Idempotent,
    /// Creates: only retried when the server certainly did not act (connect error, 429).
    NotIdempotent,
}

/// An HTTP request before it is sent.
pub(crate) struct Request<'a> {
    pub(crate) operation: &'a str,
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) token: Option<&'a SecretString>,
    /// The project the token is scoped to, for the span (never the token itself).
    pub(crate) project_id: Option<&'a str>,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<&'a serde_json::Value>,
}

/// A response with any status, body read.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) request_id: Option<String>,
}

impl Response {
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, operation: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::decode(operation, e))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn failure(&self, operation: &str) -> ApiFailure {
        ApiFailure {
            operation: operation.to_owned(),
            status: self.status,
            request_id: self.request_id.clone(),
            message: service_message(&self.body),
        }
    }
}

/// Calls made per operation, as seen by this process (attempts, not logical calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// HTTP requests sent.
    pub attempts: u64,
    /// Of those, repeats after a retryable failure.
    pub retries: u64,
    /// Calls that ended in an error after all attempts.
    pub failures: u64,
}

/// Shared HTTP machinery: one per client, shared by its clones and derived sessions.
pub(crate) struct Transport {
    http: reqwest::Client,
    policy: Resilience,
    bucket: Option<TokenBucket>,
    in_flight: Semaphore,
    stats: Mutex<BTreeMap<String, CallStats>>,
}

impl Transport {
    pub(crate) fn new(config: &CloudConfig) -> Result<Arc<Self>, Error> {
        // reqwest is built without a default crypto provider (ring is chosen workspace-wide);
        // without one installed Client::build panics. A second install is a harmless Err.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .tls_danger_accept_invalid_certs(!config.verify_tls)
            .user_agent(concat!("snapkeeper-openstack/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        let policy = config.resilience.clone();
        if policy.max_attempts == 0 || policy.max_concurrency == 0 {
            return Err(Error::Config("max_attempts and max_concurrency must be at least 1".into()));
        }
        let bucket = policy.requests_per_second.map(|rate| TokenBucket::new(rate, policy.burst));
        Ok(Arc::new(Self {
            http,
            in_flight: Semaphore::new(policy.max_concurrency),
            bucket,
            policy,
            stats: Mutex::new(BTreeMap::new()),
        }))
    }

    pub(crate) fn stats(&self) -> BTreeMap<String, CallStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn reset_stats(&self) {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn count(&self, operation: &str, update: impl FnOnce(&mut CallStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        update(stats.entry(operation.to_owned()).or_default());
    }

    pub(crate) fn policy(&self) -> &Resilience {
        &self.policy
    }

    /// Sends `request`, retrying what is safe to retry, and turns a non-2xx answer into an
    /// [`Error`]. 401 is returned as `Error::Unauthorized` for the caller to re-authenticate.
    pub(crate) async fn execute(
        &self,
        request: &Request<'_>,
        idempotency: Idempotency,
    ) -> Result<Response, Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.send_once(request, attempt).await;
            let last = attempt >= self.policy.max_attempts;
            let wait = match &outcome {
                Ok(response) if (200..300).contains(&response.status) => None,
                // A 429 is refused before any work is done, so even a create may repeat it.
                Ok(response) if response.status == 429 => Some(self.server_delay(response, attempt)),
                Ok(response)
                    if idempotency == Idempotency::Idempotent
                        && matches!(response.status, 500 | 502 | 503 | 504) =>
                {
                    Some(self.server_delay(response, attempt))
                }
                // A failed connect never reached the server, so even a create may repeat it.
                Err(Error::Transport { sent, .. }) if idempotency == Idempotency::Idempotent || !sent => {
                    Some(self.backoff(attempt))
                }
                _ => None,
            };
            if let Some(delay) = wait
                && let (Some(bucket), Ok(response)) = (&self.bucket, &outcome)
                && matches!(response.status, 429 | 503)
            {
                // The service is overloaded: every caller of this process slows down, not
                // only the one that was told.
                bucket.pause(delay);
            }
            if let (Some(delay), false) = (wait, last) {
                self.count(request.operation, |s| s.retries += 1);
                metrics::count_retry(request.operation);
                tracing::warn!(
                    operation = request.operation,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    status = outcome.as_ref().map_or(0, |r| r.status),
                    "retrying openstack call"
                );
                tokio::time::sleep(delay).await;
            } else {
                let result = outcome.and_then(|response| {
                    if (200..300).contains(&response.status) {
                        Ok(response)
                    } else {
                        let retry_after =
                            response.header("retry-after").and_then(|v| parse_retry_after(v, Utc::now()));
                        Err(Error::from_status(response.failure(request.operation), retry_after))
                    }
                });
                if result.is_err() {
                    self.count(request.operation, |s| s.failures += 1);
                }
                return result;
            }
        }
    }

    /// The service's `Retry-After` (capped), else our own backoff.
    fn server_delay(&self, response: &Response, attempt: u32) -> Duration {
        response
            .header("retry-after")
            .and_then(|v| parse_retry_after(v, Utc::now()))
            .map_or_else(|| self.backoff(attempt), |d| d.min(self.policy.max_backoff))
    }

    /// One attempt, without retries: any status is `Ok`, only transport failures are `Err`.
    async fn send_once(&self, request: &Request<'_>, attempt: u32) -> Result<Response, Error> {
        if let Some(bucket) = &self.bucket {
            bucket.acquire().await;
        }
        let _permit = self.in_flight.acquire().await.map_err(|e| Error::Transport {
            operation: request.operation.to_owned(),
            message: e.to_string(),
            timed_out: false,
            sent: false,
        })?;
        self.count(request.operation, |s| s.attempts += 1);
        let span = tracing::info_span!(
            "openstack.request",
            otel.name = request.operation,
            operation = request.operation,
            http.request.method = %request.method,
            attempt,
            project_id = request.project_id.unwrap_or_default(),
            http.response.status_code = field::Empty,
            request_id = field::Empty,
        );
        async {
            let mut builder =
                self.http.request(request.method.clone(), &request.url).header("Accept", "application/json");
            if !request.query.is_empty() {
                builder = builder.query(&request.query);
            }
            // W3C trace context, so the request shows up under the caller's trace; without a
            // global propagator this injects nothing.
            let mut trace_headers = HeaderMap::new();
            let context = tracing::Span::current().context();
            opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator
                    .inject_context(&context, &mut opentelemetry_http::HeaderInjector(&mut trace_headers));
            });
            builder = builder.headers(trace_headers);
            if let Some(token) = request.token {
                builder = builder.header("X-Auth-Token", token.expose_secret());
            }
            for (name, value) in &request.headers {
                builder = builder.header(*name, value.as_str());
            }
            if let Some(body) = request.body {
                builder = builder.json(body);
            }
            let started = Instant::now();
            let transport_error = |e: &reqwest::Error| Error::Transport {
                operation: request.operation.to_owned(),
                message: e.without_url_ref(),
                timed_out: e.is_timeout(),
                sent: !e.is_connect(),
            };
            let response = builder.send().await.map_err(|e| {
                tracing::debug!(error = %e.without_url_ref(), "openstack request failed");
                metrics::observe_attempt(request.operation, None, started.elapsed());
                transport_error(&e)
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let request_id = ["x-openstack-request-id", "x-compute-request-id"]
                .iter()
                .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_owned));
            let span = tracing::Span::current();
            span.record("http.response.status_code", status);
            if let Some(id) = &request_id {
                span.record("request_id", id.as_str());
            }
            let body = response.bytes().await.map_err(|e| {
                metrics::observe_attempt(request.operation, None, started.elapsed());
                transport_error(&e)
            })?;
            let body = body.to_vec();
            metrics::observe_attempt(request.operation, Some(status), started.elapsed());
            tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "openstack response");
            Ok(Response { status, headers, body, request_id })
        }
        .instrument(span)
        .await
    }

    /// Sleep before attempt `attempt + 1`: exponential, capped, with "equal jitter" (half fixed,
    /// half random) so that many clients spread out but none retries immediately.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        backoff(&self.policy, attempt, fastrand::f64())
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// The error text without the URL: marker query strings can be long and are in the span.
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), url.path());
        }
        text
    }
}

/// Backoff for `attempt` (1-based) with `random` in [0, 1).
pub(crate) fn backoff(policy: &Resilience, attempt: u32, random: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let cap = policy.base_backoff.saturating_mul(1u32 << exponent).min(policy.max_backoff);
    cap / 2 + cap.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// `Retry-After` as delta-seconds or an HTTP date; a date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some(Duration::from_secs_f64(seconds));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// Token bucket shared by all callers: each call takes a token, going into debt when empty, and
/// sleeps until its debt is paid. Debt keeps the order fair without a queue.
struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate.max(0.001), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes all tokens away for `delay`: callers queue until it has passed.
    fn pause(&self, delay: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let debt = -delay.as_secs_f64() * self.rate;
        if state.0 > debt {
            state.0 = debt;
            state.1 = Instant::now();
        }
    }

    async fn acquire(&self) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(state.1).as_secs_f64() * self.rate;
            state.0 = (state.0 + refill).min(self.burst) - 1.0;
            state.1 = now;
            (state.0 < 0.0).then(|| Duration::from_secs_f64(-state.0 / self.rate))
        };
        if let Some(wait) = wait {
            crate::metrics::count_rate_limit_wait(wait);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").expect("date").with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        let policy = Resilience {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Resilience::default()
        };
        assert_eq!(backoff(&policy, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(&policy, 1, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(&policy, 3, 0.0), Duration::from_millis(200));
        for attempt in 1..40 {
            for random in [0.0, 0.3, 0.99] {
                let d = backoff(&policy, attempt, random);
                assert!(d <= policy.max_backoff, "attempt {attempt}: {d:?}");
                assert!(d >= Duration::from_millis(50), "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(&policy, 30, 0.0) >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn token_bucket_spaces_calls_after_the_burst() {
        let bucket = TokenBucket::new(100.0, 2);
        let started = Instant::now();
        for _ in 0..7 {
            bucket.acquire().await;
        }
        // 2 from the burst, 5 more at 100/s: at least ~50 ms.
        assert!(started.elapsed() >= Duration::from_millis(45), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_pause_holds_back_every_caller() {
        let bucket = TokenBucket::new(1000.0, 10);
        bucket.pause(Duration::from_millis(120));
        let started = Instant::now();
        bucket.acquire().await;
        assert!(started.elapsed() >= Duration::from_millis(110), "{:?}", started.elapsed());
        let started = Instant::now();
        bucket.acquire().await;
        assert!(started.elapsed() < Duration::from_millis(50), "the pause is over: {:?}", started.elapsed());
    }
}
