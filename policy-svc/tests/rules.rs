//! The rule engine through its public API: every match key and value form, precedence, priority
//! ties, the seed's default rules file, every validation problem, and the metadata it leads to.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use policy_svc::catalog::Catalog;
use policy_svc::decision::{
    AssignmentFact, Decision, DecisionSource, ExclusionFact, Overrides, RetentionSource, Volume, decide,
};
use policy_svc::metadata::{self, ChangeKind};
use policy_svc::rules::{ProblemCode, RuleSet, validate};

/// The seed's `snapshots/snapshot_policy_rules.json`.
const SEED_RULES: &str = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily + 1st + 15th", "priority": 20, "match": {},
   "policies": ["daily_5", "monthly_1st", "monthly_15th"], "auto_snapshot": true,
   "retention": {"daily_5": 5, "monthly_1st": 1, "monthly_15th": 1}}
]"#;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

fn compile(document: &str) -> RuleSet {
    let validation = validate(document, &Catalog::default());
    assert!(validation.problems.is_empty(), "{:#?}", validation.problems);
    validation.rule_set.unwrap()
}

fn volume() -> Volume {
    Volume {
        id: "vol-1".into(),
        name: "db-data-01".into(),
        project_id: "p-prod".into(),
        project_name: "prod".into(),
        domain_id: "d-1".into(),
        domain_name: "acme".into(),
        volume_type: "ssd".into(),
        size_gb: 100,
        bootable: false,
        availability_zone: "nova".into(),
        status: "in-use".into(),
        metadata: BTreeMap::from([("tier".into(), "gold".into()), ("tags".into(), "db,critical".into())]),
    }
}

fn evaluate(rules: &RuleSet, volume: &Volume) -> Decision {
    decide(volume, rules, &Catalog::default(), &Overrides::default(), now(), true)
}

/// Whether a one-rule document with `match` matches `volume`.
fn matches(match_json: &str, volume: &Volume) -> bool {
    let document = format!(
        r#"[{{"name": "r", "match": {match_json}, "policies": ["daily_1"], "auto_snapshot": true}}]"#
    );
    evaluate(&compile(&document), volume).source == DecisionSource::Rule
}

