//! The python `openstackclient` works against the simulator with a generated 10,000-volume
//! cloud: `openstack volume list --all-projects` sees every volume and `openstack volume
//! snapshot create` creates one. Uses the CLI that `real-openstack/up.sh` installs (or
//! `SNAPKEEPER_OPENSTACK_CLI`); outside CI a missing CLI skips the test with the reason.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use openstack::{CloudConfig, OpenStack, VolumeQuery};
use openstack_sim::{GenSpec, Scenario, SimConfig, Simulator};

fn cli() -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("SNAPKEEPER_OPENSTACK_CLI")
            .unwrap_or_else(|_| "/tmp/realos/venv-cli/bin/openstack".into()),
    );
    if path.is_file() {
        return Some(path);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !in_ci,
        "openstack CLI not found at {} (run ../shared/real-openstack/up.sh, which installs it)",
        path.display()
    );
    eprintln!(
        "SKIP openstack CLI test: {} not found (../shared/real-openstack/up.sh installs it)",
        path.display()
    );
    None
}

async fn run(cli: &PathBuf, auth_url: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(cli)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .env("OS_AUTH_URL", auth_url)
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", openstack_sim::ADMIN_PASSWORD)
        .env("OS_PROJECT_NAME", "admin")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_IDENTITY_API_VERSION", "3")
        .env("OS_VOLUME_API_VERSION", "3")
        .env("OS_INTERFACE", "public")
        .env("OS_REGION_NAME", "RegionOne")
        .output()
        .await
        .expect("runs the CLI");
    assert!(
        output.status.success(),
        "openstack {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_cli_lists_10k_volumes_and_creates_a_snapshot() {
    let Some(cli) = cli() else { return };
    let scenario = Scenario::generate(&GenSpec {
        projects: 1000,
        volumes_per_project: 10,
        snapshots: 0,
        domains: 3,
        seed: 2,
    });
    let sim = Simulator::start(SimConfig {
        scenario,
        snapshot_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await
    .expect("sim starts");
    let auth_url = sim.auth_url();

    let started = Instant::now();
    let listed = run(&cli, &auth_url, &["volume", "list", "--all-projects", "-f", "value", "-c", "ID"]).await;
    let ids: std::collections::BTreeSet<&str> = listed.lines().collect();
    println!("openstack volume list --all-projects: {} volumes in {:?}", ids.len(), started.elapsed());
    assert_eq!(ids.len(), 10_000);

    let config = CloudConfig::password(
        &auth_url,
        "admin",
        "Default",
        openstack_sim::ADMIN_PASSWORD,
        "admin",
        "Default",
    );
    let client = OpenStack::connect(config).await.expect("client");
    let volume = client
        .with_page_limit(1)
        .cinder()
        .volumes(&VolumeQuery {
            all_tenants: true,
            project_id: Some(find_project(&client).await),
            ..VolumeQuery::default()
        })
        .await
        .expect("volumes")
        .into_iter()
        .next()
        .expect("a volume");
    let created = run(
        &cli,
        &auth_url,
        &["volume", "snapshot", "create", "--volume", &volume.id, "--force", "cli-snap", "-f", "json"],
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&created).expect("json");
    assert_eq!(created["name"], "cli-snap");
    assert_eq!(created["volume_id"], volume.id.as_str());
    let snapshot = client
        .cinder()
        .wait_for_snapshot(created["id"].as_str().expect("id"), "available", Duration::from_secs(10))
        .await
        .expect("the snapshot exists and settles");
    assert_eq!(snapshot.volume_id, volume.id);
    assert_eq!(sim.counts().snapshots, 1);
}

async fn find_project(client: &OpenStack) -> String {
    client
        .keystone()
        .find_project("project-00000", &domain_of_first(client).await)
        .await
        .expect("lookup")
        .expect("project")
        .id
}

async fn domain_of_first(client: &OpenStack) -> String {
    client.keystone().find_domain("domain-00").await.expect("domains").expect("domain-00").id
}
