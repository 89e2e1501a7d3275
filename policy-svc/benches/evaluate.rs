//! Evaluation throughput: 50 rules (mixed keys, regexes, lists) against 100k volumes. Prints
//! volumes per second; the criterion run itself is kept short.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use policy_svc::catalog::Catalog;
use policy_svc::decision::{Overrides, Volume, decide};
use policy_svc::rules::validate;

const VOLUMES: usize = 100_000;

fn rules_document() -> String {
    let mut rules = Vec::new();
    for i in 0..49 {
        let matches = match i % 5 {
            0 => format!(r#"{{"tenant_name": ["tenant-{i}", "tenant-{}"]}}"#, i + 100),
            1 => format!(r#"{{"volume_name": {{"regex": "^app-{i}-\\d+$"}}, "bootable": false}}"#),
            2 => format!(r#"{{"volume_type": "type-{i}", "size_gb": {{"min": 10, "max": 500}}}}"#),
            3 => format!(r#"{{"metadata_equals": {{"tier": "tier-{i}"}}, "volume_name_prefix": "db-"}}"#),
            _ => format!(r#"{{"domain_name": "domain-{i}", "metadata_contains": {{"tags": "x{i}"}}}}"#),
        };
        rules.push(format!(
            r#"{{"name": "rule-{i}", "priority": {i}, "match": {matches}, "policies": ["daily_5"], "auto_snapshot": true}}"#
        ));
    }
    rules.push(r#"{"name": "catch-all", "priority": 1000, "match": {}, "policies": ["daily_5", "monthly_1st"], "auto_snapshot": true}"#.to_owned());
    format!("[{}]", rules.join(","))
}

fn volumes() -> Vec<Volume> {
    (0..VOLUMES)
        .map(|i| Volume {
            id: format!("vol-{i}"),
            name: format!("app-{}-{i}", i % 60),
            project_name: format!("tenant-{}", i % 300),
            domain_name: format!("domain-{}", i % 80),
            volume_type: format!("type-{}", i % 70),
            size_gb: i64::try_from(i % 1000).unwrap(),
            bootable: i % 7 == 0,
            metadata: BTreeMap::from([
                ("tier".to_owned(), format!("tier-{}", i % 90)),
                ("tags".to_owned(), format!("a,b,x{}", i % 120)),
            ]),
            ..Volume::default()
        })
        .collect()
}

fn evaluate(c: &mut Criterion) {
    let rules = validate(&rules_document(), &Catalog::default()).rule_set.unwrap();
    let catalog = Catalog::default();
    let overrides = Overrides::default();
    let volumes = volumes();
    let now = Utc::now();

    let start = Instant::now();
    let enrolled =
        volumes.iter().filter(|v| decide(v, &rules, &catalog, &overrides, now, false).enrolled()).count();
    let elapsed = start.elapsed();
    println!(
        "evaluate: 50 rules x {VOLUMES} volumes in {elapsed:.2?} = {:.0} volumes/s ({enrolled} enrolled)",
        VOLUMES as f64 / elapsed.as_secs_f64()
    );

    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(VOLUMES as u64));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function("50_rules_100k_volumes", |b| {
        b.iter(|| {
            volumes.iter().filter(|v| decide(v, &rules, &catalog, &overrides, now, false).enrolled()).count()
        });
    });
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
