//! The simulated cloud in memory: Keystone and Cinder objects with the indexes the API needs
//! (volumes and snapshots by project, snapshots by volume), and the rules the real services
//! apply (quotas, statuses, scopes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::scenario::{QuotaSpec, Scenario};

pub(crate) const BUILTIN_ROLES: [&str; 5] = ["admin", "member", "reader", "manager", "service"];

#[derive(Debug, Clone)]
pub(crate) struct Domain {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) enabled: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) domain_id: String,
    pub(crate) description: String,
    pub(crate) enabled: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) domain_id: String,
    pub(crate) password: String,
    pub(crate) email: Option<String>,
    pub(crate) enabled: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AppCredential {
    pub(crate) name: String,
    pub(crate) user_id: String,
    pub(crate) project_id: String,
    pub(crate) secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Project(String),
    Domain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenScope {
    Unscoped,
    Project(String),
    Domain(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) user_id: String,
    pub(crate) scope: TokenScope,
    pub(crate) methods: Vec<String>,
    pub(crate) issued_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) project_id: String,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
#[allow(clippy::struct_field_names, reason = "field names follow the Cinder API")]
pub(crate) struct Volume {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) user_id: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) size: u64,
    pub(crate) volume_type: String,
    pub(crate) bootable: bool,
    pub(crate) availability_zone: String,
    pub(crate) status: String,
    pub(crate) ready_at: Option<Instant>,
    pub(crate) attachments: Vec<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) id: String,
    pub(crate) project_id: String,
    pub(crate) user_id: String,
    pub(crate) volume_id: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) size: u64,
    pub(crate) status: String,
    pub(crate) ready_at: Option<Instant>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) created_at: DateTime<Utc>,
}

/// Cinder's out-of-the-box default limits; per-type keys (`snapshots_<type>`) default to -1.
pub(crate) const CINDER_DEFAULT_QUOTA: [(&str, i64); 7] = [
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("groups", 10),
    ("per_volume_gigabytes", -1),
];

fn apply(limits: &mut BTreeMap<String, i64>, spec: Option<&QuotaSpec>) {
    let Some(spec) = spec else { return };
    for (key, value) in
        [("volumes", spec.volumes), ("snapshots", spec.snapshots), ("gigabytes", spec.gigabytes)]
    {
        if let Some(value) = value {
            limits.insert(key.to_owned(), value);
        }
    }
}

/// Usage of one project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) volumes: i64,
    pub(crate) snapshots: i64,
    pub(crate) gigabytes: i64,
}

pub(crate) struct World {
    pub(crate) rng: fastrand::Rng,
    pub(crate) regions: Vec<String>,
    pub(crate) domains: BTreeMap<String, Domain>,
    pub(crate) projects: BTreeMap<String, Project>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) roles: BTreeMap<String, String>,
    pub(crate) assignments: BTreeSet<(String, Target, String)>,
    pub(crate) app_credentials: BTreeMap<String, AppCredential>,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) servers: BTreeMap<String, Server>,
    pub(crate) volumes: BTreeMap<String, Volume>,
    pub(crate) volumes_by_project: HashMap<String, BTreeSet<String>>,
    pub(crate) snapshots: BTreeMap<String, Snapshot>,
    pub(crate) snapshots_by_project: HashMap<String, BTreeSet<String>>,
    pub(crate) snapshots_by_volume: HashMap<String, BTreeSet<String>>,
    pub(crate) default_quota: BTreeMap<String, i64>,
    pub(crate) quotas: HashMap<String, BTreeMap<String, i64>>,
    pub(crate) pending_volumes: BTreeSet<String>,
    pub(crate) pending_snapshots: BTreeSet<String>,
    pub(crate) usage: HashMap<String, Usage>,
    pub(crate) compute_enabled: bool,
}

