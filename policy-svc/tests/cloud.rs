//! PolicyService against the simulated cloud (openstack-sim behind a stand-in identity-svc):
//! PlanAssignment writes nothing, ApplyAssignment tags volumes per the seed's rules and keeps
//! foreign keys, a second apply writes nothing, listings grow with pages and not with volumes,
//! Evaluate looks a volume up by id and explains, and a revoked token is renewed once.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use openstack::{OpenStack, VolumeQuery};
use policy_svc::active_rules::ActiveRules;
use policy_svc::assignment::{Assigner, Scope};
use policy_svc::cloud::Cloud;
use policy_svc::grpc::PolicyApi;
use policy_svc::store::Store;
use service_kit::clock::{Clock, SystemClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use service_kit::server::GrpcServer;
use snapkeeper_proto::policy::v1 as pb;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::policy::v1::policy_service_server::PolicyServiceServer;
use snapkeeper_proto::tonic::Code;
use snapkeeper_proto::tonic::transport::Channel;
use support::{SEED_RULES, SimCloud, start_demo_cloud};

/// Volumes in the demo cloud.
const DEMO_VOLUMES: i64 = 200;

struct Harness {
    client: PolicyServiceClient<Channel>,
    assigner: Arc<Assigner>,
    cloud: SimCloud,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// policy-svc with the seed's rules over the demo cloud, listing `page_size` volumes per page.
async fn start(page_size: u32) -> Harness {
    let cloud = start_demo_cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/policy.db?mode=rwc", dir.path().display());
    let database = Database::connect(&url, policy_svc::SCHEMA, 4).await.unwrap();
    database.migrate(policy_svc::MIGRATIONS).await.unwrap();
    let active = Arc::new(ActiveRules::load(Store::new(database)).await.unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let access = Cloud::connect(&cloud.identity_url, &SecurityArgs::default(), page_size).unwrap();
    let assigner = Arc::new(Assigner::new(Arc::new(access), Arc::clone(&active), Arc::clone(&clock), 8));
    let api = PolicyApi::new(active, clock).with_assigner(Arc::clone(&assigner));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        GrpcServer::new(SecurityArgs::default())
            .add_service(PolicyServiceServer::new(api))
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let mut client = PolicyServiceClient::connect(format!("http://{address}")).await.unwrap();
    let replaced = client
        .replace_rules(pb::ReplaceRulesRequest {
            document: SEED_RULES.into(),
            actor: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replaced.accepted);
    Harness { client, assigner, cloud, _dir: dir, shutdown: Some(tx) }
}

/// The messages of one plan or apply stream.
struct Run {
    progress: Vec<pb::AssignmentProgress>,
    changes: Vec<pb::VolumeChange>,
    summary: pb::AssignmentSummary,
}

async fn plan(h: &mut Harness, scope: pb::VolumeScope, include_unchanged: bool) -> Run {
    use pb::plan_assignment_response::Event;
    let request = pb::PlanAssignmentRequest { scope: Some(scope), include_unchanged };
    let mut stream = h.client.plan_assignment(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.push(match message.event.unwrap() {
            Event::Progress(p) => Item::Progress(p),
            Event::Change(c) => Item::Change(Box::new(c)),
            Event::Summary(s) => Item::Summary(s),
        });
    }
    collect(events)
}

async fn apply(h: &mut Harness, scope: pb::VolumeScope) -> Run {
    use pb::apply_assignment_response::Event;
    let request =
        pb::ApplyAssignmentRequest { scope: Some(scope), actor: "alice".into(), ..Default::default() };
    let mut stream = h.client.apply_assignment(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.push(match message.event.unwrap() {
            Event::Progress(p) => Item::Progress(p),
            Event::Change(c) => Item::Change(Box::new(c)),
            Event::Summary(s) => Item::Summary(s),
        });
    }
    collect(events)
}

enum Item {
    Progress(pb::AssignmentProgress),
    Change(Box<pb::VolumeChange>),
    Summary(pb::AssignmentSummary),
}

/// Splits a stream's messages, checking the contract's order: progress first, summary last.
fn collect(events: Vec<Item>) -> Run {
    assert!(
        matches!(events.first(), Some(Item::Progress(p)) if p.phase == pb::AssignmentPhase::Listing as i32)
    );
    let mut run =
        Run { progress: Vec::new(), changes: Vec::new(), summary: pb::AssignmentSummary::default() };
    let last = events.len() - 1;
    for (i, event) in events.into_iter().enumerate() {
        match event {
            Item::Progress(p) => run.progress.push(p),
            Item::Change(c) => run.changes.push(*c),
            Item::Summary(s) => {
                assert_eq!(i, last, "the summary is the last message");
                run.summary = s;
            }
        }
    }
    run
}

fn count(stats: &BTreeMap<String, u64>, operation: &str) -> u64 {
    stats.get(operation).copied().unwrap_or(0)
}

fn metadata_writes(stats: &BTreeMap<String, u64>) -> u64 {
    count(stats, "cinder.volumes.metadata.set")
        + count(stats, "cinder.volumes.metadata.delete")
        + count(stats, "cinder.volumes.metadata.replace")
}

async fn volumes(admin: &OpenStack) -> Vec<openstack::Volume> {
    admin.cinder().volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() }).await.unwrap()
}

/// Project id -> name of the demo cloud.
async fn project_names(admin: &OpenStack) -> BTreeMap<String, String> {
    admin.keystone().projects(None).await.unwrap().into_iter().map(|p| (p.id, p.name)).collect()
}

fn key<'a>(change: &'a pb::VolumeChange, key: &str) -> Option<&'a pb::MetadataChange> {
    change.metadata_changes.iter().find(|c| c.key == key)
}

