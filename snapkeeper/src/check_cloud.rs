//! `snapkeeper check-cloud`: what Snapkeeper needs from a cloud, checked with the same client the
//! services use, against the cloud configured for them (`--cloud`/`OS_CLOUD`, `OS_*`, `PF9_*`).
//!
//! Every check reads only, except `keystone.role_grant` with `--probe-grant`: it creates a
//! throwaway project, grants and revokes the configured role on it, and deletes it again. Checks
//! run in order and share what earlier ones found (the token, the domain list, the role).
//! A check that does not apply is skipped, never failed: the service user when none is
//! configured, the grant probe without `--probe-grant`, everything after a failed login.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use openstack::{
    AssignmentFilter, BLOCK_STORAGE_TYPES, COMPUTE_TYPES, CloudConfig, Domain, Error, NewProject, OpenStack,
    Project, SnapshotQuery, TokenInfo, User, VolumeQuery,
};
use serde::Serialize;

use crate::output::{Table, human_duration};

/// Times the project listings are compared before a difference counts (others may be creating
/// or deleting projects meanwhile).
const LISTING_ATTEMPTS: u32 = 3;

/// Snapshot metadata `created_by` values that mark a snapshot as ours (the old system's included).
const OUR_CREATORS: [&str; 2] = ["snapkeeper", "p9_auto_snapshots"];

/// Settings of `snapkeeper check-cloud`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckCloudArgs {
    /// A cloud from clouds.yaml; without it the `OS_*` variables, then the seed's `PF9_*` ones.
    #[arg(long, env = "OS_CLOUD")]
    pub cloud: Option<String>,
    /// Service user to look up, by name or e-mail (as identity-svc does).
    #[arg(long = "service-user", env = "SNAPSHOT_SERVICE_USER_EMAIL")]
    pub service_user: Option<String>,
    /// Domain of the service user, by id or name [default: default].
    #[arg(long = "service-user-domain", env = "SNAPSHOT_SERVICE_USER_DOMAIN")]
    pub service_user_domain: Option<String>,
    /// Role the service user gets on each project [default: member].
    #[arg(long = "role", env = "SNAPSHOT_SERVICE_USER_ROLE")]
    pub role: Option<String>,
    /// Prove the role grant: create a throwaway project, grant and revoke the role on it (to the
    /// service user, else to the logged-in user), then delete the project.
    #[arg(long)]
    pub probe_grant: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What to check beyond the cloud itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Service user name or e-mail; `None` skips its lookup.
    pub service_user: Option<String>,
    /// Its domain, by id or name.
    pub service_user_domain: String,
    /// The role identity-svc ensures on projects.
    pub role: String,
    /// Whether to grant and revoke the role on a throwaway project.
    pub probe_grant: bool,
}

impl CheckCloudArgs {
    /// The cloud to check, from `--cloud` or the environment.
    pub fn cloud_config(&self) -> anyhow::Result<CloudConfig> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let named = self.cloud.clone().filter(|name| !name.is_empty());
        let lookup = |name: &str| if name == "OS_CLOUD" { named.clone() } else { env(name) };
        CloudConfig::from_lookup(&lookup)
            .context("reading the cloud configuration (--cloud, OS_CLOUD, OS_* or PF9_* variables)")
    }

    /// The options, with identity-svc's defaults for what is unset (an empty value is unset, as
    /// in the seed's `.env` files).
    pub fn options(&self) -> Options {
        let set = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        Options {
            service_user: set(&self.service_user),
            service_user_domain: set(&self.service_user_domain)
                .unwrap_or_else(|| identity_svc::config::DEFAULT_DOMAIN.to_owned()),
            role: set(&self.role).unwrap_or_else(|| identity_svc::config::DEFAULT_ROLE.to_owned()),
            probe_grant: self.probe_grant,
        }
    }
}

