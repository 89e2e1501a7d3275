//! One conformance suite for the client, run with the same assertions against the simulator
//! (`sim::*`, always) and against real Keystone + Cinder (`real::*`, with
//! `SNAPKEEPER_OS_CLOUD_TESTS=1` and the `OS_*` variables of `/tmp/realos/endpoints.env`).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use openstack::{
    AssignmentFilter, Error, NewSnapshot, ProjectRef, Scope, SecretString, Snapshot, SnapshotQuery,
    VolumeQuery,
};
use support::{Fixture, SETTLE};

conformance!(
    keystone_identity_objects,
    role_grant_check_revoke,
    token_validation_and_scopes,
    reauthenticates_once_after_401,
    volumes_pagination_and_metadata,
    snapshot_lifecycle,
    service_user_snapshot_lands_in_its_project,
    snapshot_quota_413_and_usage,
    project_isolation_and_policy,
    nova_is_optional,
    in_use_volume_needs_force,
);

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn keystone_identity_objects(fx: Fixture) {
    let keystone = fx.admin.keystone();
    let domains = keystone.domains().await.expect("domains");
    assert!(domains.iter().any(|d| d.id == "default" && d.name == "Default"), "{domains:?}");
    assert_eq!(
        keystone.find_domain("Default").await.expect("find domain").map(|d| d.id).as_deref(),
        Some("default")
    );

    let project = fx.project("proj").await;
    assert_eq!(keystone.project(&project.id).await.expect("get project").name, project.name);
    let found = keystone.find_project(&project.name, "default").await.expect("find project");
    assert_eq!(found.map(|p| p.id), Some(project.id.clone()));
    let listed = keystone.projects(Some("default")).await.expect("list projects");
    assert!(listed.iter().any(|p| p.id == project.id));
    assert!(keystone.projects(None).await.expect("all projects").iter().any(|p| p.id == project.id));

    // A '+' in a name must survive the query string (the old client sent it raw).
    let plus = fx.user("ops+snap@example.com", None).await;
    let by_name = keystone.find_user(&plus.name, Some("default")).await.expect("find by name");
    assert_eq!(by_name.map(|u| u.id), Some(plus.id.clone()));
    let email = format!("{}-mail@example.com", fx.tag);
    let mailed = fx.user("mailed", Some(email.clone())).await;
    let by_email = keystone.find_user(&email, Some("default")).await.expect("find by email");
    assert_eq!(by_email.map(|u| u.id), Some(mailed.id.clone()));
    assert_eq!(keystone.user(&mailed.id).await.expect("get user").email.as_deref(), Some(email.as_str()));
    assert!(keystone.find_user(&fx.name("nobody"), Some("default")).await.expect("lookup").is_none());

    let roles: BTreeSet<String> =
        keystone.roles().await.expect("roles").into_iter().map(|r| r.name).collect();
    for role in ["admin", "member", "reader"] {
        assert!(roles.contains(role), "{roles:?}");
    }
    let missing = keystone.project(&fx.name("no-such-project-id")).await.expect_err("missing project");
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.request_id().is_some_and(|id| id.starts_with("req-")), "{missing:?}");
}

async fn role_grant_check_revoke(fx: Fixture) {
    let keystone = fx.admin.keystone();
    let project = fx.project("grants").await;
    let user = fx.user("svc", None).await;
    let member = fx.role_id("member").await;
    assert!(!keystone.check_project_role(&project.id, &user.id, &member).await.expect("check"));
    keystone.grant_project_role(&project.id, &user.id, &member).await.expect("grant");
    keystone.grant_project_role(&project.id, &user.id, &member).await.expect("grant again is fine");
    assert!(keystone.check_project_role(&project.id, &user.id, &member).await.expect("check"));
    let filter = AssignmentFilter {
        user_id: Some(user.id.clone()),
        project_id: Some(project.id.clone()),
        role_id: None,
    };
    let assignments = keystone.role_assignments(&filter).await.expect("assignments");
    assert_eq!(assignments.len(), 1, "{assignments:?}");
    assert_eq!(assignments[0].role_id, member);
    assert_eq!(assignments[0].role_name.as_deref(), Some("member"));
    assert_eq!(assignments[0].project_id.as_deref(), Some(project.id.as_str()));
    keystone.revoke_project_role(&project.id, &user.id, &member).await.expect("revoke");
    assert!(!keystone.check_project_role(&project.id, &user.id, &member).await.expect("check"));
}

