//! The plan of one region in a run, built a project at a time: the pairs to create, skip or
//! recover and the snapshots retention deletes. Pure: the runner fetches the inputs (listing,
//! decisions, slots, unfinished creates) once, then builds each batch's work just before the batch
//! runs, so a run holds the pairs of one batch rather than those of the whole cloud.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use snapkeeper_proto::policy::v1 as policy;
use snapkeeper_proto::snapshot::v1 as pb;

use crate::cloud::Listing;
use crate::due::{Dueness, Unfinished, judge, resolve_unfinished};
use crate::naming;
use crate::records::{Outcome, Pair};
use crate::retention::{Deletion, Retention};
use crate::run::{Scope, from_duration};
use crate::store::WorkItem;

/// Volume statuses Cinder snapshots (`force=true` for in-use).
const SNAPSHOTTABLE: [&str; 2] = ["available", "in-use"];

/// Settings that shape a plan.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How long an `error` snapshot is kept before retention removes it.
    pub error_grace: chrono::Duration,
    /// Volumes above this size (GiB) are skipped.
    pub max_size_gb: Option<u64>,
}

/// The work of one project in one region.
#[derive(Debug, Default)]
pub struct ProjectWork {
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Enrolled volumes in scope.
    pub volumes: usize,
    /// Pairs due in their slot.
    pub due: i64,
    /// Pairs to create, with the volume's in-use flag.
    pub creates: Vec<(Pair, bool)>,
    /// Pairs decided without a create (skips, recoveries) with the unfinished create they settle.
    pub decided: Vec<(Pair, Outcome, Option<String>)>,
    /// Retention deletes.
    pub deletes: Vec<(Pair, Deletion)>,
    /// Keys of unfinished creates whose snapshot never came to be.
    pub lost: Vec<String>,
}

/// One project's enrolled volumes: (index in the listing, the decided policies in scope).
#[derive(Debug, Default)]
pub struct ProjectVolumes {
    /// Project id.
    pub project_id: String,
    volumes: Vec<(usize, Vec<policy::DecisionPolicy>)>,
}

impl ProjectVolumes {
    /// Enrolled volumes in scope.
    pub fn volume_count(&self) -> usize {
        self.volumes.len()
    }
}

/// Everything one region's plan is made from.
#[derive(Debug)]
pub struct RegionPlan {
    /// Region name.
    pub region: String,
    /// The run's listing of the region.
    pub listing: Listing,
    /// When the run planned.
    pub now: DateTime<Utc>,
    /// Current slot of each policy policy-svc knows.
    pub slots: BTreeMap<String, Option<DateTime<Utc>>>,
    /// Creates a crash left unfinished, by (volume, policy); empty on a dry run.
    pub unfinished: HashMap<(String, String), Vec<WorkItem>>,
    /// The plan's settings.
    pub rules: Rules,
    /// Projects with enrolled volumes in scope, in listing order.
    pub projects: Vec<ProjectVolumes>,
}

impl RegionPlan {
    /// Groups the decided volumes (index in `listing.volumes`, decision) by project, keeping the
    /// enrolled ones with at least one policy in `scope`.
    pub fn group(
        listing: &Listing,
        decided: impl IntoIterator<Item = (usize, policy::Decision)>,
        scope: &Scope,
    ) -> Vec<ProjectVolumes> {
        let mut projects: Vec<ProjectVolumes> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for (index, decision) in decided {
            let policies: Vec<policy::DecisionPolicy> =
                decision.policies.into_iter().filter(|p| scope.has_policy(&p.name)).collect();
            let Some(volume) = listing.volumes.get(index) else { continue };
            if !decision.enrolled || policies.is_empty() {
                continue;
            }
            let project_id = volume.project_id.clone().unwrap_or_default();
            let at = *position.entry(project_id.clone()).or_insert_with(|| {
                projects.push(ProjectVolumes { project_id, volumes: Vec::new() });
                projects.len() - 1
            });
            projects[at].volumes.push((index, policies));
        }
        projects
    }

