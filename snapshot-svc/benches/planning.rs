//! Due and retention planning at cloud scale: the run's listing of our snapshots indexed by
//! (volume, policy), then per pair the due judgement and the retention plan, as the runner does
//! once per run. N volumes x 3 policies with 5 snapshots per volume (2, 2 and 1 per policy) and
//! one snapshot of someone else per volume. Prints pairs per second.
//!
//! Size: SNAPSHOT_BENCH_VOLUMES (default 20000). Run: `cargo bench -p snapshot-svc --bench planning`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use snapshot_svc::due::{Dueness, judge};
use snapshot_svc::listing::SnapshotIndex;
use snapshot_svc::retention::{Retention, plan};

const POLICIES: [&str; 3] = ["daily_5", "weekly_4", "monthly_1st"];
const SNAPSHOTS_PER_VOLUME: usize = 5;

fn volumes() -> usize {
    std::env::var("SNAPSHOT_BENCH_VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

fn listing(volumes: usize, now: DateTime<Utc>) -> Vec<openstack::Snapshot> {
    let mut snapshots = Vec::with_capacity(volumes * (SNAPSHOTS_PER_VOLUME + 1));
    for v in 0..volumes {
        let volume_id = format!("vol-{v:08}");
        for n in 0..SNAPSHOTS_PER_VOLUME {
            let created = now - Duration::days(n as i64 + 1);
            let policy = POLICIES[n % POLICIES.len()];
            snapshots.push(openstack::Snapshot {
                id: format!("snap-{v:08}-{n}"),
                name: format!("auto-{volume_id}-{policy}-{n}"),
                description: None,
                volume_id: volume_id.clone(),
                status: if n == 4 && v % 50 == 0 { "error".to_owned() } else { "available".to_owned() },
                size: 10,
                metadata: BTreeMap::from([
                    ("created_by".to_owned(), "snapkeeper".to_owned()),
                    ("policy".to_owned(), policy.to_owned()),
                    ("slot".to_owned(), created.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    ("original_volume_id".to_owned(), volume_id.clone()),
                ]),
                created_at: Some(created),
                project_id: Some(format!("project-{}", v / 10)),
            });
        }
        snapshots.push(openstack::Snapshot {
            id: format!("manual-{v:08}"),
            name: "before upgrade".to_owned(),
            description: None,
            volume_id,
            status: "available".to_owned(),
            size: 10,
            metadata: BTreeMap::new(),
            created_at: Some(now - Duration::days(30)),
            project_id: None,
        });
    }
    snapshots
}

/// Plans every (volume, policy): returns (due, deletes).
fn plan_all(
    index: &SnapshotIndex,
    volumes: usize,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (usize, usize) {
    let rule = Retention { count: 1, max_age: None };
    let grace = Duration::hours(24);
    let (mut due, mut deletes) = (0, 0);
    for v in 0..volumes {
        let volume_id = format!("vol-{v:08}");
        for policy in POLICIES {
            let existing = index.of(&volume_id, policy);
            deletes += plan(existing, rule, now, grace).len();
            if matches!(judge(Some(slot), existing), Dueness::Due { .. }) {
                due += 1;
            }
        }
    }
    (due, deletes)
}

fn planning(c: &mut Criterion) {
    let volumes = volumes();
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let slot = now - Duration::hours(1);
    let snapshots = listing(volumes, now);
    let pairs = volumes * POLICIES.len();

    let start = Instant::now();
    let index = SnapshotIndex::build(&snapshots);
    let indexed = start.elapsed();
    let start = Instant::now();
    let (due, deletes) = plan_all(&index, volumes, slot, now);
    let planned = start.elapsed();
    assert_eq!(due, pairs, "every pair is due: its newest snapshot is a day old");
    println!(
        "planning: {} snapshots indexed in {indexed:.2?} ({:.0}/s); {pairs} pairs judged and retention-planned in \
         {planned:.2?} ({:.0} pairs/s); {due} due, {deletes} deletes",
        snapshots.len(),
        snapshots.len() as f64 / indexed.as_secs_f64(),
        pairs as f64 / planned.as_secs_f64(),
    );

    let mut group = c.benchmark_group("planning");
    group
        .sample_size(10)
        .warm_up_time(StdDuration::from_millis(500))
        .measurement_time(StdDuration::from_secs(3));
    group.throughput(Throughput::Elements(snapshots.len() as u64));
    group.bench_function(format!("index_{}_snapshots", snapshots.len()), |b| {
        b.iter(|| SnapshotIndex::build(&snapshots));
    });
    group.throughput(Throughput::Elements(pairs as u64));
    group.bench_function(format!("due_and_retention_{pairs}_pairs"), |b| {
        b.iter(|| plan_all(&index, volumes, slot, now));
    });
    group.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
