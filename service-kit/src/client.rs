//! Channels to other Snapkeeper services. Every call carries the caller's trace context and the
//! internal credential; TLS follows the same settings as the server; calls that fail with
//! `Unavailable` can be retried with jittered backoff.

use std::future::Future;
use std::time::Duration;

use secrecy::ExposeSecret;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::KitError;
use crate::config::SecurityArgs;
use crate::telemetry::inject_into_metadata;

/// Adds trace context and the internal credential to every outgoing call.
#[derive(Clone, Default)]
pub struct OutgoingContext {
    bearer: Option<AsciiMetadataValue>,
}

impl OutgoingContext {
    /// Context that presents `security`'s internal token, if any.
    pub fn new(security: &SecurityArgs) -> Result<Self, KitError> {
        let bearer = match security.internal_token.as_ref() {
            Some(token) => {
                let mut value: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {}", token.expose_secret())).map_err(|_| {
                        KitError::Config("SNAPKEEPER_INTERNAL_TOKEN must be printable ASCII".to_owned())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self { bearer })
    }
}

impl Interceptor for OutgoingContext {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_into_metadata(request.metadata_mut());
        if let Some(bearer) = &self.bearer {
            request.metadata_mut().insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// A channel to another service; wrap it in the generated client (`FooServiceClient::new`).
pub type ServiceChannel = InterceptedService<Channel, OutgoingContext>;

/// How long a connection attempt and a call may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Bound on establishing a connection.
    pub connect: Duration,
    /// Bound on a unary call (streams are bounded per message by their callers).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(5), request: Duration::from_mins(1) }
    }
}

/// A lazily connecting channel to `url` (`http://host:port` or `https://...`).
pub fn connect_lazy(
    url: &str,
    security: &SecurityArgs,
    timeouts: Timeouts,
) -> Result<ServiceChannel, KitError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| KitError::Config(format!("service url {url:?}: {e}")))?
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let files = security.read_tls()?;
    if url.starts_with("https://") || files.ca.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = files.ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = files.cert_key {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(InterceptedService::new(endpoint.connect_lazy(), OutgoingContext::new(security)?))
}

/// Calls `call` until it succeeds, fails with anything but `Unavailable`, or `attempts` are used,
/// sleeping a jittered, doubling delay in between. Only for idempotent calls.
pub async fn retry_unavailable<T, F, Fut>(attempts: u32, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && attempt < attempts => {
                let jittered = delay.mul_f64(0.5 + fastrand::f64());
                tracing::debug!(
                    attempt,
                    delay_ms = jittered.as_millis() as u64,
                    "retrying unavailable service"
                );
                tokio::time::sleep(jittered).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_unavailable_then_succeeds() {
        let calls = AtomicU32::new(0);
        let result = retry_unavailable(3, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(tonic::Status::unavailable("down"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_other_errors_and_stops_after_the_attempts() {
        let calls = AtomicU32::new(0);
        let invalid = retry_unavailable(5, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(tonic::Status::invalid_argument("bad"))
        })
        .await;
        assert_eq!(invalid.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let down = retry_unavailable(4, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(tonic::Status::unavailable("down"))
        })
        .await;
        assert_eq!(down.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn outgoing_context_presents_the_token_and_hides_it_from_debug() {
        let security = SecurityArgs {
            internal_token: crate::config::parse_secret("internal-xyz").ok(),
            ..SecurityArgs::default()
        };
        let mut context = OutgoingContext::new(&security).unwrap();
        let request = context.call(tonic::Request::new(())).unwrap();
        let header = request.metadata().get("authorization").unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer internal-xyz");
        assert!(!format!("{:?}", request.metadata()).contains("internal-xyz"));
    }
}