#[tokio::test]
async fn plan_shows_every_change_and_writes_nothing() {
    let mut h = start(500).await;
    h.cloud.sim.reset_stats();
    let run = plan(&mut h, pb::VolumeScope::default(), true).await;
    let stats = h.cloud.sim.stats();

    let summary = &run.summary;
    assert!(summary.dry_run);
    assert_eq!(summary.processed, DEMO_VOLUMES);
    assert_eq!(summary.changed + summary.unchanged, DEMO_VOLUMES);
    assert!(summary.changed > 150, "most demo volumes lack the seed's keys: {summary:?}");
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.rule_set_version, 1);
    assert_eq!(
        run.changes.len(),
        usize::try_from(DEMO_VOLUMES).unwrap(),
        "include_unchanged streams every volume"
    );
    for change in &run.changes {
        let expected = if change.kind == pb::ChangeKind::None as i32 {
            pb::VolumeOutcome::Unchanged
        } else {
            pb::VolumeOutcome::Planned
        };
        assert_eq!(change.outcome, expected as i32, "{change:?}");
        assert!(!change.project_name.is_empty() && !change.domain_name.is_empty());
        let decision = change.decision.as_ref().unwrap();
        let lab = ["lab", "playground"].contains(&change.project_name.as_str());
        assert_eq!(decision.auto_snapshot, !lab, "{change:?}");
        if lab && change.kind != pb::ChangeKind::None as i32 {
            assert_eq!(change.kind, pb::ChangeKind::Unenroll as i32);
        }
    }
    let prod = run.changes.iter().find(|c| c.kind == pb::ChangeKind::Enroll as i32).unwrap();
    assert_eq!(
        key(prod, "snapshot_policies").unwrap().new_value.as_deref(),
        Some("daily_5,monthly_15th,monthly_1st")
    );
    assert_eq!(key(prod, "retention_daily_5").unwrap().new_value.as_deref(), Some("5"));

    assert_eq!(metadata_writes(&stats), 0, "a plan writes nothing: {stats:?}");
    assert_eq!(count(&stats, "cinder.volumes.list"), 1);
    assert_eq!(count(&stats, "keystone.projects.list"), 1);
    assert_eq!(count(&stats, "keystone.domains.list"), 1);
    assert_eq!(count(&stats, "cinder.volumes.get"), 0, "never a call per volume");
    let final_progress = run.progress.last().unwrap();
    assert_eq!(final_progress.volumes_listed, DEMO_VOLUMES);

    let err = h
        .client
        .plan_assignment(pb::PlanAssignmentRequest {
            scope: Some(pb::VolumeScope { volume_ids: vec![String::new()], ..Default::default() }),
            include_unchanged: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("scope.volume_ids[0]"), "{}", err.message());
}

