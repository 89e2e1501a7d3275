#![allow(clippy::unwrap_used)]
//! The IdentityService over a real gRPC server on 127.0.0.1:0 with the generated client, in front
//! of the simulator: the internal credential, the contract's error codes, and the answers.

mod support;

use std::time::Duration;

use clap::Parser as _;
use identity_svc::Config;
use openstack::CloudConfig;
use secrecy::SecretString;
use service_kit::error::FIELD_METADATA_KEY;
use snapkeeper_proto::identity::v1 as pb;
use snapkeeper_proto::tonic::Code;
use support::{client, serve};

const INTERNAL: &str = "internal-token-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_credentials_need_the_internal_credential() {
    let (sim, cloud) = support::start_sim(&support::sim_admin_password()).await;
    let admin = openstack::OpenStack::connect(cloud.clone()).await.unwrap();
    let project = admin
        .keystone()
        .create_project(&openstack::NewProject {
            name: "grpc-tenant".into(),
            domain_id: "default".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let password = "svc-grpc-pw";
    let user = admin
        .keystone()
        .create_user(&openstack::NewUser {
            name: "svc-grpc".into(),
            domain_id: "default".into(),
            password: SecretString::from(password.to_owned()),
            email: Some("svc-grpc@example.com".into()),
        })
        .await
        .unwrap();
    // Looked up by e-mail: Keystone cannot filter on it, the client matches it.
    let server = serve(
        cloud,
        &["--service-user", "svc-grpc@example.com", "--service-user-password", password],
        Some(INTERNAL),
    )
    .await;
    let request = pb::GetProjectCredentialsRequest { project_id: project.id.clone(), ..Default::default() };

    let refused = client(&server, None).get_project_credentials(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = client(&server, Some("wrong")).get_project_credentials(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(sim.stats().get("keystone.roles.grant"), None, "a refused call reached nothing");

    let mut identity = client(&server, Some(INTERNAL));
    let answer = identity.get_project_credentials(request.clone()).await.unwrap().into_inner();
    assert_eq!(answer.scope_mode(), pb::ScopeMode::ServiceUser, "{}", answer.fallback_reason);
    assert_eq!(answer.role_grant(), pb::RoleGrant::Granted);
    assert_eq!(
        (answer.token_project_id.as_str(), answer.user_id.as_str()),
        (project.id.as_str(), user.id.as_str())
    );
    assert_eq!(answer.project_name, "grpc-tenant");
    assert!(!answer.token.is_empty() && answer.expires_at.is_some());
    let again = identity.get_project_credentials(request).await.unwrap().into_inner();
    assert!(again.cached);
    assert_eq!(again.role_grant(), pb::RoleGrant::AlreadyPresent);

    let status = identity.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.mode(), pb::ScopeMode::ServiceUser);
    assert_eq!((status.service_user_id.as_str(), status.role_name.as_str()), (user.id.as_str(), "member"));
    assert_eq!(status.password_source, "plaintext");
    assert_eq!((status.grants_made, status.grants_outstanding), (1, 1));
    let tokens = status.project_token_cache.unwrap();
    assert_eq!((tokens.entries, tokens.hits, tokens.misses), (1, 1, 1));
    assert!((tokens.hit_rate - 0.5).abs() < 1e-9);
    assert!(status.admin_token_expires_at.is_some());

    let revoked = identity
        .revoke_grants(pb::RevokeGrantsRequest {
            selector: Some(pb::revoke_grants_request::Selector::All(true)),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((revoked.revoked, revoked.grants.len()), (1, 1));
    assert_eq!(revoked.grants[0].project_id, project.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_contract_codes_and_name_the_field() {
    let (_sim, cloud) = support::start_sim(&support::sim_admin_password()).await;
    let server = serve(cloud, &[], None).await;
    let mut identity = client(&server, None);

    let empty =
        identity.get_project_credentials(pb::GetProjectCredentialsRequest::default()).await.unwrap_err();
    assert_eq!((empty.code(), empty.message()), (Code::InvalidArgument, "project_id: required"));
    assert_eq!(empty.metadata().get(FIELD_METADATA_KEY).unwrap(), "project_id");
    let unknown =
        pb::GetProjectCredentialsRequest { project_id: "no-such-project".into(), ..Default::default() };
    assert_eq!(identity.get_project_credentials(unknown).await.unwrap_err().code(), Code::NotFound);

    let region = pb::GetAdminCredentialsRequest { region: "Atlantis".into() };
    let missing = identity.get_admin_credentials(region).await.unwrap_err();
    assert_eq!(missing.code(), Code::FailedPrecondition);
    assert!(missing.message().contains("Atlantis"), "{}", missing.message());
    let admin =
        identity.get_admin_credentials(pb::GetAdminCredentialsRequest::default()).await.unwrap().into_inner();
    assert_eq!(
        (admin.user_name.as_str(), admin.project_name.as_str(), admin.region.as_str()),
        ("admin", "admin", "RegionOne")
    );
    assert!(
        admin.endpoints.iter().any(|e| e.service_type == "volumev3" || e.service_type == "block-storage")
    );

    let no_selector = identity.revoke_grants(pb::RevokeGrantsRequest::default()).await.unwrap_err();
    assert_eq!(
        (no_selector.code(), no_selector.message()),
        (Code::InvalidArgument, "selector: set run_id or all")
    );
    let all = pb::RevokeGrantsRequest {
        selector: Some(pb::revoke_grants_request::Selector::All(true)),
        dry_run: true,
    };
    assert_eq!(
        identity.revoke_grants(all).await.unwrap_err().code(),
        Code::FailedPrecondition,
        "admin_only mode"
    );

    let empty = identity.validate_user_token(pb::ValidateUserTokenRequest::default()).await.unwrap_err();
    assert_eq!((empty.code(), empty.message()), (Code::InvalidArgument, "token: required"));
    let huge = pb::ValidateUserTokenRequest { token: "a".repeat(8 * 1024 + 1) };
    assert_eq!(identity.validate_user_token(huge).await.unwrap_err().code(), Code::InvalidArgument);
    let bogus = pb::ValidateUserTokenRequest { token: "gAAAAAB-bogus".into() };
    assert_eq!(identity.validate_user_token(bogus).await.unwrap_err().code(), Code::Unauthenticated);

    let login = pb::AuthenticateUserRequest {
        username: "admin".into(),
        password: "wrong".into(),
        user_domain_name: "Default".into(),
        project_name: "admin".into(),
        ..Default::default()
    };
    let wrong = identity.authenticate_user(login.clone()).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let both = pb::AuthenticateUserRequest { project_id: "p".into(), ..login };
    assert_eq!(identity.authenticate_user(both).await.unwrap_err().code(), Code::InvalidArgument);

    let status = identity.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.mode(), pb::ScopeMode::AdminOnly);
    assert_eq!(status.mode_reason, "no service user configured (SNAPSHOT_SERVICE_USER_EMAIL)");
    assert_eq!(status.password_source, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_and_validate_through_grpc() {
    let password = support::sim_admin_password();
    let (_sim, cloud) = support::start_sim(&password).await;
    let server = serve(cloud, &[], None).await;
    let mut identity = client(&server, None);
    let login = pb::AuthenticateUserRequest {
        username: "admin".into(),
        password: password.clone(),
        user_domain_name: "Default".into(),
        project_name: "admin".into(),
        ..Default::default()
    };
    let answer = identity.authenticate_user(login).await.unwrap().into_inner();
    let who = answer.identity.unwrap();
    assert_eq!(
        (who.user_name.as_str(), who.scope(), who.project_name.as_str()),
        ("admin", pb::TokenScope::Project, "admin")
    );
    assert_eq!(who.roles, ["admin", "manager", "member", "reader"], "sorted role names");
    let validated = identity
        .validate_user_token(pb::ValidateUserTokenRequest { token: answer.token.clone() })
        .await
        .unwrap();
    assert_eq!(validated.into_inner().identity.unwrap().user_id, who.user_id);
    let unscoped = pb::AuthenticateUserRequest {
        username: "admin".into(),
        password,
        user_domain_name: "Default".into(),
        ..Default::default()
    };
    let who = identity.authenticate_user(unscoped).await.unwrap().into_inner().identity.unwrap();
    assert_eq!(who.scope(), pb::TokenScope::Unscoped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_keystone_is_unavailable_and_reported_in_status() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut cloud = CloudConfig::password(
        &format!("http://127.0.0.1:{port}/v3"),
        "admin",
        "Default",
        "pw-x",
        "admin",
        "Default",
    );
    cloud.resilience.max_attempts = 1;
    cloud.request_timeout = Duration::from_secs(2);
    let server = serve(cloud, &[], None).await;
    let mut identity = client(&server, None);
    let down = identity.get_admin_credentials(pb::GetAdminCredentialsRequest::default()).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{}", down.message());
    let status = identity.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let last = status.last_keystone_error.unwrap();
    assert_eq!((last.operation.as_str(), last.http_status), ("authenticate admin", 0));
}

#[tokio::test]
async fn without_a_cloud_the_service_starts_and_says_what_is_missing() {
    let mut config = Config::try_parse_from(["identity-svc"]).unwrap();
    config.cloud = None;
    let settings = config.settings_with(&|_| None).unwrap();
    let database =
        service_kit::db::Database::connect("sqlite::memory:", identity_svc::SCHEMA, 1).await.unwrap();
    database.migrate(identity_svc::MIGRATIONS).await.unwrap();
    let broker = identity_svc::broker::Broker::new(
        settings,
        identity_svc::store::GrantStore::new(database),
        std::sync::Arc::new(service_kit::clock::SystemClock),
    );
    let err = broker.admin_credentials(None).await.unwrap_err();
    let status: snapkeeper_proto::tonic::Status = service_kit::ServiceError::from(err).into();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("OS_AUTH_URL"), "{}", status.message());
    assert_eq!(broker.status().await.unwrap().keystone_url, "");
}