/// Result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Pass,
    /// Works, with a limitation worth knowing (see the detail).
    Warn,
    /// Does not work; Snapkeeper needs it.
    Fail,
    /// Not applicable or not run (see the detail).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One check with its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, e.g. `cinder.volumes`.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found, or why it failed or was skipped.
    pub detail: String,
    /// Time the check took.
    pub duration_ms: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Keystone URL checked.
    pub auth_url: String,
    /// Region configured; `None` accepts any.
    pub region: Option<String>,
    /// Catalog interface used.
    pub interface: &'static str,
    /// True when no check failed.
    pub passed: bool,
    /// The checks in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Number of checks with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|check| check.status == status).count()
    }

    /// The report for people: one line per check, then the totals.
    pub fn render(&self) -> String {
        let region = self.region.as_deref().unwrap_or("any");
        let mut out = format!("cloud {} (region {region}, interface {})\n\n", self.auth_url, self.interface);
        let mut table = Table::new(&["STATUS", "CHECK", "DETAIL"]);
        for check in &self.checks {
            table.row(vec![check.status.label().to_owned(), check.name.to_owned(), check.detail.clone()]);
        }
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "\n{} checks: {} passed, {} with warnings, {} skipped, {} failed",
            self.checks.len(),
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Skip),
            self.count(Status::Fail),
        );
        out
    }
}

/// Outcome of one check before timing is added.
struct Outcome {
    status: Status,
    detail: String,
}

impl Outcome {
    fn pass(detail: impl Into<String>) -> Self {
        Self { status: Status::Pass, detail: detail.into() }
    }
    fn warn(detail: impl Into<String>) -> Self {
        Self { status: Status::Warn, detail: detail.into() }
    }
    fn fail(detail: impl Into<String>) -> Self {
        Self { status: Status::Fail, detail: detail.into() }
    }
    fn skip(detail: impl Into<String>) -> Self {
        Self { status: Status::Skip, detail: detail.into() }
    }
}

/// The names of the checks, in order (a failed login skips the rest under these names).
const CHECKS: [&str; 10] = [
    "auth",
    "catalog",
    "keystone.domains",
    "keystone.projects",
    "keystone.service_user",
    "cinder.volumes",
    "cinder.snapshots",
    "cinder.quota",
    "keystone.role_assignments",
    "keystone.role_grant",
];

/// Runs every check against the cloud of `config`.
pub async fn run(config: CloudConfig, options: &Options) -> Report {
    let mut report = Report {
        auth_url: config.auth_url.clone(),
        region: config.region.clone(),
        interface: config.interface.as_str(),
        passed: false,
        checks: Vec::new(),
    };
    let started = Instant::now();
    let login = async {
        let admin = OpenStack::connect(config).await?;
        let token = admin.token_info().await?;
        Ok::<_, Error>((admin, token))
    }
    .await;
    let (admin, token) = match login {
        Ok(login) => login,
        Err(err) => {
            report.checks.push(Check {
                name: CHECKS[0],
                status: Status::Fail,
                detail: format!("login failed: {err}"),
                duration_ms: elapsed_ms(started),
            });
            for name in &CHECKS[1..] {
                report.checks.push(Check {
                    name,
                    status: Status::Skip,
                    detail: "not run: the login failed".to_owned(),
                    duration_ms: 0,
                });
            }
            return report;
        }
    };
    let auth = auth_outcome(&token);
    report.checks.push(Check {
        name: CHECKS[0],
        status: auth.status,
        detail: auth.detail,
        duration_ms: elapsed_ms(started),
    });

    let mut checker = Checker { admin: &admin, token: &token, options, found: Found::default() };
    let checks = &mut report.checks;
    checks.push(timed(CHECKS[1], async { checker.catalog() }).await);
    checks.push(timed(CHECKS[2], checker.domains()).await);
    checks.push(timed(CHECKS[3], checker.projects()).await);
    checks.push(timed(CHECKS[4], checker.service_user()).await);
    checks.push(timed(CHECKS[5], checker.volumes()).await);
    checks.push(timed(CHECKS[6], checker.snapshots()).await);
    checks.push(timed(CHECKS[7], checker.quota()).await);
    checks.push(timed(CHECKS[8], checker.role_assignments()).await);
    checks.push(timed(CHECKS[9], checker.role_grant()).await);
    report.passed = report.count(Status::Fail) == 0;
    report
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn timed(name: &'static str, check: impl Future<Output = Outcome>) -> Check {
    let started = Instant::now();
    let outcome = check.await;
    Check { name, status: outcome.status, detail: outcome.detail, duration_ms: elapsed_ms(started) }
}

/// The token must be scoped to a project (Cinder needs it) and carry `admin` (Cinder ignores
/// `all_tenants` for other roles, and Keystone refuses role grants).
fn auth_outcome(token: &TokenInfo) -> Outcome {
    let roles: Vec<&str> = token.roles.iter().map(|role| role.name.as_str()).collect();
    let expires_in = (token.expires_at - Utc::now()).num_seconds();
    let scope = match &token.project {
        Some(project) => format!("project {}@{}", project.name, project.domain.name),
        None => "no project".to_owned(),
    };
    let detail = format!(
        "user {}@{}, {scope}, roles {}; token expires {} (in {})",
        token.user.name,
        token.user_domain.name,
        roles.join(","),
        token.expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
        human_duration(expires_in),
    );
    if token.project.is_none() {
        return Outcome::fail(format!("{detail}: the admin session must be scoped to a project"));
    }
    if !token.has_role("admin") {
        return Outcome::fail(format!(
            "{detail}: the admin session needs the admin role (Cinder ignores all_tenants without it)"
        ));
    }
    Outcome::pass(detail)
}

/// What earlier checks found that later ones use.
#[derive(Default)]
struct Found {
    domains: Option<Vec<Domain>>,
    projects: Option<Vec<Project>>,
    service_user: Option<User>,
    volume_projects: BTreeSet<String>,
    role_id: Option<String>,
}

struct Checker<'a> {
    admin: &'a OpenStack,
    token: &'a TokenInfo,
    options: &'a Options,
    found: Found,
}

