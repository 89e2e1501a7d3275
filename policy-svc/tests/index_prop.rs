//! The rule index against the linear scan: for random rule sets (exact values and lists that
//! differ only in case, prefixes, anchored and unanchored regexes, metadata values, numbers and
//! absence) and random volumes, the rule the index finds is the one checking every rule in
//! evaluation order finds (`first_match` with `explain`, which scans linearly).
//!
//! A normal run tries `PROPTEST_CASES` rule sets (proptest's default, 256), each with 24 volumes.
//! Set `SNAPKEEPER_FUZZ_SECONDS=300` to keep drawing fresh batches for five minutes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use policy_svc::catalog::Catalog;
use policy_svc::decision::Volume;
use policy_svc::rules::validate;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use service_kit::testing::fuzz;

const WORDS: [&str; 9] = ["prod", "Prod", "prod-db", "pro", "prd", "lab", "db-1", "", "1"];
const REGEXES: [&str; 12] = [
    "^prod",
    "^pro?d",
    "^Prod$",
    "^p|^l",
    "(?i)^prod",
    "od$",
    "^db-\\d",
    "^prod(-db)?$",
    "^",
    "^p.*",
    "^prod-x{0,1}",
    "^lab+",
];
const TEXT_KEYS: [&str; 9] = [
    "tenant_name",
    "project_id",
    "domain_name",
    "volume_name",
    "volume_type",
    "availability_zone",
    "volume_name_prefix",
    "volume_name_contains",
    "tenant_name",
];
const METADATA_KEYS: [&str; 2] = ["tier", "env"];

fn word() -> impl Strategy<Value = &'static str> {
    prop::sample::select(WORDS.to_vec())
}

/// A string, a regex, or a list of them (never empty: validation refuses that).
fn text_value() -> impl Strategy<Value = Value> {
    let item = prop_oneof![
        3 => word().prop_map(Value::from),
        1 => prop::sample::select(REGEXES.to_vec()).prop_map(|r| json!({"regex": r})),
    ];
    prop_oneof![
        2 => word().prop_map(Value::from),
        1 => prop::sample::select(REGEXES.to_vec()).prop_map(|r| json!({"regex": r})),
        2 => prop::collection::vec(item, 1..4).prop_map(Value::Array),
    ]
}

/// A metadata_equals value: text, a number or boolean (compared as text), null (absent), or a
/// list that may include null.
fn metadata_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text_value(),
        1 => Just(json!(1)),
        1 => Just(json!(true)),
        1 => Just(Value::Null),
        1 => prop::collection::vec(prop_oneof![word().prop_map(Value::from), Just(Value::Null)], 1..3)
            .prop_map(Value::Array),
    ]
}

fn match_object() -> impl Strategy<Value = Map<String, Value>> {
    let text = (prop::sample::select(TEXT_KEYS.to_vec()), text_value()).prop_map(|(k, v)| (k.to_owned(), v));
    let metadata = (
        prop::sample::select(vec!["metadata_equals", "metadata_contains"]),
        prop::sample::select(METADATA_KEYS.to_vec()),
        metadata_value(),
        text_value(),
    )
        .prop_map(|(key, meta_key, equals, contains)| {
            let value = if key == "metadata_equals" { equals } else { contains };
            (key.to_owned(), json!({meta_key: value}))
        });
    let other = prop_oneof![
        any::<bool>().prop_map(|b| ("bootable".to_owned(), json!(b))),
        (0i64..3).prop_map(|n| ("min_size_gb".to_owned(), json!(n * 10))),
    ];
    prop::collection::vec(prop_oneof![4 => text, 2 => metadata, 1 => other], 0..4)
        .prop_map(|pairs| pairs.into_iter().collect())
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec((0i32..4, match_object()), 0..12).prop_map(|rules| {
        let rules: Vec<Value> = rules
            .into_iter()
            .enumerate()
            .map(|(i, (priority, matches))| {
                json!({"name": format!("r{i}"), "priority": priority, "match": matches,
                       "policies": ["daily_3"], "auto_snapshot": true})
            })
            .collect();
        Value::Array(rules).to_string()
    })
}

fn volume() -> impl Strategy<Value = Volume> {
    let metadata = prop::collection::btree_map(
        prop::sample::select(METADATA_KEYS.to_vec()).prop_map(str::to_owned),
        prop_oneof![word().prop_map(str::to_owned), Just("true".to_owned())],
        0..3,
    );
    (
        (word(), word(), word(), word(), word(), word()),
        prop::sample::select(vec!["vol-1", "prod-1"]),
        0i64..3,
        any::<bool>(),
        metadata,
    )
        .prop_map(|((name, project_id, project, domain, kind, zone), id, size, bootable, metadata)| {
            Volume {
                id: id.to_owned(),
                name: name.to_owned(),
                project_id: project_id.to_owned(),
                project_name: project.to_owned(),
                domain_name: domain.to_owned(),
                volume_type: kind.to_owned(),
                availability_zone: zone.to_owned(),
                size_gb: size * 10,
                bootable,
                metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
                ..Volume::default()
            }
        })
}

#[test]
fn the_index_finds_the_rule_the_linear_scan_finds() {
    let cases = (document(), prop::collection::vec(volume(), 24));
    let executions = fuzz("rule index", &cases, |(document, volumes)| {
        let validation = validate(&document, &Catalog::default());
        prop_assert!(validation.problems.is_empty(), "{:?}", validation.problems);
        let rules = validation.rule_set.unwrap();
        for volume in &volumes {
            let (linear, _) = rules.first_match(volume, true);
            let (indexed, checks) = rules.first_match(volume, false);
            prop_assert_eq!(indexed.map(|r| r.index), linear.map(|r| r.index), "volume {:?}", volume);
            prop_assert!(checks.is_empty());
        }
        Ok(())
    });
    assert!(executions > 0);
}