async fn token_validation_and_scopes(fx: Fixture) {
    let project = fx.project("scoped").await;
    let user = fx.user("person", None).await;
    // No role on the project yet: Keystone refuses the scope.
    let refused =
        fx.admin.with_auth(fx.password_auth(&user, Scope::Project(ProjectRef::Id(project.id.clone())))).await;
    assert!(matches!(refused, Err(Error::Unauthorized(_))), "{refused:?}");
    fx.grant(&project, &user, "reader").await;
    let scoped_by_name = Scope::Project(ProjectRef::Name {
        name: project.name.clone(),
        domain: openstack::DomainRef::Name("Default".into()),
    });
    let client = fx.admin.with_auth(fx.password_auth(&user, scoped_by_name)).await.expect("scoped by name");
    let info = client.token_info().await.expect("info");
    assert_eq!(info.project_id(), Some(project.id.as_str()));
    assert!(info.has_role("reader") && !info.has_role("admin"));

    let token = client.token().await.expect("token");
    let validated = fx.admin.keystone().validate_token(&token).await.expect("validate");
    assert_eq!(validated.user.id, user.id);
    assert_eq!(validated.user_domain.id, "default");
    assert_eq!(validated.project.as_ref().map(|p| p.id.as_str()), Some(project.id.as_str()));
    assert_eq!(validated.roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["reader"]);
    assert!(validated.expires_at > chrono::Utc::now());

    let bogus = fx.admin.keystone().validate_token(&SecretString::from("gAAAAAnot-a-token".to_owned())).await;
    assert!(matches!(bogus, Err(Error::NotFound(_))), "{bogus:?}");

    let unscoped = fx.admin.with_auth(fx.password_auth(&user, Scope::Unscoped)).await.expect("unscoped");
    let info = unscoped.token_info().await.expect("info");
    assert!(info.project.is_none() && info.roles.is_empty());
    assert!(matches!(unscoped.cinder().limits().await, Err(Error::NoEndpoint { .. })));
}

async fn reauthenticates_once_after_401(fx: Fixture) {
    let (_, user, client) = fx.member_in("reauth").await;
    let before = client.token().await.expect("token");
    fx.admin.keystone().revoke_token(&before).await.expect("revoke");
    let issued = |c: &openstack::OpenStack| {
        c.call_stats().get("keystone.auth.tokens.create").map_or(0, |s| s.attempts)
    };
    let issued_before = issued(&client);
    // Keystone checks tokens on every call (Cinder caches them for minutes), so ask Keystone.
    let me = client.keystone().user(&user.id).await.expect("call succeeds after one re-auth");
    assert_eq!(me.id, user.id);
    assert_eq!(issued(&client), issued_before + 1, "{:?}", client.call_stats());
    let after = client.token().await.expect("token");
    use openstack::ExposeSecret;
    assert_ne!(after.expose_secret(), before.expose_secret());
}

