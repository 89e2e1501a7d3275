//! Resilience against the simulator's injected faults: retries that neither lose nor duplicate
//! list items, token renewal in the middle of a pagination, and creates that are never doubled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openstack::{
    CloudConfig, Error, NewSnapshot, NewVolume, OpenStack, Resilience, SnapshotQuery, VolumeQuery,
};
use openstack_sim::{Faults, GenSpec, OpFaults, Scenario, SimConfig, SimHandle, Simulator};

async fn sim(spec: GenSpec, faults: Faults, token_ttl: Duration) -> SimHandle {
    Simulator::start(SimConfig {
        scenario: Scenario::generate(&spec),
        faults,
        token_ttl,
        snapshot_delay: Duration::from_millis(50),
        volume_delay: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .expect("sim starts")
}

fn config(sim: &SimHandle, page_limit: u32) -> CloudConfig {
    let mut config = CloudConfig::password(
        &sim.auth_url(),
        "admin",
        "Default",
        openstack_sim::ADMIN_PASSWORD,
        "admin",
        "Default",
    );
    config.page_limit = page_limit;
    config.request_timeout = Duration::from_secs(5);
    config.resilience = Resilience {
        max_attempts: 8,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_secs(2),
        requests_per_second: None,
        ..Resilience::default()
    };
    config
}

async fn all_volume_ids(client: &OpenStack) -> Vec<String> {
    let volumes = client
        .cinder()
        .volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() })
        .await
        .expect("list volumes");
    volumes.into_iter().map(|v| v.id).collect()
}

