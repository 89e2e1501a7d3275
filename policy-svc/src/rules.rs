//! The rules document: parse, validate (every problem at once), compile (regexes compiled, lists
//! into sets, rules indexed by the values they require), and match a volume against the rules in
//! evaluation order, through the index or, with an explanation, rule by rule.
//!
//! The seed's format is accepted as is: a JSON array of `{name, priority, match, policies,
//! auto_snapshot, retention}`. The object form `{"policies": {...}, "rules": [...]}` adds catalog
//! entries. Unlike the seed, an unknown key, a wrong type or a bad regex rejects the document, and
//! the first matching rule decides alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::catalog::{self, Catalog, Policy, PolicySource, Retention};
use crate::decision::Volume;
use crate::schedule::{self, Schedule, ScheduleError};

mod index;

use index::RuleIndex;

/// Name of a rule that has none (two such rules are duplicates, as the contract says).
pub const UNNAMED_RULE: &str = "unnamed-rule";
/// Priority of a rule that has none.
pub const DEFAULT_PRIORITY: i32 = 1000;
/// Largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The match keys, in the fixed order they are checked (and explained) in.
pub const MATCH_KEYS: [&str; 14] = [
    "tenant_name",
    "project_id",
    "domain_name",
    "volume_name",
    "volume_name_prefix",
    "volume_name_contains",
    "volume_type",
    "size_gb",
    "min_size_gb",
    "max_size_gb",
    "bootable",
    "availability_zone",
    "metadata_equals",
    "metadata_contains",
];

const RULE_KEYS: [&str; 6] = ["name", "priority", "match", "policies", "auto_snapshot", "retention"];
const DOCUMENT_KEYS: [&str; 2] = ["policies", "rules"];
const POLICY_KEYS: [&str; 4] = ["description", "schedule", "retention", "compliance_grace"];

/// Kind of problem in a rules document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    /// Not JSON, or neither an array nor an object with "rules".
    InvalidJson,
    /// A key that is not part of the format.
    UnknownKey,
    /// A value of the wrong JSON type.
    WrongType,
    /// A regex that does not compile.
    BadRegex,
    /// A retention count outside 1..=1000 or a max_age under an hour.
    InvalidRetention,
    /// A policy name that resolves nowhere.
    UnknownPolicy,
    /// Two rules with one name.
    DuplicateRuleName,
    /// A cron expression or interval that is not valid.
    InvalidSchedule,
    /// A time zone that is not an IANA name.
    InvalidTimeZone,
    /// Any other invalid value.
    InvalidValue,
}

/// One problem found in a rules document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub code: ProblemCode,
    /// 0-based rule index; `None` for document and catalog problems.
    pub rule_index: Option<usize>,
    /// Name of the rule, when known.
    pub rule_name: String,
    /// Name of the catalog entry, for catalog problems.
    pub policy_name: String,
    /// The offending key, e.g. `match.volume_type`.
    pub key: String,
    /// JSON Pointer to the offending value.
    pub path: String,
    /// Human-readable reason.
    pub reason: String,
    /// 1-based line, when known; 0 otherwise.
    pub line: u32,
}

/// One rule as written in the document (document order).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Position in the document.
    pub index: usize,
    /// Rule name.
    pub name: String,
    /// Lower is checked first.
    pub priority: i32,
    /// The match object as written.
    pub match_object: Map<String, Value>,
    /// Policies a matching volume gets.
    pub policies: Vec<String>,
    /// Value for `auto_snapshot`; `None` keeps the volume's current value.
    pub auto_snapshot: Option<bool>,
    /// Retention count per policy.
    pub retention: BTreeMap<String, u32>,
}

/// A validated, compiled rules document.
#[derive(Debug, Clone)]
pub struct RuleSet {
    specs: Vec<RuleSpec>,
    policies: Vec<Policy>,
    /// Rules in evaluation order: ascending priority, ties in document order.
    compiled: Vec<CompiledRule>,
    /// Which of `compiled` a volume can match, by its values.
    index: RuleIndex,
}

/// The outcome of validating a document.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
    /// Rules in the document (as far as it parsed).
    pub rule_count: usize,
    /// Catalog entries in the document.
    pub policy_count: usize,
    /// `sha256:<hex>` of the document bytes.
    pub checksum: String,
    /// The compiled rules, when there are no problems.
    pub rule_set: Option<RuleSet>,
}