#[tokio::test]
async fn apply_tags_volumes_per_the_rules_keeps_foreign_keys_and_a_second_apply_changes_nothing() {
    let mut h = start(500).await;
    let admin = h.cloud.admin().await;
    let names = project_names(&admin).await;
    let before: BTreeMap<String, BTreeMap<String, String>> =
        volumes(&admin).await.into_iter().map(|v| (v.id, v.metadata)).collect();
    let planned = plan(&mut h, pb::VolumeScope::default(), false).await.summary;

    h.cloud.sim.reset_stats();
    let first = apply(&mut h, pb::VolumeScope::default()).await;
    let first_stats = h.cloud.sim.stats();
    let summary = &first.summary;
    assert!(!summary.dry_run);
    assert_eq!((summary.processed, summary.failed), (DEMO_VOLUMES, 0), "{summary:?}");
    assert_eq!(summary.changed, planned.changed, "apply does what the plan said");
    assert_eq!(summary.enrolled, planned.enrolled);
    assert_eq!(summary.unenrolled, planned.unenrolled);
    assert!(first.changes.iter().all(|c| c.outcome == pb::VolumeOutcome::Applied as i32));
    assert_eq!(first.changes.len(), usize::try_from(summary.changed).unwrap());
    assert!(first.progress.iter().any(|p| p.phase == pb::AssignmentPhase::Writing as i32));
    let sets = count(&first_stats, "cinder.volumes.metadata.set");
    let deletes = count(&first_stats, "cinder.volumes.metadata.delete");
    assert!(sets <= u64::try_from(summary.changed).unwrap(), "at most one merge per changed volume");
    assert_eq!(count(&first_stats, "cinder.volumes.list"), 1);

    for volume in volumes(&admin).await {
        let metadata = &volume.metadata;
        let project = &names[volume.project_id.as_ref().unwrap()];
        if project == "lab" || project == "playground" {
            assert_eq!(metadata.get("auto_snapshot").map(String::as_str), Some("false"), "{metadata:?}");
            assert!(!metadata.keys().any(|k| k.starts_with("snapshot_polic") || k.starts_with("retention_")));
        } else {
            assert_eq!(metadata.get("auto_snapshot").map(String::as_str), Some("true"));
            assert_eq!(
                metadata.get("snapshot_policies").map(String::as_str),
                Some("daily_5,monthly_15th,monthly_1st")
            );
            for (key, value) in
                [("retention_daily_5", "5"), ("retention_monthly_1st", "1"), ("retention_monthly_15th", "1")]
            {
                assert_eq!(metadata.get(key).map(String::as_str), Some(value), "{metadata:?}");
            }
            assert!(!metadata.contains_key("snapshot_policy"), "the legacy key is migrated away");
            assert!(!metadata.contains_key("retention_weekly_4"), "our keys the rules do not want go");
        }
        for (key, value) in &before[&volume.id] {
            if !policy_svc::metadata::is_owned(key) {
                assert_eq!(metadata.get(key), Some(value), "foreign key {key} kept on {}", volume.id);
            }
        }
    }

    h.cloud.sim.reset_stats();
    let second = apply(&mut h, pb::VolumeScope::default()).await;
    let second_stats = h.cloud.sim.stats();
    assert_eq!(
        (second.summary.processed, second.summary.changed, second.summary.unchanged, second.summary.failed),
        (DEMO_VOLUMES, 0, DEMO_VOLUMES, 0)
    );
    assert!(second.changes.is_empty());
    assert_eq!(metadata_writes(&second_stats), 0, "{second_stats:?}");
    assert_eq!(h.cloud.identity_calls.load(Ordering::SeqCst), 1, "the admin session is cached");
    println!(
        "first apply: changed {} (enrolled {}, unenrolled {}), metadata.set {sets}, metadata.delete {deletes}, \
         volume listings {}; second apply: changed 0, metadata writes {}, volume listings {}",
        summary.changed,
        summary.enrolled,
        summary.unenrolled,
        count(&first_stats, "cinder.volumes.list"),
        metadata_writes(&second_stats),
        count(&second_stats, "cinder.volumes.list"),
    );
}

#[tokio::test]
async fn listing_requests_grow_with_pages_not_volumes() {
    let mut h = start(50).await;
    h.cloud.sim.reset_stats();
    let whole = plan(&mut h, pb::VolumeScope::default(), false).await;
    let stats = h.cloud.sim.stats();
    assert_eq!(whole.summary.processed, DEMO_VOLUMES);
    let listings = count(&stats, "cinder.volumes.list");
    // 200 volumes in pages of 50: four full pages, and at most one empty page to learn the end.
    assert!((4..=5).contains(&listings), "{stats:?}");
    assert_eq!(count(&stats, "keystone.projects.list") + count(&stats, "keystone.domains.list"), 2);
    assert_eq!(count(&stats, "cinder.volumes.get") + count(&stats, "keystone.projects.get"), 0);

    // A scope narrows the result, not the listing: the same pages, whatever the volume count.
    let admin = h.cloud.admin().await;
    let names = project_names(&admin).await;
    let lab = names.iter().find(|(_, n)| *n == "lab").unwrap().0.clone();
    h.cloud.sim.reset_stats();
    let scoped = plan(&mut h, pb::VolumeScope { project_ids: vec![lab], ..Default::default() }, true).await;
    let scoped_stats = h.cloud.sim.stats();
    assert!(scoped.summary.processed > 0 && scoped.summary.processed < 20);
    assert!(scoped.changes.iter().all(|c| c.project_name == "lab"));
    assert_eq!(count(&scoped_stats, "cinder.volumes.list"), listings);
    println!(
        "page size 50: {listings} volume listing requests for {DEMO_VOLUMES} volumes (and for a scope of {})",
        scoped.summary.processed
    );
}