    /// The work of `project`: per (volume, policy) the retention deletes, the outcome of any
    /// unfinished create, and whether the current slot is due.
    pub fn work(&self, project: &ProjectVolumes) -> ProjectWork {
        let listing = &self.listing;
        let (project_name, domain_id, domain_name) = listing.project_names(&project.project_id);
        let mut work = ProjectWork {
            project_id: project.project_id.clone(),
            project_name: project_name.clone(),
            volumes: project.volumes.len(),
            ..ProjectWork::default()
        };
        for (index, policies) in &project.volumes {
            let Some(volume) = listing.volumes.get(*index) else { continue };
            let (vm_id, vm_name) = listing.first_server(volume).unwrap_or_default();
            for policy in policies {
                let existing = listing.snapshots.of(&volume.id, &policy.name);
                let mut pair = Pair {
                    region: self.region.clone(),
                    volume_id: volume.id.clone(),
                    volume_name: volume.name.clone(),
                    project_id: project.project_id.clone(),
                    project_name: project_name.clone(),
                    domain_id: domain_id.clone(),
                    domain_name: domain_name.clone(),
                    vm_id: vm_id.clone(),
                    vm_name: vm_name.clone(),
                    size_gb: volume.size as i64,
                    volume_type: volume.volume_type.clone().unwrap_or_default(),
                    volume_status: volume.status.clone(),
                    policy: policy.name.clone(),
                    slot: None,
                    retention_count: policy.retention_count,
                    batch: 0,
                };
                let rule = Retention {
                    count: u32::try_from(policy.retention_count).unwrap_or(1),
                    max_age: policy.max_age.as_ref().and_then(from_duration),
                };
                for deletion in crate::retention::plan(existing, rule, self.now, self.rules.error_grace) {
                    work.deletes.push((pair.clone(), deletion));
                }
                let Some(slot) = self.slots.get(&policy.name) else {
                    work.decided.push((pair, Outcome::Skipped(pb::SkipReason::UnknownPolicy), None));
                    continue;
                };
                let pending = self.unfinished.get(&(volume.id.clone(), policy.name.clone()));
                for item in pending.into_iter().flatten() {
                    let Some(item_slot) = naming::parse_slot(&item.slot) else { continue };
                    match resolve_unfinished(item_slot, *slot, existing) {
                        Unfinished::Found { snapshot_id } => {
                            let recovered = Pair { slot: Some(item_slot), ..pair.clone() };
                            let outcome = Outcome::Recovered { snapshot_id };
                            work.decided.push((recovered, outcome, Some(item.key.clone())));
                        }
                        Unfinished::Lost => work.lost.push(item.key.clone()),
                        Unfinished::Retry => {}
                    }
                }
                match judge(*slot, existing) {
                    Dueness::NoSlotYet | Dueness::Taken { .. } => {}
                    Dueness::Due { slot } => {
                        work.due += 1;
                        pair.slot = Some(slot);
                        if !SNAPSHOTTABLE.contains(&volume.status.as_str()) {
                            work.decided.push((pair, Outcome::Skipped(pb::SkipReason::VolumeStatus), None));
                        } else if self.rules.max_size_gb.is_some_and(|max| volume.size > max) {
                            work.decided.push((pair, Outcome::Skipped(pb::SkipReason::SizeLimit), None));
                        } else {
                            work.creates.push((pair, volume.status == "in-use"));
                        }
                    }
                }
            }
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::SnapshotIndex;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).unwrap_or_default()
    }

    fn volume(id: &str, project: &str, status: &str, size: u64) -> openstack::Volume {
        openstack::Volume {
            id: id.to_owned(),
            name: format!("{id}-name"),
            status: status.to_owned(),
            size,
            volume_type: None,
            bootable: false,
            availability_zone: None,
            project_id: Some(project.to_owned()),
            metadata: BTreeMap::new(),
            attachments: Vec::new(),
            created_at: None,
            description: None,
        }
    }