/// `sha256:` plus 64 lowercase hex digits of the document bytes.
pub fn checksum(document: &str) -> String {
    let digest = Sha256::digest(document.as_bytes());
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

impl RuleSet {
    /// The empty rule set in force before any was stored (document `[]`).
    pub fn empty() -> Self {
        Self { specs: Vec::new(), policies: Vec::new(), compiled: Vec::new(), index: RuleIndex::default() }
    }

    /// The rules in document order.
    pub fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    /// Catalog entries the document defines.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Whether a rule names `policy`.
    pub fn references(&self, policy: &str) -> bool {
        self.specs.iter().any(|r| r.policies.iter().any(|p| p == policy))
    }

    /// Returns the first rule in evaluation order that matches. With `explain`, checks every rule
    /// in turn and also returns a check per rule up to and including the match (all rules when
    /// none does); without, tests only the rules the index names for the volume's values.
    pub fn first_match(&self, volume: &Volume, explain: bool) -> (Option<&RuleSpec>, Vec<RuleCheck>) {
        if !explain {
            let matched = self.index.first_match(&self.compiled, volume);
            return (matched.map(|position| &self.specs[self.compiled[position].index]), Vec::new());
        }
        let mut checks = Vec::new();
        for rule in &self.compiled {
            let failure = rule.conditions.iter().find(|c| !c.holds(volume));
            let spec = &self.specs[rule.index];
            let (failed_key, reason) = match failure {
                Some(condition) => (condition.key(), condition.explain(volume)),
                None => (String::new(), String::new()),
            };
            checks.push(RuleCheck {
                rule_index: rule.index,
                rule_name: spec.name.clone(),
                priority: spec.priority,
                matched: failure.is_none(),
                failed_key,
                reason,
            });
            if failure.is_none() {
                return (Some(spec), checks);
            }
        }
        (None, checks)
    }
}

/// The result of checking one rule against a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCheck {
    /// 0-based document index.
    pub rule_index: usize,
    /// Rule name.
    pub rule_name: String,
    /// Rule priority.
    pub priority: i32,
    /// Whether every key held.
    pub matched: bool,
    /// First key that failed; empty when matched.
    pub failed_key: String,
    /// Why it failed, with the volume's value; empty when matched.
    pub reason: String,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    index: usize,
    conditions: Vec<Condition>,
}

impl CompiledRule {
    fn matches(&self, volume: &Volume) -> bool {
        self.conditions.iter().all(|c| c.holds(volume))
    }
}

/// Which volume fact a text key reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextField {
    ProjectName,
    ProjectId,
    DomainName,
    VolumeName,
    VolumeType,
    AvailabilityZone,
}

impl TextField {
    fn read(self, volume: &Volume) -> &str {
        match self {
            Self::ProjectName => &volume.project_name,
            Self::ProjectId => &volume.project_id,
            Self::DomainName => &volume.domain_name,
            // The seed matched "name or id": a volume without a name is known by its id.
            Self::VolumeName if volume.name.is_empty() => &volume.id,
            Self::VolumeName => &volume.name,
            Self::VolumeType => &volume.volume_type,
            Self::AvailabilityZone => &volume.availability_zone,
        }
    }
}

/// How a literal item of a text matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextMode {
    Equals,
    Prefix,
    Contains,
}

/// A compiled string condition: literals (a set for equality) and regexes; any item may match.
#[derive(Debug, Clone)]
struct TextMatcher {
    mode: TextMode,
    exact: HashSet<String>,
    literals: Vec<String>,
    regexes: Vec<Regex>,
}

impl TextMatcher {
    fn matches(&self, value: &str) -> bool {
        let literal = match self.mode {
            TextMode::Equals => self.exact.contains(value),
            TextMode::Prefix => self.literals.iter().any(|l| value.starts_with(l.as_str())),
            TextMode::Contains => self.literals.iter().any(|l| value.contains(l.as_str())),
        };
        literal || self.regexes.iter().any(|r| r.is_match(value))
    }

    /// "is not 'a'", "does not start with any of 'a', 'b'", "does not match /x/".
    fn miss(&self) -> String {
        let items: Vec<String> = self
            .literals
            .iter()
            .map(|l| format!("'{l}'"))
            .chain(self.regexes.iter().map(|r| format!("/{}/", r.as_str())))
            .collect();
        let regex_only = self.literals.is_empty();
        let verb = match (self.mode, regex_only) {
            (_, true) => "does not match",
            (TextMode::Equals, false) => "is not",
            (TextMode::Prefix, false) => "does not start with",
            (TextMode::Contains, false) => "does not contain",
        };
        if items.len() == 1 {
            format!("{verb} {}", items[0])
        } else {
            format!("{verb} any of {}", items.join(", "))
        }
    }
}

