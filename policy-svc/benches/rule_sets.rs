//! Rule evaluation against the issue's target (>= 1M volumes/s per core) as the rule set grows:
//! 1, 5, 20, 50 and 200 rules of mixed match keys (names, regexes, lists, ranges, metadata) in
//! front of a catch-all, evaluated on one thread for 100k volumes; and how long validating each
//! document takes (what a rules-file reload or ReplaceRules costs). The existing `evaluate` bench
//! is the 50-rule case in detail.
//!
//! Run: `cargo bench -p policy-svc --bench rule_sets`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use policy_svc::catalog::Catalog;
use policy_svc::decision::{Overrides, Volume, decide};
use policy_svc::rules::validate;

const VOLUMES: usize = 100_000;
const SIZES: [usize; 5] = [1, 5, 20, 50, 200];
const TARGET_PER_SEC: f64 = 1_000_000.0;

/// `specific` rules that mostly miss, then the catch-all every unmatched volume falls through to.
fn document(specific: usize) -> String {
    let mut rules: Vec<String> = (0..specific.saturating_sub(1))
        .map(|i| {
            let matches = match i % 5 {
                0 => format!(r#"{{"tenant_name": ["tenant-{i}", "tenant-{}"]}}"#, i + 1000),
                1 => format!(r#"{{"volume_name": {{"regex": "^app-{i}-\\d+$"}}, "bootable": false}}"#),
                2 => format!(r#"{{"volume_type": "type-{i}", "size_gb": {{"min": 10, "max": 500}}}}"#),
                3 => format!(r#"{{"metadata_equals": {{"tier": "tier-{i}"}}, "volume_name_prefix": "db-"}}"#),
                _ => format!(r#"{{"domain_name": "domain-{i}", "metadata_contains": {{"tags": "x{i}"}}}}"#),
            };
            format!(
                r#"{{"name": "rule-{i}", "priority": {}, "match": {matches}, "policies": ["daily_5"], "auto_snapshot": true}}"#,
                i + 1
            )
        })
        .collect();
    rules.push(
        r#"{"name": "catch-all", "priority": 100000, "match": {}, "policies": ["daily_5", "monthly_1st"], "auto_snapshot": true}"#
            .to_owned(),
    );
    format!("[{}]", rules.join(","))
}

fn volumes() -> Vec<Volume> {
    (0..VOLUMES)
        .map(|i| Volume {
            id: format!("vol-{i}"),
            name: format!("app-{}-{i}", i % 400),
            project_name: format!("tenant-{}", i % 2000),
            domain_name: format!("domain-{}", i % 300),
            volume_type: format!("type-{}", i % 250),
            size_gb: i64::try_from(i % 1000).unwrap(),
            bootable: i % 7 == 0,
            metadata: BTreeMap::from([
                ("tier".to_owned(), format!("tier-{}", i % 350)),
                ("tags".to_owned(), format!("a,b,x{}", i % 500)),
            ]),
            ..Volume::default()
        })
        .collect()
}

fn rule_sets(c: &mut Criterion) {
    let catalog = Catalog::default();
    let overrides = Overrides::default();
    let volumes = volumes();
    let now = Utc::now();
    let mut group = c.benchmark_group("rule_sets");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for size in SIZES {
        let text = document(size);
        let start = Instant::now();
        let validation = validate(&text, &catalog);
        let validated = start.elapsed();
        let rules = validation.rule_set.unwrap();
        let start = Instant::now();
        let enrolled =
            volumes.iter().filter(|v| decide(v, &rules, &catalog, &overrides, now, false).enrolled()).count();
        let elapsed = start.elapsed();
        let rate = VOLUMES as f64 / elapsed.as_secs_f64();
        println!(
            "rule_sets: {size:>3} rules: validated in {validated:.2?}; {VOLUMES} volumes in {elapsed:.2?} = {rate:.0} volumes/s \
             on one core ({:.2}x the 1M/s target; {enrolled} enrolled)",
            rate / TARGET_PER_SEC
        );
        group.throughput(Throughput::Elements(VOLUMES as u64));
        group.bench_with_input(BenchmarkId::new("evaluate_100k", size), &rules, |b, rules| {
            b.iter(|| {
                volumes
                    .iter()
                    .filter(|v| decide(v, rules, &catalog, &overrides, now, false).enrolled())
                    .count()
            });
        });
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("validate", size), &text, |b, text| {
            b.iter(|| validate(text, &catalog).rule_set.is_some());
        });
    }
    group.finish();
}

criterion_group!(benches, rule_sets);
criterion_main!(benches);
