//! Deciding one volume: an active exclusion beats a manual assignment, which beats the first
//! matching rule; a volume nothing decides keeps its current metadata. Every decision can carry an
//! explanation of what the rules did, even when an exclusion or assignment decided.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};

use crate::catalog::{Catalog, FALLBACK_RETENTION, PolicySource};
use crate::metadata;
use crate::rules::{RuleCheck, RuleSet};

/// The facts of a Cinder volume that rules match on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// Cinder volume id.
    pub id: String,
    /// Volume name; empty when it has none.
    pub name: String,
    /// Keystone project id.
    pub project_id: String,
    /// Keystone project name.
    pub project_name: String,
    /// Keystone domain id.
    pub domain_id: String,
    /// Keystone domain name.
    pub domain_name: String,
    /// Volume type name.
    pub volume_type: String,
    /// Size in GiB.
    pub size_gb: i64,
    /// Cinder's bootable flag.
    pub bootable: bool,
    /// Availability zone.
    pub availability_zone: String,
    /// Cinder status.
    pub status: String,
    /// The volume's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// An exclusion as evaluation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExclusionFact {
    /// Exclusion id.
    pub id: i64,
    /// The excluded volume; `None` for a project-wide exclusion.
    pub volume_id: Option<String>,
    /// The project (of the volume, or the excluded project).
    pub project_id: Option<String>,
    /// When it stops applying.
    pub expires_at: Option<DateTime<Utc>>,
}

impl ExclusionFact {
    /// Whether it applies at `at`.
    pub fn active_at(&self, at: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expiry| expiry > at)
    }
}

/// A manual assignment as evaluation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentFact {
    /// Assignment id.
    pub id: i64,
    /// The volume it decides.
    pub volume_id: String,
    /// Value for `auto_snapshot`.
    pub auto_snapshot: bool,
    /// Policy names.
    pub policies: Vec<String>,
    /// Retention count per policy.
    pub retention: BTreeMap<String, u32>,
}

/// The exclusions and assignments in force, indexed for lookups per volume.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    by_volume: HashMap<String, ExclusionFact>,
    by_project: HashMap<String, ExclusionFact>,
    assignments: HashMap<String, AssignmentFact>,
}

impl Overrides {
    /// Indexes exclusions (by volume, or by project when project-wide) and assignments (by volume).
    pub fn new(
        exclusions: impl IntoIterator<Item = ExclusionFact>,
        assignments: impl IntoIterator<Item = AssignmentFact>,
    ) -> Self {
        let mut overrides = Self::default();
        for exclusion in exclusions {
            match (&exclusion.volume_id, &exclusion.project_id) {
                (Some(volume), _) => {
                    overrides.by_volume.insert(volume.clone(), exclusion);
                }
                (None, Some(project)) => {
                    overrides.by_project.insert(project.clone(), exclusion);
                }
                (None, None) => {}
            }
        }
        overrides.assignments = assignments.into_iter().map(|a| (a.volume_id.clone(), a)).collect();
        overrides
    }
}

/// What decided a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionSource {
    /// An active exclusion.
    Exclusion,
    /// The manual assignment.
    Assignment,
    /// The first matching rule.
    Rule,
    /// Nothing: the volume keeps its current metadata.
    None,
}

/// Where a retention count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionSource {
    /// The matching rule's retention map.
    Rule,
    /// The assignment's retention map.
    Assignment,
    /// The catalog entry (stored or from the rules document).
    Catalog,
    /// The legacy name's N (1 for monthly names).
    LegacyDefault,
    /// The volume's metadata.
    VolumeMetadata,
    /// The seed's fallback of 7.
    Default,
}

/// One policy of a decision with its effective retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionPolicy {
    /// Policy name.
    pub name: String,
    /// Snapshots kept per volume.
    pub retention_count: u32,
    /// Where the count comes from.
    pub retention_source: RetentionSource,
    /// Age limit from the catalog.
    pub max_age: Option<Duration>,
    /// Whether the name resolves in the catalog or as a legacy name.
    pub known: bool,
}

/// The rule that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    /// 0-based document index.
    pub index: usize,
    /// Rule name.
    pub name: String,
    /// Rule priority.
    pub priority: i32,
}

/// How a decision was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// One sentence.
    pub summary: String,
    /// Rules in evaluation order up to and including the match.
    pub rule_checks: Vec<RuleCheck>,
    /// Exclusions of the volume or its project that have expired.
    pub expired_exclusion_ids: Vec<i64>,
}

/// The decision for one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What decided.
    pub source: DecisionSource,
    /// Value of `auto_snapshot` after the decision.
    pub auto_snapshot: bool,
    /// Policies with retention, ordered by name.
    pub policies: Vec<DecisionPolicy>,
    /// The matching rule (source Rule).
    pub matched_rule: Option<MatchedRule>,
    /// The deciding exclusion (source Exclusion).
    pub exclusion_id: Option<i64>,
    /// The deciding assignment (source Assignment).
    pub assignment_id: Option<i64>,
    /// Filled when asked for.
    pub explanation: Option<Explanation>,
}

impl Decision {
    /// Whether snapshot-svc acts on the volume: auto_snapshot true with at least one policy.
    pub fn enrolled(&self) -> bool {
        self.auto_snapshot && !self.policies.is_empty()
    }
}