#[derive(Debug, Clone)]
enum Condition {
    Text { key: &'static str, field: TextField, matcher: TextMatcher },
    Size { key: &'static str, min: Option<i64>, max: Option<i64> },
    Bootable(bool),
    MetadataEquals { key: String, absent_ok: bool, matcher: Option<TextMatcher> },
    MetadataContains { key: String, matcher: TextMatcher },
}

impl Condition {
    fn holds(&self, volume: &Volume) -> bool {
        match self {
            Self::Text { field, matcher, .. } => matcher.matches(field.read(volume)),
            Self::Size { min, max, .. } => {
                min.is_none_or(|m| volume.size_gb >= m) && max.is_none_or(|m| volume.size_gb <= m)
            }
            Self::Bootable(wanted) => volume.bootable == *wanted,
            Self::MetadataEquals { key, absent_ok, matcher } => match volume.metadata.get(key) {
                None => *absent_ok,
                Some(value) => matcher.as_ref().is_some_and(|m| m.matches(value)),
            },
            Self::MetadataContains { key, matcher } => {
                matcher.matches(volume.metadata.get(key).map_or("", String::as_str))
            }
        }
    }

    fn key(&self) -> String {
        match self {
            Self::Text { key, .. } | Self::Size { key, .. } => (*key).to_owned(),
            Self::Bootable(_) => "bootable".to_owned(),
            Self::MetadataEquals { key, .. } => format!("metadata_equals.{key}"),
            Self::MetadataContains { key, .. } => format!("metadata_contains.{key}"),
        }
    }

    fn explain(&self, volume: &Volume) -> String {
        match self {
            Self::Text { key, field, matcher } => {
                format!("{key} '{}' {}", field.read(volume), matcher.miss())
            }
            Self::Size { key, min, max } => {
                let size = volume.size_gb;
                match (min, max) {
                    (Some(a), Some(b)) if a == b => format!("{key}: size {size} GiB is not {a}"),
                    (Some(a), _) if size < *a => format!("{key}: size {size} GiB is below {a}"),
                    (_, Some(b)) => format!("{key}: size {size} GiB is above {b}"),
                    _ => format!("{key}: size {size} GiB is out of range"),
                }
            }
            Self::Bootable(wanted) => format!("bootable is {}, not {wanted}", volume.bootable),
            Self::MetadataEquals { key, matcher, .. } => match (volume.metadata.get(key), matcher) {
                (None, _) => format!("metadata '{key}' is absent"),
                (Some(value), Some(m)) => format!("metadata '{key}' '{value}' {}", m.miss()),
                (Some(value), None) => format!("metadata '{key}' is '{value}', expected absent"),
            },
            Self::MetadataContains { key, matcher } => {
                let value = volume.metadata.get(key).map_or("", String::as_str);
                format!("metadata '{key}' '{value}' {}", matcher.miss())
            }
        }
    }
}

/// Where a problem sits: the rule or catalog entry and its JSON Pointer.
struct Site<'a> {
    rule_index: Option<usize>,
    rule_name: &'a str,
    policy_name: &'a str,
    pointer: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(
        &mut self,
        site: &Site<'_>,
        code: ProblemCode,
        key: &str,
        suffix: &str,
        reason: impl Into<String>,
    ) {
        self.0.push(Problem {
            code,
            rule_index: site.rule_index,
            rule_name: site.rule_name.to_owned(),
            policy_name: site.policy_name.to_owned(),
            key: key.to_owned(),
            path: format!("{}{suffix}", site.pointer),
            reason: reason.into(),
            line: 0,
        });
    }
}

/// Escapes one JSON Pointer reference token (RFC 6901).
fn token(text: &str) -> String {
    format!("/{}", text.replace('~', "~0").replace('/', "~1"))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The closest known key, for "did you mean" hints.
fn suggestion(unknown: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(unknown, k), *k))
        .filter(|(d, k)| *d <= 3 || k.starts_with(unknown) || unknown.starts_with(k))
        .min();
    best.map(|(_, k)| format!("; did you mean '{k}'?")).unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Validates and compiles a rules document. `stored` holds the catalog entries stored in the
/// database; policy names must resolve in the document's catalog, in `stored`, or as legacy names.
pub fn validate(document: &str, stored: &Catalog) -> Validation {
    let checksum = checksum(document);
    let mut problems = Problems::default();
    let root = Site { rule_index: None, rule_name: "", policy_name: "", pointer: String::new() };
    let parsed: Value = match serde_json::from_str(document) {
        Ok(value) => value,
        Err(err) => {
            let line = u32::try_from(err.line()).unwrap_or(0);
            problems.push(&root, ProblemCode::InvalidJson, "", "", format!("not valid JSON: {err}"));
            if let Some(problem) = problems.0.last_mut() {
                problem.line = line;
            }
            return Validation {
                problems: problems.0,
                rule_count: 0,
                policy_count: 0,
                checksum,
                rule_set: None,
            };
        }
    };
    let (rules_value, rules_pointer, policies_value) = match &parsed {
        Value::Array(_) => (Some(&parsed), String::new(), None),
        Value::Object(object) => {
            for key in object.keys().filter(|k| !DOCUMENT_KEYS.contains(&k.as_str())) {
                let hint = suggestion(key, &DOCUMENT_KEYS);
                problems.push(
                    &root,
                    ProblemCode::UnknownKey,
                    key,
                    &token(key),
                    format!("unknown key '{key}'{hint}"),
                );
            }
            if !object.contains_key("rules") {
                problems.push(
                    &root,
                    ProblemCode::InvalidJson,
                    "rules",
                    "",
                    "the object form needs a \"rules\" list",
                );
            }
            (object.get("rules"), "/rules".to_owned(), object.get("policies"))
        }
        other => {
            problems.push(
                &root,
                ProblemCode::InvalidJson,
                "",
                "",
                format!("expected a list of rules or an object with \"rules\", got {}", type_name(other)),
            );
            (None, String::new(), None)
        }
    };

    let document_policies = match policies_value {
        Some(Value::Object(entries)) => parse_catalog(entries, &mut problems),
        Some(other) => {
            problems.push(
                &root,
                ProblemCode::WrongType,
                "policies",
                "/policies",
                format!("\"policies\" must be an object of name to policy, got {}", type_name(other)),
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let policy_count = policies_value.and_then(Value::as_object).map_or(0, Map::len);
    // Names the document defines count as known even when their definition has problems, so one
    // bad entry does not also report every rule that uses it.
    let document_names: HashSet<&str> = policies_value
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let knows = |name: &str| document_names.contains(name) || stored.knows(name);

    let mut specs = Vec::new();
    let mut compiled = Vec::new();
    let mut rule_count = 0;
    match rules_value {
        Some(Value::Array(rules)) => {
            rule_count = rules.len();
            let mut names: HashMap<String, usize> = HashMap::new();
            for (index, rule) in rules.iter().enumerate() {
                let pointer = format!("{rules_pointer}/{index}");
                if let Some((spec, conditions)) =
                    parse_rule(index, rule, pointer, &knows, &mut problems, &mut names)
                {
                    compiled.push(CompiledRule { index, conditions });
                    specs.push(spec);
                }
            }
        }
        Some(other) => problems.push(
            &root,
            ProblemCode::WrongType,
            "rules",
            &rules_pointer,
            format!("rules must be a list, got {}", type_name(other)),
        ),
        None => {}
    }

    if !problems.0.is_empty() {
        return Validation { problems: problems.0, rule_count, policy_count, checksum, rule_set: None };
    }
    // Stable sort: equal priorities keep document order.
    compiled.sort_by_key(|rule| specs[rule.index].priority);
    let index = RuleIndex::new(&compiled);
    let rule_set = RuleSet { specs, policies: document_policies, compiled, index };
    Validation { problems: Vec::new(), rule_count, policy_count, checksum, rule_set: Some(rule_set) }
}

fn parse_rule(
    index: usize,
    rule: &Value,
    pointer: String,
    knows: &dyn Fn(&str) -> bool,
    problems: &mut Problems,
    names: &mut HashMap<String, usize>,
) -> Option<(RuleSpec, Vec<Condition>)> {
    let Value::Object(object) = rule else {
        let site = Site { rule_index: Some(index), rule_name: "", policy_name: "", pointer };
        problems.push(
            &site,
            ProblemCode::WrongType,
            "",
            "",
            format!("a rule must be an object, got {}", type_name(rule)),
        );
        return None;
    };
    let before = problems.0.len();
    let name = match object.get("name") {
        None | Some(Value::Null) => UNNAMED_RULE.to_owned(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => String::new(),
    };
    let site = Site { rule_index: Some(index), rule_name: &name, policy_name: "", pointer };
    match object.get("name") {
        Some(Value::String(text)) if text.trim().is_empty() => {
            problems.push(&site, ProblemCode::InvalidValue, "name", "/name", "rule name must not be empty");
        }
        Some(value @ (Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_))) => {
            problems.push(
                &site,
                ProblemCode::WrongType,
                "name",
                "/name",
                format!("name must be a string, got {}", type_name(value)),
            );
        }
        _ => {}
    }
    if !name.is_empty() {
        if let Some(first) = names.get(&name) {
            problems.push(
                &site,
                ProblemCode::DuplicateRuleName,
                "name",
                "/name",
                format!("rule name '{name}' is already used by rule {first}"),
            );
        } else {
            names.insert(name.clone(), index);
        }
    }
    for key in object.keys().filter(|k| !RULE_KEYS.contains(&k.as_str())) {
        let hint = suggestion(key, &RULE_KEYS);
        problems.push(
            &site,
            ProblemCode::UnknownKey,
            key,
            &token(key),
            format!("unknown rule key '{key}'{hint}"),
        );
    }

    let priority = match object.get("priority") {
        None | Some(Value::Null) => DEFAULT_PRIORITY,
        Some(Value::Number(n)) => match n.as_i64().map(i32::try_from) {
            Some(Ok(p)) => p,
            Some(Err(_)) => {
                problems.push(
                    &site,
                    ProblemCode::InvalidValue,
                    "priority",
                    "/priority",
                    format!("priority {n} is out of range"),
                );
                DEFAULT_PRIORITY
            }
            None => {
                problems.push(
                    &site,
                    ProblemCode::WrongType,
                    "priority",
                    "/priority",
                    format!("priority must be a whole number, got {n}"),
                );
                DEFAULT_PRIORITY
            }
        },
        Some(other) => {
            problems.push(
                &site,
                ProblemCode::WrongType,
                "priority",
                "/priority",
                format!("priority must be a whole number, got {}", type_name(other)),
            );
            DEFAULT_PRIORITY
        }
    };

    let auto_snapshot = match object.get("auto_snapshot") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            problems.push(
                &site,
                ProblemCode::WrongType,
                "auto_snapshot",
                "/auto_snapshot",
                format!("auto_snapshot must be true or false, got {}", compact(other)),
            );
            None
        }
    };

    let mut policies = Vec::new();
    match object.get("policies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let key = format!("policies[{i}]");
                let suffix = format!("/policies/{i}");
                let Value::String(policy) = item else {
                    let reason = format!("a policy name must be a string, got {}", type_name(item));
                    problems.push(&site, ProblemCode::WrongType, &key, &suffix, reason);
                    continue;
                };
                if let Err(reason) = catalog::check_name(policy) {
                    problems.push(&site, ProblemCode::InvalidValue, &key, &suffix, reason);
                } else if policies.contains(policy) {
                    problems.push(
                        &site,
                        ProblemCode::InvalidValue,
                        &key,
                        &suffix,
                        format!("policy '{policy}' is listed twice"),
                    );
                } else if !knows(policy) {
                    problems.push(
                        &site,
                        ProblemCode::UnknownPolicy,
                        &key,
                        &suffix,
                        format!("policy '{policy}' is neither in the catalog nor a legacy name (hourly_N, daily_N, weekly_N, monthly_1st, monthly_15th)"),
                    );
                }
                policies.push(policy.clone());
            }
        }
        Some(other) => problems.push(
            &site,
            ProblemCode::WrongType,
            "policies",
            "/policies",
            format!("policies must be a list of policy names, got {}", type_name(other)),
        ),
    }
    if auto_snapshot == Some(true)
        && policies.is_empty()
        && object.get("policies").is_none_or(Value::is_array)
    {
        problems.push(
            &site,
            ProblemCode::InvalidValue,
            "policies",
            "/policies",
            "auto_snapshot true needs at least one policy",
        );
    }

