#![allow(clippy::unwrap_used)]
//! Runs identity-svc's flows over gRPC against the simulator with known secrets (admin and user
//! passwords, the service user's Fernet key, ciphertext and password, the internal token, and
//! every token the RPCs return) and asserts that none of them appears in the logs at TRACE, in
//! the spans (names, attributes, events), in error messages, Status texts or Debug output.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::Parser as _;
use identity_svc::Config;
use openstack::{NewProject, NewUser, OpenStack, SecretString};
use service_kit::testing::SpanCapture;
use snapkeeper_proto::identity::v1 as pb;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use support::{client, serve};

/// What one run of the flows produced: the secrets it used, and every text that left the service
/// other than the token fields the RPCs exist to return.
struct Exercise {
    secrets: Vec<String>,
    texts: Vec<String>,
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

async fn exercise() -> Exercise {
    let admin_password = support::sim_admin_password();
    let (_sim, cloud) = support::start_sim(&admin_password).await;
    let admin = OpenStack::connect(cloud.clone()).await.unwrap();
    let keystone = admin.keystone();
    let project = |name: &str| NewProject {
        name: name.into(),
        domain_id: "default".into(),
        description: String::new(),
    };
    let tenant = keystone.create_project(&project("leak-tenant")).await.unwrap();
    let other = keystone.create_project(&project("leak-other")).await.unwrap();
    let service_password = unique("svc-secret");
    let user_password = unique("user-secret");
    let wrong_password = unique("wrong-secret");
    let bogus_token = format!("gAAAAA{}", unique("bogus-token"));
    let internal = unique("internal-secret");
    let user = |name: &str, password: &str| NewUser {
        name: name.into(),
        domain_id: "default".into(),
        password: SecretString::from(password.to_owned()),
        email: None,
    };
    keystone.create_user(&user("svc-leak", &service_password)).await.unwrap();
    let alice = keystone.create_user(&user("alice", &user_password)).await.unwrap();
    let member = keystone.find_role("member").await.unwrap().unwrap();
    keystone.grant_project_role(&tenant.id, &alice.id, &member.id).await.unwrap();
    let key = fernet::Fernet::generate_key();
    let ciphertext = fernet::Fernet::new(&key).unwrap().encrypt(service_password.as_bytes());

    let mut texts = Vec::new();
    let mut secrets = vec![
        admin_password.clone(),
        service_password.clone(),
        user_password.clone(),
        wrong_password.clone(),
        bogus_token.clone(),
        internal.clone(),
        key.clone(),
        ciphertext.clone(),
    ];
    // `--flag=value`: a generated key may start with '-', which clap would read as a flag.
    let key_flag = format!("--password-key={key}");
    let fernet_flags =
        ["--service-user", "svc-leak", key_flag.as_str(), "--service-user-password-encrypted", &ciphertext];
    let config = Config::try_parse_from(std::iter::once("identity-svc").chain(fernet_flags)).unwrap();
    texts.push(format!("{config:?}"));
    texts.push(format!("{:?}", config.settings_with(&|_| None).unwrap()));

    let server = serve(cloud.clone(), &fernet_flags, Some(&internal)).await;
    let mut identity = client(&server, Some(&internal));
    let push_error = |texts: &mut Vec<String>, status: snapkeeper_proto::tonic::Status| {
        texts.push(format!("{status:?}"));
    };

    let request = |project_id: &str, dry_run: bool| pb::GetProjectCredentialsRequest {
        project_id: project_id.to_owned(),
        dry_run,
        run_id: "run-leak".into(),
        ..Default::default()
    };
    let first = identity.get_project_credentials(request(&tenant.id, false)).await.unwrap().into_inner();
    assert_eq!(first.scope_mode(), pb::ScopeMode::ServiceUser, "{}", first.fallback_reason);
    secrets.push(first.token.clone());
    let again = identity.get_project_credentials(request(&tenant.id, false)).await.unwrap().into_inner();
    assert!(again.cached);
    let dry = identity.get_project_credentials(request(&other.id, true)).await.unwrap().into_inner();
    texts.push(format!("{dry:?}"));
    let admin_credentials =
        identity.get_admin_credentials(pb::GetAdminCredentialsRequest::default()).await.unwrap().into_inner();
    secrets.push(admin_credentials.token.clone());

    let login = pb::AuthenticateUserRequest {
        username: "alice".into(),
        password: user_password.clone(),
        user_domain_name: "Default".into(),
        project_id: tenant.id.clone(),
        ..Default::default()
    };
    let logged_in = identity.authenticate_user(login.clone()).await.unwrap().into_inner();
    secrets.push(logged_in.token.clone());
    texts.push(format!("{:?}", logged_in.identity));
    for _ in 0..2 {
        let token = pb::ValidateUserTokenRequest { token: logged_in.token.clone() };
        texts.push(format!("{:?}", identity.validate_user_token(token).await.unwrap().into_inner()));
    }
    let bogus = pb::ValidateUserTokenRequest { token: bogus_token.clone() };
    push_error(&mut texts, identity.validate_user_token(bogus).await.unwrap_err());
    let wrong = pb::AuthenticateUserRequest { password: wrong_password.clone(), ..login };
    push_error(&mut texts, identity.authenticate_user(wrong).await.unwrap_err());
    let mut outsider = client(&server, None);
    push_error(&mut texts, outsider.get_project_credentials(request(&tenant.id, false)).await.unwrap_err());

    let all = |dry_run| pb::RevokeGrantsRequest {
        selector: Some(pb::revoke_grants_request::Selector::All(true)),
        dry_run,
    };
    texts.push(format!("{:?}", identity.revoke_grants(all(true)).await.unwrap().into_inner()));
    texts.push(format!("{:?}", identity.revoke_grants(all(false)).await.unwrap().into_inner()));
    texts.push(status_text(&mut identity).await);

    // A service user whose password is wrong: the admin fallback and its reason.
    let wrong_flags = ["--service-user", "svc-leak", "--service-user-password", &wrong_password];
    let fallback_server = serve(cloud.clone(), &wrong_flags, Some(&internal)).await;
    let mut fallback_identity = client(&fallback_server, Some(&internal));
    let fallback =
        fallback_identity.get_project_credentials(request(&tenant.id, false)).await.unwrap().into_inner();
    assert_eq!(fallback.scope_mode(), pb::ScopeMode::AdminFallback);
    texts.push(fallback.fallback_reason.clone());
    texts.push(status_text(&mut fallback_identity).await);

    // Configuration errors about the secrets themselves.
    let other_key_flag = format!("--password-key={}", fernet::Fernet::generate_key());
    for flags in [
        vec!["--password-key", "bad-key-secret-value", "--service-user-password-encrypted", &ciphertext],
        vec![key_flag.as_str(), "--service-user-password-encrypted", "gAAAAAnot-really-a-token-secret"],
        vec![other_key_flag.as_str(), "--service-user-password-encrypted", &ciphertext],
    ] {
        let config = Config::try_parse_from(std::iter::once("identity-svc").chain(flags)).unwrap();
        texts.push(config.settings_with(&|_| None).unwrap_err().to_string());
    }
    secrets.extend(["bad-key-secret-value".to_owned(), "gAAAAAnot-really-a-token-secret".to_owned()]);
    Exercise { secrets, texts }
}

async fn status_text(identity: &mut IdentityServiceClient<service_kit::client::ServiceChannel>) -> String {
    format!("{:?}", identity.status(pb::StatusRequest {}).await.unwrap().into_inner())
}

fn assert_clean(what: &str, haystack: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!haystack.contains(secret.as_str()), "a secret appears in the {what}");
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_in_logs_at_trace_or_in_error_texts() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    // The simulator is test equipment: its own log lines are not the service's.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,openstack_sim=off"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exercise = runtime.block_on(exercise());
    drop(runtime);
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("granted the service user its role on the project"), "the capture works");
    assert!(logs.contains("keystone call failed"), "failures were logged too");
    assert_clean("logs", &logs, &exercise.secrets);
    assert_clean("error messages and status texts", &exercise.texts.join("\n"), &exercise.secrets);
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_in_spans() {
    let capture = SpanCapture::start();
    let exercise = exercise().await;
    let spans = capture.finished();
    let dump: Vec<String> = spans.iter().map(|span| format!("{span:?}")).collect();
    assert!(dump.iter().any(|s| s.contains("get_project_credentials")), "the capture works");
    assert!(dump.iter().any(|s| s.contains("keystone.auth.tokens.create")), "openstack spans are captured");
    assert_clean("spans", &dump.join("\n"), &exercise.secrets);
    assert_clean("error messages and status texts", &exercise.texts.join("\n"), &exercise.secrets);
}