#[test]
fn every_text_key_matches_exactly_by_list_and_by_regex() {
    let v = volume();
    for (key, hit, miss) in [
        ("tenant_name", "prod", "lab"),
        ("project_id", "p-prod", "p-lab"),
        ("domain_name", "acme", "other"),
        ("volume_name", "db-data-01", "db-data"),
        ("volume_type", "ssd", "hdd"),
        ("availability_zone", "nova", "az2"),
    ] {
        assert!(matches(&format!(r#"{{"{key}": "{hit}"}}"#), &v), "{key} exact");
        assert!(!matches(&format!(r#"{{"{key}": "{miss}"}}"#), &v), "{key} exact miss");
        assert!(matches(&format!(r#"{{"{key}": ["{miss}", "{hit}"]}}"#), &v), "{key} list");
        assert!(!matches(&format!(r#"{{"{key}": ["{miss}"]}}"#), &v), "{key} list miss");
        assert!(matches(&format!(r#"{{"{key}": {{"regex": "^{hit}$"}}}}"#), &v), "{key} regex");
        assert!(!matches(&format!(r#"{{"{key}": {{"regex": "^{miss}$"}}}}"#), &v), "{key} regex miss");
    }
}

#[test]
fn name_prefix_and_contains_take_strings_lists_and_regexes() {
    let v = volume();
    assert!(matches(r#"{"volume_name_prefix": "db-"}"#, &v));
    assert!(!matches(r#"{"volume_name_prefix": "data"}"#, &v));
    assert!(matches(r#"{"volume_name_prefix": ["web-", "db-"]}"#, &v));
    assert!(matches(r#"{"volume_name_contains": "data"}"#, &v));
    assert!(!matches(r#"{"volume_name_contains": ["log", "tmp"]}"#, &v));
    assert!(matches(r#"{"volume_name_contains": {"regex": "data-\\d+"}}"#, &v));
    // A volume without a name is known by its id, as in the seed.
    let unnamed = Volume { name: String::new(), ..volume() };
    assert!(matches(r#"{"volume_name": "vol-1"}"#, &unnamed));
    assert!(matches(r#"{"volume_name_prefix": "vol-"}"#, &unnamed));
}

#[test]
fn size_keys_take_a_number_a_range_and_inclusive_bounds() {
    let v = volume();
    assert!(matches(r#"{"size_gb": 100}"#, &v));
    assert!(!matches(r#"{"size_gb": 99}"#, &v));
    assert!(matches(r#"{"size_gb": {"min": 100, "max": 200}}"#, &v));
    assert!(matches(r#"{"size_gb": {"max": 100}}"#, &v));
    assert!(!matches(r#"{"size_gb": {"min": 101}}"#, &v));
    assert!(matches(r#"{"min_size_gb": 100}"#, &v));
    assert!(!matches(r#"{"min_size_gb": 101}"#, &v));
    assert!(matches(r#"{"max_size_gb": 100}"#, &v));
    assert!(!matches(r#"{"max_size_gb": 99}"#, &v));
}

#[test]
fn bootable_is_a_real_boolean() {
    let v = volume();
    assert!(matches(r#"{"bootable": false}"#, &v));
    assert!(!matches(r#"{"bootable": true}"#, &v));
    assert!(matches(r#"{"bootable": true}"#, &Volume { bootable: true, ..volume() }));
}

#[test]
fn metadata_keys_compare_values_substrings_and_absence() {
    let v = volume();
    assert!(matches(r#"{"metadata_equals": {"tier": "gold"}}"#, &v));
    assert!(!matches(r#"{"metadata_equals": {"tier": "silver"}}"#, &v));
    assert!(matches(r#"{"metadata_equals": {"tier": ["silver", "gold"]}}"#, &v));
    assert!(matches(r#"{"metadata_equals": {"tier": {"regex": "^go"}}}"#, &v));
    assert!(matches(r#"{"metadata_equals": {"missing": null}}"#, &v));
    assert!(!matches(r#"{"metadata_equals": {"tier": null}}"#, &v));
    assert!(!matches(r#"{"metadata_equals": {"missing": "x"}}"#, &v));
    assert!(matches(r#"{"metadata_equals": {"tier": "gold", "tags": "db,critical"}}"#, &v));
    assert!(matches(r#"{"metadata_contains": {"tags": "critical"}}"#, &v));
    assert!(matches(r#"{"metadata_contains": {"tags": ["x", "db"]}}"#, &v));
    assert!(!matches(r#"{"metadata_contains": {"tags": "web"}}"#, &v));
    assert!(!matches(r#"{"metadata_contains": {"absent": "x"}}"#, &v));
    let numeric = Volume { metadata: BTreeMap::from([("sla".into(), "5".into())]), ..volume() };
    assert!(matches(r#"{"metadata_equals": {"sla": 5}}"#, &numeric));
}

#[test]
fn all_keys_must_hold_and_an_empty_match_matches_everything() {
    let v = volume();
    assert!(matches("{}", &v));
    assert!(matches(r#"{"tenant_name": "prod", "volume_type": "ssd", "size_gb": 100}"#, &v));
    assert!(!matches(r#"{"tenant_name": "prod", "volume_type": "hdd"}"#, &v));
}

#[test]
fn the_seed_file_excludes_lab_and_playground_and_enrolls_everyone_else() {
    let rules = compile(SEED_RULES);
    for tenant in ["lab", "playground"] {
        let lab = Volume {
            project_name: tenant.into(),
            metadata: BTreeMap::from([
                ("auto_snapshot".into(), "true".into()),
                ("snapshot_policies".into(), "daily_5".into()),
            ]),
            ..volume()
        };
        let decision = evaluate(&rules, &lab);
        assert_eq!(decision.source, DecisionSource::Rule);
        assert_eq!(decision.matched_rule.as_ref().unwrap().name, "Exclude lab / playground tenants");
        assert!(!decision.auto_snapshot);
        assert!(decision.policies.is_empty());
        assert!(!decision.enrolled());
        let change = metadata::plan(&lab.metadata, &decision);
        assert_eq!(change.kind, ChangeKind::Unenroll);
        let after = change.apply_to(&lab.metadata);
        assert_eq!(after.get("auto_snapshot").map(String::as_str), Some("false"));
        assert!(!after.contains_key("snapshot_policies"));
    }
    let prod = evaluate(&rules, &volume());
    assert!(prod.enrolled());
    let names: Vec<(&str, u32)> =
        prod.policies.iter().map(|p| (p.name.as_str(), p.retention_count)).collect();
    assert_eq!(names, [("daily_5", 5), ("monthly_15th", 1), ("monthly_1st", 1)]);
    let explanation = prod.explanation.unwrap();
    assert_eq!(explanation.rule_checks.len(), 2);
    assert_eq!(explanation.rule_checks[0].failed_key, "tenant_name");
    assert_eq!(explanation.rule_checks[0].reason, "tenant_name 'prod' is not any of 'lab', 'playground'");
    assert!(
        explanation
            .summary
            .starts_with("rule 'Prod tenants - daily + 1st + 15th' (priority 20) matched; rule 'Exclude lab")
    );
}

#[test]
fn first_match_by_ascending_priority_decides_and_ties_keep_file_order() {
    let rules = compile(
        r#"[
        {"name": "late", "priority": 50, "match": {}, "policies": ["daily_9"], "auto_snapshot": true},
        {"name": "tie-a", "priority": 5, "match": {"volume_type": "ssd"}, "policies": ["daily_1"], "auto_snapshot": true},
        {"name": "tie-b", "priority": 5, "match": {}, "policies": ["daily_2"], "auto_snapshot": true},
        {"name": "default-priority", "match": {}, "policies": ["daily_3"], "auto_snapshot": true}
    ]"#,
    );
    assert_eq!(evaluate(&rules, &volume()).matched_rule.unwrap().name, "tie-a");
    let hdd = Volume { volume_type: "hdd".into(), ..volume() };
    let decision = evaluate(&rules, &hdd);
    assert_eq!(decision.matched_rule.unwrap().name, "tie-b");
    // Only the first match decides: no union of policies as in the seed.
    assert_eq!(decision.policies.len(), 1);
    assert_eq!(decision.policies[0].name, "daily_2");
}

#[test]
fn a_rule_without_auto_snapshot_keeps_the_current_value_and_unmatched_volumes_are_left_alone() {
    let rules = compile(r#"[{"name": "ssd", "match": {"volume_type": "ssd"}, "policies": ["weekly_4"]}]"#);
    let off = Volume { metadata: BTreeMap::from([("auto_snapshot".into(), "False".into())]), ..volume() };
    assert!(!evaluate(&rules, &off).auto_snapshot);
    let on = Volume { metadata: BTreeMap::from([("auto_snapshot".into(), "yes".into())]), ..volume() };
    let decision = evaluate(&rules, &on);
    assert!(decision.auto_snapshot);
    assert_eq!(decision.policies[0].retention_source, RetentionSource::LegacyDefault);
    assert_eq!(decision.policies[0].retention_count, 4);

    let hdd = Volume {
        volume_type: "hdd".into(),
        metadata: BTreeMap::from([
            ("auto_snapshot".into(), "true".into()),
            ("snapshot_policy".into(), "daily_5;gold".into()),
            ("snapshot_retention_daily_5".into(), "3".into()),
        ]),
        ..volume()
    };
    let decision = evaluate(&rules, &hdd);
    assert_eq!(decision.source, DecisionSource::None);
    assert!(decision.enrolled());
    assert_eq!(decision.policies[0].retention_count, 3);
    assert_eq!(decision.policies[0].retention_source, RetentionSource::VolumeMetadata);
    assert!(!decision.policies[1].known);
    assert_eq!(decision.policies[1].retention_source, RetentionSource::Default);
    assert_eq!(metadata::plan(&hdd.metadata, &decision).kind, ChangeKind::None);
}

#[test]
fn exclusion_beats_assignment_beats_rules_and_expired_exclusions_do_not_count() {
    let rules = compile(SEED_RULES);
    let assignment = AssignmentFact {
        id: 7,
        volume_id: "vol-1".into(),
        auto_snapshot: true,
        policies: vec!["weekly_2".into()],
        retention: BTreeMap::from([("weekly_2".into(), 9)]),
    };
    let project_exclusion =
        ExclusionFact { id: 3, volume_id: None, project_id: Some("p-prod".into()), expires_at: None };
    let expired = ExclusionFact {
        id: 4,
        volume_id: Some("vol-1".into()),
        project_id: Some("p-prod".into()),
        expires_at: Some(now() - Duration::hours(1)),
    };
    let catalog = Catalog::default();

    let only_assignment = Overrides::new([expired.clone()], [assignment.clone()]);
    let decision = decide(&volume(), &rules, &catalog, &only_assignment, now(), true);
    assert_eq!(decision.source, DecisionSource::Assignment);
    assert_eq!(decision.assignment_id, Some(7));
    assert_eq!(decision.policies[0].retention_count, 9);
    assert_eq!(decision.policies[0].retention_source, RetentionSource::Assignment);
    let explanation = decision.explanation.unwrap();
    assert_eq!(explanation.expired_exclusion_ids, [4]);
    assert_eq!(explanation.rule_checks.len(), 2, "rules are explained even when an assignment decides");

    let both = Overrides::new([project_exclusion, expired], [assignment]);
    let decision = decide(&volume(), &rules, &catalog, &both, now(), false);
    assert_eq!(decision.source, DecisionSource::Exclusion);
    assert_eq!(decision.exclusion_id, Some(3));
    assert!(!decision.auto_snapshot && decision.policies.is_empty());
    // The same exclusion no longer applies once it expires.
    let later = now() + Duration::days(1);
    let volume_exclusion =
        ExclusionFact { id: 5, volume_id: Some("vol-1".into()), project_id: None, expires_at: Some(later) };
    let overrides = Overrides::new([volume_exclusion], []);
    assert_eq!(
        decide(&volume(), &rules, &catalog, &overrides, now(), false).source,
        DecisionSource::Exclusion
    );
    assert_eq!(decide(&volume(), &rules, &catalog, &overrides, later, false).source, DecisionSource::Rule);
}

#[test]
fn metadata_changes_keep_foreign_keys_write_only_differences_and_migrate_legacy_keys() {
    let rules = compile(SEED_RULES);
    let current = BTreeMap::from([
        ("owner".into(), "team-db".into()),
        ("auto_snapshot".into(), "true".into()),
        ("snapshot_policies".into(), "daily_5,monthly_15th,monthly_1st".into()),
        ("retention_daily_5".into(), "5".into()),
        ("retention_monthly_1st".into(), "1".into()),
        ("retention_weekly_4".into(), "4".into()),
        ("snapshot_retention_daily_5".into(), "2".into()),
        ("retention".into(), "3".into()),
    ]);
    let decision = evaluate(&rules, &Volume { metadata: current.clone(), ..volume() });
    let change = metadata::plan(&current, &decision);
    assert_eq!(change.kind, ChangeKind::Update);
    let keys: Vec<(&str, Option<&str>)> =
        change.changes.iter().map(|c| (c.key.as_str(), c.new.as_deref())).collect();
    assert_eq!(
        keys,
        [
            ("retention_monthly_15th", Some("1")),
            ("retention_weekly_4", None),
            ("snapshot_retention_daily_5", None)
        ]
    );
    let after = change.apply_to(&current);
    assert_eq!(after["owner"], "team-db");
    assert_eq!(after["retention"], "3", "the generic legacy key is read, never removed");
    let again = metadata::plan(&after, &decision);
    assert_eq!(again.kind, ChangeKind::None);
    assert!(again.changes.is_empty());

    let fresh = metadata::plan(&BTreeMap::new(), &decision);
    assert_eq!(fresh.kind, ChangeKind::Enroll);
    assert_eq!(fresh.to_set()["snapshot_policies"], "daily_5,monthly_15th,monthly_1st");
}

fn problems(document: &str) -> Vec<(ProblemCode, Option<usize>, String, String)> {
    let validation = validate(document, &Catalog::default());
    assert!(validation.rule_set.is_none());
    validation.problems.into_iter().map(|p| (p.code, p.rule_index, p.key, p.reason)).collect()
}

#[test]
fn validation_reports_every_problem_with_rule_key_and_reason() {
    let found = problems(
        r#"[
        {"name": "a", "match": {"size": 10, "tenant_name": 5, "volume_type": {"regex": "("}}, "policies": ["gold"]},
        {"name": "a", "priority": "high", "policies": ["daily_5", "daily_5"], "retention": {"daily_5": 0, "weekly_1": 2}},
        {"name": "b", "match": {"bootable": "false", "size_gb": {"min": 5, "max": 1}}, "auto_snapshot": "yes", "extra": 1},
        {"name": "", "auto_snapshot": true, "policies": []},
        "not a rule"
    ]"#,
    );
    let codes: Vec<(ProblemCode, Option<usize>, &str)> =
        found.iter().map(|(c, i, k, _)| (*c, *i, k.as_str())).collect();
    assert_eq!(
        codes,
        [
            (ProblemCode::UnknownPolicy, Some(0), "policies[0]"),
            (ProblemCode::UnknownKey, Some(0), "match.size"),
            (ProblemCode::WrongType, Some(0), "match.tenant_name"),
            (ProblemCode::BadRegex, Some(0), "match.volume_type"),
            (ProblemCode::DuplicateRuleName, Some(1), "name"),
            (ProblemCode::WrongType, Some(1), "priority"),
            (ProblemCode::InvalidValue, Some(1), "policies[1]"),
            (ProblemCode::InvalidRetention, Some(1), "retention.daily_5"),
            (ProblemCode::InvalidValue, Some(1), "retention.weekly_1"),
            (ProblemCode::UnknownKey, Some(2), "extra"),
            (ProblemCode::WrongType, Some(2), "auto_snapshot"),
            (ProblemCode::InvalidValue, Some(2), "match.size_gb"),
            (ProblemCode::WrongType, Some(2), "match.bootable"),
            (ProblemCode::InvalidValue, Some(3), "name"),
            (ProblemCode::InvalidValue, Some(3), "policies"),
            (ProblemCode::WrongType, Some(4), ""),
        ]
    );
    assert!(found[1].3.contains("did you mean 'size_gb'"), "{}", found[1].3);
    let validation = validate(r#"[{"name": "x", "match": {"size": 1}}]"#, &Catalog::default());
    assert_eq!(validation.problems[0].path, "/0/match/size");
    assert_eq!(validation.problems[0].rule_name, "x");
    assert_eq!(validation.rule_count, 1);
}

#[test]
fn validation_of_the_document_shape_and_the_catalog() {
    let bad_json = validate("[\n{\"name\": }", &Catalog::default());
    assert_eq!(bad_json.problems[0].code, ProblemCode::InvalidJson);
    assert_eq!(bad_json.problems[0].line, 2);
    assert_eq!(problems("42")[0].0, ProblemCode::InvalidJson);
    assert_eq!(problems(r#"{"policies": {}}"#)[0].0, ProblemCode::InvalidJson);
    assert_eq!(problems(r#"{"rules": [], "version": 2}"#)[0].0, ProblemCode::UnknownKey);

    let found = problems(
        r#"{"policies": {
            "nightly": {"schedule": {"cron": "0 2 * *", "time_zone": "Europe/Berlin"}, "retention": {"count": 0}},
            "zoned": {"schedule": {"cron": "0 2 * * *", "time_zone": "Mars/Base"}, "retention": {"count": 3, "max_age": "10m"}},
            "fast": {"schedule": {"interval": "30s"}, "retention": {"count": 3}, "compliance_grace": "8d", "colour": "red"},
            "bad,name": {"schedule": {"interval": "1h"}, "retention": {"count": 1}}
        }, "rules": [{"name": "r", "policies": ["nightly"], "auto_snapshot": true}]}"#,
    );
    let codes: Vec<(ProblemCode, &str)> = found.iter().map(|(c, _, k, _)| (*c, k.as_str())).collect();
    assert_eq!(
        codes,
        [
            (ProblemCode::InvalidValue, "name"),
            (ProblemCode::UnknownKey, "colour"),
            (ProblemCode::InvalidSchedule, "schedule.interval"),
            (ProblemCode::InvalidValue, "compliance_grace"),
            (ProblemCode::InvalidSchedule, "schedule.cron"),
            (ProblemCode::InvalidRetention, "retention.count"),
            (ProblemCode::InvalidTimeZone, "schedule.time_zone"),
            (ProblemCode::InvalidRetention, "retention.max_age"),
        ]
    );
}

#[test]
fn the_object_form_defines_catalog_entries_rules_may_use() {
    let validation = validate(
        r#"{"policies": {"nightly": {"schedule": {"cron": "0 2 * * *", "time_zone": "Europe/Berlin"},
                                     "retention": {"count": 14, "max_age": "30d"}, "compliance_grace": "4h"}},
            "rules": [{"name": "all", "policies": ["nightly"], "auto_snapshot": true}]}"#,
        &Catalog::default(),
    );
    assert!(validation.problems.is_empty(), "{:?}", validation.problems);
    assert_eq!((validation.rule_count, validation.policy_count), (1, 1));
    assert!(validation.checksum.starts_with("sha256:") && validation.checksum.len() == 71);
    let rules = validation.rule_set.unwrap();
    let catalog = Catalog::new(rules.policies().to_vec(), []);
    let decision = decide(&volume(), &rules, &catalog, &Overrides::default(), now(), false);
    assert_eq!(decision.policies[0].retention_count, 14);
    assert_eq!(decision.policies[0].retention_source, RetentionSource::Catalog);
    assert_eq!(decision.policies[0].max_age, Some(Duration::days(30)));
}