    let mut retention = BTreeMap::new();
    match object.get("retention") {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (policy, value) in entries {
                let key = format!("retention.{policy}");
                let suffix = format!("/retention{}", token(policy));
                if !policies.contains(policy) {
                    problems.push(
                        &site,
                        ProblemCode::InvalidValue,
                        &key,
                        &suffix,
                        format!("retention for '{policy}', which the rule's policies do not list"),
                    );
                }
                match value {
                    Value::Number(n) => match n.as_u64().and_then(|c| u32::try_from(c).ok()) {
                        Some(count) if (1..=catalog::MAX_RETENTION).contains(&count) => {
                            retention.insert(policy.clone(), count);
                        }
                        _ => problems.push(
                            &site,
                            ProblemCode::InvalidRetention,
                            &key,
                            &suffix,
                            format!(
                                "retention must be a whole number from 1 to {}, got {n}",
                                catalog::MAX_RETENTION
                            ),
                        ),
                    },
                    other => problems.push(
                        &site,
                        ProblemCode::WrongType,
                        &key,
                        &suffix,
                        format!("retention must be a number, got {}", compact(other)),
                    ),
                }
            }
        }
        Some(other) => problems.push(
            &site,
            ProblemCode::WrongType,
            "retention",
            "/retention",
            format!("retention must be an object of policy name to count, got {}", type_name(other)),
        ),
    }

    let mut conditions = Vec::new();
    let match_object = match object.get("match") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(matches)) => {
            conditions = compile_match(matches, &site, problems);
            matches.clone()
        }
        Some(other) => {
            problems.push(
                &site,
                ProblemCode::WrongType,
                "match",
                "/match",
                format!("match must be an object, got {}", type_name(other)),
            );
            Map::new()
        }
    };
    if problems.0.len() > before {
        return None;
    }
    let spec = RuleSpec { index, name, priority, match_object, policies, auto_snapshot, retention };
    Some((spec, conditions))
}