    fn decision(enrolled: bool, policies: &[&str]) -> policy::Decision {
        policy::Decision {
            enrolled,
            policies: policies
                .iter()
                .map(|name| policy::DecisionPolicy {
                    name: (*name).to_owned(),
                    retention_count: 1,
                    known: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Volumes v1 (p1), v2 (p2), v3 (p1, error), v4 (p1, 500 GiB); v1 has two daily snapshots.
    fn region(scope: &Scope) -> RegionPlan {
        let ours = |id: &str, slot: &str| {
            crate::listing::tests::cinder(
                id,
                "v1",
                &[("created_by", "snapkeeper"), ("policy", "daily"), ("slot", slot)],
                "available",
            )
        };
        let mut listing = Listing {
            volumes: vec![
                volume("v1", "p1", "in-use", 10),
                volume("v2", "p2", "available", 10),
                volume("v3", "p1", "error", 10),
                volume("v4", "p1", "available", 500),
            ],
            snapshots: SnapshotIndex::build(&[
                ours("s1", "2026-02-27T00:00:00Z"),
                ours("s2", "2026-02-28T00:00:00Z"),
            ]),
            ..Listing::default()
        };
        listing.snapshot_count = 2;
        let decided = vec![
            (0, decision(true, &["daily", "gone"])),
            (1, decision(false, &["daily"])),
            (2, decision(true, &["daily"])),
            (3, decision(true, &["daily"])),
        ];
        let projects = RegionPlan::group(&listing, decided, scope);
        RegionPlan {
            region: "RegionOne".to_owned(),
            listing,
            now: at("2026-03-01T12:00:00Z"),
            slots: BTreeMap::from([("daily".to_owned(), Some(at("2026-03-01T00:00:00Z")))]),
            unfinished: HashMap::new(),
            rules: Rules { error_grace: chrono::Duration::hours(24), max_size_gb: Some(100) },
            projects,
        }
    }

    #[test]
    fn projects_hold_their_enrolled_volumes_in_scope_in_listing_order() {
        let plan = region(&Scope::default());
        let grouped: Vec<(&str, usize)> =
            plan.projects.iter().map(|p| (p.project_id.as_str(), p.volume_count())).collect();
        assert_eq!(grouped, [("p1", 3)], "v2 is not enrolled");
        let daily_only = Scope { policy_names: vec!["gone".to_owned()], ..Scope::default() };
        let plan = region(&daily_only);
        assert_eq!(
            plan.projects.iter().map(ProjectVolumes::volume_count).sum::<usize>(),
            1,
            "only v1 has `gone`"
        );
    }

    #[test]
    fn a_project_is_planned_from_its_volumes_alone() {
        let plan = region(&Scope::default());
        let work = plan.work(&plan.projects[0]);
        assert_eq!((work.project_id.as_str(), work.volumes, work.due), ("p1", 3, 3));
        let creates: Vec<(&str, bool)> =
            work.creates.iter().map(|(p, in_use)| (p.volume_id.as_str(), *in_use)).collect();
        assert_eq!(creates, [("v1", true)]);
        assert_eq!(work.creates[0].0.slot, Some(at("2026-03-01T00:00:00Z")));
        let decided: Vec<(&str, &str, &Outcome)> =
            work.decided.iter().map(|(p, o, _)| (p.volume_id.as_str(), p.policy.as_str(), o)).collect();
        assert_eq!(
            decided,
            [
                ("v1", "gone", &Outcome::Skipped(pb::SkipReason::UnknownPolicy)),
                ("v3", "daily", &Outcome::Skipped(pb::SkipReason::VolumeStatus)),
                ("v4", "daily", &Outcome::Skipped(pb::SkipReason::SizeLimit)),
            ]
        );
        let deleted: Vec<&str> = work.deletes.iter().map(|(_, d)| d.snapshot_id.as_str()).collect();
        assert_eq!(deleted, ["s1"], "retention 1 keeps the newest of v1's two");
        assert_eq!(work.deletes[0].0.region, "RegionOne");
    }

    #[test]
    fn an_unfinished_create_found_in_the_listing_is_recovered() {
        let mut plan = region(&Scope::default());
        let item = WorkItem {
            key: "v1|daily|2026-02-28".to_owned(),
            run_id: "r0".to_owned(),
            volume_id: "v1".to_owned(),
            project_id: "p1".to_owned(),
            policy: "daily".to_owned(),
            slot: "2026-02-28T00:00:00Z".to_owned(),
            region: "RegionOne".to_owned(),
        };
        plan.unfinished.insert(("v1".to_owned(), "daily".to_owned()), vec![item]);
        let work = plan.work(&plan.projects[0]);
        let recovered: Vec<(&Outcome, Option<&str>)> = work
            .decided
            .iter()
            .filter(|(p, _, _)| p.policy == "daily" && p.volume_id == "v1")
            .map(|(_, o, key)| (o, key.as_deref()))
            .collect();
        assert_eq!(
            recovered,
            [(&Outcome::Recovered { snapshot_id: "s2".to_owned() }, Some("v1|daily|2026-02-28"))]
        );
    }
}
