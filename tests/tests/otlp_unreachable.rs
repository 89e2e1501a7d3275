//! A service whose OTLP collector is down still starts and serves: exporting traces is never on
//! the request path.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::SecurityArgs;
use snapkeeper_e2e::Process;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn services_start_and_serve_with_an_unreachable_otlp_endpoint() {
    let data = tempfile::tempdir().unwrap();
    for (binary, service) in [
        ("policy-svc", "snapkeeper.policy.v1.PolicyService"),
        ("audit-svc", "snapkeeper.audit.v1.AuditService"),
    ] {
        let mut process = Process::spawn(
            binary,
            &["--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()],
            &[
                // Nothing listens on the discard port: every export fails.
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
            ],
        )
        .unwrap();
        let line = process
            .wait_for_line(Duration::from_secs(30), |line| line.contains("gRPC server listening"))
            .await
            .unwrap();
        let fields: serde_json::Value = serde_json::from_str(&line).unwrap();
        let address = fields["address"].as_str().unwrap().to_owned();

        let channel =
            connect_lazy(&format!("http://{address}"), &SecurityArgs::default(), Timeouts::default())
                .unwrap();
        let mut health = HealthClient::new(channel);
        for _ in 0..3 {
            let answer =
                health.check(HealthCheckRequest { service: service.to_owned() }).await.unwrap().into_inner();
            assert_eq!(answer.status, ServingStatus::Serving as i32, "{binary}");
            // Let the batch exporter try, and fail, between checks.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let status = process.interrupt(Duration::from_secs(15)).await.unwrap();
        assert!(status.success(), "{binary} must stop cleanly, got {status}");
    }
}