impl World {
    /// Builds the world; fails on dangling names so a bad scenario is caught at start.
    pub(crate) fn from_scenario(scenario: &Scenario) -> anyhow::Result<Self> {
        let mut world = Self {
            rng: fastrand::Rng::with_seed(scenario.seed),
            regions: if scenario.regions.is_empty() {
                vec!["RegionOne".into()]
            } else {
                scenario.regions.clone()
            },
            domains: BTreeMap::new(),
            projects: BTreeMap::new(),
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            assignments: BTreeSet::new(),
            app_credentials: BTreeMap::new(),
            tokens: HashMap::new(),
            servers: BTreeMap::new(),
            volumes: BTreeMap::new(),
            volumes_by_project: HashMap::new(),
            snapshots: BTreeMap::new(),
            snapshots_by_project: HashMap::new(),
            snapshots_by_volume: HashMap::new(),
            default_quota: BTreeMap::new(),
            quotas: HashMap::new(),
            pending_volumes: BTreeSet::new(),
            pending_snapshots: BTreeSet::new(),
            usage: HashMap::new(),
            compute_enabled: !scenario.servers.is_empty(),
        };
        world.default_quota = CINDER_DEFAULT_QUOTA.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        apply(&mut world.default_quota, scenario.default_quota.as_ref());
        let now = Utc::now();
        world
            .domains
            .insert("default".into(), Domain { id: "default".into(), name: "Default".into(), enabled: true });
        for d in &scenario.domains {
            if d.name == "Default" {
                continue;
            }
            let id = d.id.clone().unwrap_or_else(|| world.hex_id());
            world.domains.insert(id.clone(), Domain { id, name: d.name.clone(), enabled: true });
        }
        for role in BUILTIN_ROLES.iter().map(|r| (*r).to_owned()).chain(scenario.roles.iter().cloned()) {
            if world.role_id(&role).is_none() {
                let id = world.hex_id();
                world.roles.insert(id, role);
            }
        }
        let mut project_ids: HashMap<String, String> = HashMap::new();
        for p in &scenario.projects {
            let domain_id = world.domain_id_by_name(p.domain.as_deref().unwrap_or("Default"))?;
            let id = p.id.clone().unwrap_or_else(|| world.hex_id());
            if project_ids.insert(p.name.clone(), id.clone()).is_some() {
                bail!("project name {:?} is used twice (names must be unique in a scenario)", p.name);
            }
            let description = p.description.clone().unwrap_or_default();
            world.projects.insert(
                id.clone(),
                Project { id, name: p.name.clone(), domain_id, description, enabled: true },
            );
        }
        let project =
            |name: &str| project_ids.get(name).cloned().with_context(|| format!("unknown project {name:?}"));
        let mut user_ids: HashMap<String, String> = HashMap::new();
        for u in &scenario.users {
            let domain_id = world.domain_id_by_name(u.domain.as_deref().unwrap_or("Default"))?;
            let id = u.id.clone().unwrap_or_else(|| world.hex_id());
            user_ids.insert(u.name.clone(), id.clone());
            world.users.insert(
                id.clone(),
                User {
                    id,
                    name: u.name.clone(),
                    domain_id,
                    password: u.password.clone(),
                    email: u.email.clone(),
                    enabled: true,
                },
            );
        }
        let user = |name: &str| user_ids.get(name).cloned().with_context(|| format!("unknown user {name:?}"));
        for a in &scenario.assignments {
            let role_id = world.role_id(&a.role).with_context(|| format!("unknown role {:?}", a.role))?;
            let target = match (&a.project, &a.domain) {
                (Some(p), _) => Target::Project(project(p)?),
                (None, Some(d)) => Target::Domain(world.domain_id_by_name(d)?),
                (None, None) => bail!("assignment of {} needs a project or a domain", a.user),
            };
            world.assignments.insert((user(&a.user)?, target, role_id));
        }
        for c in &scenario.application_credentials {
            let id = c.id.clone().unwrap_or_else(|| world.hex_id());
            let credential = AppCredential {
                name: c.name.clone(),
                user_id: user(&c.user)?,
                project_id: project(&c.project)?,
                secret: c.secret.clone(),
            };
            world.app_credentials.insert(id, credential);
        }
        let mut server_ids: HashMap<String, String> = HashMap::new();
        for s in &scenario.servers {
            let id = s.id.clone().unwrap_or_else(|| world.uuid());
            server_ids.insert(s.name.clone(), id.clone());
            world.servers.insert(
                id.clone(),
                Server { id, name: s.name.clone(), project_id: project(&s.project)?, created_at: now },
            );
        }
        for (name, spec) in &scenario.quotas {
            let mut limits = BTreeMap::new();
            apply(&mut limits, Some(spec));
            world.quotas.insert(project(name)?, limits);
        }
        let admin_id = user_ids.get("admin").cloned().unwrap_or_default();
        let mut volume_ids: HashMap<String, String> = HashMap::with_capacity(scenario.volumes.len());
        for v in &scenario.volumes {
            let id = v.id.clone().unwrap_or_else(|| world.uuid());
            volume_ids.insert(v.name.clone(), id.clone());
            volume_ids.insert(id.clone(), id.clone());
            let attachments: Vec<String> = v
                .attachments
                .iter()
                .map(|s| server_ids.get(s).cloned().unwrap_or_else(|| s.clone()))
                .collect();
            let status = v
                .status
                .clone()
                .unwrap_or_else(|| if attachments.is_empty() { "available" } else { "in-use" }.into());
            world.insert_volume(Volume {
                id,
                project_id: project(&v.project)?,
                user_id: admin_id.clone(),
                name: v.name.clone(),
                description: None,
                size: v.size.unwrap_or(1),
                volume_type: v.volume_type.clone().unwrap_or_else(|| "__DEFAULT__".into()),
                bootable: v.bootable,
                availability_zone: v.availability_zone.clone().unwrap_or_else(|| "nova".into()),
                status,
                ready_at: None,
                attachments,
                metadata: v.metadata.clone(),
                created_at: now,
            });
        }
        for s in &scenario.snapshots {
            let volume_id =
                volume_ids.get(&s.volume).with_context(|| format!("unknown volume {:?}", s.volume))?;
            let id = s.id.clone().unwrap_or_else(|| world.uuid());
            let volume =
                world.volumes.get(volume_id).with_context(|| format!("unknown volume {:?}", s.volume))?;
            let created_at = match &s.created_at {
                Some(t) => DateTime::parse_from_rfc3339(t)
                    .with_context(|| format!("snapshot {}: created_at", s.name))?
                    .to_utc(),
                None => now,
            };
            let snapshot = Snapshot {
                id,
                project_id: volume.project_id.clone(),
                user_id: admin_id.clone(),
                volume_id: volume.id.clone(),
                name: s.name.clone(),
                description: None,
                size: volume.size,
                status: s.status.clone().unwrap_or_else(|| "available".into()),
                ready_at: None,
                metadata: s.metadata.clone(),
                created_at,
            };
            world.insert_snapshot(snapshot);
        }
        Ok(world)
    }

