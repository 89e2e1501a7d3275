//! What a simulated cloud starts with: a file format (YAML or JSON), the demo cloud, and a
//! generator for big clouds. Objects refer to each other by name; ids are made up when absent.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A cloud's initial content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Seed for generated ids (same seed, same ids).
    pub seed: u64,
    /// Regions in the catalog (default `RegionOne`).
    pub regions: Vec<String>,
    /// Domains (the `Default` domain with id `default` always exists).
    pub domains: Vec<DomainSpec>,
    /// Projects.
    pub projects: Vec<ProjectSpec>,
    /// Users.
    pub users: Vec<UserSpec>,
    /// Extra role names (`admin`, `member`, `reader`, `manager`, `service` always exist).
    pub roles: Vec<String>,
    /// Role assignments.
    pub assignments: Vec<AssignmentSpec>,
    /// Application credentials.
    pub application_credentials: Vec<AppCredentialSpec>,
    /// Nova servers.
    pub servers: Vec<ServerSpec>,
    /// Volumes.
    pub volumes: Vec<VolumeSpec>,
    /// Snapshots.
    pub snapshots: Vec<SnapshotSpec>,
    /// Quota limits for every project without its own entry.
    pub default_quota: Option<QuotaSpec>,
    /// Quota limits per project name.
    pub quotas: BTreeMap<String, QuotaSpec>,
}

/// A domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Name.
    pub name: String,
}

/// A project.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Domain name (default `Default`).
    pub domain: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// A user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Domain name (default `Default`).
    pub domain: Option<String>,
    /// Password.
    pub password: String,
    /// Email.
    pub email: Option<String>,
}

/// A role of a user on a project or a domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssignmentSpec {
    /// User name.
    pub user: String,
    /// Role name.
    pub role: String,
    /// Project name (or set `domain`).
    pub project: Option<String>,
    /// Domain name for a domain assignment.
    pub domain: Option<String>,
}

/// An application credential of a user, scoped to one project.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppCredentialSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Owner user name.
    pub user: String,
    /// Project name.
    pub project: String,
    /// Secret.
    pub secret: String,
}

/// A Nova server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Project name.
    pub project: String,
}

/// A volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Project name.
    pub project: String,
    /// Name.
    pub name: String,
    /// Size in GiB (default 1).
    pub size: Option<u64>,
    /// Volume type (default `__DEFAULT__`).
    pub volume_type: Option<String>,
    /// Bootable.
    pub bootable: bool,
    /// Availability zone (default `nova`).
    pub availability_zone: Option<String>,
    /// Status (default `available`, `in-use` when attached).
    pub status: Option<String>,
    /// Server names or ids the volume is attached to.
    pub attachments: Vec<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSpec {
    /// Id (generated when absent).
    pub id: Option<String>,
    /// Volume name or id.
    pub volume: String,
    /// Name.
    pub name: String,
    /// Status (default `available`).
    pub status: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Creation time, RFC 3339 (default: start of the simulator).
    pub created_at: Option<String>,
}

/// Cinder quota limits (-1 = unlimited); unset fields keep the default.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSpec {
    /// Volumes.
    pub volumes: Option<i64>,
    /// Snapshots.
    pub snapshots: Option<i64>,
    /// Gigabytes (volumes and snapshots together, as Cinder counts them).
    pub gigabytes: Option<i64>,
}

/// Size of a generated cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSpec {
    /// Projects (spread over `domains`).
    pub projects: usize,
    /// Volumes per project.
    pub volumes_per_project: usize,
    /// Existing snapshots, spread over the volumes.
    pub snapshots: usize,
    /// Domains besides `Default`.
    pub domains: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        Self { projects: 100, volumes_per_project: 10, snapshots: 0, domains: 3, seed: 7 }
    }
}

/// Name and password of the admin user every built-in scenario has.
pub const ADMIN_USER: &str = "admin";
/// The admin's password in [`Scenario::minimal`] and [`Scenario::generate`].
pub const ADMIN_PASSWORD: &str = "adminpass";
/// The admin's project.
pub const ADMIN_PROJECT: &str = "admin";

impl Scenario {
    /// Reads a YAML or JSON scenario file (JSON is YAML).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The smallest useful cloud, shaped like the real test stack: domain `Default`, projects
    /// `admin` and `service`, user `admin`/`adminpass` with `admin` on `admin`, Cinder's default
    /// quotas (10 volumes, 10 snapshots, 1000 GB).
    pub fn minimal() -> Self {
        Self {
            seed: 1,
            projects: vec![project(ADMIN_PROJECT, None), project("service", None)],
            users: vec![user(ADMIN_USER, None, ADMIN_PASSWORD, None)],
            assignments: ["admin", "member", "reader", "manager"]
                .iter()
                .map(|role| assign(ADMIN_USER, role, ADMIN_PROJECT))
                .collect(),
            ..Self::default()
        }
    }

