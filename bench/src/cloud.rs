//! The benchmark's cloud and rules: every tenant volume already carries the metadata the rules
//! assign (a steady state, so policy assignment writes nothing), and each volume has older
//! snapshots of ours spread over the policies, so a run both creates and applies retention.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use openstack_sim::{AssignmentSpec, ProjectSpec, QuotaSpec, Scenario, SnapshotSpec, UserSpec, VolumeSpec};
use serde_json::json;

/// Keystone user identity-svc takes project tokens for.
pub(crate) const SERVICE_USER: &str = "snapkeeper-svc";
/// Its password in the generated cloud.
pub(crate) const SERVICE_PASSWORD: &str = "bench-service-pass";

/// Shape of the generated cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Tenant projects.
    pub(crate) projects: usize,
    /// Volumes per project.
    pub(crate) volumes_per_project: usize,
    /// Policies every volume is enrolled in.
    pub(crate) policies: usize,
    /// Existing snapshots of ours per volume, spread round-robin over the policies.
    pub(crate) snapshots_per_volume: usize,
    /// Retention count of every policy.
    pub(crate) retention: u32,
}

impl Shape {
    /// Volumes in the cloud.
    pub(crate) fn volumes(&self) -> usize {
        self.projects * self.volumes_per_project
    }

    /// Snapshots the run must create: one per (volume, policy), all due.
    pub(crate) fn expected_creates(&self) -> usize {
        self.volumes() * self.policies
    }

    /// Snapshots retention must delete: per (volume, policy), the existing ones beyond the
    /// retention count (the newest is always kept).
    pub(crate) fn expected_deletes(&self) -> usize {
        let keep = self.retention.max(1) as usize;
        let per_volume: usize = (0..self.policies)
            .map(|p| {
                let existing = self.snapshots_per_volume / self.policies
                    + usize::from(p < self.snapshots_per_volume % self.policies);
                existing.saturating_sub(keep)
            })
            .sum();
        per_volume * self.volumes()
    }

    /// Policy names.
    pub(crate) fn policy_names(&self) -> Vec<String> {
        (1..=self.policies).map(|p| format!("bench_p{p}")).collect()
    }
}

/// The policy rules document: every policy on a 6-hour interval (anchors an hour apart) and one
/// rule enrolling every volume in all of them.
pub(crate) fn rules(shape: &Shape) -> serde_json::Value {
    let names = shape.policy_names();
    let policies: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let anchor = format!("2026-01-01T{i:02}:00:00Z");
            let policy = json!({
                "schedule": {"interval": "6h", "anchor": anchor},
                "retention": {"count": shape.retention},
            });
            (name.clone(), policy)
        })
        .collect();
    json!({
        "policies": policies,
        "rules": [{"name": "everything", "priority": 1, "match": {}, "auto_snapshot": true, "policies": names}],
    })
}

/// The cloud: the simulator's minimal cloud, the service user with `member` on every tenant
/// project, unlimited quotas, volumes enrolled as the rules say and their older snapshots
/// (created `now` minus whole days, with slots long past, so every pair is due).
pub(crate) fn scenario(shape: &Shape, now: DateTime<Utc>) -> Scenario {
    let mut s = Scenario::minimal();
    s.seed = 11;
    s.default_quota = Some(QuotaSpec { volumes: Some(-1), snapshots: Some(-1), gigabytes: Some(-1) });
    s.users.push(UserSpec {
        name: SERVICE_USER.to_owned(),
        password: SERVICE_PASSWORD.to_owned(),
        ..UserSpec::default()
    });
    let names = shape.policy_names();
    let mut metadata = BTreeMap::from([
        ("auto_snapshot".to_owned(), "true".to_owned()),
        ("snapshot_policies".to_owned(), names.join(",")),
    ]);
    for name in &names {
        metadata.insert(format!("retention_{name}"), shape.retention.to_string());
    }
    s.volumes.reserve(shape.volumes());
    s.snapshots.reserve(shape.volumes() * shape.snapshots_per_volume);
    for p in 0..shape.projects {
        let project = format!("bench-{p:05}");
        s.projects.push(ProjectSpec { name: project.clone(), ..ProjectSpec::default() });
        s.assignments.push(AssignmentSpec {
            user: SERVICE_USER.to_owned(),
            role: "member".to_owned(),
            project: Some(project.clone()),
            domain: None,
        });
        for v in 0..shape.volumes_per_project {
            let volume = format!("{project}-vol-{v:03}");
            for n in 0..shape.snapshots_per_volume {
                let Some(policy) = names.get(n % names.len().max(1)) else { break };
                let created = now - Duration::days(n as i64 + 2);
                let text = created.to_rfc3339_opts(SecondsFormat::Secs, true);
                s.snapshots.push(SnapshotSpec {
                    volume: volume.clone(),
                    name: format!("{volume}-old-{n}"),
                    metadata: BTreeMap::from([
                        ("created_by".to_owned(), "snapkeeper".to_owned()),
                        ("policy".to_owned(), policy.clone()),
                        ("slot".to_owned(), text.clone()),
                    ]),
                    created_at: Some(text),
                    ..SnapshotSpec::default()
                });
            }
            s.volumes.push(VolumeSpec {
                project: project.clone(),
                name: volume,
                size: Some(1 + (v as u64 % 5)),
                metadata: metadata.clone(),
                ..VolumeSpec::default()
            });
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(snapshots_per_volume: usize, retention: u32) -> Shape {
        Shape { projects: 4, volumes_per_project: 3, policies: 3, snapshots_per_volume, retention }
    }

    #[test]
    fn the_cloud_has_the_asked_shape_and_the_service_user_everywhere() {
        let s = scenario(&shape(5, 1), Utc::now());
        assert_eq!(s.volumes.len(), 12);
        assert_eq!(s.snapshots.len(), 60);
        let tenants = s.projects.iter().filter(|p| p.name.starts_with("bench-")).count();
        assert_eq!(tenants, 4);
        assert_eq!(s.assignments.iter().filter(|a| a.user == SERVICE_USER).count(), 4);
        let policies = s.volumes[0].metadata.get("snapshot_policies").map(String::as_str);
        assert_eq!(policies, Some("bench_p1,bench_p2,bench_p3"));
        let per_policy = |p: &str| {
            s.snapshots
                .iter()
                .filter(|x| {
                    x.volume == s.volumes[0].name && x.metadata.get("policy").map(String::as_str) == Some(p)
                })
                .count()
        };
        assert_eq!((per_policy("bench_p1"), per_policy("bench_p2"), per_policy("bench_p3")), (2, 2, 1));
    }

    #[test]
    fn expected_deletes_follow_the_round_robin_spread() {
        assert_eq!(shape(5, 1).expected_deletes(), 12 * 2);
        assert_eq!(shape(5, 2).expected_deletes(), 0);
        assert_eq!(shape(0, 1).expected_deletes(), 0);
        assert_eq!(shape(7, 1).expected_deletes(), 12 * 4);
        assert_eq!(shape(5, 1).expected_creates(), 36);
    }

    #[test]
    fn rules_name_every_policy_with_its_retention() {
        let rules = rules(&shape(5, 4));
        assert_eq!(rules["policies"]["bench_p2"]["retention"]["count"], 4);
        assert_eq!(rules["rules"][0]["policies"].as_array().map(Vec::len), Some(3));
    }
}