/// A short rendering of a JSON value for messages.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 { format!("{}...", &text[..text.floor_char_boundary(57)]) } else { text }
}

fn compile_match(matches: &Map<String, Value>, site: &Site<'_>, problems: &mut Problems) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for key in matches.keys().filter(|k| !MATCH_KEYS.contains(&k.as_str())) {
        let hint = suggestion(key, &MATCH_KEYS);
        let suffix = format!("/match{}", token(key));
        problems.push(
            site,
            ProblemCode::UnknownKey,
            &format!("match.{key}"),
            &suffix,
            format!("unknown match key '{key}'{hint}"),
        );
    }
    // Fixed order, so explanations name the same first failing key whatever the file order.
    for key in MATCH_KEYS {
        let Some(value) = matches.get(key) else { continue };
        let at = MatchSite { site, key, suffix: format!("/match/{key}") };
        let condition = match key {
            "tenant_name" => text_condition(&at, value, TextField::ProjectName, TextMode::Equals, problems),
            "project_id" => text_condition(&at, value, TextField::ProjectId, TextMode::Equals, problems),
            "domain_name" => text_condition(&at, value, TextField::DomainName, TextMode::Equals, problems),
            "volume_name" => text_condition(&at, value, TextField::VolumeName, TextMode::Equals, problems),
            "volume_name_prefix" => {
                text_condition(&at, value, TextField::VolumeName, TextMode::Prefix, problems)
            }
            "volume_name_contains" => {
                text_condition(&at, value, TextField::VolumeName, TextMode::Contains, problems)
            }
            "volume_type" => text_condition(&at, value, TextField::VolumeType, TextMode::Equals, problems),
            "availability_zone" => {
                text_condition(&at, value, TextField::AvailabilityZone, TextMode::Equals, problems)
            }
            "size_gb" => size_condition(&at, value, problems),
            "min_size_gb" => {
                bound(&at, value, problems).map(|m| Condition::Size { key, min: Some(m), max: None })
            }
            "max_size_gb" => {
                bound(&at, value, problems).map(|m| Condition::Size { key, min: None, max: Some(m) })
            }
            "bootable" => match value {
                Value::Bool(b) => Some(Condition::Bootable(*b)),
                other => {
                    at.problem(
                        problems,
                        ProblemCode::WrongType,
                        &format!("bootable must be true or false, got {}", compact(other)),
                    );
                    None
                }
            },
            "metadata_equals" | "metadata_contains" => {
                conditions.extend(metadata_conditions(&at, value, problems, key == "metadata_equals"));
                None
            }
            _ => None,
        };
        conditions.extend(condition);
    }
    conditions
}

/// A match key being compiled, for problem reports.
struct MatchSite<'a> {
    site: &'a Site<'a>,
    key: &'static str,
    suffix: String,
}

impl MatchSite<'_> {
    fn problem(&self, problems: &mut Problems, code: ProblemCode, reason: &str) {
        problems.push(
            self.site,
            code,
            &format!("match.{}", self.key),
            &self.suffix,
            format!("{}: {reason}", self.key),
        );
    }

    fn nested(
        &self,
        problems: &mut Problems,
        code: ProblemCode,
        sub_key: &str,
        sub_suffix: &str,
        reason: &str,
    ) {
        problems.push(
            self.site,
            code,
            &format!("match.{}{sub_key}", self.key),
            &format!("{}{sub_suffix}", self.suffix),
            format!("{}{sub_key}: {reason}", self.key),
        );
    }
}