impl Checker<'_> {
    fn interface(&self) -> &'static str {
        self.admin.config().interface.as_str()
    }

    /// Identity and block storage endpoints on the configured interface (block storage per
    /// region, in the configured one when set); compute is optional.
    fn catalog(&self) -> Outcome {
        let catalog = &self.token.catalog;
        let interface = self.interface();
        let wanted_region = self.admin.config().region.as_deref();
        let mut problems = Vec::new();
        let mut parts = Vec::new();
        match catalog.endpoint(&["identity"], interface, wanted_region) {
            Some(url) => parts.push(format!("identity {url}")),
            None => problems.push(format!("no identity endpoint on interface {interface}")),
        }
        // Region -> (catalog type, URL), the most specific type first as the client chooses.
        let mut block_storage: BTreeMap<String, (String, String)> = BTreeMap::new();
        for wanted in BLOCK_STORAGE_TYPES {
            for entry in catalog.entries.iter().filter(|entry| entry.service_type == *wanted) {
                for endpoint in entry.endpoints.iter().filter(|endpoint| endpoint.interface == interface) {
                    let region = endpoint
                        .region_id
                        .clone()
                        .or_else(|| endpoint.region.clone())
                        .unwrap_or_else(|| "(no region)".to_owned());
                    block_storage
                        .entry(region)
                        .or_insert_with(|| (entry.service_type.clone(), endpoint.url.clone()));
                }
            }
        }
        if block_storage.is_empty() {
            problems.push(format!(
                "no block storage endpoint ({}) on interface {interface}",
                BLOCK_STORAGE_TYPES.join("/")
            ));
        } else if let Some(region) = wanted_region
            && !block_storage.contains_key(region)
        {
            problems.push(format!(
                "no block storage endpoint in region {region} (regions with one: {})",
                block_storage.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (region, (service_type, url)) in &block_storage {
            parts.push(format!("{service_type} {region} {url}"));
        }
        if catalog.has_service(COMPUTE_TYPES) {
            parts.push("compute present".to_owned());
        } else {
            parts.push("no compute (optional: server names are shown as ids)".to_owned());
        }
        let detail = parts.join("; ");
        if problems.is_empty() { Outcome::pass(detail) } else { Outcome::fail(problems.join("; ")) }
    }

    async fn domains(&mut self) -> Outcome {
        match self.admin.keystone().domains().await {
            Ok(domains) => {
                let enabled = domains.iter().filter(|domain| domain.enabled).count();
                let detail = format!("{} domains ({enabled} enabled)", domains.len());
                self.found.domains = Some(domains);
                Outcome::pass(detail)
            }
            Err(err) => Outcome::fail(format!("listing domains: {err}")),
        }
    }

    /// The cloud-wide project list must equal the union of the per-domain lists: that proves the
    /// listing is complete even where Keystone truncates (`list_limit`). Projects created or
    /// deleted between the listings make them differ, so a difference is listed again a few times
    /// before it counts.
    async fn projects(&mut self) -> Outcome {
        let Some(domains) = self.found.domains.clone() else {
            return Outcome::fail("domains could not be listed, so completeness is unproven");
        };
        let mut difference = String::new();
        for attempt in 1..=LISTING_ATTEMPTS {
            let (all, per_domain) = match self.list_projects_both_ways(&domains).await {
                Ok(lists) => lists,
                Err(failure) => return Outcome::fail(failure),
            };
            let listed: BTreeSet<String> = all.iter().map(|project| project.id.clone()).collect();
            let count = all.len();
            self.found.projects = Some(all);
            if listed == per_domain {
                let again = if attempt > 1 { format!(" on attempt {attempt}") } else { String::new() };
                return Outcome::pass(format!(
                    "{count} projects in {} domains, complete (the cloud-wide and per-domain lists \
                     agree{again})",
                    domains.len()
                ));
            }
            difference = format!(
                "the cloud-wide list ({count}) and the per-domain lists ({}) disagree: {} missing, {} \
                 outside any listed domain",
                per_domain.len(),
                per_domain.difference(&listed).count(),
                listed.difference(&per_domain).count()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Outcome::fail(format!("{difference} ({LISTING_ATTEMPTS} attempts)"))
    }

    async fn list_projects_both_ways(
        &self,
        domains: &[Domain],
    ) -> Result<(Vec<Project>, BTreeSet<String>), String> {
        let keystone = self.admin.keystone();
        let all = keystone.projects(None).await.map_err(|err| format!("listing projects: {err}"))?;
        let mut per_domain = BTreeSet::new();
        for domain in domains {
            let projects = keystone
                .projects(Some(&domain.id))
                .await
                .map_err(|err| format!("listing the projects of domain {}: {err}", domain.name))?;
            per_domain.extend(projects.into_iter().map(|project| project.id));
        }
        Ok((all, per_domain))
    }

    async fn service_user(&mut self) -> Outcome {
        let Some(name) = &self.options.service_user else {
            return Outcome::skip(
                "SNAPSHOT_SERVICE_USER_EMAIL is not set: identity-svc uses the admin session, so \
                 snapshots land in the admin's project",
            );
        };
        let wanted = &self.options.service_user_domain;
        let domain = self
            .found
            .domains
            .as_ref()
            .and_then(|domains| domains.iter().find(|d| &d.id == wanted || &d.name == wanted))
            .map_or_else(|| (wanted.clone(), wanted.clone()), |d| (d.id.clone(), d.name.clone()));
        match self.admin.keystone().find_user(name, Some(&domain.0)).await {
            Ok(Some(user)) if user.enabled => {
                let detail =
                    format!("{name}: user {} (id {}) in domain {}, enabled", user.name, user.id, domain.1);
                self.found.service_user = Some(user);
                Outcome::pass(detail)
            }
            Ok(Some(user)) => {
                Outcome::fail(format!("{name}: user {} (id {}) is disabled", user.name, user.id))
            }
            Ok(None) => Outcome::fail(format!(
                "no user named or with e-mail {name} in domain {} (SNAPSHOT_SERVICE_USER_DOMAIN)",
                domain.1
            )),
            Err(err) => Outcome::fail(format!("looking up {name}: {err}")),
        }
    }

    /// Every project's volumes, every page; each must carry its owner project (the admin's role
    /// decides whether Cinder shows it, and snapshots are made in that project).
    async fn volumes(&mut self) -> Outcome {
        let op = "cinder.volumes.list";
        let before = requests(self.admin, op);
        let query = VolumeQuery { all_tenants: true, ..VolumeQuery::default() };
        let volumes = match self.admin.cinder().volumes(&query).await {
            Ok(volumes) => volumes,
            Err(err) => return Outcome::fail(format!("listing volumes of all projects: {err}")),
        };
        let pages = requests(self.admin, op).saturating_sub(before);
        let ids: BTreeSet<&str> = volumes.iter().map(|volume| volume.id.as_str()).collect();
        if ids.len() != volumes.len() {
            return Outcome::fail(format!(
                "{} volumes listed but only {} distinct: pagination repeats entries",
                volumes.len(),
                ids.len()
            ));
        }
        let ownerless = volumes.iter().filter(|volume| volume.project_id.is_none()).count();
        self.found.volume_projects = volumes.iter().filter_map(|volume| volume.project_id.clone()).collect();
        let detail = format!(
            "{} volumes in {} projects, {pages} page(s) of up to {}",
            volumes.len(),
            self.found.volume_projects.len(),
            self.admin.config().page_limit
        );
        if ownerless > 0 {
            return Outcome::fail(format!(
                "{detail}; {ownerless} without their project (os-vol-tenant-attr:tenant_id): \
                 snapshots could not be made in the owner's project"
            ));
        }
        Outcome::pass(detail)
    }

    async fn snapshots(&self) -> Outcome {
        let op = "cinder.snapshots.list";
        let before = requests(self.admin, op);
        let query = SnapshotQuery { all_tenants: true, ..SnapshotQuery::default() };
        let snapshots = match self.admin.cinder().snapshots(&query).await {
            Ok(snapshots) => snapshots,
            Err(err) => return Outcome::fail(format!("listing snapshots of all projects: {err}")),
        };
        let pages = requests(self.admin, op).saturating_sub(before);
        let distinct: BTreeSet<&str> = snapshots.iter().map(|snapshot| snapshot.id.as_str()).collect();
        if distinct.len() != snapshots.len() {
            return Outcome::fail(format!(
                "{} snapshots listed but only {} distinct: pagination repeats entries",
                snapshots.len(),
                distinct.len()
            ));
        }
        let ours = snapshots
            .iter()
            .filter(|snapshot| {
                snapshot.metadata.get("created_by").is_some_and(|by| OUR_CREATORS.contains(&by.as_str()))
            })
            .count();
        Outcome::pass(format!(
            "{} snapshots ({ours} by snapkeeper or p9_auto_snapshots), {pages} page(s)",
            snapshots.len()
        ))
    }

    /// The quota with usage of a tenant project (one that owns volumes, else the admin's own),
    /// as snapshot-svc reads it before creating.
    async fn quota(&self) -> Outcome {
        let own = self.token.project_id().unwrap_or_default().to_owned();
        let mut candidates: Vec<String> =
            self.found.volume_projects.iter().find(|id| **id != own).cloned().into_iter().collect();
        if !own.is_empty() {
            candidates.push(own);
        }
        let name_of = |project_id: &str| {
            self.found
                .projects
                .as_ref()
                .and_then(|projects| projects.iter().find(|p| p.id == project_id))
                .map_or_else(|| project_id.to_owned(), |p| p.name.clone())
        };
        let mut found = None;
        for (i, project_id) in candidates.iter().enumerate() {
            match self.admin.cinder().quota_set(project_id, true).await {
                Ok(quota) => {
                    found = Some((name_of(project_id), quota));
                    break;
                }
                // The tenant project may have been deleted since the volume listing.
                Err(err) if err.is_not_found() && i + 1 < candidates.len() => {}
                Err(err) => {
                    return Outcome::fail(format!(
                        "reading the quota of project {}: {err}",
                        name_of(project_id)
                    ));
                }
            }
        }
        let Some((name, quota)) = found else {
            return Outcome::fail("no project to read a quota of");
        };
        let (Some(snapshots), Some(gigabytes)) = (quota.get("snapshots"), quota.get("gigabytes")) else {
            return Outcome::fail(format!("the quota of project {name} lacks snapshots or gigabytes"));
        };
        let figure = |usage: openstack::QuotaUsage| {
            let limit = if usage.limit < 0 { "unlimited".to_owned() } else { usage.limit.to_string() };
            format!("{}/{limit}", usage.in_use + usage.reserved)
        };
        let detail = format!(
            "project {name}: snapshots {} used, gigabytes {} GiB used",
            figure(snapshots),
            figure(gigabytes)
        );
        if !quota.has_usage {
            return Outcome::warn(format!(
                "{detail}; Cinder sent limits without usage, so the pre-check sees nothing used and \
                 Cinder's 413 is what blocks"
            ));
        }
        Outcome::pass(detail)
    }

    async fn role_assignments(&mut self) -> Outcome {
        let keystone = self.admin.keystone();
        let role = match keystone.find_role(&self.options.role).await {
            Ok(Some(role)) => role,
            Ok(None) => {
                return Outcome::fail(format!(
                    "role {} does not exist (SNAPSHOT_SERVICE_USER_ROLE)",
                    self.options.role
                ));
            }
            Err(err) => return Outcome::fail(format!("looking up role {}: {err}", self.options.role)),
        };
        self.found.role_id = Some(role.id.clone());
        let filter = AssignmentFilter {
            user_id: self.found.service_user.as_ref().map(|user| user.id.clone()),
            project_id: None,
            role_id: Some(role.id.clone()),
        };
        match keystone.role_assignments(&filter).await {
            Ok(assignments) => {
                let whose = match &self.found.service_user {
                    Some(user) => format!(" of {}", user.name),
                    None => String::new(),
                };
                Outcome::pass(format!(
                    "role {} (id {}) exists; {} assignments{whose} listed",
                    role.name,
                    role.id,
                    assignments.len()
                ))
            }
            Err(err) => Outcome::fail(format!("listing role assignments: {err}")),
        }
    }

    /// Grant, verify, revoke and verify the role on a project made for the purpose, then delete it
    /// whatever happened.
    async fn role_grant(&self) -> Outcome {
        let role = &self.options.role;
        if !self.options.probe_grant {
            return Outcome::skip(format!(
                "not probed: --probe-grant grants and revokes {role} on a throwaway project"
            ));
        }
        let Some(role_id) = &self.found.role_id else {
            return Outcome::fail(format!("role {role} is unknown, so it cannot be granted"));
        };
        let (grantee_id, grantee) = match &self.found.service_user {
            Some(user) => (user.id.clone(), format!("service user {}", user.name)),
            None => (self.token.user.id.clone(), format!("logged-in user {}", self.token.user.name)),
        };
        let domain_id = self
            .token
            .project
            .as_ref()
            .map_or_else(|| "default".to_owned(), |project| project.domain.id.clone());
        let keystone = self.admin.keystone();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let new = NewProject {
            name: format!("snapkeeper-check-{}", &suffix[..12]),
            domain_id,
            description: "temporary project of snapkeeper check-cloud --probe-grant; safe to delete".into(),
        };
        let project = match keystone.create_project(&new).await {
            Ok(project) => project,
            Err(err) => return Outcome::fail(format!("creating throwaway project {}: {err}", new.name)),
        };
        let probe = async {
            keystone.grant_project_role(&project.id, &grantee_id, role_id).await?;
            let granted = keystone.check_project_role(&project.id, &grantee_id, role_id).await?;
            keystone.revoke_project_role(&project.id, &grantee_id, role_id).await?;
            let still = keystone.check_project_role(&project.id, &grantee_id, role_id).await?;
            Ok::<_, Error>((granted, still))
        }
        .await;
        let cleanup = keystone.delete_project(&project.id).await;
        let outcome = match probe {
            Ok((true, false)) => Outcome::pass(format!(
                "granted, verified and revoked {role} for {grantee} on throwaway project {}",
                project.name
            )),
            Ok((granted, still)) => Outcome::fail(format!(
                "{role} for {grantee} on {}: held after grant {granted}, held after revoke {still}",
                project.name
            )),
            Err(err) => Outcome::fail(format!("granting {role} to {grantee} on {}: {err}", project.name)),
        };
        match cleanup {
            Ok(()) => outcome,
            Err(err) => Outcome::fail(format!(
                "{}; the throwaway project {} (id {}) could not be deleted, delete it by hand: {err}",
                outcome.detail, project.name, project.id
            )),
        }
    }
}

/// Requests sent so far for `operation` (retries excluded): the page count of a listing.
fn requests(client: &OpenStack, operation: &str) -> u64 {
    client.call_stats().get(operation).map_or(0, |stats| stats.attempts.saturating_sub(stats.retries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_take_identity_svc_defaults_and_treat_empty_as_unset() {
        let args = CheckCloudArgs {
            cloud: None,
            service_user: Some(String::new()),
            service_user_domain: None,
            role: Some(" ".into()),
            probe_grant: true,
            json: false,
        };
        assert_eq!(
            args.options(),
            Options {
                service_user: None,
                service_user_domain: "default".into(),
                role: "member".into(),
                probe_grant: true
            }
        );
    }

    #[test]
    fn report_renders_one_line_per_check_and_totals() {
        let report = Report {
            auth_url: "http://127.0.0.1:5000/v3".into(),
            region: None,
            interface: "public",
            passed: false,
            checks: vec![
                Check { name: "auth", status: Status::Pass, detail: "user admin".into(), duration_ms: 3 },
                Check { name: "catalog", status: Status::Fail, detail: "no identity".into(), duration_ms: 0 },
            ],
        };
        let text = report.render();
        assert!(text.starts_with("cloud http://127.0.0.1:5000/v3 (region any, interface public)\n"));
        assert!(text.contains("PASS    auth     user admin\n"), "{text}");
        assert!(text.contains("FAIL    catalog  no identity\n"), "{text}");
        assert!(text.ends_with("2 checks: 1 passed, 0 with warnings, 0 skipped, 1 failed\n"), "{text}");
    }
}
