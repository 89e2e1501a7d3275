//! Property tests: validation never panics on arbitrary documents, and evaluation of arbitrary
//! valid rules on arbitrary volumes equals a straightforward reference evaluation.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use policy_svc::catalog::Catalog;
use policy_svc::decision::{DecisionSource, Overrides, Volume, decide};
use policy_svc::rules::validate;
use proptest::prelude::*;
use serde_json::{Value, json};

const WORDS: [&str; 4] = ["prod", "lab", "db-1", "ssd"];

/// One generated match condition: key and JSON value.
fn condition() -> impl Strategy<Value = (String, Value)> {
    let word = prop::sample::select(WORDS.to_vec());
    prop_oneof![
        (
            prop::sample::select(vec!["tenant_name", "volume_type", "volume_name", "availability_zone"]),
            word.clone()
        )
            .prop_map(|(k, w)| (k.to_owned(), json!(w))),
        (prop::sample::select(vec!["tenant_name", "volume_type"]), prop::collection::vec(word.clone(), 1..3))
            .prop_map(|(k, ws)| (k.to_owned(), json!(ws))),
        word.clone().prop_map(|w| ("volume_name".to_owned(), json!({"regex": format!("^{w}")}))),
        word.clone().prop_map(|w| ("volume_name_prefix".to_owned(), json!(&w[..2]))),
        word.clone().prop_map(|w| ("volume_name_contains".to_owned(), json!(&w[1..]))),
        (0i64..4).prop_map(|n| ("size_gb".to_owned(), json!(n * 10))),
        (0i64..4, 0i64..4)
            .prop_map(|(a, b)| ("size_gb".to_owned(), json!({"min": a.min(b) * 10, "max": a.max(b) * 10}))),
        (0i64..4).prop_map(|n| ("min_size_gb".to_owned(), json!(n * 10))),
        (0i64..4).prop_map(|n| ("max_size_gb".to_owned(), json!(n * 10))),
        any::<bool>().prop_map(|b| ("bootable".to_owned(), json!(b))),
        word.clone().prop_map(|w| ("metadata_equals".to_owned(), json!({"tier": w}))),
        Just(("metadata_equals".to_owned(), json!({"tier": null}))),
        word.prop_map(|w| ("metadata_contains".to_owned(), json!({"tier": &w[..2]}))),
    ]
}

fn rule() -> impl Strategy<Value = (i32, Vec<(String, Value)>, Option<bool>)> {
    (0i32..4, prop::collection::vec(condition(), 0..3), prop::option::of(any::<bool>()))
}

fn volume() -> impl Strategy<Value = Volume> {
    let word = prop::sample::select(WORDS.to_vec());
    (word.clone(), word.clone(), word.clone(), word.clone(), 0i64..4, any::<bool>(), prop::option::of(word))
        .prop_map(|(project, kind, name, zone, size, bootable, tier)| Volume {
            id: "vol".into(),
            name: name.into(),
            project_name: project.into(),
            volume_type: kind.into(),
            availability_zone: zone.into(),
            size_gb: size * 10,
            bootable,
            metadata: tier.map(|t| BTreeMap::from([("tier".to_owned(), t.to_owned())])).unwrap_or_default(),
            ..Volume::default()
        })
}