fn text_condition(
    at: &MatchSite<'_>,
    value: &Value,
    field: TextField,
    mode: TextMode,
    problems: &mut Problems,
) -> Option<Condition> {
    let matcher = text_matcher(at, value, mode, problems, "", "", false)?;
    Some(Condition::Text { key: at.key, field, matcher })
}

/// Compiles a string, a list of strings and regexes, or `{"regex": ...}`. With `scalars`, numbers
/// and booleans count as their text (metadata values are text; the seed compared `str(v)`).
fn text_matcher(
    at: &MatchSite<'_>,
    value: &Value,
    mode: TextMode,
    problems: &mut Problems,
    sub_key: &str,
    sub_suffix: &str,
    scalars: bool,
) -> Option<TextMatcher> {
    let mut matcher = TextMatcher { mode, exact: HashSet::new(), literals: Vec::new(), regexes: Vec::new() };
    let items: Vec<(String, &Value)> = match value {
        Value::Array(list) if list.is_empty() => {
            at.nested(
                problems,
                ProblemCode::InvalidValue,
                sub_key,
                sub_suffix,
                "an empty list matches nothing",
            );
            return None;
        }
        Value::Array(list) => list.iter().enumerate().map(|(i, v)| (format!("/{i}"), v)).collect(),
        other => vec![(String::new(), other)],
    };
    let mut ok = true;
    for (item_suffix, item) in items {
        let suffix = format!("{sub_suffix}{item_suffix}");
        match item {
            Value::String(text) => matcher.literals.push(text.clone()),
            Value::Number(n) if scalars => matcher.literals.push(n.to_string()),
            Value::Bool(b) if scalars => matcher.literals.push(b.to_string()),
            Value::Object(object) if object.len() == 1 && object.contains_key("regex") => {
                let pattern = &object["regex"];
                let Value::String(pattern) = pattern else {
                    let reason = format!("regex must be a string, got {}", type_name(pattern));
                    at.nested(problems, ProblemCode::WrongType, sub_key, &format!("{suffix}/regex"), &reason);
                    ok = false;
                    continue;
                };
                match Regex::new(pattern) {
                    Ok(regex) => matcher.regexes.push(regex),
                    Err(err) => {
                        let reason = format!("bad regex {pattern:?}: {}", first_line(&err.to_string()));
                        at.nested(
                            problems,
                            ProblemCode::BadRegex,
                            sub_key,
                            &format!("{suffix}/regex"),
                            &reason,
                        );
                        ok = false;
                    }
                }
            }
            other => {
                let expected = if scalars {
                    "a string, a number, true/false, a list of them or {\"regex\": \"...\"}"
                } else {
                    "a string, a list of strings or {\"regex\": \"...\"}"
                };
                at.nested(
                    problems,
                    ProblemCode::WrongType,
                    sub_key,
                    &suffix,
                    &format!("expected {expected}, got {}", compact(other)),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    if mode == TextMode::Equals {
        matcher.exact = matcher.literals.iter().cloned().collect();
    }
    Some(matcher)
}

fn first_line(text: &str) -> String {
    text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(text).trim().to_owned()
}

fn bound(at: &MatchSite<'_>, value: &Value, problems: &mut Problems) -> Option<i64> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(size) if size >= 0 => Some(size),
            _ => {
                at.problem(
                    problems,
                    ProblemCode::InvalidValue,
                    &format!("size must be a whole number of GiB >= 0, got {n}"),
                );
                None
            }
        },
        other => {
            at.problem(
                problems,
                ProblemCode::WrongType,
                &format!("expected a number of GiB, got {}", compact(other)),
            );
            None
        }
    }
}

fn size_condition(at: &MatchSite<'_>, value: &Value, problems: &mut Problems) -> Option<Condition> {
    let key = at.key;
    let Value::Object(range) = value else {
        let size = bound(at, value, problems)?;
        return Some(Condition::Size { key, min: Some(size), max: Some(size) });
    };
    let mut ok = true;
    for unknown in range.keys().filter(|k| !["min", "max"].contains(&k.as_str())) {
        at.nested(
            problems,
            ProblemCode::UnknownKey,
            &format!(".{unknown}"),
            &token(unknown),
            "only min and max are allowed",
        );
        ok = false;
    }
    let mut read = |name: &str| -> Option<i64> {
        let value = range.get(name)?;
        let parsed = match value {
            Value::Number(n) => n.as_i64().filter(|s| *s >= 0),
            _ => None,
        };
        if parsed.is_none() {
            let reason = format!("expected a whole number of GiB >= 0, got {}", compact(value));
            at.nested(problems, ProblemCode::WrongType, &format!(".{name}"), &format!("/{name}"), &reason);
            ok = false;
        }
        parsed
    };
    let (min, max) = (read("min"), read("max"));
    if !ok {
        return None;
    }
    match (min, max) {
        (None, None) => {
            at.problem(problems, ProblemCode::InvalidValue, "a size range needs min, max or both");
            None
        }
        (Some(a), Some(b)) if a > b => {
            at.problem(problems, ProblemCode::InvalidValue, &format!("min {a} is above max {b}"));
            None
        }
        _ => Some(Condition::Size { key, min, max }),
    }
}

/// One condition per metadata key, checked in key order.
fn metadata_conditions(
    at: &MatchSite<'_>,
    value: &Value,
    problems: &mut Problems,
    equals: bool,
) -> Vec<Condition> {
    let Value::Object(entries) = value else {
        at.problem(
            problems,
            ProblemCode::WrongType,
            &format!("expected an object of metadata key to value, got {}", type_name(value)),
        );
        return Vec::new();
    };
    let mut parts = Vec::new();
    let mut ok = true;
    for (meta_key, expected) in entries {
        let sub_key = format!(".{meta_key}");
        let sub_suffix = token(meta_key);
        if equals {
            let (absent_ok, matcher) = match expected {
                Value::Null => (true, None),
                Value::Array(items) if items.iter().any(Value::is_null) => {
                    let rest: Vec<Value> = items.iter().filter(|v| !v.is_null()).cloned().collect();
                    if rest.is_empty() {
                        (true, None)
                    } else {
                        let m = text_matcher(
                            at,
                            &Value::Array(rest),
                            TextMode::Equals,
                            problems,
                            &sub_key,
                            &sub_suffix,
                            true,
                        );
                        ok &= m.is_some();
                        (true, m)
                    }
                }
                other => {
                    let m = text_matcher(at, other, TextMode::Equals, problems, &sub_key, &sub_suffix, true);
                    ok &= m.is_some();
                    (false, m)
                }
            };
            parts.push(Condition::MetadataEquals { key: meta_key.clone(), absent_ok, matcher });
        } else if let Some(matcher) =
            text_matcher(at, expected, TextMode::Contains, problems, &sub_key, &sub_suffix, false)
        {
            parts.push(Condition::MetadataContains { key: meta_key.clone(), matcher });
        } else {
            ok = false;
        }
    }
    if !ok {
        return Vec::new();
    }
    parts
}

fn parse_catalog(entries: &Map<String, Value>, problems: &mut Problems) -> Vec<Policy> {
    let mut policies = Vec::new();
    for (name, entry) in entries {
        let site = Site {
            rule_index: None,
            rule_name: "",
            policy_name: name,
            pointer: format!("/policies{}", token(name)),
        };
        if let Some(policy) = parse_policy(name, entry, &site, problems) {
            policies.push(policy);
        }
    }
    policies
}

fn parse_policy(name: &str, entry: &Value, site: &Site<'_>, problems: &mut Problems) -> Option<Policy> {
    let before = problems.0.len();
    if let Err(reason) = catalog::check_name(name) {
        problems.push(site, ProblemCode::InvalidValue, "name", "", reason);
    }
    let Value::Object(fields) = entry else {
        problems.push(
            site,
            ProblemCode::WrongType,
            "",
            "",
            format!("a policy must be an object, got {}", type_name(entry)),
        );
        return None;
    };
    for key in fields.keys().filter(|k| !POLICY_KEYS.contains(&k.as_str())) {
        let hint = suggestion(key, &POLICY_KEYS);
        problems.push(
            site,
            ProblemCode::UnknownKey,
            key,
            &token(key),
            format!("unknown policy key '{key}'{hint}"),
        );
    }
    let description = match fields.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => {
            problems.push(
                site,
                ProblemCode::WrongType,
                "description",
                "/description",
                format!("description must be a string, got {}", type_name(other)),
            );
            String::new()
        }
    };
    let schedule = match fields.get("schedule") {
        Some(Value::Object(schedule)) => parse_schedule(schedule, site, problems),
        Some(other) => {
            problems.push(
                site,
                ProblemCode::WrongType,
                "schedule",
                "/schedule",
                format!("schedule must be an object, got {}", type_name(other)),
            );
            None
        }
        None => {
            problems.push(site, ProblemCode::InvalidSchedule, "schedule", "/schedule", "schedule is required: {\"cron\": \"0 2 * * *\", \"time_zone\": \"UTC\"} or {\"interval\": \"6h\"}");
            None
        }
    };
    let retention = match fields.get("retention") {
        Some(Value::Object(retention)) => parse_retention(retention, site, problems),
        Some(other) => {
            problems.push(
                site,
                ProblemCode::WrongType,
                "retention",
                "/retention",
                format!("retention must be an object with count, got {}", type_name(other)),
            );
            None
        }
        None => {
            problems.push(
                site,
                ProblemCode::InvalidRetention,
                "retention.count",
                "/retention",
                "retention with a count is required",
            );
            None
        }
    };
    let compliance_grace = match fields.get("compliance_grace") {
        None | Some(Value::Null) => catalog::DEFAULT_GRACE,
        Some(value) => match duration_value(value).and_then(|g| catalog::check_grace(g).map(|()| g)) {
            Ok(grace) => grace,
            Err(reason) => {
                problems.push(
                    site,
                    ProblemCode::InvalidValue,
                    "compliance_grace",
                    "/compliance_grace",
                    reason,
                );
                catalog::DEFAULT_GRACE
            }
        },
    };
    if problems.0.len() > before {
        return None;
    }
    Some(Policy {
        name: name.to_owned(),
        description,
        schedule: schedule?,
        retention: retention?,
        compliance_grace,
        source: PolicySource::RulesFile,
        stamp: None,
    })
}

/// A duration as text ("6h", "1d12h") or a number of seconds.
fn duration_value(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(text) => schedule::parse_duration(text).map_err(|e| e.to_string()),
        Value::Number(n) => n
            .as_i64()
            .and_then(Duration::try_seconds)
            .ok_or_else(|| format!("{n} is not a whole number of seconds")),
        other => Err(format!(
            "expected a duration such as \"6h\" or a number of seconds, got {}",
            type_name(other)
        )),
    }
}

