//! Fuzzing the rules parser: documents built from the format's own vocabulary (keys, policy names,
//! regexes, cron fields, retention counts) nested at random, then cut or spliced as text, never
//! make `validate` or evaluation panic, and its answer is self-consistent.
//!
//! A normal run tries `PROPTEST_CASES` documents (proptest's default, 256). Set
//! `SNAPKEEPER_FUZZ_SECONDS=300` to keep drawing fresh batches for five minutes; the count of
//! documents tried is printed either way.
#![allow(clippy::unwrap_used)]

use policy_svc::catalog::Catalog;
use policy_svc::decision::Volume;
use policy_svc::rules::{checksum, validate};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use service_kit::testing::fuzz;

const KEYS: [&str; 32] = [
    "rules",
    "policies",
    "name",
    "priority",
    "match",
    "auto_snapshot",
    "retention",
    "description",
    "schedule",
    "compliance_grace",
    "cron",
    "timezone",
    "interval",
    "anchor",
    "count",
    "max_age",
    "tenant_name",
    "volume_type",
    "volume_name",
    "volume_name_prefix",
    "volume_name_contains",
    "size_gb",
    "min_size_gb",
    "max_size_gb",
    "bootable",
    "availability_zone",
    "metadata_equals",
    "metadata_contains",
    "regex",
    "min",
    "max",
    "tier",
];

const WORDS: [&str; 10] =
    ["daily_5", "hourly_24", "weekly_4", "prod", "lab", "Europe/Berlin", "Mars/Olympus", "1h", "7d", "P1D"];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1000),
            Just(1001),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS.to_vec()).prop_map(Value::from),
        // Regex syntax, balanced or not.
        "[\\^$.*+?()\\[\\]{}|\\\\a-z0-9]{0,16}".prop_map(Value::from),
        // Cron-shaped fields.
        "[0-9*/,-]{1,4}( [0-9*/,-]{1,4}){0,6}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A document as text, sometimes cut short or with text spliced in at a char boundary.
fn text() -> impl Strategy<Value = String> {
    (document(), 0usize..4, any::<prop::sample::Index>(), any::<String>()).prop_map(
        |(value, edit, at, splice)| {
            let mut text =
                if edit == 0 { serde_json::to_string_pretty(&value).unwrap() } else { value.to_string() };
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let cut = boundaries[at.index(boundaries.len())];
            match edit {
                1 => text.truncate(cut),
                2 => text.insert_str(cut, &splice),
                _ => {}
            }
            text
        },
    )
}

#[test]
fn arbitrary_rules_documents_never_panic_and_validate_consistently() {
    let volume = Volume {
        id: "vol-1".into(),
        name: "prod-db".into(),
        project_name: "prod".into(),
        volume_type: "ssd".into(),
        size_gb: 100,
        ..Volume::default()
    };
    let executions = fuzz("rules documents", &text(), |document| {
        let validation = validate(&document, &Catalog::default());
        prop_assert_eq!(&validation.checksum, &checksum(&document));
        prop_assert_eq!(validation.rule_set.is_some(), validation.problems.is_empty());
        for problem in &validation.problems {
            prop_assert!(!problem.reason.is_empty(), "a problem without a reason: {:?}", problem);
        }
        if let Some(rules) = &validation.rule_set {
            prop_assert_eq!(rules.specs().len(), validation.rule_count);
            let (matched, checks) = rules.first_match(&volume, true);
            if let Some(rule) = matched {
                prop_assert!(rules.specs().iter().any(|spec| spec.name == rule.name));
            }
            prop_assert!(checks.len() <= validation.rule_count);
            prop_assert_eq!(checks.last().is_some_and(|check| check.matched), matched.is_some());
            let (quick, _) = rules.first_match(&volume, false);
            prop_assert_eq!(quick.map(|rule| &rule.name), matched.map(|rule| &rule.name));
        }
        Ok(())
    });
    assert!(executions > 0);
}
