//! Fuzzing the scenario loader: YAML and JSON files built from the scenario format's own keys,
//! nested at random (dangling names, duplicate ids, negative sizes, wrong types), then cut or
//! spliced as text, never make `Scenario::from_file` or building the cloud from it panic; a
//! scenario either loads and serves, or is refused with an error that says what is wrong.
//!
//! A normal run tries `PROPTEST_CASES` files (proptest's default, 256). Set
//! `SNAPKEEPER_FUZZ_SECONDS=300` to keep drawing fresh batches for five minutes; the count of
//! files tried is printed either way.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::net::SocketAddr;

use openstack_sim::{Scenario, SimConfig, Simulator};
use proptest::prelude::*;
use serde_json::{Map, Value};
use service_kit::testing::fuzz;

/// Each list of the format with its objects' fields: `s` text, `n` number, `b` flag, `l` list of
/// names, `m` map of text.
const LISTS: [(&str, &[(&str, char)]); 10] = [
    ("regions", &[]),
    ("roles", &[]),
    ("domains", &[("id", 's'), ("name", 's')]),
    ("projects", &[("id", 's'), ("name", 's'), ("domain", 's'), ("description", 's')]),
    ("users", &[("id", 's'), ("name", 's'), ("domain", 's'), ("password", 's'), ("email", 's')]),
    ("assignments", &[("user", 's'), ("role", 's'), ("project", 's'), ("domain", 's')]),
    (
        "application_credentials",
        &[("id", 's'), ("name", 's'), ("user", 's'), ("project", 's'), ("secret", 's')],
    ),
    ("servers", &[("id", 's'), ("name", 's'), ("project", 's')]),
    (
        "volumes",
        &[
            ("id", 's'),
            ("project", 's'),
            ("name", 's'),
            ("size", 'n'),
            ("volume_type", 's'),
            ("bootable", 'b'),
            ("availability_zone", 's'),
            ("status", 's'),
            ("attachments", 'l'),
            ("metadata", 'm'),
        ],
    ),
    (
        "snapshots",
        &[
            ("id", 's'),
            ("volume", 's'),
            ("name", 's'),
            ("status", 's'),
            ("metadata", 'm'),
            ("created_at", 's'),
        ],
    ),
];

/// Names the generated objects use, so references sometimes resolve and sometimes dangle.
const NAMES: [&str; 8] =
    ["Default", "admin", "acme", "web", "alice", "member", "vol-1", "2026-11-25T10:00:00Z"];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(i64::MAX), Just(i64::MIN), any::<i64>()]
            .prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(NAMES.to_vec()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// A value of the expected kind most of the time, anything at all otherwise.
fn value(kind: char) -> BoxedStrategy<Value> {
    let typed = match kind {
        'n' => (-2i64..2000).prop_map(Value::from).boxed(),
        'b' => any::<bool>().prop_map(Value::Bool).boxed(),
        'l' => prop::collection::vec(prop::sample::select(NAMES.to_vec()).prop_map(Value::from), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        'm' => prop::collection::btree_map("[a-z_]{1,8}", prop::sample::select(NAMES.to_vec()), 0..3)
            .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect()))
            .boxed(),
        _ => prop::sample::select(NAMES.to_vec()).prop_map(Value::from).boxed(),
    };
    prop_oneof![9 => typed, 1 => leaf()].boxed()
}

/// An object of a list: some of its fields, now and then one the format does not know.
fn object(fields: &'static [(&'static str, char)]) -> BoxedStrategy<Value> {
    if fields.is_empty() {
        return value('s');
    }
    let field = prop::sample::select(fields.to_vec())
        .prop_flat_map(|(name, kind)| (Just(name.to_owned()), value(kind)));
    let junk = prop::option::weighted(0.05, ("[a-z_]{1,10}", leaf()));
    (prop::collection::vec(field, 0..6), junk)
        .prop_map(|(pairs, junk)| Value::Object(pairs.into_iter().chain(junk).collect()))
        .boxed()
}

fn scenario() -> impl Strategy<Value = Value> {
    let list = prop::sample::select(LISTS.to_vec())
        .prop_flat_map(|(name, fields)| (Just(name), prop::collection::vec(object(fields), 0..5)));
    let quota = || {
        prop::collection::btree_map(
            prop::sample::select(vec!["volumes", "snapshots", "gigabytes", "other"]),
            leaf(),
            0..4,
        )
        .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    };
    (
        prop::collection::vec(list, 0..6),
        prop::option::of(leaf()),
        prop::option::of(quota()),
        prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), quota(), 0..3),
    )
        .prop_map(|(lists, seed, default_quota, quotas)| {
            let mut top = Map::new();
            for (name, items) in lists {
                top.insert(name.to_owned(), Value::Array(items));
            }
            if let Some(seed) = seed {
                top.insert("seed".to_owned(), seed);
            }
            if let Some(quota) = default_quota {
                top.insert("default_quota".to_owned(), quota);
            }
            if !quotas.is_empty() {
                let quotas = quotas.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                top.insert("quotas".to_owned(), Value::Object(quotas));
            }
            Value::Object(top)
        })
}

/// A scenario file's text: YAML or JSON, sometimes cut short or with text spliced in.
fn file() -> impl Strategy<Value = String> {
    (scenario(), any::<bool>(), 0usize..8, any::<prop::sample::Index>(), any::<String>()).prop_map(
        |(value, yaml, edit, at, splice)| {
            let mut text = if yaml { serde_yaml_ng::to_string(&value).unwrap() } else { value.to_string() };
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
fn arbitrary_scenario_files_load_or_are_refused_without_panicking() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.yaml");
    let (parsed, started) = (Cell::new(0u64), Cell::new(0u64));
    let executions = fuzz("scenario files", &file(), |text| {
        std::fs::write(&path, &text).unwrap();
        let scenario = match Scenario::from_file(&path) {
            Ok(scenario) => scenario,
            Err(error) => {
                prop_assert!(!error.to_string().is_empty());
                return Ok(());
            }
        };
        parsed.set(parsed.get() + 1);
        let config =
            SimConfig { addr: SocketAddr::from(([127, 0, 0, 1], 0)), scenario, ..SimConfig::default() };
        runtime.block_on(async {
            match Simulator::start(config).await {
                Ok(sim) => {
                    started.set(started.get() + 1);
                    sim.shutdown().await;
                }
                Err(error) => assert!(!error.to_string().is_empty()),
            }
        });
        Ok(())
    });
    eprintln!("{} parsed as scenarios, {} of them built a cloud and served", parsed.get(), started.get());
    assert!(executions > 0 && started.get() > 0, "the generator reaches the cloud builder");
}