fn parse_schedule(fields: &Map<String, Value>, site: &Site<'_>, problems: &mut Problems) -> Option<Schedule> {
    for key in fields.keys().filter(|k| !["cron", "time_zone", "interval", "anchor"].contains(&k.as_str())) {
        problems.push(
            site,
            ProblemCode::UnknownKey,
            &format!("schedule.{key}"),
            &format!("/schedule{}", token(key)),
            format!("unknown schedule key '{key}'"),
        );
    }
    let text = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(other) => Err(format!("{key} must be a string, got {}", type_name(other))),
    };
    match (fields.get("cron"), fields.get("interval")) {
        (Some(_), Some(_)) | (None, None) => {
            problems.push(
                site,
                ProblemCode::InvalidSchedule,
                "schedule",
                "/schedule",
                "a schedule needs exactly one of cron or interval",
            );
            None
        }
        (Some(_), None) => {
            if fields.contains_key("anchor") {
                problems.push(
                    site,
                    ProblemCode::InvalidSchedule,
                    "schedule.anchor",
                    "/schedule/anchor",
                    "anchor belongs to an interval schedule",
                );
            }
            let (expression, zone) = match (text("cron"), text("time_zone")) {
                (Ok(Some(expression)), Ok(zone)) => (expression, zone.unwrap_or("")),
                (Err(reason), _) | (_, Err(reason)) => {
                    problems.push(site, ProblemCode::WrongType, "schedule", "/schedule", reason);
                    return None;
                }
                (Ok(None), _) => return None,
            };
            Schedule::cron(expression, zone).map_err(|e| schedule_problem(&e, site, problems)).ok()
        }
        (None, Some(every)) => {
            if fields.contains_key("time_zone") {
                problems.push(
                    site,
                    ProblemCode::InvalidSchedule,
                    "schedule.time_zone",
                    "/schedule/time_zone",
                    "time_zone belongs to a cron schedule",
                );
            }
            let every = match duration_value(every) {
                Ok(every) => every,
                Err(reason) => {
                    problems.push(
                        site,
                        ProblemCode::InvalidSchedule,
                        "schedule.interval",
                        "/schedule/interval",
                        reason,
                    );
                    return None;
                }
            };
            let anchor = match text("anchor") {
                Ok(None) => None,
                Ok(Some(anchor)) => match DateTime::parse_from_rfc3339(anchor) {
                    Ok(anchor) => Some(anchor.with_timezone(&Utc)),
                    Err(err) => {
                        problems.push(
                            site,
                            ProblemCode::InvalidValue,
                            "schedule.anchor",
                            "/schedule/anchor",
                            format!("anchor must be an RFC 3339 time: {err}"),
                        );
                        return None;
                    }
                },
                Err(reason) => {
                    problems.push(
                        site,
                        ProblemCode::WrongType,
                        "schedule.anchor",
                        "/schedule/anchor",
                        reason,
                    );
                    return None;
                }
            };
            Schedule::interval(every, anchor).map_err(|e| schedule_problem(&e, site, problems)).ok()
        }
    }
}