    /// Keystone-style id: 32 hex digits.
    pub(crate) fn hex_id(&mut self) -> String {
        format!("{:032x}", self.rng.u128(..))
    }

    /// Cinder/Nova-style id: a v4 UUID, drawn from the seeded generator.
    pub(crate) fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.u128(..).to_le_bytes()).into_uuid().to_string()
    }

    pub(crate) fn role_id(&self, name: &str) -> Option<String> {
        self.roles.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)).map(|(id, _)| id.clone())
    }

    fn domain_id_by_name(&self, name: &str) -> anyhow::Result<String> {
        self.domains
            .values()
            .find(|d| d.name == name || d.id == name)
            .map(|d| d.id.clone())
            .with_context(|| format!("unknown domain {name:?}"))
    }

    /// The limit of `key` for a project (-1 = unlimited).
    pub(crate) fn limit(&self, project_id: &str, key: &str) -> i64 {
        self.quotas
            .get(project_id)
            .and_then(|q| q.get(key))
            .or_else(|| self.default_quota.get(key))
            .copied()
            .unwrap_or(-1)
    }

    pub(crate) fn usage(&self, project_id: &str) -> Usage {
        self.usage.get(project_id).copied().unwrap_or_default()
    }

    pub(crate) fn insert_volume(&mut self, volume: Volume) {
        let usage = self.usage.entry(volume.project_id.clone()).or_default();
        usage.volumes += 1;
        usage.gigabytes += volume.size as i64;
        self.volumes_by_project.entry(volume.project_id.clone()).or_default().insert(volume.id.clone());
        if volume.ready_at.is_some() {
            self.pending_volumes.insert(volume.id.clone());
        }
        self.volumes.insert(volume.id.clone(), volume);
    }

    pub(crate) fn remove_volume(&mut self, id: &str) {
        if let Some(volume) = self.volumes.remove(id) {
            let usage = self.usage.entry(volume.project_id.clone()).or_default();
            usage.volumes -= 1;
            usage.gigabytes -= volume.size as i64;
            if let Some(ids) = self.volumes_by_project.get_mut(&volume.project_id) {
                ids.remove(id);
            }
            for snapshot in self.snapshots_by_volume.remove(id).unwrap_or_default() {
                self.remove_snapshot(&snapshot);
            }
        }
    }

    pub(crate) fn insert_snapshot(&mut self, snapshot: Snapshot) {
        let usage = self.usage.entry(snapshot.project_id.clone()).or_default();
        usage.snapshots += 1;
        usage.gigabytes += snapshot.size as i64;
        self.snapshots_by_project.entry(snapshot.project_id.clone()).or_default().insert(snapshot.id.clone());
        self.snapshots_by_volume.entry(snapshot.volume_id.clone()).or_default().insert(snapshot.id.clone());
        if snapshot.ready_at.is_some() {
            self.pending_snapshots.insert(snapshot.id.clone());
        }
        self.snapshots.insert(snapshot.id.clone(), snapshot);
    }

    pub(crate) fn remove_snapshot(&mut self, id: &str) {
        if let Some(snapshot) = self.snapshots.remove(id) {
            let usage = self.usage.entry(snapshot.project_id.clone()).or_default();
            usage.snapshots -= 1;
            usage.gigabytes -= snapshot.size as i64;
            if let Some(ids) = self.snapshots_by_project.get_mut(&snapshot.project_id) {
                ids.remove(id);
            }
            if let Some(ids) = self.snapshots_by_volume.get_mut(&snapshot.volume_id) {
                ids.remove(id);
            }
        }
    }

    /// Moves `creating` objects whose delay has passed to `available`. Done at the start of each
    /// request, over the pending sets only, so no background task is needed.
    pub(crate) fn settle(&mut self, now: Instant) {
        let ready: Vec<String> = self
            .pending_volumes
            .iter()
            .filter(|id| self.volumes.get(*id).is_none_or(|v| v.ready_at.is_none_or(|t| t <= now)))
            .cloned()
            .collect();
        for id in ready {
            self.pending_volumes.remove(&id);
            if let Some(v) = self.volumes.get_mut(&id) {
                v.ready_at = None;
                v.status = if v.attachments.is_empty() { "available" } else { "in-use" }.into();
            }
        }
        let ready: Vec<String> = self
            .pending_snapshots
            .iter()
            .filter(|id| self.snapshots.get(*id).is_none_or(|s| s.ready_at.is_none_or(|t| t <= now)))
            .cloned()
            .collect();
        for id in ready {
            self.pending_snapshots.remove(&id);
            if let Some(s) = self.snapshots.get_mut(&id) {
                s.ready_at = None;
                s.status = "available".into();
            }
        }
    }

    /// Role names `user_id` holds on `target`.
    pub(crate) fn roles_on(&self, user_id: &str, target: &Target) -> Vec<String> {
        self.assignments
            .iter()
            .filter(|(u, t, _)| u == user_id && t == target)
            .filter_map(|(_, _, role)| self.roles.get(role).cloned())
            .collect()
    }

    pub(crate) fn token_roles(&self, token: &Token) -> Vec<String> {
        match &token.scope {
            TokenScope::Unscoped => Vec::new(),
            TokenScope::Project(p) => self.roles_on(&token.user_id, &Target::Project(p.clone())),
            TokenScope::Domain(d) => self.roles_on(&token.user_id, &Target::Domain(d.clone())),
        }
    }

    pub(crate) fn issue_token(
        &mut self,
        user_id: &str,
        scope: TokenScope,
        methods: Vec<String>,
        ttl: Duration,
    ) -> String {
        let token = format!("gAAAAA{}{}", self.hex_id(), self.hex_id());
        let issued_at = Utc::now();
        let expires_at = issued_at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
        self.tokens
            .insert(token.clone(), Token { user_id: user_id.into(), scope, methods, issued_at, expires_at });
        token
    }

    /// Ids after `marker` in `ids`, for limit/marker pagination (the marker itself excluded).
    pub(crate) fn after<'a>(
        ids: &'a BTreeSet<String>,
        marker: Option<&'a str>,
    ) -> impl Iterator<Item = &'a String> + 'a {
        use std::ops::Bound;
        let start = marker.map_or(Bound::Unbounded, |m| Bound::Excluded(m.to_owned()));
        ids.range::<String, _>((start, Bound::Unbounded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::GenSpec;

    #[test]
    fn usage_follows_inserts_and_removals() {
        let spec = GenSpec { projects: 2, volumes_per_project: 3, snapshots: 4, domains: 1, seed: 1 };
        let mut world = World::from_scenario(&Scenario::generate(&spec)).expect("world");
        let project = world.volumes.values().next().map(|v| v.project_id.clone()).expect("a volume");
        let before = world.usage(&project);
        assert_eq!(before.volumes, 3);
        let volume = world.volumes_by_project[&project].iter().next().cloned().expect("id");
        let snaps = world.snapshots_by_volume.get(&volume).map_or(0, BTreeSet::len) as i64;
        world.remove_volume(&volume);
        let after = world.usage(&project);
        assert_eq!(after.volumes, 2);
        assert_eq!(after.snapshots, before.snapshots - snaps);
    }

    #[test]
    fn dangling_names_fail_at_start() {
        let mut scenario = Scenario::minimal();
        scenario.volumes.push(crate::scenario::VolumeSpec {
            project: "nope".into(),
            name: "v".into(),
            ..Default::default()
        });
        let err = World::from_scenario(&scenario).err().expect("must fail");
        assert!(err.to_string().contains("nope"));
    }
}
