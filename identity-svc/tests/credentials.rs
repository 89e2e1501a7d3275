#![allow(clippy::unwrap_used)]
//! identity-svc's Keystone flows over real HTTP, on the simulator and on the real stack: project
//! credentials that put snapshots in the volume's own project, the caches and single flight, role
//! grants (once, never in dry run, revocable), the admin modes, and users' tokens.

mod support;

use identity_svc::IdentityError;
use identity_svc::broker::{Login, ProjectRequest};
use identity_svc::mode::{GrantOutcome, ScopeMode};
use identity_svc::store::GrantSelector;
use openstack::{ExposeSecret, SecretString};
use std::sync::Arc;

use identity_svc::broker::VERIFY_AFTER;
use service_kit::clock::ManualClock;
use support::{Fixture, SETTLE};

fn request(project_id: &str) -> ProjectRequest {
    ProjectRequest { project_id: project_id.to_owned(), ..ProjectRequest::default() }
}

async fn snapshot_lands_in_the_volume_project_and_the_second_call_is_free(fx: Fixture) {
    let (project, _, volume) = fx.project_with_volume("tenant").await;
    let user = fx.service_user().await;
    let password = fx.password();
    let broker = fx.broker(&Fixture::service_user_flags(&user.name, &password)).await;

    let server_before = fx.server_keystone_requests();
    let first = broker.project_credentials(&request(&project.id)).await.unwrap();
    let first_calls = broker.keystone_requests();
    eprintln!("{:?}: first call made {first_calls} keystone requests: {:?}", fx.side, broker.call_stats());
    assert_eq!(first.scope_mode, ScopeMode::ServiceUser, "{}", first.fallback_reason);
    assert_eq!(first.role_grant, GrantOutcome::Granted);
    assert_eq!(first.role_name, "member");
    assert_eq!(first.token_project_id, project.id);
    assert_eq!(first.user_id, user.id);
    assert_eq!(first.project_name, project.name);
    assert!(!first.cached);
    assert!(first.cinder_endpoint.contains(&project.id), "{}", first.cinder_endpoint);
    assert_eq!(first.region, "RegionOne");

    let token = first.token.clone().unwrap();
    let snapshot_id =
        support::snapshot_with(token.expose_secret(), &first.cinder_endpoint, &volume.id, &fx.name("snap"))
            .await;
    let snapshot = fx.admin.cinder().wait_for_snapshot(&snapshot_id, "available", SETTLE).await.unwrap();
    assert_eq!(
        snapshot.project_id.as_deref(),
        Some(project.id.as_str()),
        "snapshot lands in the volume's project"
    );
    assert_eq!(snapshot.volume_id, volume.id);

    let server_mid = fx.server_keystone_requests();
    let second = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert!(second.cached);
    assert_eq!(second.role_grant, GrantOutcome::AlreadyPresent);
    assert_eq!(second.token.unwrap().expose_secret(), token.expose_secret());
    assert_eq!(broker.keystone_requests(), first_calls, "the second call makes no keystone request");
    assert_eq!(fx.server_keystone_requests(), server_mid, "keystone saw nothing either");
    if let (Some(before), Some(mid)) = (server_before, server_mid) {
        assert_eq!(mid - before, first_calls, "the simulator agrees with the client's counters");
    }

    let member = fx.role_id("member").await;
    let assignments = fx.assignments(&project, &user).await;
    assert_eq!(assignments.iter().filter(|a| a.role_id == member).count(), 1, "{assignments:?}");
    assert_eq!(assignments.len(), 1, "only the configured role, never admin: {assignments:?}");
    let status = broker.status().await.unwrap();
    assert_eq!((status.grants_made, status.grants_outstanding), (1, 1));
    assert_eq!(
        (status.project_tokens.hits, status.project_tokens.misses, status.project_tokens.entries),
        (1, 1, 1)
    );
    assert_eq!(status.service_user_id, user.id);
    assert_eq!(status.admin_fallbacks, 0);
}

