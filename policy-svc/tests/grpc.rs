//! PolicyService over a real server on 127.0.0.1:0 with the generated client: rule set
//! validation and replacement, catalog, policy sets, assignments, exclusions, evaluation, and the
//! rules file watcher.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use policy_svc::active_rules::{ActiveRules, RulesFileWatcher};
use policy_svc::grpc::PolicyApi;
use policy_svc::store::Store;
use service_kit::clock::{Clock, ManualClock};
use service_kit::config::SecurityArgs;
use service_kit::db::Database;
use service_kit::server::GrpcServer;
use snapkeeper_proto::policy::v1 as pb;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::policy::v1::policy_service_server::PolicyServiceServer;
use snapkeeper_proto::prost_types::{FieldMask, Timestamp};
use snapkeeper_proto::tonic::Code;
use snapkeeper_proto::tonic::transport::Channel;

const SEED_RULES: &str = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily + 1st + 15th", "priority": 20, "match": {},
   "policies": ["daily_5", "monthly_1st", "monthly_15th"], "auto_snapshot": true,
   "retention": {"daily_5": 5, "monthly_1st": 1, "monthly_15th": 1}}
]"#;

const BROKEN_RULES: &str = r#"[
  {"name": "typo", "match": {"size": 10}, "policies": ["daily_5"]},
  {"name": "regex", "match": {"volume_name": {"regex": "(["}}, "policies": ["nightly"]},
  {"name": "typo", "retention": {"daily_5": 0}, "policies": ["daily_5"]}
]"#;

struct Harness {
    client: PolicyServiceClient<Channel>,
    active: Arc<ActiveRules>,
    clock: ManualClock,
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

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/policy.db?mode=rwc", dir.path().display());
    let database = Database::connect(&url, policy_svc::SCHEMA, 4).await.unwrap();
    database.migrate(policy_svc::MIGRATIONS).await.unwrap();
    let active = Arc::new(ActiveRules::load(Store::new(database)).await.unwrap());
    let clock = ManualClock::new(now());
    let api = PolicyApi::new(Arc::clone(&active), Arc::new(clock.clone()) as Arc<dyn Clock>);
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
    let client = PolicyServiceClient::connect(format!("http://{address}")).await.unwrap();
    Harness { client, active, clock, _dir: dir, shutdown: Some(tx) }
}

fn replace(document: &str) -> pb::ReplaceRulesRequest {
    pb::ReplaceRulesRequest { document: document.into(), actor: "alice".into(), ..Default::default() }
}

#[tokio::test]
async fn validate_rules_lists_every_problem_of_a_broken_file() {
    let mut h = start().await;
    let response = h
        .client
        .validate_rules(pb::ValidateRulesRequest { document: BROKEN_RULES.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!response.valid);
    assert_eq!(response.rule_count, 3);
    let found: Vec<(i32, Option<i32>, &str, &str)> =
        response.problems.iter().map(|p| (p.code, p.rule_index, p.key.as_str(), p.path.as_str())).collect();
    assert_eq!(
        found,
        [
            (pb::ProblemCode::UnknownKey as i32, Some(0), "match.size", "/0/match/size"),
            (pb::ProblemCode::UnknownPolicy as i32, Some(1), "policies[0]", "/1/policies/0"),
            (pb::ProblemCode::BadRegex as i32, Some(1), "match.volume_name", "/1/match/volume_name/regex"),
            (pb::ProblemCode::DuplicateRuleName as i32, Some(2), "name", "/2/name"),
            (pb::ProblemCode::InvalidRetention as i32, Some(2), "retention.daily_5", "/2/retention/daily_5"),
        ]
    );
    assert!(response.problems[0].reason.contains("did you mean 'size_gb'"));
    assert_eq!(response.problems[0].rule_name, "typo");

    let empty = h.client.validate_rules(pb::ValidateRulesRequest { document: " ".into() }).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().starts_with("document:"));
}