/// Decides one volume at instant `at` (which decides whether exclusions have expired).
pub fn decide(
    volume: &Volume,
    rules: &RuleSet,
    catalog: &Catalog,
    overrides: &Overrides,
    at: DateTime<Utc>,
    explain: bool,
) -> Decision {
    let candidates = [overrides.by_volume.get(&volume.id), overrides.by_project.get(&volume.project_id)];
    let active = candidates.iter().flatten().find(|e| e.active_at(at));
    let assignment = overrides.assignments.get(&volume.id);
    // The rules are checked after an override only to explain what they would have done.
    let needs_rules = explain || (active.is_none() && assignment.is_none());
    let (matched, checks) = if needs_rules { rules.first_match(volume, explain) } else { (None, Vec::new()) };

    let mut decision = if let Some(exclusion) = active {
        Decision {
            source: DecisionSource::Exclusion,
            auto_snapshot: false,
            policies: Vec::new(),
            matched_rule: None,
            exclusion_id: Some(exclusion.id),
            assignment_id: None,
            explanation: None,
        }
    } else if let Some(assignment) = assignment {
        Decision {
            source: DecisionSource::Assignment,
            auto_snapshot: assignment.auto_snapshot,
            policies: resolve_policies(
                &assignment.policies,
                &assignment.retention,
                RetentionSource::Assignment,
                catalog,
                None,
            ),
            matched_rule: None,
            exclusion_id: None,
            assignment_id: Some(assignment.id),
            explanation: None,
        }
    } else if let Some(rule) = matched {
        // Seed semantics: a rule without auto_snapshot keeps the volume's current value (read only
        // then: parsing the metadata costs more than the rule lookup).
        let current = || metadata::read_current(&volume.metadata).auto_snapshot;
        Decision {
            source: DecisionSource::Rule,
            auto_snapshot: rule.auto_snapshot.or_else(current).unwrap_or(false),
            policies: resolve_policies(&rule.policies, &rule.retention, RetentionSource::Rule, catalog, None),
            matched_rule: Some(MatchedRule {
                index: rule.index,
                name: rule.name.clone(),
                priority: rule.priority,
            }),
            exclusion_id: None,
            assignment_id: None,
            explanation: None,
        }
    } else {
        let current = metadata::read_current(&volume.metadata);
        Decision {
            source: DecisionSource::None,
            auto_snapshot: current.auto_snapshot.unwrap_or(false),
            policies: resolve_policies(
                &current.policies,
                &BTreeMap::new(),
                RetentionSource::Default,
                catalog,
                Some(&current.retention),
            ),
            matched_rule: None,
            exclusion_id: None,
            assignment_id: None,
            explanation: None,
        }
    };
    if explain {
        let expired = candidates.iter().flatten().filter(|e| !e.active_at(at)).map(|e| e.id).collect();
        decision.explanation = Some(Explanation {
            summary: summary(&decision, &checks),
            rule_checks: checks,
            expired_exclusion_ids: expired,
        });
    }
    decision
}

/// Effective retention per policy: the explicit map (rule or assignment), then the volume's
/// metadata (only when nothing decided), then the catalog or legacy default, then 7.
fn resolve_policies(
    names: &[String],
    explicit: &BTreeMap<String, u32>,
    explicit_source: RetentionSource,
    catalog: &Catalog,
    from_metadata: Option<&BTreeMap<String, u32>>,
) -> Vec<DecisionPolicy> {
    let mut policies: Vec<DecisionPolicy> = names
        .iter()
        .map(|name| {
            let defined = catalog.default_retention(name);
            let max_age = defined.and_then(|(r, _)| r.max_age);
            let (retention_count, retention_source) = if let Some(count) = explicit.get(name) {
                (*count, explicit_source)
            } else if let Some(count) = from_metadata.and_then(|m| m.get(name)) {
                (*count, RetentionSource::VolumeMetadata)
            } else if let Some((retention, source)) = defined {
                let source = match source {
                    PolicySource::LegacyName => RetentionSource::LegacyDefault,
                    PolicySource::Catalog | PolicySource::RulesFile => RetentionSource::Catalog,
                };
                (retention.count, source)
            } else {
                (FALLBACK_RETENTION, RetentionSource::Default)
            };
            DecisionPolicy {
                name: name.clone(),
                retention_count,
                retention_source,
                max_age,
                known: defined.is_some(),
            }
        })
        .collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    policies.dedup_by(|a, b| a.name == b.name);
    policies
}

fn summary(decision: &Decision, checks: &[RuleCheck]) -> String {
    let misses: Vec<String> = checks
        .iter()
        .filter(|c| !c.matched)
        .map(|c| format!("rule '{}' did not: {}", c.rule_name, c.reason))
        .collect();
    let rules_part = match checks.iter().find(|c| c.matched) {
        Some(hit) => {
            let mut text = format!("rule '{}' (priority {}) matched", hit.rule_name, hit.priority);
            for miss in &misses {
                text.push_str("; ");
                text.push_str(miss);
            }
            text
        }
        None if checks.is_empty() => "no rules".to_owned(),
        None => format!("no rule matched ({} checked)", checks.len()),
    };
    match decision.source {
        DecisionSource::Exclusion => format!(
            "excluded by exclusion {}: auto_snapshot false, no policies; the rules would say: {rules_part}",
            decision.exclusion_id.unwrap_or_default()
        ),
        DecisionSource::Assignment => format!(
            "manual assignment {} decides; the rules would say: {rules_part}",
            decision.assignment_id.unwrap_or_default()
        ),
        DecisionSource::Rule => rules_part,
        DecisionSource::None => format!("{rules_part}; the volume keeps its current metadata"),
    }
}