    /// A big cloud for scale tests: `spec.projects` projects in `spec.domains` domains with
    /// `spec.volumes_per_project` volumes each, unlimited quotas, admin as in
    /// [`Scenario::minimal`].
    pub fn generate(spec: &GenSpec) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let mut scenario = Self::minimal();
        scenario.seed = spec.seed;
        scenario.default_quota =
            Some(QuotaSpec { volumes: Some(-1), snapshots: Some(-1), gigabytes: Some(-1) });
        let domains: Vec<String> = (0..spec.domains).map(|d| format!("domain-{d:02}")).collect();
        scenario.domains = domains.iter().map(|name| DomainSpec { id: None, name: name.clone() }).collect();
        scenario.volumes.reserve(spec.projects * spec.volumes_per_project);
        for p in 0..spec.projects {
            let name = format!("project-{p:05}");
            let domain = if domains.is_empty() { None } else { Some(domains[p % domains.len()].clone()) };
            scenario.projects.push(project(&name, domain.as_deref()));
            for v in 0..spec.volumes_per_project {
                let mut metadata = BTreeMap::new();
                if rng.u8(0..4) > 0 {
                    metadata.insert("auto_snapshot".into(), "true".into());
                    metadata.insert("snapshot_policies".into(), "daily_5".into());
                }
                scenario.volumes.push(VolumeSpec {
                    project: name.clone(),
                    name: format!("{name}-vol-{v:03}"),
                    size: Some([1, 2, 5, 10, 20, 50, 100][rng.usize(0..7)]),
                    volume_type: Some(["standard", "ssd"][rng.usize(0..2)].into()),
                    bootable: rng.u8(0..5) == 0,
                    metadata,
                    ..VolumeSpec::default()
                });
            }
        }
        let volume_count = scenario.volumes.len();
        for s in 0..spec.snapshots {
            if volume_count == 0 {
                break;
            }
            let volume = scenario.volumes[s % volume_count].name.clone();
            scenario.snapshots.push(SnapshotSpec {
                name: format!("{volume}-snap-{s}"),
                volume,
                metadata: BTreeMap::from([
                    ("created_by".into(), "snapkeeper".into()),
                    ("policy".into(), "daily_5".into()),
                ]),
                ..SnapshotSpec::default()
            });
        }
        scenario
    }

    /// The demo cloud of `snapkeeper up`: 3 domains, 20 projects (with `lab` and `playground`),
    /// 200 volumes of varied size, type, bootability, attachments and metadata, existing
    /// snapshots, project `finance` with a tight snapshot quota, and users `demo-admin`
    /// (admin), `demo-reader` (reader on `web`), `admin` and `snapkeeper-svc` (the suite's own
    /// service user). Passwords: `SNAPKEEPER_DEMO_PASSWORD`, else `demo`.
    pub fn demo() -> Self {
        let password = std::env::var("SNAPKEEPER_DEMO_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "demo".into());
        Self::demo_with_password(&password)
    }

    /// [`Scenario::demo`] with an explicit password.
    pub fn demo_with_password(password: &str) -> Self {
        let mut rng = fastrand::Rng::with_seed(2024);
        let mut s = Self { seed: 2024, ..Self::default() };
        s.domains = vec![
            DomainSpec { id: None, name: "acme".into() },
            DomainSpec { id: None, name: "globex".into() },
        ];
        let layout: [(&str, &[&str]); 3] = [
            ("Default", &["admin", "service", "lab", "playground", "ops", "shared-services"]),
            ("acme", &["web", "db", "analytics", "billing", "ci", "staging", "finance"]),
            ("globex", &["research", "hr", "marketing", "support", "edge", "ml", "legal"]),
        ];
        let mut tenants = Vec::new();
        for (domain, names) in layout {
            for name in names {
                let domain = (domain != "Default").then_some(domain);
                s.projects.push(project(name, domain));
                if *name != "admin" && *name != "service" {
                    tenants.push((*name).to_owned());
                }
            }
        }
        s.users = vec![
            user("admin", None, password, Some("admin@example.com")),
            user("demo-admin", None, password, Some("demo-admin@example.com")),
            user("demo-reader", Some("acme"), password, Some("demo-reader@example.com")),
            user("snapkeeper-svc", None, password, Some("snapkeeper-svc@example.com")),
        ];
        s.assignments = vec![
            assign("admin", "admin", "admin"),
            assign("demo-admin", "admin", "admin"),
            assign("demo-admin", "member", "admin"),
            assign("demo-reader", "reader", "web"),
            assign("snapkeeper-svc", "member", "service"),
        ];
        s.quotas.insert("finance".into(), QuotaSpec { snapshots: Some(3), ..QuotaSpec::default() });
        s.default_quota =
            Some(QuotaSpec { volumes: Some(50), snapshots: Some(100), gigabytes: Some(20_000) });
        // About one server per two volumes in the bigger projects, named like real VMs.
        let mut servers_by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, tenant) in tenants.iter().enumerate() {
            for n in 0..(2 + i % 4) {
                let name = format!("{tenant}-vm-{n:02}");
                s.servers.push(ServerSpec { id: None, name: name.clone(), project: tenant.clone() });
                servers_by_project.entry(tenant.clone()).or_default().push(name);
            }
        }
        let types = ["standard", "ssd", "hdd-archive"];
        let sizes = [1, 2, 5, 10, 20, 40, 50, 80, 100, 200, 500];
        for v in 0..200 {
            let tenant = &tenants[v % tenants.len()];
            let mut metadata = BTreeMap::new();
            match rng.u8(0..5) {
                0 => {}
                1 => {
                    metadata.insert("snapshot_policy".into(), "daily_5".into());
                    metadata.insert("auto_snapshot".into(), "true".into());
                }
                2 => {
                    metadata.insert("auto_snapshot".into(), "true".into());
                    metadata.insert("snapshot_policies".into(), "daily_5,weekly_4".into());
                    metadata.insert("retention_daily_5".into(), "5".into());
                }
                3 => {
                    metadata.insert("auto_snapshot".into(), "false".into());
                }
                _ => {
                    metadata.insert("owner".into(), format!("team-{}", rng.u8(1..6)));
                    metadata.insert("env".into(), ["prod", "dev", "test"][rng.usize(0..3)].into());
                }
            }
            let attachments = match servers_by_project.get(tenant) {
                Some(servers) if rng.u8(0..10) < 4 => vec![servers[rng.usize(0..servers.len())].clone()],
                _ => Vec::new(),
            };
            let bootable = !attachments.is_empty() && rng.bool();
            s.volumes.push(VolumeSpec {
                project: tenant.clone(),
                name: if bootable {
                    format!("{tenant}-boot-{v:03}")
                } else {
                    format!("{tenant}-data-{v:03}")
                },
                size: Some(sizes[rng.usize(0..sizes.len())]),
                volume_type: Some(types[rng.usize(0..types.len())].into()),
                bootable,
                availability_zone: Some(if v % 7 == 0 { "az-2".into() } else { "nova".into() }),
                status: (v % 53 == 0).then(|| "error".into()),
                attachments,
                metadata,
                ..VolumeSpec::default()
            });
        }
        for (n, volume) in
            s.volumes.iter().filter(|v| v.metadata.contains_key("snapshot_policy")).take(30).enumerate()
        {
            s.snapshots.push(SnapshotSpec {
                volume: volume.name.clone(),
                name: format!("auto-{}-daily_5-{}-2026112{}-000000", volume.project, volume.name, n % 3),
                metadata: BTreeMap::from([
                    ("created_by".into(), "p9_auto_snapshots".into()),
                    ("policy".into(), "daily_5".into()),
                ]),
                ..SnapshotSpec::default()
            });
        }
        s
    }
}