#[tokio::test]
async fn replace_rules_versions_documents_and_a_rejected_one_keeps_the_active_set() {
    let mut h = start().await;
    let before =
        h.client.get_rules(pb::GetRulesRequest::default()).await.unwrap().into_inner().rule_set.unwrap();
    assert_eq!(before.version.unwrap().version, 0);
    assert_eq!(before.document, "[]");

    let accepted = h.client.replace_rules(replace(SEED_RULES)).await.unwrap().into_inner();
    assert!(accepted.accepted && !accepted.unchanged);
    let v1 = accepted.active_version.unwrap();
    assert_eq!((v1.version, v1.rule_count, v1.created_by.as_str()), (1, 2, "alice"));

    let rejected = h.client.replace_rules(replace(BROKEN_RULES)).await.unwrap().into_inner();
    assert!(!rejected.accepted);
    assert_eq!(rejected.problems.len(), 5);
    assert_eq!(rejected.active_version.unwrap().version, 1);

    let again = h.client.replace_rules(replace(SEED_RULES)).await.unwrap().into_inner();
    assert!(again.accepted && again.unchanged);

    let active =
        h.client.get_rules(pb::GetRulesRequest::default()).await.unwrap().into_inner().rule_set.unwrap();
    assert_eq!(active.version.as_ref().unwrap().version, 1);
    assert_eq!(active.document, SEED_RULES);
    assert_eq!(active.rules[0].name, "Exclude lab / playground tenants");
    assert_eq!(active.rules[1].retention["daily_5"], 5);

    let stale = pb::ReplaceRulesRequest { expected_version: Some(0), ..replace(r#"[{"name": "x"}]"#) };
    assert_eq!(h.client.replace_rules(stale).await.unwrap_err().code(), Code::FailedPrecondition);
    let no_actor = pb::ReplaceRulesRequest { actor: String::new(), ..replace(SEED_RULES) };
    let err = h.client.replace_rules(no_actor).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "actor: required"));

    let second = h.client.replace_rules(replace(r#"[{"name": "only"}]"#)).await.unwrap().into_inner();
    assert_eq!(second.active_version.unwrap().version, 2);
    let versions = h
        .client
        .list_rule_set_versions(pb::ListRuleSetVersionsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.versions[0].version, 2);
    assert!(versions.versions[0].active);
    let page2 = h
        .client
        .list_rule_set_versions(pb::ListRuleSetVersionsRequest {
            page_size: 1,
            page_token: versions.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.versions[0].version, 1);
    assert!(!page2.versions[0].active);
    assert!(page2.next_page_token.is_empty());
    let old = h.client.get_rules(pb::GetRulesRequest { version: Some(1) }).await.unwrap().into_inner();
    assert_eq!(old.rule_set.unwrap().rules.len(), 2);
    assert_eq!(
        h.client.get_rules(pb::GetRulesRequest { version: Some(9) }).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn evaluate_explains_the_decision_and_the_lab_exclusion_really_excludes() {
    let mut h = start().await;
    h.client.replace_rules(replace(SEED_RULES)).await.unwrap();
    let volume = |project: &str| pb::Volume {
        id: format!("vol-{project}"),
        name: "data".into(),
        project_id: format!("p-{project}"),
        project_name: project.into(),
        metadata: HashMap::from([("owner".to_owned(), "db-team".to_owned())]),
        ..Default::default()
    };
    let evaluate = |v: pb::Volume| pb::EvaluateRequest {
        target: Some(pb::evaluate_request::Target::Volume(v)),
        ..Default::default()
    };
    let prod = h.client.evaluate(evaluate(volume("prod"))).await.unwrap().into_inner();
    let decision = prod.decision.unwrap();
    assert_eq!(decision.source, pb::DecisionSource::Rule as i32);
    assert!(decision.enrolled);
    assert_eq!(decision.matched_rule_index, Some(1));
    let explanation = decision.explanation.unwrap();
    assert_eq!(explanation.rule_checks[0].failed_key, "tenant_name");
    assert_eq!(explanation.rule_checks[0].reason, "tenant_name 'prod' is not any of 'lab', 'playground'");
    assert!(explanation.summary.contains("(priority 20) matched"), "{}", explanation.summary);
    let keys: Vec<&str> = prod.metadata_changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "auto_snapshot",
            "retention_daily_5",
            "retention_monthly_15th",
            "retention_monthly_1st",
            "snapshot_policies"
        ]
    );

    let lab = h.client.evaluate(evaluate(volume("lab"))).await.unwrap().into_inner().decision.unwrap();
    assert!(!lab.auto_snapshot && lab.policies.is_empty() && !lab.enrolled);

    // A project exclusion beats the rules; the response carries it.
    let exclusion = pb::Exclusion {
        scope: pb::ExclusionScope::Project as i32,
        project_id: "p-prod".into(),
        exclusion_reason: "migration".into(),
        ..Default::default()
    };
    let created = h
        .client
        .create_exclusion(pb::CreateExclusionRequest {
            exclusion: Some(exclusion.clone()),
            actor: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .exclusion
        .unwrap();
    assert!(created.active);
    let excluded = h.client.evaluate(evaluate(volume("prod"))).await.unwrap().into_inner();
    assert_eq!(excluded.decision.as_ref().unwrap().source, pb::DecisionSource::Exclusion as i32);
    assert_eq!(excluded.exclusion.unwrap().id, created.id);

    let bulk = h
        .client
        .evaluate_volumes(pb::EvaluateVolumesRequest {
            volumes: vec![volume("prod"), volume("lab"), volume("dev")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sources: Vec<i32> = bulk.decisions.iter().map(|d| d.source).collect();
    assert_eq!(
        sources,
        [
            pb::DecisionSource::Exclusion as i32,
            pb::DecisionSource::Rule as i32,
            pb::DecisionSource::Rule as i32
        ]
    );
    assert_eq!(bulk.rule_set_version, 1);
    assert!(bulk.decisions[0].explanation.is_none());
    let no_id = pb::EvaluateVolumesRequest { volumes: vec![pb::Volume::default()], ..Default::default() };
    let err = h.client.evaluate_volumes(no_id).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "volumes[0].id: required"));
}

#[tokio::test]
async fn crud_of_policies_sets_assignments_and_exclusions_with_database_uniqueness() {
    let mut h = start().await;
    let nightly = pb::Policy {
        name: "nightly".into(),
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Cron(pb::CronSchedule {
                expression: "0 2 * * *".into(),
                time_zone: "Europe/Berlin".into(),
            })),
        }),
        retention: Some(pb::Retention { count: 7, max_age: None }),
        ..Default::default()
    };
    let upsert = h
        .client
        .upsert_policy(pb::UpsertPolicyRequest { policy: Some(nightly.clone()), actor: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(upsert.created);
    assert_eq!(upsert.policy.unwrap().cadence, "cron '0 2 * * *' Europe/Berlin");
    let bad_zone = pb::Policy {
        schedule: Some(pb::Schedule {
            kind: Some(pb::schedule::Kind::Cron(pb::CronSchedule {
                expression: "0 2 * * *".into(),
                time_zone: "Mars".into(),
            })),
        }),
        ..nightly.clone()
    };
    let err = h
        .client
        .upsert_policy(pb::UpsertPolicyRequest { policy: Some(bad_zone), actor: "a".into() })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("policy.schedule.cron.time_zone:"), "{}", err.message());
    let legacy =
        h.client.get_policy(pb::GetPolicyRequest { name: "weekly_4".into() }).await.unwrap().into_inner();
    assert_eq!(legacy.policy.unwrap().retention.unwrap().count, 4);
    assert_eq!(
        h.client.get_policy(pb::GetPolicyRequest { name: "gold".into() }).await.unwrap_err().code(),
        Code::NotFound
    );

    let slots = h
        .client
        .next_slots(pb::NextSlotsRequest {
            target: Some(pb::next_slots_request::Target::PolicyName("nightly".into())),
            after: Some(Timestamp { seconds: 1_774_692_000, nanos: 0 }), // 2026-03-28T10:00:00Z
            count: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let next: Vec<i64> = slots.next_slots.iter().map(|t| t.seconds).collect();
    // 2026-03-29 02:00 Berlin falls into the DST gap: the next slots are the 30th and 31st.
    assert_eq!(next, [1_774_828_800, 1_774_915_200]);
    assert_eq!(slots.current_slot.unwrap().seconds, 1_774_659_600);

    let set = pb::PolicySet {
        name: "gold".into(),
        is_global: true,
        policies: vec!["nightly".into(), "daily_5".into()],
        retention_map: HashMap::from([("nightly".to_owned(), 14), ("daily_5".to_owned(), 5)]),
        priority: 10,
        ..Default::default()
    };
    let created_set = h
        .client
        .create_policy_set(pb::CreatePolicySetRequest {
            policy_set: Some(set.clone()),
            actor: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy_set
        .unwrap();
    assert!(created_set.is_active && created_set.id > 0);
    let duplicate = h
        .client
        .create_policy_set(pb::CreatePolicySetRequest {
            policy_set: Some(set.clone()),
            actor: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let mismatch = pb::PolicySet {
        retention_map: HashMap::from([("nightly".to_owned(), 14)]),
        name: "x".into(),
        ..set.clone()
    };
    let err = h
        .client
        .create_policy_set(pb::CreatePolicySetRequest { policy_set: Some(mismatch), actor: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "policy_set.retention_map: keys must equal policies exactly");

    let assignment = pb::Assignment {
        volume_id: "vol-1".into(),
        project_id: "p-1".into(),
        policy_set_id: Some(created_set.id),
        auto_snapshot: true,
        policies: vec!["nightly".into()],
        retention_map: HashMap::from([("nightly".to_owned(), 3)]),
        ..Default::default()
    };
    let created = h
        .client
        .create_assignment(pb::CreateAssignmentRequest {
            assignment: Some(assignment.clone()),
            actor: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .unwrap();
    assert_eq!(created.assignment_source, pb::AssignmentSource::Manual as i32);
    let again = h
        .client
        .create_assignment(pb::CreateAssignmentRequest {
            assignment: Some(assignment.clone()),
            actor: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let missing_set =
        pb::Assignment { volume_id: "vol-2".into(), policy_set_id: Some(999), ..assignment.clone() };
    let err = h
        .client
        .create_assignment(pb::CreateAssignmentRequest { assignment: Some(missing_set), actor: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The policy set cannot go while an assignment uses it, and the catalog entry neither.
    let err = h
        .client
        .delete_policy_set(pb::DeletePolicySetRequest { id: created_set.id, actor: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = h
        .client
        .delete_policy(pb::DeletePolicyRequest { name: "nightly".into(), actor: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("policy set 'gold'"), "{}", err.message());

    let updated = h
        .client
        .update_assignment(pb::UpdateAssignmentRequest {
            volume_id: "vol-1".into(),
            assignment: Some(pb::Assignment { auto_snapshot: false, ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["auto_snapshot".into()] }),
            actor: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .unwrap();
    assert!(!updated.auto_snapshot);
    assert_eq!(updated.updated_by, "bob");
    let bad_mask = pb::UpdateAssignmentRequest {
        volume_id: "vol-1".into(),
        update_mask: Some(FieldMask { paths: vec!["id".into()] }),
        actor: "bob".into(),
        ..Default::default()
    };
    assert_eq!(h.client.update_assignment(bad_mask).await.unwrap_err().code(), Code::InvalidArgument);
    let listed = h
        .client
        .list_assignments(pb::ListAssignmentsRequest { project_id: Some("p-1".into()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 1);
    h.client
        .delete_assignment(pb::DeleteAssignmentRequest { volume_id: "vol-1".into(), actor: "a".into() })
        .await
        .unwrap();
    h.client
        .delete_policy_set(pb::DeletePolicySetRequest { id: created_set.id, actor: "a".into() })
        .await
        .unwrap();
    h.client
        .delete_policy(pb::DeletePolicyRequest { name: "nightly".into(), actor: "a".into() })
        .await
        .unwrap();

    let in_an_hour = Timestamp { seconds: now().timestamp() + 3600, nanos: 0 };
    let volume_exclusion = pb::Exclusion {
        scope: pb::ExclusionScope::Volume as i32,
        volume_id: "vol-9".into(),
        project_id: "p-9".into(),
        expires_at: Some(in_an_hour),
        ..Default::default()
    };
    let created = h
        .client
        .create_exclusion(pb::CreateExclusionRequest {
            exclusion: Some(volume_exclusion.clone()),
            actor: "a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .exclusion
        .unwrap();
    let err = h
        .client
        .create_exclusion(pb::CreateExclusionRequest {
            exclusion: Some(volume_exclusion.clone()),
            actor: "a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let past = pb::Exclusion {
        volume_id: "vol-10".into(),
        expires_at: Some(Timestamp { seconds: 1, nanos: 0 }),
        ..volume_exclusion
    };
    let err = h
        .client
        .create_exclusion(pb::CreateExclusionRequest { exclusion: Some(past), actor: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "exclusion.expires_at: must be in the future");
    h.clock.advance(chrono::Duration::hours(2));
    let visible = h.client.list_exclusions(pb::ListExclusionsRequest::default()).await.unwrap().into_inner();
    assert_eq!(visible.total_count, 0, "expired exclusions are hidden by default");
    let all = h
        .client
        .list_exclusions(pb::ListExclusionsRequest { include_expired: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!all.exclusions[0].active);
    let deleted = h
        .client
        .delete_exclusion(pb::DeleteExclusionRequest {
            selector: Some(pb::delete_exclusion_request::Selector::VolumeId("vol-9".into())),
            actor: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.exclusion.unwrap().id, created.id);
    let err = h.client.get_exclusion(pb::GetExclusionRequest { id: created.id }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn the_rules_file_is_loaded_and_a_broken_change_keeps_the_active_set() {
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot_policy_rules.json");
    std::fs::write(&path, SEED_RULES).unwrap();
    let mut watcher = RulesFileWatcher::new(path.clone());
    assert!(watcher.poll(&h.active, now()).await.unwrap());
    let loaded = h.active.current().await.unwrap();
    assert_eq!(loaded.version_number(), 1);
    assert_eq!(loaded.version.as_ref().unwrap().created_by, format!("file:{}", path.display()));
    assert!(!watcher.poll(&h.active, now()).await.unwrap(), "an unchanged file is not stored again");

    std::fs::write(&path, BROKEN_RULES).unwrap();
    assert!(!watcher.poll(&h.active, now()).await.unwrap());
    assert_eq!(h.active.current().await.unwrap().version_number(), 1);

    std::fs::write(&path, r#"[{"name": "all", "policies": ["daily_7"], "auto_snapshot": true}]"#).unwrap();
    assert!(watcher.poll(&h.active, now()).await.unwrap());
    assert_eq!(h.active.current().await.unwrap().version_number(), 2);
}