#[tokio::test]
async fn evaluate_looks_the_volume_up_by_id_and_explains() {
    let mut h = start(500).await;
    let admin = h.cloud.admin().await;
    let names = project_names(&admin).await;
    let all = volumes(&admin).await;
    let in_project =
        |name: &str| all.iter().find(|v| names[v.project_id.as_ref().unwrap()] == name).unwrap().id.clone();

    let lab = h
        .client
        .evaluate(pb::EvaluateRequest {
            target: Some(pb::evaluate_request::Target::VolumeId(in_project("lab"))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let volume = lab.volume.unwrap();
    assert_eq!((volume.project_name.as_str(), volume.domain_name.as_str()), ("lab", "Default"));
    let decision = lab.decision.unwrap();
    assert_eq!(decision.source, pb::DecisionSource::Rule as i32);
    assert_eq!(decision.matched_rule_name, "Exclude lab / playground tenants");
    assert!(!decision.auto_snapshot && !decision.enrolled);

    let web = h
        .client
        .evaluate(pb::EvaluateRequest {
            target: Some(pb::evaluate_request::Target::VolumeId(in_project("web"))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(web.volume.as_ref().unwrap().domain_name, "acme");
    let decision = web.decision.unwrap();
    assert_eq!(decision.matched_rule_name, "Prod tenants - daily + 1st + 15th");
    let explanation = decision.explanation.unwrap();
    assert_eq!(explanation.rule_checks[0].failed_key, "tenant_name");
    assert_eq!(explanation.rule_checks[0].reason, "tenant_name 'web' is not any of 'lab', 'playground'");
    assert!(
        explanation.summary.starts_with("rule 'Prod tenants - daily + 1st + 15th' (priority 20) matched")
    );
    assert!(web.metadata_changes.iter().any(|c| c.key == "snapshot_policies"));

    let missing = h
        .client
        .evaluate(pb::EvaluateRequest {
            target: Some(pb::evaluate_request::Target::VolumeId("no-such-volume".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("no-such-volume"));
}

#[tokio::test]
async fn a_revoked_token_is_replaced_through_identity_svc_once() {
    let mut h = start(500).await;
    let first = plan(&mut h, pb::VolumeScope::default(), false).await;
    assert_eq!(h.cloud.identity_calls.load(Ordering::SeqCst), 1);
    h.cloud.sim.revoke_tokens();
    let second = plan(&mut h, pb::VolumeScope::default(), false).await;
    assert_eq!(second.summary.processed, first.summary.processed);
    assert_eq!(h.cloud.identity_calls.load(Ordering::SeqCst), 2, "new credentials fetched once");
}

#[tokio::test]
async fn an_overlapping_apply_is_refused_while_one_runs() {
    let mut h = start(500).await;
    let claim = h.assigner.claim(&Scope::default()).unwrap();
    let refused = h
        .client
        .apply_assignment(pb::ApplyAssignmentRequest { actor: "bob".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    drop(claim);
    let missing_actor = h.client.apply_assignment(pb::ApplyAssignmentRequest::default()).await.unwrap_err();
    assert_eq!((missing_actor.code(), missing_actor.message()), (Code::InvalidArgument, "actor: required"));
    let run = apply(&mut h, pb::VolumeScope::default()).await;
    assert_eq!(run.summary.processed, DEMO_VOLUMES);
}

#[tokio::test]
async fn list_assignments_adds_volumes_enrolled_only_by_their_metadata() {
    let mut h = start(500).await;
    let admin = h.cloud.admin().await;
    let enrolled_by_metadata = volumes(&admin)
        .await
        .iter()
        .filter(|v| {
            let current = policy_svc::metadata::read_current(&v.metadata);
            current.auto_snapshot == Some(true) && !current.policies.is_empty()
        })
        .count();
    assert!(enrolled_by_metadata > 0);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_assignments(pb::ListAssignmentsRequest {
                include_cinder_metadata: true,
                page_size: 30,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_count, 0, "no stored assignments");
        seen.extend(page.assignments);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), enrolled_by_metadata);
    assert!(seen.iter().all(|a| a.id == 0
        && a.assignment_source == pb::AssignmentSource::CinderMetadata as i32
        && a.auto_snapshot
        && !a.policies.is_empty()
        && !a.project_name.is_empty()));
    assert!(seen.windows(2).all(|w| w[0].volume_id < w[1].volume_id));
}