fn project(name: &str, domain: Option<&str>) -> ProjectSpec {
    ProjectSpec { id: None, name: name.into(), domain: domain.map(Into::into), description: None }
}

fn user(name: &str, domain: Option<&str>, password: &str, email: Option<&str>) -> UserSpec {
    UserSpec {
        id: None,
        name: name.into(),
        domain: domain.map(Into::into),
        password: password.into(),
        email: email.map(Into::into),
    }
}

fn assign(user: &str, role: &str, project: &str) -> AssignmentSpec {
    AssignmentSpec { user: user.into(), role: role.into(), project: Some(project.into()), domain: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_cloud_has_the_promised_shape() {
        let demo = Scenario::demo_with_password("pw");
        assert_eq!(demo.domains.len() + 1, 3);
        assert_eq!(demo.projects.len(), 20);
        assert!(demo.projects.iter().any(|p| p.name == "lab"));
        assert!(demo.projects.iter().any(|p| p.name == "playground"));
        assert_eq!(demo.volumes.len(), 200);
        assert!(demo.volumes.iter().any(|v| v.bootable));
        assert!(demo.volumes.iter().any(|v| !v.attachments.is_empty()));
        assert!(demo.volumes.iter().map(|v| v.size).collect::<std::collections::BTreeSet<_>>().len() > 5);
        assert_eq!(demo.quotas.get("finance").and_then(|q| q.snapshots), Some(3));
        assert!(demo.users.iter().all(|u| u.password == "pw"));
    }

    #[test]
    fn scenario_files_parse_as_yaml() {
        let yaml = "projects: [{name: p1}]\nusers: [{name: u, password: x, email: u@example.com}]\nvolumes: [{project: p1, name: v, size: 3, metadata: {a: b}}]\n";
        let s: Scenario = serde_yaml_ng::from_str(yaml).expect("yaml");
        assert_eq!(s.volumes[0].size, Some(3));
        assert!(serde_yaml_ng::from_str::<Scenario>("volumez: []").is_err(), "unknown keys are rejected");
    }
}
