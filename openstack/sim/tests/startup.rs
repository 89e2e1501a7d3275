//! A generated 10,000-volume cloud must be ready to serve quickly (issue 3 asks for < 2 s in a
//! release build; this debug-build test prints the time and only guards against gross slowness).

use std::time::{Duration, Instant};

use openstack_sim::{GenSpec, Scenario, SimConfig, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_10k_volume_cloud_starts_quickly() {
    let started = Instant::now();
    let scenario = Scenario::generate(&GenSpec {
        projects: 1000,
        volumes_per_project: 10,
        snapshots: 2000,
        domains: 3,
        seed: 1,
    });
    let sim = Simulator::start(SimConfig { scenario, ..SimConfig::default() }).await.expect("starts");
    let elapsed = started.elapsed();
    let counts = sim.counts();
    println!("10k-volume cloud ready in {elapsed:?}: {counts:?}");
    assert_eq!(counts.volumes, 10_000);
    assert_eq!(counts.snapshots, 2000);
    assert_eq!(counts.projects, 1002, "1000 generated + admin + service");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_cloud_starts_and_scenario_files_load() {
    let demo = Scenario::demo_with_password("pw");
    let sim =
        Simulator::start(SimConfig { scenario: demo, ..SimConfig::default() }).await.expect("demo starts");
    let counts = sim.counts();
    assert_eq!((counts.projects, counts.volumes), (20, 200));
    assert!(counts.snapshots > 0);
    sim.shutdown().await;

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/example.yaml");
    let scenario = Scenario::from_file(&example).expect("the example scenario loads");
    let sim = Simulator::start(SimConfig { scenario, ..SimConfig::default() })
        .await
        .expect("example scenario starts");
    assert_eq!((sim.counts().projects, sim.counts().volumes, sim.counts().snapshots), (4, 3, 1));
    sim.shutdown().await;
    let broken = Scenario {
        volumes: vec![openstack_sim::VolumeSpec { project: "ghost".into(), ..Default::default() }],
        ..Scenario::minimal()
    };
    let err = Simulator::start(SimConfig { scenario: broken, ..SimConfig::default() })
        .await
        .expect_err("dangling project");
    assert!(err.to_string().contains("ghost"));
}