async fn volumes_pagination_and_metadata(fx: Fixture) {
    let (project, _, client) = fx.member_in("pages").await;
    let mut created = BTreeSet::new();
    for n in 0..5 {
        created.insert(fx.volume(&client, &format!("vol{n}"), BTreeMap::new()).await.id);
    }
    let paged = client.with_page_limit(2);
    paged.reset_call_stats();
    let listed = paged.cinder().volumes(&VolumeQuery::default()).await.expect("list");
    let ids: Vec<String> = listed.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids.len(), 5, "each volume exactly once: {ids:?}");
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), created);
    let pages = paged.call_stats().get("cinder.volumes.list").map_or(0, |s| s.attempts);
    assert!(pages >= 3, "5 volumes at 2 per page take at least 3 requests, saw {pages}");
    assert!(listed.iter().all(|v| v.project_id.as_deref() == Some(project.id.as_str()) && v.size == 1));

    let admin_view = fx
        .admin
        .with_page_limit(2)
        .cinder()
        .volumes(&VolumeQuery {
            all_tenants: true,
            project_id: Some(project.id.clone()),
            ..VolumeQuery::default()
        })
        .await
        .expect("admin list");
    assert_eq!(admin_view.iter().map(|v| v.id.clone()).collect::<BTreeSet<_>>(), created);

    let target = ids[0].clone();
    let cinder = client.cinder();
    let merged = cinder
        .set_volume_metadata(&target, &meta(&[("auto_snapshot", "true"), ("snapshot_policies", "daily_5")]))
        .await
        .expect("set");
    assert_eq!(merged.get("snapshot_policies").map(String::as_str), Some("daily_5"));
    let merged =
        cinder.set_volume_metadata(&target, &meta(&[("retention_daily_5", "5")])).await.expect("merge");
    assert_eq!(merged.get("auto_snapshot").map(String::as_str), Some("true"), "POST merges: {merged:?}");
    let filtered = cinder
        .volumes(&VolumeQuery {
            metadata: meta(&[("snapshot_policies", "daily_5")]),
            ..VolumeQuery::default()
        })
        .await
        .expect("metadata filter");
    assert_eq!(filtered.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec![target.as_str()]);
    cinder.delete_volume_metadata(&target, "auto_snapshot").await.expect("delete key");
    let volume = cinder.volume(&target).await.expect("get");
    assert!(!volume.metadata.contains_key("auto_snapshot"));
    assert_eq!(volume.metadata.get("retention_daily_5").map(String::as_str), Some("5"));
    let missing = cinder.delete_volume_metadata(&target, "auto_snapshot").await.expect_err("key is gone");
    assert!(missing.is_not_found(), "{missing}");
}

async fn snapshot_lifecycle(fx: Fixture) {
    let (project, _, client) = fx.member_in("snaps").await;
    let volume = fx.volume(&client, "source", BTreeMap::new()).await;
    let cinder = client.cinder();
    let created = cinder
        .create_snapshot(&NewSnapshot {
            volume_id: volume.id.clone(),
            name: fx.name("snap"),
            description: Some("conformance".into()),
            force: true,
            metadata: meta(&[("created_by", "snapkeeper"), ("policy", "daily_5")]),
        })
        .await
        .expect("create snapshot");
    assert!(matches!(created.status.as_str(), "creating" | "available"), "{}", created.status);
    let ready: Snapshot =
        cinder.wait_for_snapshot(&created.id, "available", SETTLE).await.expect("available");
    assert_eq!(ready.volume_id, volume.id);
    assert_eq!(ready.name, fx.name("snap"));
    assert_eq!(ready.description.as_deref(), Some("conformance"));
    assert_eq!(ready.project_id.as_deref(), Some(project.id.as_str()));
    assert_eq!(ready.metadata.get("policy").map(String::as_str), Some("daily_5"));

    let by_volume = cinder
        .snapshots(&SnapshotQuery { volume_id: Some(volume.id.clone()), ..SnapshotQuery::default() })
        .await
        .expect("list");
    assert_eq!(by_volume.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec![created.id.as_str()]);
    let everywhere = fx
        .admin
        .cinder()
        .snapshots(&SnapshotQuery {
            all_tenants: true,
            project_id: Some(project.id.clone()),
            ..SnapshotQuery::default()
        })
        .await
        .expect("admin list");
    assert!(everywhere.iter().any(|s| s.id == created.id));

    let metadata =
        cinder.set_snapshot_metadata(&created.id, &meta(&[("snapkeeper_hold", "true")])).await.expect("set");
    assert_eq!(metadata.get("created_by").map(String::as_str), Some("snapkeeper"));
    let metadata = cinder.snapshot_metadata(&created.id).await.expect("get metadata");
    assert_eq!(metadata.get("snapkeeper_hold").map(String::as_str), Some("true"));

    let blocked =
        fx.admin.cinder().delete_volume(&volume.id, false).await.expect_err("volume has a snapshot");
    assert!(matches!(blocked, Error::BadRequest(_)), "{blocked}");

    cinder.delete_snapshot(&created.id).await.expect("delete");
    cinder.wait_for_snapshot_deleted(&created.id, SETTLE).await.expect("gone");
    let gone = cinder.snapshot(&created.id).await.expect_err("deleted");
    assert!(gone.is_not_found());
}