async fn concurrent_callers_share_one_round_trip(fx: Fixture) {
    let (project, _, _) = fx.project_with_volume("crowd").await;
    let user = fx.service_user().await;
    let password = fx.password();
    let broker = fx.broker(&Fixture::service_user_flags(&user.name, &password)).await;
    broker.admin_credentials(None).await.unwrap();
    let before = broker.call_stats();
    let mut callers = Vec::new();
    for _ in 0..8 {
        let broker = std::sync::Arc::clone(&broker);
        let project_id = project.id.clone();
        callers.push(tokio::spawn(async move { broker.project_credentials(&request(&project_id)).await }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    let mut granted = 0;
    for caller in callers {
        let credentials = caller.await.unwrap().unwrap();
        assert_eq!(credentials.scope_mode, ScopeMode::ServiceUser);
        granted += usize::from(credentials.role_grant == GrantOutcome::Granted);
        tokens.insert(credentials.token.unwrap().expose_secret().to_owned());
    }
    let after = broker.call_stats();
    let delta = |op: &str| after.get(op).map_or(0, |s| s.attempts) - before.get(op).map_or(0, |s| s.attempts);
    assert_eq!(delta("keystone.auth.tokens.create"), 1, "{after:?}");
    assert_eq!(delta("keystone.roles.grant"), 1, "{after:?}");
    assert_eq!((tokens.len(), granted), (1, 1));
}

async fn dry_run_grants_nothing(fx: Fixture) {
    let project = fx.project("dry").await;
    let user = fx.service_user().await;
    let password = fx.password();
    let broker = fx.broker(&Fixture::service_user_flags(&user.name, &password)).await;
    let dry = ProjectRequest { dry_run: true, run_id: Some("run-dry".into()), ..request(&project.id) };
    let answer = broker.project_credentials(&dry).await.unwrap();
    assert_eq!(answer.role_grant, GrantOutcome::WouldGrant);
    assert_eq!(answer.scope_mode, ScopeMode::ServiceUser);
    assert!(answer.token.is_none());
    assert!(fx.assignments(&project, &user).await.is_empty(), "dry run changed keystone");
    assert!(!broker.call_stats().contains_key("keystone.roles.grant"));
    let status = broker.status().await.unwrap();
    assert_eq!((status.grants_made, status.grants_outstanding), (0, 0));

    // With the role in place, a dry run gets a token: issuing one changes nothing.
    fx.grant(&project, &user, "member").await;
    let answer = broker.project_credentials(&dry).await.unwrap();
    assert_eq!(answer.role_grant, GrantOutcome::AlreadyPresent);
    assert!(answer.token.is_some());
}

async fn missing_password_means_admin_only(fx: Fixture) {
    let project = fx.project("adminonly").await;
    let user = fx.service_user().await;
    let broker = fx.broker(&["--service-user", &user.name, "--service-user-password", ""]).await;
    let answer = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert_eq!(answer.scope_mode, ScopeMode::AdminOnly);
    assert_eq!(answer.fallback_reason, "no service user password configured");
    assert_eq!(answer.role_grant, GrantOutcome::NotApplicable);
    let admin_project = fx.admin.token_info().await.unwrap().project.unwrap();
    assert_eq!(answer.token_project_id, admin_project.id, "snapshots would land in the admin's project");
    assert_eq!(answer.project_name, project.name);
    assert!(answer.token.is_some());
    assert!(fx.assignments(&project, &user).await.is_empty());
    let again = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert!(again.cached, "admin token and project name come from the caches");
    let err = broker.revoke_grants(&GrantSelector::All, false).await.unwrap_err();
    assert!(matches!(err, IdentityError::NotServiceUserMode(_)), "{err}");
}

async fn wrong_password_falls_back_with_the_reason(fx: Fixture) {
    let project = fx.project("wrongpw").await;
    let user = fx.service_user().await;
    let broker = fx.broker(&Fixture::service_user_flags(&user.name, "not-the-password")).await;
    let answer = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert_eq!(answer.scope_mode, ScopeMode::AdminFallback);
    assert!(
        answer.fallback_reason.starts_with("service user authentication failed: HTTP 401"),
        "{}",
        answer.fallback_reason
    );
    assert!(!answer.fallback_reason.contains("not-the-password"));
    assert_eq!(answer.role_grant, GrantOutcome::Granted, "the role was ensured before the login failed");
    assert!(!answer.cached);
    let status = broker.status().await.unwrap();
    assert_eq!(status.admin_fallbacks, 1);
    let last = status.last_keystone_error.unwrap();
    assert_eq!((last.operation.as_str(), last.http_status), ("service user authentication", 401));
    assert!(!last.message.contains("not-the-password"));

    // Other projects are not tried (nor granted) for a while: no lockout by a thousand failed logins.
    let second = fx.project("wrongpw-2").await;
    let logins = |b: &identity_svc::broker::Broker| {
        b.call_stats().get("keystone.auth.tokens.create").map_or(0, |s| s.attempts)
    };
    let before = logins(&broker);
    let answer = broker.project_credentials(&request(&second.id)).await.unwrap();
    assert_eq!(answer.scope_mode, ScopeMode::AdminFallback);
    assert!(answer.fallback_reason.contains("not retried before"), "{}", answer.fallback_reason);
    assert_eq!(answer.role_grant, GrantOutcome::NotApplicable);
    assert_eq!(logins(&broker), before);
    assert!(fx.assignments(&second, &user).await.is_empty(), "no grant for a user that cannot log in");
}

async fn unknown_service_user_falls_back(fx: Fixture) {
    let project = fx.project("nouser").await;
    let missing = fx.name("nobody@example.com");
    let broker = fx.broker(&Fixture::service_user_flags(&missing, "whatever-pw")).await;
    let answer = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert_eq!(answer.scope_mode, ScopeMode::AdminFallback);
    assert!(answer.fallback_reason.contains("not found in domain"), "{}", answer.fallback_reason);
}

async fn unknown_project_is_not_found(fx: Fixture) {
    let user = fx.service_user().await;
    let password = fx.password();
    let broker = fx.broker(&Fixture::service_user_flags(&user.name, &password)).await;
    let err = broker.project_credentials(&request("0123456789abcdef0123456789abcdef")).await.unwrap_err();
    assert!(matches!(err, IdentityError::ProjectNotFound(_)), "{err}");
    let err = broker.project_credentials(&request("../users")).await.unwrap_err();
    assert!(err.to_string().starts_with("project_id: "), "{err}");
}

async fn revoke_removes_only_the_grants_identity_svc_made(fx: Fixture) {
    let ours = fx.project("ours").await;
    let theirs = fx.project("theirs").await;
    let user = fx.service_user().await;
    fx.grant(&theirs, &user, "member").await;
    let password = fx.password();
    let broker = fx.broker(&Fixture::service_user_flags(&user.name, &password)).await;
    for project in [&ours, &theirs] {
        let run = ProjectRequest { run_id: Some("run-7".into()), ..request(&project.id) };
        broker.project_credentials(&run).await.unwrap();
    }
    let listed = broker.revoke_grants(&GrantSelector::Run("run-7".into()), true).await.unwrap();
    assert_eq!(listed.revoked, 1);
    assert_eq!(listed.grants[0].grant.project_id, ours.id);
    assert_eq!(fx.assignments(&ours, &user).await.len(), 1, "dry run revoked nothing");
    let none = broker.revoke_grants(&GrantSelector::Run("run-other".into()), false).await.unwrap();
    assert_eq!(none.grants.len(), 0);

    let done = broker.revoke_grants(&GrantSelector::Run("run-7".into()), false).await.unwrap();
    assert_eq!((done.revoked, done.failed, done.already_absent), (1, 0, 0));
    assert!(fx.assignments(&ours, &user).await.is_empty());
    assert_eq!(fx.assignments(&theirs, &user).await.len(), 1, "a grant we did not make stays");
    assert_eq!(broker.status().await.unwrap().grants_outstanding, 0);

    // The next call for the project grants again (the caches were dropped), and a grant someone
    // else removed is reported as already absent.
    let again = broker.project_credentials(&request(&ours.id)).await.unwrap();
    assert_eq!(again.role_grant, GrantOutcome::Granted);
    let member = fx.role_id("member").await;
    fx.admin.keystone().revoke_project_role(&ours.id, &user.id, &member).await.unwrap();
    let gone = broker.revoke_grants(&GrantSelector::All, false).await.unwrap();
    assert_eq!((gone.revoked, gone.already_absent), (0, 1));
}

async fn users_log_in_and_their_tokens_validate(fx: Fixture) {
    let (project, owner, _) = fx.project_with_volume("login").await;
    let broker = fx.broker(&[]).await;
    let login = Login {
        username: owner.name.clone(),
        password: SecretString::from(fx.password()),
        user_domain_name: "Default".into(),
        project_id: None,
        project_name: Some(project.name.clone()),
        project_domain_name: None,
    };
    let (token, info) = broker.authenticate_user(login.clone()).await.unwrap();
    assert_eq!(info.user.id, owner.id);
    assert_eq!(info.project_id(), Some(project.id.as_str()));
    assert!(info.has_role("member"));

    let (validated, cached) = broker.validate_user_token(&token).await.unwrap();
    assert!(!cached);
    assert_eq!(validated.user.id, owner.id);
    let calls = broker.keystone_requests();
    let (_, cached) = broker.validate_user_token(&token).await.unwrap();
    assert!(cached);
    assert_eq!(broker.keystone_requests(), calls, "a cached validation asks keystone nothing");
    assert_eq!(broker.status().await.unwrap().user_tokens.hits, 1);

    let bogus = SecretString::from("gAAAAABnot-a-real-token".to_owned());
    assert!(matches!(
        broker.validate_user_token(&bogus).await.unwrap_err(),
        IdentityError::Unauthenticated(_)
    ));
    let wrong = Login { password: SecretString::from("wrong-password".to_owned()), ..login };
    assert!(matches!(broker.authenticate_user(wrong).await.unwrap_err(), IdentityError::Unauthenticated(_)));
}

async fn admin_credentials_stay_valid_and_cached(fx: Fixture) {
    let broker = fx.broker(&[]).await;
    let first = broker.admin_credentials(None).await.unwrap();
    assert!(!first.cached);
    assert_eq!(first.cinder.region, "RegionOne");
    assert!(first.endpoints.iter().any(|e| e.service_type == "identity"));
    let calls = broker.keystone_requests();
    let second = broker.admin_credentials(Some("RegionOne")).await.unwrap();
    assert!(second.cached);
    assert_eq!(broker.keystone_requests(), calls);
    let err = broker.admin_credentials(Some("Atlantis")).await.unwrap_err();
    assert!(matches!(err, IdentityError::NoCinderEndpoint { .. }), "{err}");
}

/// Tokens revoked behind identity-svc's back (key rotation, password change) are replaced once
/// they were last checked more than a minute ago, instead of being handed out until they expire.
async fn revoked_tokens_are_replaced_after_the_check_interval(fx: Fixture) {
    let Some(sim) = fx.sim.clone() else {
        eprintln!("SKIP on the real stack: revoking every token would disturb other users of the stack");
        return;
    };
    let (project, _, _) = fx.project_with_volume("rotation").await;
    let user = fx.service_user().await;
    let password = fx.password();
    let clock = ManualClock::new(chrono::Utc::now());
    let broker = fx
        .broker_with_clock(&Fixture::service_user_flags(&user.name, &password), Arc::new(clock.clone()))
        .await;
    let admin_before = broker.admin_credentials(None).await.unwrap();
    let project_before = broker.project_credentials(&request(&project.id)).await.unwrap();
    sim.revoke_tokens();
    let still_cached = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert!(still_cached.cached, "within the interval nothing is asked");
    clock.advance(VERIFY_AFTER + chrono::Duration::seconds(1));
    let admin_after = broker.admin_credentials(None).await.unwrap();
    assert!(!admin_after.cached);
    assert_ne!(admin_after.token.expose_secret(), admin_before.token.expose_secret());
    let project_after = broker.project_credentials(&request(&project.id)).await.unwrap();
    assert_eq!(project_after.scope_mode, ScopeMode::ServiceUser, "{}", project_after.fallback_reason);
    assert!(!project_after.cached);
    assert_ne!(project_after.token.unwrap().expose_secret(), project_before.token.unwrap().expose_secret());
}

on_both_clouds!(
    snapshot_lands_in_the_volume_project_and_the_second_call_is_free,
    concurrent_callers_share_one_round_trip,
    dry_run_grants_nothing,
    missing_password_means_admin_only,
    wrong_password_falls_back_with_the_reason,
    unknown_service_user_falls_back,
    unknown_project_is_not_found,
    revoke_removes_only_the_grants_identity_svc_made,
    users_log_in_and_their_tokens_validate,
    admin_credentials_stay_valid_and_cached,
    revoked_tokens_are_replaced_after_the_check_interval,
);

/// The endpoint comes from the requested region (default: the cloud's), and a region without
/// Cinder is the caller's precondition to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cinder_endpoint_follows_the_requested_region() {
    let password = support::sim_admin_password();
    let mut scenario = openstack_sim::Scenario::minimal();
    scenario.regions = vec!["RegionOne".into(), "RegionTwo".into()];
    for user in &mut scenario.users {
        user.password.clone_from(&password);
    }
    let sim = openstack_sim::Simulator::start(openstack_sim::SimConfig { scenario, ..Default::default() })
        .await
        .unwrap();
    let mut cloud =
        openstack::CloudConfig::password(&sim.auth_url(), "admin", "Default", &password, "admin", "Default");
    cloud.region = Some("RegionTwo".into());
    let mut config = <identity_svc::Config as clap::Parser>::try_parse_from(["identity-svc"]).unwrap();
    config.cloud = Some(cloud);
    let settings = config.settings_with(&|_| None).unwrap();
    let database =
        service_kit::db::Database::connect("sqlite::memory:", identity_svc::SCHEMA, 1).await.unwrap();
    database.migrate(identity_svc::MIGRATIONS).await.unwrap();
    let broker = identity_svc::broker::Broker::new(
        settings,
        identity_svc::store::GrantStore::new(database),
        Arc::new(service_kit::clock::SystemClock),
    );
    let admin_project = broker.admin_credentials(None).await.unwrap().info.project_id().unwrap().to_owned();
    let default = broker.project_credentials(&request(&admin_project)).await.unwrap();
    assert_eq!(default.region, "RegionTwo", "the configured default region");
    let one = ProjectRequest { region: Some("RegionOne".into()), ..request(&admin_project) };
    assert_eq!(broker.project_credentials(&one).await.unwrap().region, "RegionOne");
    let nowhere = ProjectRequest { region: Some("Nowhere".into()), ..request(&admin_project) };
    let err = broker.project_credentials(&nowhere).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::NoCinderEndpoint { ref region, .. } if region == "Nowhere"),
        "{err}"
    );
}
