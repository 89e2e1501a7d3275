//! Service-to-service security as a deployment relies on it: the internal credential is required
//! for every RPC but health, and mutual TLS admits only clients holding a certificate of the CA.
#![allow(clippy::unwrap_used)]

use std::future::pending;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::{SecurityArgs, parse_secret};
use service_kit::server::GrpcServer;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::identity::v1::identity_service_server::{IdentityService, IdentityServiceServer};
use snapkeeper_proto::identity::v1::{StatusRequest, StatusResponse};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICE: &str = "snapkeeper.identity.v1.IdentityService";

struct Answering;

#[tonic::async_trait]
impl IdentityService for Answering {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse::default()))
    }
}

/// Serves `Answering` with `security` on a free loopback port; returns its port.
async fn start(security: SecurityArgs) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = GrpcServer::new(security).add_service(IdentityServiceServer::new(Answering));
    tokio::spawn(server.serve(listener, pending()));
    port
}

async fn status_code(url: &str, security: &SecurityArgs) -> Code {
    let channel = connect_lazy(url, security, Timeouts::default()).unwrap();
    match IdentityServiceClient::new(channel).status(StatusRequest {}).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn the_internal_credential_is_required_for_rpcs_but_not_for_health() {
    let with_token =
        |token: &str| SecurityArgs { internal_token: parse_secret(token).ok(), ..SecurityArgs::default() };
    let port = start(with_token("the-right-token")).await;
    let url = format!("http://127.0.0.1:{port}");

    assert_eq!(status_code(&url, &SecurityArgs::default()).await, Code::Unauthenticated);
    assert_eq!(status_code(&url, &with_token("a-wrong-token")).await, Code::Unauthenticated);
    assert_eq!(status_code(&url, &with_token("the-right-tokeN")).await, Code::Unauthenticated);
    assert_eq!(status_code(&url, &with_token("the-right-token")).await, Code::Ok);

    let anonymous = connect_lazy(&url, &SecurityArgs::default(), Timeouts::default()).unwrap();
    let health = HealthClient::new(anonymous)
        .check(HealthCheckRequest { service: SERVICE.to_owned() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32, "health stays open without the credential");
}

/// A CA, a server certificate for localhost, and a client certificate, as PEM files in `dir`.
fn write_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "snapkeeper test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(vec!["localhost".to_owned()]);
    let (client_cert, client_key) = issue(vec!["gateway.snapkeeper.internal".to_owned()]);
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    (
        write("ca.pem", &ca_cert.pem()),
        write("server.pem", &server_cert),
        write("server.key", &server_key),
        write("client.pem", &client_cert),
        write("client.key", &client_key),
    )
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server_cert, server_key, client_cert, client_key) = write_pki(dir.path());
    let port = start(SecurityArgs {
        tls_cert: Some(server_cert),
        tls_key: Some(server_key),
        tls_ca: Some(ca.clone()),
        ..SecurityArgs::default()
    })
    .await;
    let url = format!("https://localhost:{port}");

    let trusted_client = SecurityArgs {
        tls_cert: Some(client_cert),
        tls_key: Some(client_key),
        tls_ca: Some(ca.clone()),
        ..SecurityArgs::default()
    };
    assert_eq!(status_code(&url, &trusted_client).await, Code::Ok);

    let no_client_certificate = SecurityArgs { tls_ca: Some(ca), ..SecurityArgs::default() };
    assert_ne!(status_code(&url, &no_client_certificate).await, Code::Ok, "a client without a certificate");
    let plaintext = format!("http://127.0.0.1:{port}");
    assert_ne!(status_code(&plaintext, &SecurityArgs::default()).await, Code::Ok, "a plaintext client");
}