async fn service_user_snapshot_lands_in_its_project(fx: Fixture) {
    let (project_b, _, owner) = fx.member_in("tenant-b").await;
    let volume = fx.volume(&owner, "tenant-vol", BTreeMap::new()).await;
    let service = fx.user("snapkeeper-svc", None).await;
    let scope = Scope::Project(ProjectRef::Id(project_b.id.clone()));
    assert!(fx.admin.with_auth(fx.password_auth(&service, scope.clone())).await.is_err(), "no role yet");

    let member = fx.role_id("member").await;
    fx.admin.keystone().grant_project_role(&project_b.id, &service.id, &member).await.expect("grant member");
    let as_service =
        fx.admin.with_auth(fx.password_auth(&service, scope)).await.expect("service user scoped to B");
    assert_eq!(as_service.token_info().await.expect("info").project_id(), Some(project_b.id.as_str()));
    let snapshot = as_service
        .cinder()
        .create_snapshot(&NewSnapshot {
            volume_id: volume.id.clone(),
            name: fx.name("svc-snap"),
            force: true,
            metadata: meta(&[("created_by", "snapkeeper"), ("original_project_id", &project_b.id)]),
            ..NewSnapshot::default()
        })
        .await
        .expect("snapshot as service user");
    let ready =
        as_service.cinder().wait_for_snapshot(&snapshot.id, "available", SETTLE).await.expect("available");
    assert_eq!(
        ready.project_id.as_deref(),
        Some(project_b.id.as_str()),
        "snapshot lands in the tenant's project"
    );
    let seen_by_owner = owner.cinder().snapshot(&snapshot.id).await.expect("the tenant sees it");
    assert_eq!(seen_by_owner.volume_id, volume.id);
}

async fn snapshot_quota_413_and_usage(fx: Fixture) {
    let (project, _, client) = fx.member_in("quota").await;
    let volume = fx.volume(&client, "quota-vol", BTreeMap::new()).await;
    let admin = fx.admin.cinder();
    let updated = admin
        .update_quota_set(&project.id, &BTreeMap::from([("snapshots".to_owned(), 1)]))
        .await
        .expect("set quota");
    assert_eq!(updated.get("snapshots").map(|q| q.limit), Some(1));
    let flat = admin.quota_set(&project.id, false).await.expect("quota without usage");
    assert!(!flat.has_usage);
    assert_eq!(flat.get("snapshots").map(|q| q.limit), Some(1));

    let request = NewSnapshot {
        volume_id: volume.id.clone(),
        name: fx.name("q1"),
        force: true,
        ..NewSnapshot::default()
    };
    let first = client.cinder().create_snapshot(&request).await.expect("first snapshot fits");
    client.cinder().wait_for_snapshot(&first.id, "available", SETTLE).await.expect("available");
    let usage = client.cinder().quota_set(&project.id, true).await.expect("own quota with usage");
    assert!(usage.has_usage);
    let snapshots = usage.get("snapshots").expect("snapshots key");
    assert_eq!((snapshots.limit, snapshots.in_use), (1, 1));
    assert_eq!(snapshots.available(), Some(0));
    assert_eq!(usage.get("volumes").map(|q| q.in_use), Some(1));
    assert!(usage.get("gigabytes").is_some_and(|q| q.in_use >= 2), "volume and snapshot GB: {usage:?}");

    let second = NewSnapshot { name: fx.name("q2"), ..request };
    let err = client.cinder().create_snapshot(&second).await.expect_err("over quota");
    let Error::QuotaExceeded(failure) = &err else { panic!("expected QuotaExceeded, got {err:?}") };
    assert_eq!(failure.status, 413);
    assert_eq!(failure.operation, "cinder.snapshots.create");
    assert!(failure.message.contains("SnapshotLimitExceeded"), "{}", failure.message);
    assert!(failure.request_id.as_deref().is_some_and(|id| id.starts_with("req-")));

    let limits = client.cinder().limits().await.expect("limits");
    assert_eq!(limits.absolute.get("maxTotalSnapshots"), Some(&1));
    assert_eq!(limits.absolute.get("totalSnapshotsUsed"), Some(&1));
    let listed = client.cinder().snapshots(&SnapshotQuery::default()).await.expect("list");
    assert_eq!(listed.len(), 1, "the refused snapshot does not exist");
}