/// The reference: the rule's conditions read literally, one by one.
fn holds(key: &str, value: &Value, v: &Volume) -> bool {
    let name = if v.name.is_empty() { &v.id } else { &v.name };
    let text = |field: &str| -> bool {
        match value {
            Value::String(s) => field == s,
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(field)),
            Value::Object(o) => regex::Regex::new(o["regex"].as_str().unwrap()).unwrap().is_match(field),
            _ => unreachable!(),
        }
    };
    match key {
        "tenant_name" => text(&v.project_name),
        "volume_type" => text(&v.volume_type),
        "volume_name" => text(name),
        "availability_zone" => text(&v.availability_zone),
        "volume_name_prefix" => name.starts_with(value.as_str().unwrap()),
        "volume_name_contains" => name.contains(value.as_str().unwrap()),
        "size_gb" => match value {
            Value::Object(o) => {
                v.size_gb >= o["min"].as_i64().unwrap() && v.size_gb <= o["max"].as_i64().unwrap()
            }
            n => v.size_gb == n.as_i64().unwrap(),
        },
        "min_size_gb" => v.size_gb >= value.as_i64().unwrap(),
        "max_size_gb" => v.size_gb <= value.as_i64().unwrap(),
        "bootable" => v.bootable == value.as_bool().unwrap(),
        "metadata_equals" => match (&value["tier"], v.metadata.get("tier")) {
            (Value::Null, current) => current.is_none(),
            (expected, Some(current)) => expected.as_str() == Some(current.as_str()),
            (_, None) => false,
        },
        "metadata_contains" => {
            v.metadata.get("tier").map_or("", String::as_str).contains(value["tier"].as_str().unwrap())
        }
        _ => unreachable!(),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn evaluation_equals_the_reference(rules in prop::collection::vec(rule(), 0..6), volume in volume()) {
        let document: Vec<Value> = rules
            .iter()
            .enumerate()
            .map(|(i, (priority, conditions, auto))| {
                let matches: serde_json::Map<String, Value> = conditions.iter().cloned().collect();
                json!({"name": format!("r{i}"), "priority": priority, "match": matches,
                       "policies": ["daily_3"], "auto_snapshot": auto})
            })
            .collect();
        let validation = validate(&Value::Array(document).to_string(), &Catalog::default());
        prop_assert!(validation.problems.is_empty(), "{:?}", validation.problems);
        let rule_set = validation.rule_set.unwrap();
        let decision = decide(&volume, &rule_set, &Catalog::default(), &Overrides::default(), now(), true);

        // Reference: sort by priority (stable: ties keep document order), first full match wins.
        // Duplicate keys in a generated rule collapse to the last, as JSON objects do.
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by_key(|i| rules[*i].0);
        let expected = order.into_iter().find(|i| {
            let conditions: BTreeMap<&String, &Value> = rules[*i].1.iter().map(|(k, v)| (k, v)).collect();
            conditions.iter().all(|(k, v)| holds(k, v, &volume))
        });
        if let Some(index) = expected {
                prop_assert_eq!(decision.source, DecisionSource::Rule);
                prop_assert_eq!(decision.matched_rule.as_ref().unwrap().index, index);
                prop_assert_eq!(decision.auto_snapshot, rules[index].2.unwrap_or(false));
                let checks = decision.explanation.unwrap().rule_checks;
                prop_assert!(checks.last().unwrap().matched);
                prop_assert!(checks[..checks.len() - 1].iter().all(|c| !c.matched && !c.reason.is_empty()));
        } else {
                prop_assert_eq!(decision.source, DecisionSource::None);
                prop_assert_eq!(decision.explanation.unwrap().rule_checks.len(), rules.len());
        }
    }

    #[test]
    fn validation_and_evaluation_never_panic_on_arbitrary_documents(
        text in "\\PC{0,200}",
        key in prop::sample::select(vec!["tenant_name", "size_gb", "bootable", "metadata_equals", "retention", "policies", "x"]),
        value in prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,20}".prop_map(|s| json!(s)),
            "\\PC{0,20}".prop_map(|s| json!({"regex": s})),
            any::<bool>().prop_map(|b| json!(b)),
            Just(json!(null)),
            Just(json!([])),
            Just(json!({"min": -1})),
        ],
        volume in volume(),
    ) {
        let _ = validate(&text, &Catalog::default());
        let document = json!([{"name": "r", "match": {key: value.clone()}, key: value}]).to_string();
        if let Some(rules) = validate(&document, &Catalog::default()).rule_set {
            let _ = decide(&volume, &rules, &Catalog::default(), &Overrides::default(), now(), true);
        }
    }
}