fn assert_each_once(ids: &[String], expected: usize) {
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates in the listing");
    assert_eq!(ids.len(), expected, "every volume listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_5000_volumes_through_5xx_and_429_returns_each_once() {
    let faults = Faults {
        seed: 11,
        default: OpFaults {
            error_rate: 0.10,
            rate_limit_rate: 0.05,
            retry_after_secs: 1,
            ..OpFaults::default()
        },
        ..Faults::default()
    };
    let spec = GenSpec { projects: 50, volumes_per_project: 100, snapshots: 0, domains: 2, seed: 3 };
    let sim = sim(spec, faults, Duration::from_hours(1)).await;
    let client = OpenStack::connect(config(&sim, 100)).await.expect("connect through faults");
    let started = Instant::now();
    let ids = all_volume_ids(&client).await;
    assert_each_once(&ids, 5000);
    let stats = client.call_stats();
    let list = stats.get("cinder.volumes.list").copied().unwrap_or_default();
    println!("listed 5000 volumes in {:?}: {list:?}", started.elapsed());
    assert!(list.retries > 0, "the faults were hit and retried: {list:?}");
    assert_eq!(list.failures, 0);
    assert_eq!(
        sim.stats().get("cinder.volumes.list").copied(),
        Some(list.attempts),
        "client and simulator agree on requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_then_reported() {
    let mut faults = Faults::default();
    faults.operations.insert(
        "cinder.limits.get".into(),
        OpFaults { rate_limit_rate: 1.0, retry_after_secs: 1, ..OpFaults::default() },
    );
    let sim = sim(
        GenSpec { projects: 1, volumes_per_project: 1, ..GenSpec::default() },
        faults,
        Duration::from_hours(1),
    )
    .await;
    let mut config = config(&sim, 100);
    config.resilience.max_attempts = 2;
    let client = OpenStack::connect(config).await.expect("connect");
    let started = Instant::now();
    let err = client.cinder().limits().await.expect_err("always 429");
    assert!(started.elapsed() >= Duration::from_millis(950), "waited Retry-After: {:?}", started.elapsed());
    let Error::RateLimited { failure, retry_after } = err else {
        panic!("expected RateLimited, got {err:?}")
    };
    assert_eq!(failure.status, 429);
    assert_eq!(retry_after, Some(Duration::from_secs(1)));
    assert_eq!(sim.stats().get("cinder.limits.get"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_mid_pagination_is_renewed_without_duplicates() {
    let faults =
        Faults { seed: 5, default: OpFaults { latency_ms: 60, ..OpFaults::default() }, ..Faults::default() };
    let spec = GenSpec { projects: 20, volumes_per_project: 100, snapshots: 0, domains: 1, seed: 9 };
    // 2000 volumes in 40 pages of 60 ms each outlive a 1 s token at least twice.
    let sim = sim(spec, faults, Duration::from_secs(1)).await;
    let client = OpenStack::connect(config(&sim, 50)).await.expect("connect");
    let ids = all_volume_ids(&client).await;
    assert_each_once(&ids, 2000);
    let issued = client.call_stats().get("keystone.auth.tokens.create").map_or(0, |s| s.attempts);
    assert!(issued >= 3, "tokens were renewed during the listing: {issued}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_mid_pagination_reauthenticates_and_resumes() {
    let faults =
        Faults { seed: 5, default: OpFaults { latency_ms: 20, ..OpFaults::default() }, ..Faults::default() };
    let spec = GenSpec { projects: 10, volumes_per_project: 100, snapshots: 0, domains: 1, seed: 9 };
    let sim = std::sync::Arc::new(sim(spec, faults, Duration::from_hours(1)).await);
    let client = OpenStack::connect(config(&sim, 50)).await.expect("connect");
    let revoker = {
        let sim = std::sync::Arc::clone(&sim);
        tokio::spawn(async move {
            while sim.stats().get("cinder.volumes.list").copied().unwrap_or(0) < 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sim.revoke_tokens();
        })
    };
    let ids = all_volume_ids(&client).await;
    revoker.await.expect("revoker");
    assert_each_once(&ids, 1000);
    let stats = client.call_stats();
    assert_eq!(
        stats.get("keystone.auth.tokens.create").map(|s| s.attempts),
        Some(2),
        "one re-authentication: {stats:?}"
    );
    let list = stats.get("cinder.volumes.list").copied().unwrap_or_default();
    assert_eq!(list.failures, 1, "exactly one page was refused with 401 and replayed: {list:?}");
}

async fn one_volume(client: &OpenStack) -> String {
    let volumes = client
        .cinder()
        .volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() })
        .await
        .expect("list");
    volumes.first().map(|v| v.id.clone()).expect("a volume")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_that_times_out_is_not_duplicated() {
    let mut faults = Faults::default();
    let late = OpFaults { timeout_next: 1, timeout_ms: 1500, ..OpFaults::default() };
    faults.operations.insert("cinder.snapshots.create".into(), late.clone());
    faults.operations.insert("cinder.volumes.create".into(), late);
    // The admin project needs room for a volume; the generated cloud's quotas are unlimited.
    let sim = sim(
        GenSpec { projects: 1, volumes_per_project: 3, ..GenSpec::default() },
        faults,
        Duration::from_hours(1),
    )
    .await;
    let mut config = config(&sim, 100);
    config.request_timeout = Duration::from_millis(400);
    let client = OpenStack::connect(config).await.expect("connect");
    let volume_id = one_volume(&client).await;

    let snapshot = client
        .cinder()
        .create_snapshot(&NewSnapshot {
            volume_id: volume_id.clone(),
            name: "once".into(),
            force: true,
            ..NewSnapshot::default()
        })
        .await
        .expect("create succeeds after the lookup");
    assert_eq!(snapshot.name, "once");
    assert!(snapshot.metadata.contains_key(openstack::IDEMPOTENCY_METADATA_KEY));
    let of_volume = client
        .cinder()
        .snapshots(&SnapshotQuery {
            all_tenants: true,
            volume_id: Some(volume_id),
            ..SnapshotQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(of_volume.len(), 1, "exactly one snapshot: {of_volume:?}");
    assert_eq!(sim.stats().get("cinder.snapshots.create"), Some(&1), "the create was not posted twice");

    let before = sim.counts().volumes;
    let volume = client
        .cinder()
        .create_volume(&NewVolume {
            name: "once-vol".into(),
            size: 1,
            metadata: BTreeMap::new(),
            ..NewVolume::default()
        })
        .await
        .expect("volume create succeeds after the lookup");
    assert_eq!(volume.name, "once-vol");
    assert_eq!(sim.counts().volumes, before + 1);
    assert_eq!(sim.stats().get("cinder.volumes.create"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refused_with_503_is_looked_up_then_posted_again_once() {
    let mut faults = Faults::default();
    faults
        .operations
        .insert("cinder.snapshots.create".into(), OpFaults { fail_next: 1, ..OpFaults::default() });
    let sim = sim(
        GenSpec { projects: 1, volumes_per_project: 2, ..GenSpec::default() },
        faults,
        Duration::from_hours(1),
    )
    .await;
    let client = OpenStack::connect(config(&sim, 100)).await.expect("connect");
    let volume_id = one_volume(&client).await;
    client
        .cinder()
        .create_snapshot(&NewSnapshot {
            volume_id: volume_id.clone(),
            name: "after-503".into(),
            force: true,
            ..NewSnapshot::default()
        })
        .await
        .expect("second post succeeds");
    assert_eq!(sim.stats().get("cinder.snapshots.create"), Some(&2));
    assert_eq!(sim.counts().snapshots, 1);
    let lookups = client.call_stats().get("cinder.snapshots.list").map_or(0, |s| s.attempts);
    assert_eq!(lookups, 1, "looked up once before posting again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_retried_then_reported_as_never_sent() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut config = CloudConfig::password(
        &format!("http://127.0.0.1:{port}/v3"),
        "admin",
        "Default",
        "x",
        "admin",
        "Default",
    );
    config.resilience =
        Resilience { max_attempts: 3, base_backoff: Duration::from_millis(20), ..Resilience::default() };
    let started = Instant::now();
    let err = OpenStack::connect(config).await.expect_err("nothing listens");
    let Error::Transport { sent, operation, .. } = &err else {
        panic!("expected a transport error, got {err:?}")
    };
    assert!(!sent, "a refused connection never reached a server");
    assert_eq!(operation, "keystone.auth.tokens.create");
    assert!(started.elapsed() >= Duration::from_millis(20), "backed off between the 3 attempts");
}