fn schedule_problem(err: &ScheduleError, site: &Site<'_>, problems: &mut Problems) {
    let (code, key, suffix) = match err {
        ScheduleError::Cron { .. } => (ProblemCode::InvalidSchedule, "schedule.cron", "/schedule/cron"),
        ScheduleError::TimeZone(_) => {
            (ProblemCode::InvalidTimeZone, "schedule.time_zone", "/schedule/time_zone")
        }
        ScheduleError::Interval(_) => {
            (ProblemCode::InvalidSchedule, "schedule.interval", "/schedule/interval")
        }
    };
    problems.push(site, code, key, suffix, err.to_string());
}

fn parse_retention(
    fields: &Map<String, Value>,
    site: &Site<'_>,
    problems: &mut Problems,
) -> Option<Retention> {
    for key in fields.keys().filter(|k| !["count", "max_age"].contains(&k.as_str())) {
        problems.push(
            site,
            ProblemCode::UnknownKey,
            &format!("retention.{key}"),
            &format!("/retention{}", token(key)),
            format!("unknown retention key '{key}'"),
        );
    }
    let count = match fields.get("count") {
        Some(Value::Number(n)) => n.as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
        Some(other) => {
            problems.push(
                site,
                ProblemCode::WrongType,
                "retention.count",
                "/retention/count",
                format!("count must be a number, got {}", type_name(other)),
            );
            return None;
        }
        None => 0,
    };
    let max_age = match fields.get("max_age") {
        None | Some(Value::Null) => None,
        Some(value) => match duration_value(value) {
            Ok(age) => Some(age),
            Err(reason) => {
                problems.push(
                    site,
                    ProblemCode::InvalidRetention,
                    "retention.max_age",
                    "/retention/max_age",
                    reason,
                );
                return None;
            }
        },
    };
    let retention = Retention { count, max_age };
    if let Err(reason) = catalog::check_retention(retention) {
        let (key, suffix) = if count == 0 || count > catalog::MAX_RETENTION {
            ("retention.count", "/retention/count")
        } else {
            ("retention.max_age", "/retention/max_age")
        };
        problems.push(site, ProblemCode::InvalidRetention, key, suffix, reason);
        return None;
    }
    Some(retention)
}
