//! Every OpenStack request carries the caller's W3C trace context (`traceparent`), so Keystone
//! and Cinder calls appear under the run's trace.

use openstack::{CloudConfig, Error, OpenStack, Resilience};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Accepts one request, answers 401, and returns the request head.
async fn one_request(listener: tokio::net::TcpListener) -> String {
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = br#"{"error":{"code":401,"title":"Unauthorized","message":"The request you have made requires authentication."}}"#;
    let response = format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nx-openstack-request-id: req-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.expect("write head");
    socket.write_all(body).await.expect("write body");
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

#[tokio::test]
async fn requests_carry_the_callers_traceparent() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let auth_url = format!("http://{}/v3", listener.local_addr().expect("addr"));
    let server = tokio::spawn(one_request(listener));
    let mut config =
        CloudConfig::password(&auth_url, "admin", "Default", "secret-password", "admin", "Default");
    config.resilience = Resilience { max_attempts: 1, ..Resilience::default() };

    let span = tracing::info_span!("snapshot_run");
    let trace_id = span.context().span().span_context().trace_id().to_string();
    let err = OpenStack::connect(config).instrument(span).await.expect_err("401");
    let Error::Unauthorized(failure) = &err else { panic!("expected Unauthorized, got {err:?}") };
    assert_eq!(failure.request_id.as_deref(), Some("req-1"));
    assert!(!format!("{err} {err:?}").contains("secret-password"), "no secret in errors");

    let head = server.await.expect("server");
    let traceparent = head.lines().find_map(|l| l.strip_prefix("traceparent: ")).expect("traceparent header");
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "{traceparent} vs {trace_id}");
}