async fn project_isolation_and_policy(fx: Fixture) {
    let (project_a, _, member_a) = fx.member_in("iso-a").await;
    let (project_b, _, member_b) = fx.member_in("iso-b").await;
    let volume_b = fx.volume(&member_b, "b-vol", BTreeMap::new()).await;
    let volume_a = fx.volume(&member_a, "a-vol", BTreeMap::new()).await;

    let seen = member_a
        .cinder()
        .volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() })
        .await
        .expect("list");
    assert_eq!(
        seen.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        vec![volume_a.id.as_str()],
        "all_tenants is ignored"
    );
    let hidden = member_a.cinder().volume(&volume_b.id).await.expect_err("B's volume is invisible to A");
    assert!(hidden.is_not_found(), "{hidden}");
    let snap = member_a
        .cinder()
        .create_snapshot(&NewSnapshot {
            volume_id: volume_b.id.clone(),
            name: fx.name("steal"),
            force: true,
            ..NewSnapshot::default()
        })
        .await
        .expect_err("cannot snapshot another project's volume");
    assert!(snap.is_not_found(), "{snap}");
    let quota = member_a.cinder().quota_set(&project_b.id, true).await.expect_err("other project's quota");
    assert!(matches!(quota, Error::Forbidden(_)), "{quota}");

    let reader = fx.user("reader", None).await;
    fx.grant(&project_a, &reader, "reader").await;
    let as_reader = fx.login(&reader, &project_a).await;
    assert_eq!(as_reader.cinder().volumes(&VolumeQuery::default()).await.expect("reader lists").len(), 1);
    let denied = as_reader
        .cinder()
        .create_snapshot(&NewSnapshot {
            volume_id: volume_a.id.clone(),
            name: fx.name("ro"),
            force: true,
            ..NewSnapshot::default()
        })
        .await
        .expect_err("reader cannot create");
    assert!(matches!(denied, Error::Forbidden(_)), "{denied}");
    let keystone_denied = member_a.keystone().projects(None).await.expect_err("members cannot list projects");
    assert!(matches!(keystone_denied, Error::Forbidden(_)), "{keystone_denied}");

    let everything = fx
        .admin
        .cinder()
        .volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() })
        .await
        .expect("admin");
    let ids: BTreeSet<&str> = everything.iter().map(|v| v.id.as_str()).collect();
    assert!(
        ids.contains(volume_a.id.as_str()) && ids.contains(volume_b.id.as_str()),
        "admin sees every project"
    );
}

async fn nova_is_optional(fx: Fixture) {
    // Neither the real test stack nor the minimal simulator runs Nova: names are then omitted.
    assert!(!fx.admin.has_compute().await.expect("catalog"));
    assert_eq!(fx.admin.nova().servers(true).await.expect("no error without nova"), None);
}

async fn in_use_volume_needs_force(fx: Fixture) {
    let (_, _, client) = fx.member_in("inuse").await;
    let volume = fx.volume(&client, "attached", BTreeMap::new()).await;
    let cinder = client.cinder();
    let server = "5f1e2d3c-0000-4000-8000-00000000abcd";
    cinder.attach_volume(&volume.id, server).await.expect("attach");
    let attached = cinder.wait_for_volume(&volume.id, "in-use", SETTLE).await.expect("in-use");
    assert_eq!(attached.attachments.first().and_then(|a| a.server_id.as_deref()), Some(server));

    let request = NewSnapshot {
        volume_id: volume.id.clone(),
        name: fx.name("no-force"),
        force: false,
        ..NewSnapshot::default()
    };
    let refused = cinder.create_snapshot(&request).await.expect_err("in-use needs force");
    assert!(matches!(refused, Error::BadRequest(_)), "{refused}");
    let forced = cinder
        .create_snapshot(&NewSnapshot { force: true, name: fx.name("forced"), ..request })
        .await
        .expect("force=true");
    cinder.wait_for_snapshot(&forced.id, "available", SETTLE).await.expect("available");

    cinder.detach_volume(&volume.id).await.expect("detach");
    let detached = cinder.wait_for_volume(&volume.id, "available", SETTLE).await.expect("available again");
    assert!(detached.attachments.is_empty());
}
