//! The `PolicyService` gRPC API: validates each request (errors name the field), calls the domain
//! and the store, and maps errors through `service_kit::ServiceError`. The Cinder-backed calls
//! (Evaluate by volume id, PlanAssignment, ApplyAssignment, ListAssignments with Cinder metadata)
//! go through the [`Assigner`] and its cloud access; without one they answer `Unavailable`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use service_kit::clock::Clock;
use sha2::{Digest, Sha256};
use snapkeeper_proto::policy::v1 as pb;
use snapkeeper_proto::policy::v1::policy_service_server::PolicyService;
use snapkeeper_proto::prost_types;
use snapkeeper_proto::tonic::{Request, Response, Status};

use crate::PolicyError;
use crate::active_rules::{ActiveRules, LoadedRules, Replacement};
use crate::assignment::{self, Assigner, Event, Job, Outcome, Phase, Scope};
use crate::catalog::{self, Catalog, Policy, PolicySource, Retention};
use crate::decision::{self, Decision, DecisionSource, Overrides, RetentionSource, Volume};
use crate::metadata::{self, ChangeKind};
use crate::rules::{MAX_DOCUMENT_BYTES, Problem, ProblemCode, RuleCheck, RuleSpec};
use crate::schedule::Schedule;
use crate::store::{
    AssignmentFilter, AssignmentRecord, ExclusionFilter, ExclusionRecord, ExclusionSelector, PolicySetFilter,
    PolicySetRecord, RuleSetSource, RuleSetVersion,
};

/// Longest actor accepted.
const MAX_ACTOR: usize = 255;
/// Longest free-text field accepted.
const MAX_TEXT: usize = 1024;
/// Default and largest page sizes.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// Most volumes per EvaluateVolumes call.
const MAX_BULK: usize = 1000;

/// Most ids per list of a volume scope.
const MAX_SCOPE_IDS: usize = 1000;
/// Messages a plan or apply stream buffers before the run waits for the client.
const STREAM_BUFFER: usize = 256;

/// The gRPC face of policy-svc.
#[derive(Debug, Clone)]
pub struct PolicyApi {
    active: Arc<ActiveRules>,
    clock: Arc<dyn Clock>,
    assigner: Option<Arc<Assigner>>,
}

impl PolicyApi {
    /// An API over the active rules (and their store), telling time with `clock`.
    pub fn new(active: Arc<ActiveRules>, clock: Arc<dyn Clock>) -> Self {
        Self { active, clock, assigner: None }
    }

    /// The same API with cloud access: Evaluate by volume id, plans, applies and metadata rows.
    pub fn with_assigner(mut self, assigner: Arc<Assigner>) -> Self {
        self.assigner = Some(assigner);
        self
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn invalid(field: &str, reason: impl Into<String>) -> Status {
    PolicyError::invalid(field, reason).into()
}

fn require_actor(actor: &str) -> Result<(), Status> {
    if actor.trim().is_empty() {
        return Err(invalid("actor", "required"));
    }
    if actor.chars().count() > MAX_ACTOR {
        return Err(invalid("actor", format!("at most {MAX_ACTOR} characters")));
    }
    Ok(())
}

/// Refuses any present filter value that no stored id or name could equal.
fn check_filters(fields: &[(&str, Option<&String>)]) -> Result<(), Status> {
    for (field, value) in fields {
        if let Some(value) = value {
            service_kit::error::check_short_text(field, value)?;
        }
    }
    Ok(())
}

fn check_document(document: &str) -> Result<(), Status> {
    if document.trim().is_empty() {
        return Err(invalid("document", "required"));
    }
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid("document", "larger than 1 MiB"));
    }
    Ok(())
}

// ---- time and paging ----

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    let nanos = u32::try_from(t.nanos).map_err(|_| invalid(field, "nanos must not be negative"))?;
    DateTime::from_timestamp(t.seconds, nanos).ok_or_else(|| invalid(field, "timestamp out of range"))
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.num_seconds(), nanos: d.subsec_nanos() }
}

fn from_duration(field: &str, d: &prost_types::Duration) -> Result<Duration, Status> {
    if d.nanos != 0 && (d.nanos < 0) != (d.seconds < 0) && d.seconds != 0 {
        return Err(invalid(field, "seconds and nanos must have the same sign"));
    }
    Duration::try_seconds(d.seconds)
        .and_then(|s| s.checked_add(&Duration::nanoseconds(i64::from(d.nanos))))
        .ok_or_else(|| invalid(field, "duration out of range"))
}

/// Page size per the contract: default 100, at most 1000, never negative.
fn page_size(size: i32) -> Result<i64, Status> {
    match size {
        n if n < 0 => Err(invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE),
        n => Ok(i64::from(n).min(MAX_PAGE)),
    }
}

/// A fingerprint of a list request's filters, so a token is refused when they change.
fn fingerprint(filters: &str) -> String {
    let digest = Sha256::digest(filters.as_bytes());
    let mut out = String::with_capacity(12);
    for byte in digest.iter().take(6) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn decode_token(token: &str, filters: &str) -> Result<i64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    let malformed = || invalid("page_token", "malformed, or the filters changed between pages");
    let (offset, print) = token.split_once('.').ok_or_else(malformed)?;
    if print != fingerprint(filters) {
        return Err(malformed());
    }
    offset.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(malformed)
}

fn next_token(offset: i64, returned: usize, total: i64, filters: &str) -> String {
    let next = offset + i64::try_from(returned).unwrap_or(0);
    if returned == 0 || next >= total { String::new() } else { format!("{next}.{}", fingerprint(filters)) }
}

// ---- conversions: rules ----

fn problem_code(code: ProblemCode) -> pb::ProblemCode {
    match code {
        ProblemCode::InvalidJson => pb::ProblemCode::InvalidJson,
        ProblemCode::UnknownKey => pb::ProblemCode::UnknownKey,
        ProblemCode::WrongType => pb::ProblemCode::WrongType,
        ProblemCode::BadRegex => pb::ProblemCode::BadRegex,
        ProblemCode::InvalidRetention => pb::ProblemCode::InvalidRetention,
        ProblemCode::UnknownPolicy => pb::ProblemCode::UnknownPolicy,
        ProblemCode::DuplicateRuleName => pb::ProblemCode::DuplicateRuleName,
        ProblemCode::InvalidSchedule => pb::ProblemCode::InvalidSchedule,
        ProblemCode::InvalidTimeZone => pb::ProblemCode::InvalidTimeZone,
        ProblemCode::InvalidValue => pb::ProblemCode::InvalidValue,
    }
}

fn problem(p: Problem) -> pb::RuleProblem {
    pb::RuleProblem {
        code: problem_code(p.code).into(),
        rule_index: p.rule_index.and_then(|i| i32::try_from(i).ok()),
        rule_name: p.rule_name,
        policy_name: p.policy_name,
        key: p.key,
        path: p.path,
        reason: p.reason,
        line: i32::try_from(p.line).unwrap_or(0),
    }
}

fn struct_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.iter().map(struct_value).collect() })
        }
        serde_json::Value::Object(map) => Kind::StructValue(prost_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn prost_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: map.iter().map(|(k, v)| (k.clone(), struct_value(v))).collect() }
}

fn rule(spec: &RuleSpec) -> pb::Rule {
    pb::Rule {
        index: i32::try_from(spec.index).unwrap_or(i32::MAX),
        name: spec.name.clone(),
        priority: spec.priority,
        r#match: Some(prost_struct(&spec.match_object)),
        policies: spec.policies.clone(),
        auto_snapshot: spec.auto_snapshot,
        retention: spec
            .retention
            .iter()
            .map(|(k, v)| (k.clone(), i32::try_from(*v).unwrap_or(i32::MAX)))
            .collect(),
    }
}

fn version(v: &RuleSetVersion) -> pb::RuleSetVersion {
    pb::RuleSetVersion {
        version: v.version,
        checksum: v.checksum.clone(),
        created_at: Some(timestamp(v.created_at)),
        created_by: v.created_by.clone(),
        source: match v.source {
            RuleSetSource::Api => pb::RuleSetSource::Api,
            RuleSetSource::File => pb::RuleSetSource::File,
        }
        .into(),
        comment: v.comment.clone(),
        rule_count: i32::try_from(v.rule_count).unwrap_or(i32::MAX),
        policy_count: i32::try_from(v.policy_count).unwrap_or(i32::MAX),
        active: v.active,
    }
}

fn empty_version(document: &str) -> pb::RuleSetVersion {
    pb::RuleSetVersion { version: 0, checksum: crate::rules::checksum(document), ..Default::default() }
}

// ---- conversions: policies ----

fn policy_out(p: &Policy) -> pb::Policy {
    let schedule = match &p.schedule {
        Schedule::Cron(cron) => pb::schedule::Kind::Cron(pb::CronSchedule {
            expression: cron.expression().to_owned(),
            time_zone: cron.zone().name().to_owned(),
        }),
        Schedule::Interval { every, anchor } => pb::schedule::Kind::Interval(pb::IntervalSchedule {
            every: Some(duration(*every)),
            anchor: Some(timestamp(*anchor)),
        }),
    };
    pb::Policy {
        name: p.name.clone(),
        description: p.description.clone(),
        schedule: Some(pb::Schedule { kind: Some(schedule) }),
        retention: Some(pb::Retention {
            count: i32::try_from(p.retention.count).unwrap_or(i32::MAX),
            max_age: p.retention.max_age.map(duration),
        }),
        compliance_grace: Some(duration(p.compliance_grace)),
        source: match p.source {
            PolicySource::Catalog => pb::PolicySource::Catalog,
            PolicySource::RulesFile => pb::PolicySource::RulesFile,
            PolicySource::LegacyName => pb::PolicySource::LegacyName,
        }
        .into(),
        cadence: cadence(p),
        created_at: p.stamp.as_ref().map(|s| timestamp(s.created_at)),
        updated_at: p.stamp.as_ref().map(|s| timestamp(s.updated_at)),
        updated_by: p.stamp.as_ref().map(|s| s.updated_by.clone()).unwrap_or_default(),
    }
}

/// "daily at 00:00 UTC" for the legacy shapes, the schedule's own description otherwise.
fn cadence(p: &Policy) -> String {
    if let Schedule::Cron(cron) = &p.schedule
        && cron.zone() == chrono_tz::Tz::UTC
    {
        match cron.expression() {
            "0 * * * *" => return "hourly at minute 0 UTC".to_owned(),
            "0 0 * * *" => return "daily at 00:00 UTC".to_owned(),
            "0 0 * * 0" => return "weekly on Sunday at 00:00 UTC".to_owned(),
            "0 0 1 * *" => return "monthly on day 1 at 00:00 UTC".to_owned(),
            "0 0 15 * *" => return "monthly on day 15 at 00:00 UTC".to_owned(),
            _ => {}
        }
    }
    p.schedule.cadence()
}

/// Validates a policy from a request; `field` prefixes field names (e.g. "policy").
fn policy_in(field: &str, p: &pb::Policy, require_name: bool) -> Result<Policy, Status> {
    let at = |name: &str| format!("{field}.{name}");
    if require_name || !p.name.is_empty() {
        catalog::check_name(&p.name).map_err(|reason| invalid(&at("name"), reason))?;
    }
    if p.description.chars().count() > MAX_TEXT {
        return Err(invalid(&at("description"), format!("at most {MAX_TEXT} characters")));
    }
    let schedule = match p.schedule.as_ref().and_then(|s| s.kind.as_ref()) {
        None => return Err(invalid(&at("schedule"), "required: cron or interval")),
        Some(pb::schedule::Kind::Cron(cron)) => {
            Schedule::cron(&cron.expression, &cron.time_zone).map_err(|e| {
                let name = if matches!(e, crate::schedule::ScheduleError::TimeZone(_)) {
                    "schedule.cron.time_zone"
                } else {
                    "schedule.cron.expression"
                };
                invalid(&at(name), e.to_string())
            })?
        }
        Some(pb::schedule::Kind::Interval(interval)) => {
            let every = interval
                .every
                .as_ref()
                .ok_or_else(|| invalid(&at("schedule.interval.every"), "required"))
                .and_then(|d| from_duration(&at("schedule.interval.every"), d))?;
            let anchor = interval
                .anchor
                .as_ref()
                .map(|t| from_timestamp(&at("schedule.interval.anchor"), t))
                .transpose()?;
            Schedule::interval(every, anchor)
                .map_err(|e| invalid(&at("schedule.interval.every"), e.to_string()))?
        }
    };
    let retention = p.retention.as_ref().ok_or_else(|| invalid(&at("retention"), "required"))?;
    let count = u32::try_from(retention.count).unwrap_or(0);
    let max_age =
        retention.max_age.as_ref().map(|d| from_duration(&at("retention.max_age"), d)).transpose()?;
    let retention = Retention { count, max_age };
    catalog::check_retention(retention).map_err(|reason| {
        let name = if count == 0 || count > catalog::MAX_RETENTION {
            "retention.count"
        } else {
            "retention.max_age"
        };
        invalid(&at(name), reason)
    })?;
    let grace = match &p.compliance_grace {
        Some(d) => from_duration(&at("compliance_grace"), d)?,
        None => catalog::DEFAULT_GRACE,
    };
    catalog::check_grace(grace).map_err(|reason| invalid(&at("compliance_grace"), reason))?;
    Ok(Policy {
        name: p.name.clone(),
        description: p.description.clone(),
        schedule,
        retention,
        compliance_grace: grace,
        source: PolicySource::Catalog,
        stamp: None,
    })
}

// ---- conversions: sets, assignments, exclusions ----

fn retention_map_in(
    field: &str,
    map: &std::collections::HashMap<String, i32>,
) -> Result<BTreeMap<String, u32>, Status> {
    let mut out = BTreeMap::new();
    for (name, count) in map {
        match u32::try_from(*count) {
            Ok(c) if (1..=catalog::MAX_RETENTION).contains(&c) => {
                out.insert(name.clone(), c);
            }
            _ => {
                return Err(invalid(
                    &format!("{field}.{name}"),
                    format!("must be 1 to {}", catalog::MAX_RETENTION),
                ));
            }
        }
    }
    Ok(out)
}

fn retention_map_out(map: &BTreeMap<String, u32>) -> std::collections::HashMap<String, i32> {
    map.iter().map(|(k, v)| (k.clone(), i32::try_from(*v).unwrap_or(i32::MAX))).collect()
}

/// Checks a policy list: names valid, known, no duplicates.
fn check_policies(field: &str, names: &[String], known: &Catalog) -> Result<(), Status> {
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{field}[{i}]");
        catalog::check_name(name).map_err(|reason| invalid(&at, reason))?;
        if !seen.insert(name) {
            return Err(invalid(&at, format!("policy '{name}' is listed twice")));
        }
        if !known.knows(name) {
            return Err(invalid(&at, format!("policy '{name}' is neither in the catalog nor a legacy name")));
        }
    }
    Ok(())
}

fn set_out(s: &PolicySetRecord) -> pb::PolicySet {
    pb::PolicySet {
        id: s.id,
        name: s.name.clone(),
        description: s.description.clone(),
        is_global: s.is_global,
        tenant_id: s.tenant_id.clone(),
        tenant_name: s.tenant_name.clone(),
        policies: s.policies.clone(),
        retention_map: retention_map_out(&s.retention_map),
        priority: s.priority,
        is_active: s.is_active,
        created_at: s.created_at.map(timestamp),
        created_by: s.created_by.clone(),
        updated_at: s.updated_at.map(timestamp),
        updated_by: s.updated_by.clone(),
    }
}

fn check_set(s: &PolicySetRecord, known: &Catalog) -> Result<(), Status> {
    if s.name.trim().is_empty() || s.name.chars().count() > 255 {
        return Err(invalid("policy_set.name", "must be 1 to 255 characters"));
    }
    if s.is_global && !s.tenant_id.is_empty() {
        return Err(invalid("policy_set.tenant_id", "must be empty for a global set"));
    }
    if !s.is_global && s.tenant_id.is_empty() {
        return Err(invalid("policy_set.tenant_id", "required when is_global is false"));
    }
    if s.policies.is_empty() {
        return Err(invalid("policy_set.policies", "at least one policy is required"));
    }
    check_policies("policy_set.policies", &s.policies, known)?;
    let keys: HashSet<&String> = s.retention_map.keys().collect();
    let names: HashSet<&String> = s.policies.iter().collect();
    if keys != names {
        return Err(invalid("policy_set.retention_map", "keys must equal policies exactly"));
    }
    if !(0..=1000).contains(&s.priority) {
        return Err(invalid("policy_set.priority", "must be 0 to 1000"));
    }
    Ok(())
}

fn assignment_source_name(source: i32) -> &'static str {
    match pb::AssignmentSource::try_from(source) {
        Ok(pb::AssignmentSource::Api) => "api",
        Ok(pb::AssignmentSource::RuleBased) => "rule-based",
        _ => "manual",
    }
}

fn assignment_out(a: &AssignmentRecord) -> pb::Assignment {
    let source = match a.assignment_source.as_str() {
        "api" => pb::AssignmentSource::Api,
        "rule-based" => pb::AssignmentSource::RuleBased,
        assignment::CINDER_METADATA_SOURCE => pb::AssignmentSource::CinderMetadata,
        _ => pb::AssignmentSource::Manual,
    };
    pb::Assignment {
        id: a.id,
        volume_id: a.volume_id.clone(),
        volume_name: a.volume_name.clone(),
        tenant_id: a.tenant_id.clone(),
        tenant_name: a.tenant_name.clone(),
        project_id: a.project_id.clone(),
        project_name: a.project_name.clone(),
        vm_id: a.vm_id.clone(),
        vm_name: a.vm_name.clone(),
        policy_set_id: a.policy_set_id,
        auto_snapshot: a.auto_snapshot,
        policies: a.policies.clone(),
        retention_map: retention_map_out(&a.retention_map),
        assignment_source: source.into(),
        matched_rules: a.matched_rules.clone(),
        created_at: a.created_at.map(timestamp),
        created_by: a.created_by.clone(),
        updated_at: a.updated_at.map(timestamp),
        updated_by: a.updated_by.clone(),
        last_verified_at: a.last_verified_at.map(timestamp),
    }
}

fn check_assignment(a: &AssignmentRecord, known: &Catalog) -> Result<(), Status> {
    if a.volume_id.trim().is_empty() {
        return Err(invalid("assignment.volume_id", "required"));
    }
    if a.project_id.trim().is_empty() {
        return Err(invalid("assignment.project_id", "required"));
    }
    if a.auto_snapshot && a.policies.is_empty() {
        return Err(invalid("assignment.policies", "auto_snapshot true needs at least one policy"));
    }
    check_policies("assignment.policies", &a.policies, known)?;
    if let Some(key) = a.retention_map.keys().find(|k| !a.policies.contains(k)) {
        return Err(invalid(
            &format!("assignment.retention_map.{key}"),
            "not one of the assignment's policies",
        ));
    }
    if a.policy_set_id.is_some_and(|id| id <= 0) {
        return Err(invalid("assignment.policy_set_id", "must be positive"));
    }
    Ok(())
}

fn exclusion_out(e: &ExclusionRecord, now: DateTime<Utc>) -> pb::Exclusion {
    let source = match e.exclusion_source.as_str() {
        "metadata-tag" => pb::ExclusionSource::MetadataTag,
        "api" => pb::ExclusionSource::Api,
        _ => pb::ExclusionSource::Manual,
    };
    let scope = if e.volume_id.is_empty() { pb::ExclusionScope::Project } else { pb::ExclusionScope::Volume };
    pb::Exclusion {
        id: e.id,
        scope: scope.into(),
        volume_id: e.volume_id.clone(),
        volume_name: e.volume_name.clone(),
        tenant_id: e.tenant_id.clone(),
        tenant_name: e.tenant_name.clone(),
        project_id: e.project_id.clone(),
        project_name: e.project_name.clone(),
        exclusion_reason: e.exclusion_reason.clone(),
        exclusion_source: source.into(),
        created_at: e.created_at.map(timestamp),
        created_by: e.created_by.clone(),
        expires_at: e.expires_at.map(timestamp),
        active: e.fact().active_at(now),
    }
}

// ---- conversions: evaluation ----

fn volume_in(field: &str, v: &pb::Volume) -> Result<Volume, Status> {
    if v.id.trim().is_empty() {
        return Err(invalid(&format!("{field}.id"), "required"));
    }
    service_kit::error::check_short_text(&format!("{field}.id"), &v.id)?;
    Ok(Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        project_id: v.project_id.clone(),
        project_name: v.project_name.clone(),
        domain_id: v.domain_id.clone(),
        domain_name: v.domain_name.clone(),
        volume_type: v.volume_type.clone(),
        size_gb: v.size_gb,
        bootable: v.bootable,
        availability_zone: v.availability_zone.clone(),
        status: v.status.clone(),
        metadata: v.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn rule_check(c: RuleCheck) -> pb::RuleCheck {
    pb::RuleCheck {
        rule_index: i32::try_from(c.rule_index).unwrap_or(i32::MAX),
        rule_name: c.rule_name,
        priority: c.priority,
        matched: c.matched,
        failed_key: c.failed_key,
        reason: c.reason,
    }
}

fn decision_out(volume_id: &str, d: Decision, rule_set_version: i64) -> pb::Decision {
    let enrolled = d.enrolled();
    let source = match d.source {
        DecisionSource::Exclusion => pb::DecisionSource::Exclusion,
        DecisionSource::Assignment => pb::DecisionSource::Assignment,
        DecisionSource::Rule => pb::DecisionSource::Rule,
        DecisionSource::None => pb::DecisionSource::None,
    };
    let policies = d
        .policies
        .into_iter()
        .map(|p| pb::DecisionPolicy {
            name: p.name,
            retention_count: i32::try_from(p.retention_count).unwrap_or(i32::MAX),
            retention_source: match p.retention_source {
                RetentionSource::Rule => pb::RetentionSource::Rule,
                RetentionSource::Assignment => pb::RetentionSource::Assignment,
                RetentionSource::Catalog => pb::RetentionSource::Catalog,
                RetentionSource::LegacyDefault => pb::RetentionSource::LegacyDefault,
                RetentionSource::VolumeMetadata => pb::RetentionSource::VolumeMetadata,
                RetentionSource::Default => pb::RetentionSource::Default,
            }
            .into(),
            max_age: p.max_age.map(duration),
            known: p.known,
        })
        .collect();
    pb::Decision {
        volume_id: volume_id.to_owned(),
        source: source.into(),
        auto_snapshot: d.auto_snapshot,
        policies,
        enrolled,
        matched_rule_index: d.matched_rule.as_ref().and_then(|m| i32::try_from(m.index).ok()),
        matched_rule_name: d.matched_rule.map(|m| m.name).unwrap_or_default(),
        exclusion_id: d.exclusion_id,
        assignment_id: d.assignment_id,
        rule_set_version,
        explanation: d.explanation.map(|e| pb::Explanation {
            summary: e.summary,
            rule_checks: e.rule_checks.into_iter().map(rule_check).collect(),
            expired_exclusion_ids: e.expired_exclusion_ids,
        }),
    }
}

fn volume_out(v: &Volume) -> pb::Volume {
    pb::Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        project_id: v.project_id.clone(),
        project_name: v.project_name.clone(),
        domain_id: v.domain_id.clone(),
        domain_name: v.domain_name.clone(),
        volume_type: v.volume_type.clone(),
        size_gb: v.size_gb,
        bootable: v.bootable,
        availability_zone: v.availability_zone.clone(),
        status: v.status.clone(),
        metadata: v.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn metadata_changes_out(changes: Vec<metadata::KeyChange>) -> Vec<pb::MetadataChange> {
    changes
        .into_iter()
        .map(|c| pb::MetadataChange { key: c.key, old_value: c.old, new_value: c.new })
        .collect()
}

// ---- conversions: plan and apply ----

/// Validates a request's scope; every id list holds at most 1000 non-empty ids.
fn scope_in(scope: Option<pb::VolumeScope>) -> Result<Scope, Status> {
    let scope = scope.unwrap_or_default();
    let ids = |name: &str, list: Vec<String>| -> Result<BTreeSet<String>, Status> {
        if list.len() > MAX_SCOPE_IDS {
            return Err(invalid(&format!("scope.{name}"), format!("at most {MAX_SCOPE_IDS} ids")));
        }
        if let Some(i) = list.iter().position(|id| id.trim().is_empty()) {
            return Err(invalid(&format!("scope.{name}[{i}]"), "must not be empty"));
        }
        for (i, id) in list.iter().enumerate() {
            service_kit::error::check_short_text(&format!("scope.{name}[{i}]"), id)?;
        }
        Ok(list.into_iter().collect())
    };
    service_kit::error::check_short_text("scope.region", &scope.region)?;
    Ok(Scope {
        project_ids: ids("project_ids", scope.project_ids)?,
        domain_ids: ids("domain_ids", scope.domain_ids)?,
        volume_ids: ids("volume_ids", scope.volume_ids)?,
        region: scope.region,
    })
}

fn progress_out(p: assignment::Progress) -> pb::AssignmentProgress {
    let percent = if p.listed > 0 { p.processed as f64 / p.listed as f64 * 100.0 } else { 0.0 };
    pb::AssignmentProgress {
        phase: match p.phase {
            Phase::Listing => pb::AssignmentPhase::Listing,
            Phase::Evaluating => pb::AssignmentPhase::Evaluating,
            Phase::Writing => pb::AssignmentPhase::Writing,
        }
        .into(),
        volumes_listed: p.listed,
        volumes_processed: p.processed,
        percent: if p.phase == Phase::Listing { 0.0 } else { percent },
    }
}

fn change_out(r: assignment::VolumeResult) -> pb::VolumeChange {
    let kind = match r.change.kind {
        ChangeKind::Enroll => pb::ChangeKind::Enroll,
        ChangeKind::Update => pb::ChangeKind::Update,
        ChangeKind::Unenroll => pb::ChangeKind::Unenroll,
        ChangeKind::None => pb::ChangeKind::None,
    };
    let outcome = match r.outcome {
        Outcome::Planned => pb::VolumeOutcome::Planned,
        Outcome::Applied => pb::VolumeOutcome::Applied,
        Outcome::Unchanged => pb::VolumeOutcome::Unchanged,
        Outcome::Failed => pb::VolumeOutcome::Failed,
    };
    let facts = r.volume.facts;
    pb::VolumeChange {
        decision: Some(decision_out(&facts.id, r.decision, r.rule_set_version)),
        volume_id: facts.id,
        volume_name: facts.name,
        project_id: facts.project_id,
        project_name: facts.project_name,
        domain_id: facts.domain_id,
        domain_name: facts.domain_name,
        kind: kind.into(),
        metadata_changes: metadata_changes_out(r.change.changes),
        outcome: outcome.into(),
        error: r.error,
        cinder_request_id: r.request_id,
    }
}

fn summary_out(s: assignment::Summary) -> pb::AssignmentSummary {
    pb::AssignmentSummary {
        dry_run: s.dry_run,
        processed: s.processed,
        changed: s.changed,
        unchanged: s.unchanged,
        failed: s.failed,
        enrolled: s.enrolled,
        unenrolled: s.unenrolled,
        failures: s
            .failures
            .into_iter()
            .map(|f| pb::VolumeFailure {
                volume_id: f.volume_id,
                volume_name: f.volume_name,
                project_id: f.project_id,
                reason: f.reason,
                cinder_request_id: f.request_id,
            })
            .collect(),
        rule_set_version: s.rule_set_version,
        started_at: Some(timestamp(s.started_at)),
        finished_at: Some(timestamp(s.finished_at)),
    }
}

fn plan_event_out(event: Event) -> pb::PlanAssignmentResponse {
    use pb::plan_assignment_response::Event as Out;
    let event = match event {
        Event::Progress(p) => Out::Progress(progress_out(p)),
        Event::Change(r) => Out::Change(change_out(*r)),
        Event::Summary(s) => Out::Summary(summary_out(s)),
    };
    pb::PlanAssignmentResponse { event: Some(event) }
}

fn apply_event_out(event: Event) -> pb::ApplyAssignmentResponse {
    use pb::apply_assignment_response::Event as Out;
    let event = match event {
        Event::Progress(p) => Out::Progress(progress_out(p)),
        Event::Change(r) => Out::Change(change_out(*r)),
        Event::Summary(s) => Out::Summary(summary_out(s)),
    };
    pb::ApplyAssignmentResponse { event: Some(event) }
}

/// Applies update_mask paths to `target`; unknown or output-only paths are refused.
fn mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    allowed: &[&str],
) -> Result<Vec<&'a str>, Status> {
    let paths: Vec<&str> = mask.map(|m| m.paths.iter().map(String::as_str).collect()).unwrap_or_default();
    if paths.is_empty() {
        return Err(invalid("update_mask", "required and non-empty"));
    }
    if let Some(bad) = paths.iter().find(|p| !allowed.contains(p)) {
        return Err(invalid(
            "update_mask",
            format!("'{bad}' cannot be updated; allowed: {}", allowed.join(", ")),
        ));
    }
    Ok(paths)
}

impl PolicyApi {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The stored catalog plus the active document's entries.
    async fn catalog(&self) -> Result<(Arc<LoadedRules>, Catalog), Status> {
        let loaded = self.active.current().await?;
        let catalog = self.active.catalog(&loaded).await?;
        Ok((loaded, catalog))
    }

    fn assigner(&self) -> Result<&Arc<Assigner>, Status> {
        self.assigner.as_ref().ok_or_else(|| {
            Status::unavailable("no cloud access configured (IDENTITY_SVC_URL); pass volumes inline")
        })
    }

    /// Starts a plan or apply run and streams its events, converted by `convert`.
    fn stream<T: Send + 'static>(
        &self,
        job: Job,
        claim: Option<assignment::ScopeClaim>,
        convert: fn(Event) -> T,
    ) -> Result<Response<snapkeeper_proto::tonic::codegen::BoxStream<T>>, Status> {
        use tokio_stream::StreamExt as _;
        let assigner = Arc::clone(self.assigner()?);
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let run = async move {
            // Held until the run ends, so an overlapping apply is refused meanwhile.
            let _claim = claim;
            assigner.run(job, tx).await;
        };
        // The job outlives the handler: it keeps the request's span so its cloud calls stay in the trace.
        tokio::spawn(tracing::Instrument::instrument(run, tracing::Span::current()));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(move |item| item.map(convert).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resolve_policy(&self, name: &str, field: &str) -> Result<Policy, Status> {
        if name.is_empty() {
            return Err(invalid(field, "required"));
        }
        service_kit::error::check_short_text(field, name)?;
        let (_, catalog) = self.catalog().await?;
        catalog.resolve(name).ok_or_else(|| PolicyError::not_found("policy", name).into())
    }
}

#[snapkeeper_proto::tonic::async_trait]
impl PolicyService for PolicyApi {
    #[tracing::instrument(skip_all)]
    async fn get_rules(&self, request: Request<pb::GetRulesRequest>) -> RpcResult<pb::GetRulesResponse> {
        let request = request.into_inner();
        let loaded = self.active.current().await?;
        let (stored_version, document, rules) = match request.version {
            Some(v) if v < 0 => return Err(invalid("version", "must not be negative")),
            Some(0) if loaded.version.is_some() => {
                return Err(PolicyError::not_found("rule set version", 0).into());
            }
            Some(v) if v != loaded.version_number() => {
                let (stored_version, document) = self
                    .active
                    .store()
                    .rule_set(v)
                    .await?
                    .ok_or_else(|| PolicyError::not_found("rule set version", v))?;
                // An old version may name catalog entries deleted since; show its document anyway.
                let rules = self.active.validate(&document).await?.rule_set;
                (Some(stored_version), document, rules.map(|r| (r.specs().to_vec(), r.policies().to_vec())))
            }
            _ => (
                loaded.version.clone(),
                loaded.document.clone(),
                Some((loaded.rules.specs().to_vec(), loaded.rules.policies().to_vec())),
            ),
        };
        let (specs, policies) = rules.unwrap_or_default();
        let version = stored_version.as_ref().map_or_else(|| empty_version(&document), version);
        Ok(Response::new(pb::GetRulesResponse {
            rule_set: Some(pb::RuleSet {
                version: Some(version),
                document,
                rules: specs.iter().map(rule).collect(),
                policies: policies.iter().map(policy_out).collect(),
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn validate_rules(
        &self,
        request: Request<pb::ValidateRulesRequest>,
    ) -> RpcResult<pb::ValidateRulesResponse> {
        let request = request.into_inner();
        check_document(&request.document)?;
        let validation = self.active.validate(&request.document).await?;
        Ok(Response::new(pb::ValidateRulesResponse {
            valid: validation.problems.is_empty(),
            problems: validation.problems.into_iter().map(problem).collect(),
            rule_count: i32::try_from(validation.rule_count).unwrap_or(i32::MAX),
            policy_count: i32::try_from(validation.policy_count).unwrap_or(i32::MAX),
            checksum: validation.checksum,
        }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn replace_rules(
        &self,
        request: Request<pb::ReplaceRulesRequest>,
    ) -> RpcResult<pb::ReplaceRulesResponse> {
        let request = request.into_inner();
        check_document(&request.document)?;
        require_actor(&request.actor)?;
        if request.comment.chars().count() > MAX_TEXT {
            return Err(invalid("comment", format!("at most {MAX_TEXT} characters")));
        }
        if request.expected_version.is_some_and(|v| v < 0) {
            return Err(invalid("expected_version", "must not be negative"));
        }
        let outcome = self
            .active
            .replace(Replacement {
                document: &request.document,
                source: RuleSetSource::Api,
                actor: &request.actor,
                comment: &request.comment,
                expected_version: request.expected_version,
                now: self.now(),
            })
            .await?;
        let current_document = self.active.current().await?.document.clone();
        Ok(Response::new(pb::ReplaceRulesResponse {
            accepted: outcome.accepted,
            unchanged: outcome.unchanged,
            problems: outcome.problems.into_iter().map(problem).collect(),
            active_version: Some(
                outcome.active.as_ref().map_or_else(|| empty_version(&current_document), version),
            ),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_rule_set_versions(
        &self,
        request: Request<pb::ListRuleSetVersionsRequest>,
    ) -> RpcResult<pb::ListRuleSetVersionsResponse> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let offset = decode_token(&request.page_token, "")?;
        // One more than asked tells whether another page exists.
        let mut versions = self.active.store().list_rule_set_versions(offset, limit + 1).await?;
        let more = i64::try_from(versions.len()).unwrap_or(0) > limit;
        versions.truncate(usize::try_from(limit).unwrap_or(0));
        let next_page_token =
            if more { format!("{}.{}", offset + limit, fingerprint("")) } else { String::new() };
        Ok(Response::new(pb::ListRuleSetVersionsResponse {
            versions: versions.iter().map(version).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> RpcResult<pb::ListPoliciesResponse> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let filters = format!("legacy={}", request.include_legacy);
        let offset = decode_token(&request.page_token, &filters)?;
        let (loaded, catalog) = self.catalog().await?;
        let mut policies: BTreeMap<String, Policy> =
            catalog.entries().into_iter().map(|p| (p.name.clone(), p)).collect();
        if request.include_legacy {
            let mut used: Vec<String> = self.active.store().used_policy_names().await?;
            used.extend(loaded.rules.specs().iter().flat_map(|r| r.policies.iter().cloned()));
            for name in used {
                if !policies.contains_key(&name)
                    && let Some(legacy) = catalog::legacy_policy(&name)
                {
                    policies.insert(name, legacy);
                }
            }
        }
        let total = i64::try_from(policies.len()).unwrap_or(i64::MAX);
        let page: Vec<pb::Policy> = policies
            .values()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(policy_out)
            .collect();
        let next_page_token = next_token(offset, page.len(), total, &filters);
        Ok(Response::new(pb::ListPoliciesResponse { policies: page, next_page_token }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> RpcResult<pb::GetPolicyResponse> {
        let policy = self.resolve_policy(&request.get_ref().name, "name").await?;
        Ok(Response::new(pb::GetPolicyResponse { policy: Some(policy_out(&policy)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn upsert_policy(
        &self,
        request: Request<pb::UpsertPolicyRequest>,
    ) -> RpcResult<pb::UpsertPolicyResponse> {
        let request = request.into_inner();
        let policy = request.policy.as_ref().ok_or_else(|| invalid("policy", "required"))?;
        let policy = policy_in("policy", policy, true)?;
        require_actor(&request.actor)?;
        let loaded = self.active.current().await?;
        if loaded.rules.policies().iter().any(|p| p.name == policy.name) {
            return Err(PolicyError::FailedPrecondition(format!(
                "policy '{}' is defined by the active rules document; change the document",
                policy.name
            ))
            .into());
        }
        let created = self.active.store().upsert_policy(&policy, &request.actor, self.now()).await?;
        let stored = self
            .active
            .store()
            .get_policy(&policy.name)
            .await?
            .ok_or_else(|| PolicyError::not_found("policy", &policy.name))?;
        Ok(Response::new(pb::UpsertPolicyResponse { policy: Some(policy_out(&stored)), created }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> RpcResult<pb::DeletePolicyResponse> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(invalid("name", "required"));
        }
        require_actor(&request.actor)?;
        let loaded = self.active.current().await?;
        if loaded.rules.policies().iter().any(|p| p.name == request.name) {
            return Err(PolicyError::FailedPrecondition(format!(
                "policy '{}' is defined by the active rules document; change the document",
                request.name
            ))
            .into());
        }
        if self.active.store().get_policy(&request.name).await?.is_none() {
            return Err(PolicyError::not_found("catalog entry", &request.name).into());
        }
        let mut referrers = Vec::new();
        // A legacy name keeps resolving after its catalog entry goes, so only non-legacy names
        // leave their referrers dangling.
        if !catalog::is_legacy_name(&request.name) {
            if loaded.rules.references(&request.name) {
                referrers.push("the active rules".to_owned());
            }
            referrers.extend(self.active.store().policy_referrers(&request.name, 3).await?);
        }
        if !referrers.is_empty() {
            return Err(PolicyError::FailedPrecondition(format!(
                "policy '{}' is still referenced by {}",
                request.name,
                referrers.join(", ")
            ))
            .into());
        }
        self.active.store().delete_policy(&request.name).await?;
        tracing::info!(policy = %request.name, "catalog entry deleted");
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn next_slots(&self, request: Request<pb::NextSlotsRequest>) -> RpcResult<pb::NextSlotsResponse> {
        let request = request.into_inner();
        let count = match request.count {
            0 => 1,
            n if (1..=100).contains(&n) => n,
            _ => return Err(invalid("count", "must be 1 to 100")),
        };
        let policy = match &request.target {
            Some(pb::next_slots_request::Target::PolicyName(name)) => {
                self.resolve_policy(name, "policy_name").await?
            }
            Some(pb::next_slots_request::Target::Policy(policy)) => policy_in("policy", policy, false)?,
            None => return Err(invalid("target", "policy_name or policy is required")),
        };
        let after = request
            .after
            .as_ref()
            .map(|t| from_timestamp("after", t))
            .transpose()?
            .unwrap_or_else(|| self.now());
        let next = policy.schedule.next_slots(after, usize::try_from(count).unwrap_or(1));
        Ok(Response::new(pb::NextSlotsResponse {
            current_slot: policy.schedule.latest_at_or_before(after).map(timestamp),
            next_slots: next.into_iter().map(timestamp).collect(),
            policy: Some(policy_out(&policy)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_policy_sets(
        &self,
        request: Request<pb::ListPolicySetsRequest>,
    ) -> RpcResult<pb::ListPolicySetsResponse> {
        let request = request.into_inner();
        check_filters(&[("tenant_id", request.tenant_id.as_ref())])?;
        let limit = page_size(request.page_size)?;
        let filters = format!("{:?}|{:?}|{:?}", request.is_global, request.tenant_id, request.is_active);
        let offset = decode_token(&request.page_token, &filters)?;
        let filter = PolicySetFilter {
            is_global: request.is_global,
            tenant_id: request.tenant_id,
            is_active: request.is_active,
        };
        let (sets, total) = self.active.store().list_policy_sets(&filter, offset, limit).await?;
        Ok(Response::new(pb::ListPolicySetsResponse {
            next_page_token: next_token(offset, sets.len(), total, &filters),
            policy_sets: sets.iter().map(set_out).collect(),
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_policy_set(
        &self,
        request: Request<pb::GetPolicySetRequest>,
    ) -> RpcResult<pb::GetPolicySetResponse> {
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(invalid("id", "must be positive"));
        }
        let set = self
            .active
            .store()
            .get_policy_set(id)
            .await?
            .ok_or_else(|| PolicyError::not_found("policy set", id))?;
        Ok(Response::new(pb::GetPolicySetResponse { policy_set: Some(set_out(&set)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn create_policy_set(
        &self,
        request: Request<pb::CreatePolicySetRequest>,
    ) -> RpcResult<pb::CreatePolicySetResponse> {
        let request = request.into_inner();
        let input = request.policy_set.ok_or_else(|| invalid("policy_set", "required"))?;
        let set = PolicySetRecord {
            name: input.name,
            description: input.description,
            is_global: input.is_global,
            tenant_id: input.tenant_id,
            tenant_name: input.tenant_name,
            retention_map: retention_map_in("policy_set.retention_map", &input.retention_map)?,
            policies: input.policies,
            priority: input.priority,
            is_active: true,
            ..PolicySetRecord::default()
        };
        let (_, catalog) = self.catalog().await?;
        check_set(&set, &catalog)?;
        require_actor(&request.actor)?;
        let created = self.active.store().create_policy_set(&set, &request.actor, self.now()).await?;
        Ok(Response::new(pb::CreatePolicySetResponse { policy_set: Some(set_out(&created)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn update_policy_set(
        &self,
        request: Request<pb::UpdatePolicySetRequest>,
    ) -> RpcResult<pb::UpdatePolicySetResponse> {
        let request = request.into_inner();
        if request.id <= 0 {
            return Err(invalid("id", "must be positive"));
        }
        let allowed = [
            "name",
            "description",
            "is_global",
            "tenant_id",
            "tenant_name",
            "policies",
            "retention_map",
            "priority",
            "is_active",
        ];
        let paths = mask_paths(request.update_mask.as_ref(), &allowed)?;
        require_actor(&request.actor)?;
        let input = request.policy_set.unwrap_or_default();
        let store = self.active.store();
        let mut set = store
            .get_policy_set(request.id)
            .await?
            .ok_or_else(|| PolicyError::not_found("policy set", request.id))?;
        for path in paths {
            match path {
                "name" => set.name.clone_from(&input.name),
                "description" => set.description.clone_from(&input.description),
                "is_global" => set.is_global = input.is_global,
                "tenant_id" => set.tenant_id.clone_from(&input.tenant_id),
                "tenant_name" => set.tenant_name.clone_from(&input.tenant_name),
                "policies" => set.policies.clone_from(&input.policies),
                "retention_map" => {
                    set.retention_map = retention_map_in("policy_set.retention_map", &input.retention_map)?;
                }
                "priority" => set.priority = input.priority,
                _ => set.is_active = input.is_active,
            }
        }
        let (_, catalog) = self.catalog().await?;
        check_set(&set, &catalog)?;
        let updated = store.update_policy_set(&set, &request.actor, self.now()).await?;
        Ok(Response::new(pb::UpdatePolicySetResponse { policy_set: Some(set_out(&updated)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn delete_policy_set(
        &self,
        request: Request<pb::DeletePolicySetRequest>,
    ) -> RpcResult<pb::DeletePolicySetResponse> {
        let request = request.into_inner();
        if request.id <= 0 {
            return Err(invalid("id", "must be positive"));
        }
        require_actor(&request.actor)?;
        self.active.store().delete_policy_set(request.id).await?;
        tracing::info!(id = request.id, "policy set deleted");
        Ok(Response::new(pb::DeletePolicySetResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_assignments(
        &self,
        request: Request<pb::ListAssignmentsRequest>,
    ) -> RpcResult<pb::ListAssignmentsResponse> {
        let request = request.into_inner();
        check_filters(&[
            ("volume_id", request.volume_id.as_ref()),
            ("tenant_id", request.tenant_id.as_ref()),
            ("project_id", request.project_id.as_ref()),
            ("vm_id", request.vm_id.as_ref()),
        ])?;
        let limit = page_size(request.page_size)?;
        let filter = AssignmentFilter {
            volume_id: request.volume_id,
            tenant_id: request.tenant_id,
            project_id: request.project_id,
            vm_id: request.vm_id,
            auto_snapshot: request.auto_snapshot,
            policy_set_id: request.policy_set_id,
        };
        let filters = format!("{filter:?}|{}", request.include_cinder_metadata);
        let offset = decode_token(&request.page_token, &filters)?;
        let store = self.active.store();
        let (rows, stored_total) = store.list_assignments(&filter, offset, limit).await?;
        let mut page: Vec<pb::Assignment> = rows.iter().map(assignment_out).collect();
        let mut total = stored_total;
        if request.include_cinder_metadata {
            // Metadata rows follow every stored row: the page continues into them at
            // offset - stored_total, and the listing is repeated per page (one per call).
            let inventory = self.assigner()?.cloud().inventory("").await?;
            let stored: BTreeSet<String> =
                store.all_assignments().await?.into_iter().map(|a| a.volume_id).collect();
            let extra = assignment::metadata_assignments(inventory, &stored, &filter);
            total += i64::try_from(extra.len()).unwrap_or(i64::MAX);
            let skip = usize::try_from(offset - stored_total).unwrap_or(0);
            let room = usize::try_from(limit).unwrap_or(0).saturating_sub(page.len());
            page.extend(extra.iter().skip(skip).take(room).map(assignment_out));
        }
        Ok(Response::new(pb::ListAssignmentsResponse {
            next_page_token: next_token(offset, page.len(), total, &filters),
            assignments: page,
            total_count: i32::try_from(stored_total).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> RpcResult<pb::GetAssignmentResponse> {
        let volume_id = &request.get_ref().volume_id;
        if volume_id.is_empty() {
            return Err(invalid("volume_id", "required"));
        }
        service_kit::error::check_short_text("volume_id", volume_id)?;
        let row = self
            .active
            .store()
            .get_assignment(volume_id)
            .await?
            .ok_or_else(|| PolicyError::not_found("assignment of volume", volume_id))?;
        Ok(Response::new(pb::GetAssignmentResponse { assignment: Some(assignment_out(&row)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn create_assignment(
        &self,
        request: Request<pb::CreateAssignmentRequest>,
    ) -> RpcResult<pb::CreateAssignmentResponse> {
        let request = request.into_inner();
        let input = request.assignment.ok_or_else(|| invalid("assignment", "required"))?;
        let record = AssignmentRecord {
            volume_id: input.volume_id,
            volume_name: input.volume_name,
            tenant_id: input.tenant_id,
            tenant_name: input.tenant_name,
            project_id: input.project_id,
            project_name: input.project_name,
            vm_id: input.vm_id,
            vm_name: input.vm_name,
            policy_set_id: input.policy_set_id,
            auto_snapshot: input.auto_snapshot,
            retention_map: retention_map_in("assignment.retention_map", &input.retention_map)?,
            policies: input.policies,
            assignment_source: assignment_source_name(input.assignment_source).to_owned(),
            matched_rules: input.matched_rules,
            ..AssignmentRecord::default()
        };
        let (_, catalog) = self.catalog().await?;
        check_assignment(&record, &catalog)?;
        require_actor(&request.actor)?;
        let store = self.active.store();
        if let Some(id) = record.policy_set_id
            && store.get_policy_set(id).await?.is_none()
        {
            return Err(PolicyError::not_found("policy set", id).into());
        }
        let created = store.create_assignment(&record, &request.actor, self.now()).await?;
        Ok(Response::new(pb::CreateAssignmentResponse { assignment: Some(assignment_out(&created)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn update_assignment(
        &self,
        request: Request<pb::UpdateAssignmentRequest>,
    ) -> RpcResult<pb::UpdateAssignmentResponse> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(invalid("volume_id", "required"));
        }
        let allowed = [
            "auto_snapshot",
            "policies",
            "retention_map",
            "policy_set_id",
            "volume_name",
            "tenant_id",
            "tenant_name",
            "project_name",
            "vm_id",
            "vm_name",
        ];
        let paths = mask_paths(request.update_mask.as_ref(), &allowed)?;
        require_actor(&request.actor)?;
        let input = request.assignment.unwrap_or_default();
        let store = self.active.store();
        let mut record = store
            .get_assignment(&request.volume_id)
            .await?
            .ok_or_else(|| PolicyError::not_found("assignment of volume", &request.volume_id))?;
        for path in paths {
            match path {
                "auto_snapshot" => record.auto_snapshot = input.auto_snapshot,
                "policies" => record.policies.clone_from(&input.policies),
                "retention_map" => {
                    record.retention_map =
                        retention_map_in("assignment.retention_map", &input.retention_map)?;
                }
                "policy_set_id" => record.policy_set_id = input.policy_set_id,
                "volume_name" => record.volume_name.clone_from(&input.volume_name),
                "tenant_id" => record.tenant_id.clone_from(&input.tenant_id),
                "tenant_name" => record.tenant_name.clone_from(&input.tenant_name),
                "project_name" => record.project_name.clone_from(&input.project_name),
                "vm_id" => record.vm_id.clone_from(&input.vm_id),
                _ => record.vm_name.clone_from(&input.vm_name),
            }
        }
        let (_, catalog) = self.catalog().await?;
        check_assignment(&record, &catalog)?;
        if let Some(id) = record.policy_set_id
            && store.get_policy_set(id).await?.is_none()
        {
            return Err(PolicyError::not_found("policy set", id).into());
        }
        let updated = store.update_assignment(&record, &request.actor, self.now()).await?;
        Ok(Response::new(pb::UpdateAssignmentResponse { assignment: Some(assignment_out(&updated)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn delete_assignment(
        &self,
        request: Request<pb::DeleteAssignmentRequest>,
    ) -> RpcResult<pb::DeleteAssignmentResponse> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(invalid("volume_id", "required"));
        }
        require_actor(&request.actor)?;
        self.active.store().delete_assignment(&request.volume_id).await?;
        tracing::info!(volume_id = %request.volume_id, "assignment deleted");
        Ok(Response::new(pb::DeleteAssignmentResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_exclusions(
        &self,
        request: Request<pb::ListExclusionsRequest>,
    ) -> RpcResult<pb::ListExclusionsResponse> {
        let request = request.into_inner();
        check_filters(&[
            ("volume_id", request.volume_id.as_ref()),
            ("project_id", request.project_id.as_ref()),
            ("tenant_id", request.tenant_id.as_ref()),
        ])?;
        let limit = page_size(request.page_size)?;
        let volume_scope = match request.scope.map(pb::ExclusionScope::try_from) {
            None | Some(Ok(pb::ExclusionScope::Unspecified)) => None,
            Some(Ok(pb::ExclusionScope::Volume)) => Some(true),
            Some(Ok(pb::ExclusionScope::Project)) => Some(false),
            Some(Err(_)) => return Err(invalid("scope", "unknown scope")),
        };
        let filter = ExclusionFilter {
            volume_id: request.volume_id,
            project_id: request.project_id,
            tenant_id: request.tenant_id,
            volume_scope,
            include_expired: request.include_expired,
        };
        let filters = format!("{filter:?}");
        let offset = decode_token(&request.page_token, &filters)?;
        let now = self.now();
        let (rows, total) = self.active.store().list_exclusions(&filter, now, offset, limit).await?;
        Ok(Response::new(pb::ListExclusionsResponse {
            next_page_token: next_token(offset, rows.len(), total, &filters),
            exclusions: rows.iter().map(|e| exclusion_out(e, now)).collect(),
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_exclusion(
        &self,
        request: Request<pb::GetExclusionRequest>,
    ) -> RpcResult<pb::GetExclusionResponse> {
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(invalid("id", "must be positive"));
        }
        let row = self
            .active
            .store()
            .get_exclusion(id)
            .await?
            .ok_or_else(|| PolicyError::not_found("exclusion", id))?;
        Ok(Response::new(pb::GetExclusionResponse { exclusion: Some(exclusion_out(&row, self.now())) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn create_exclusion(
        &self,
        request: Request<pb::CreateExclusionRequest>,
    ) -> RpcResult<pb::CreateExclusionResponse> {
        let request = request.into_inner();
        let input = request.exclusion.ok_or_else(|| invalid("exclusion", "required"))?;
        let now = self.now();
        match pb::ExclusionScope::try_from(input.scope) {
            Ok(pb::ExclusionScope::Volume) if input.volume_id.trim().is_empty() => {
                return Err(invalid("exclusion.volume_id", "required for a volume exclusion"));
            }
            Ok(pb::ExclusionScope::Project) if input.project_id.trim().is_empty() => {
                return Err(invalid("exclusion.project_id", "required for a project exclusion"));
            }
            Ok(pb::ExclusionScope::Project) if !input.volume_id.is_empty() => {
                return Err(invalid("exclusion.volume_id", "must be empty for a project exclusion"));
            }
            Ok(pb::ExclusionScope::Volume | pb::ExclusionScope::Project) => {}
            _ => {
                return Err(invalid(
                    "exclusion.scope",
                    "required: EXCLUSION_SCOPE_VOLUME or EXCLUSION_SCOPE_PROJECT",
                ));
            }
        }
        if input.exclusion_reason.chars().count() > MAX_TEXT {
            return Err(invalid("exclusion.exclusion_reason", format!("at most {MAX_TEXT} characters")));
        }
        let expires_at =
            input.expires_at.as_ref().map(|t| from_timestamp("exclusion.expires_at", t)).transpose()?;
        if expires_at.is_some_and(|t| t <= now) {
            return Err(invalid("exclusion.expires_at", "must be in the future"));
        }
        require_actor(&request.actor)?;
        let source = match pb::ExclusionSource::try_from(input.exclusion_source) {
            Ok(pb::ExclusionSource::MetadataTag) => "metadata-tag",
            Ok(pb::ExclusionSource::Api) => "api",
            _ => "manual",
        };
        let record = ExclusionRecord {
            volume_id: input.volume_id,
            volume_name: input.volume_name,
            tenant_id: input.tenant_id,
            tenant_name: input.tenant_name,
            project_id: input.project_id,
            project_name: input.project_name,
            exclusion_reason: input.exclusion_reason,
            exclusion_source: source.to_owned(),
            expires_at,
            ..ExclusionRecord::default()
        };
        let created = self.active.store().create_exclusion(&record, &request.actor, now).await?;
        Ok(Response::new(pb::CreateExclusionResponse { exclusion: Some(exclusion_out(&created, now)) }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn update_exclusion(
        &self,
        request: Request<pb::UpdateExclusionRequest>,
    ) -> RpcResult<pb::UpdateExclusionResponse> {
        let request = request.into_inner();
        if request.id <= 0 {
            return Err(invalid("id", "must be positive"));
        }
        let paths = mask_paths(request.update_mask.as_ref(), &["exclusion_reason", "expires_at"])?;
        require_actor(&request.actor)?;
        let input = request.exclusion.unwrap_or_default();
        let store = self.active.store();
        let mut record = store
            .get_exclusion(request.id)
            .await?
            .ok_or_else(|| PolicyError::not_found("exclusion", request.id))?;
        for path in paths {
            if path == "exclusion_reason" {
                if input.exclusion_reason.chars().count() > MAX_TEXT {
                    return Err(invalid(
                        "exclusion.exclusion_reason",
                        format!("at most {MAX_TEXT} characters"),
                    ));
                }
                record.exclusion_reason.clone_from(&input.exclusion_reason);
            } else {
                record.expires_at = input
                    .expires_at
                    .as_ref()
                    .map(|t| from_timestamp("exclusion.expires_at", t))
                    .transpose()?;
            }
        }
        let updated = store.update_exclusion(&record).await?;
        Ok(Response::new(pb::UpdateExclusionResponse {
            exclusion: Some(exclusion_out(&updated, self.now())),
        }))
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor))]
    async fn delete_exclusion(
        &self,
        request: Request<pb::DeleteExclusionRequest>,
    ) -> RpcResult<pb::DeleteExclusionResponse> {
        let request = request.into_inner();
        let selector = match request.selector {
            Some(pb::delete_exclusion_request::Selector::Id(id)) if id > 0 => ExclusionSelector::Id(id),
            Some(pb::delete_exclusion_request::Selector::Id(_)) => {
                return Err(invalid("id", "must be positive"));
            }
            Some(pb::delete_exclusion_request::Selector::VolumeId(v)) if !v.is_empty() => {
                ExclusionSelector::Volume(v)
            }
            Some(pb::delete_exclusion_request::Selector::ProjectId(p)) if !p.is_empty() => {
                ExclusionSelector::Project(p)
            }
            _ => return Err(invalid("selector", "one of id, volume_id or project_id is required")),
        };
        require_actor(&request.actor)?;
        let store = self.active.store();
        let found = store
            .find_exclusion(&selector)
            .await?
            .ok_or_else(|| PolicyError::NotFound(format!("no exclusion for {selector:?}")))?;
        store.delete_exclusion(found.id).await?;
        tracing::info!(id = found.id, "exclusion deleted");
        Ok(Response::new(pb::DeleteExclusionResponse { exclusion: Some(exclusion_out(&found, self.now())) }))
    }

    #[tracing::instrument(skip_all)]
    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> RpcResult<pb::EvaluateResponse> {
        let request = request.into_inner();
        let volume = match request.target {
            Some(pb::evaluate_request::Target::Volume(volume)) => volume_in("volume", &volume)?,
            Some(pb::evaluate_request::Target::VolumeId(id)) if id.trim().is_empty() => {
                return Err(invalid("volume_id", "must not be empty"));
            }
            Some(pb::evaluate_request::Target::VolumeId(id)) => {
                service_kit::error::check_short_text("volume_id", &id)?;
                service_kit::error::check_short_text("region", &request.region)?;
                self.assigner()?
                    .cloud()
                    .volume(&request.region, &id)
                    .await?
                    .ok_or_else(|| PolicyError::NotFound(format!("volume {id} not found in Cinder")))?
                    .facts
            }
            None => return Err(invalid("target", "volume or volume_id is required")),
        };
        let at =
            request.at.as_ref().map(|t| from_timestamp("at", t)).transpose()?.unwrap_or_else(|| self.now());
        let (loaded, catalog) = self.catalog().await?;
        let store = self.active.store();
        let exclusions = store.exclusions_for(&volume.id, &volume.project_id).await?;
        let assignment = store.get_assignment(&volume.id).await?;
        let overrides = Overrides::new(
            exclusions.iter().map(ExclusionRecord::fact),
            assignment.iter().map(AssignmentRecord::fact),
        );
        let decision = decision::decide(&volume, &loaded.rules, &catalog, &overrides, at, true);
        let changes = metadata::plan(&volume.metadata, &decision);
        let exclusion = decision
            .exclusion_id
            .and_then(|id| exclusions.iter().find(|e| e.id == id))
            .map(|e| exclusion_out(e, at));
        let assignment =
            assignment.filter(|_| decision.source == DecisionSource::Assignment).map(|a| assignment_out(&a));
        Ok(Response::new(pb::EvaluateResponse {
            decision: Some(decision_out(&volume.id, decision, loaded.version_number())),
            volume: Some(volume_out(&volume)),
            metadata_changes: metadata_changes_out(changes.changes),
            exclusion,
            assignment,
        }))
    }

    #[tracing::instrument(skip_all, fields(volumes = request.get_ref().volumes.len()))]
    async fn evaluate_volumes(
        &self,
        request: Request<pb::EvaluateVolumesRequest>,
    ) -> RpcResult<pb::EvaluateVolumesResponse> {
        let request = request.into_inner();
        if request.volumes.is_empty() {
            return Err(invalid("volumes", "at least one volume is required"));
        }
        if request.volumes.len() > MAX_BULK {
            return Err(invalid("volumes", format!("at most {MAX_BULK} volumes per call")));
        }
        let volumes: Vec<Volume> = request
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| volume_in(&format!("volumes[{i}]"), v))
            .collect::<Result<_, _>>()?;
        let at =
            request.at.as_ref().map(|t| from_timestamp("at", t)).transpose()?.unwrap_or_else(|| self.now());
        let (loaded, catalog) = self.catalog().await?;
        let store = self.active.store();
        let exclusions = store.all_exclusions().await?;
        let assignments = store.all_assignments().await?;
        let overrides = Overrides::new(
            exclusions.iter().map(ExclusionRecord::fact),
            assignments.iter().map(AssignmentRecord::fact),
        );
        let version = loaded.version_number();
        let decisions = volumes
            .iter()
            .map(|v| {
                let decision =
                    decision::decide(v, &loaded.rules, &catalog, &overrides, at, request.include_explanation);
                decision_out(&v.id, decision, version)
            })
            .collect();
        Ok(Response::new(pb::EvaluateVolumesResponse { decisions, rule_set_version: version }))
    }

    #[tracing::instrument(skip_all)]
    async fn plan_assignment(
        &self,
        request: Request<pb::PlanAssignmentRequest>,
    ) -> RpcResult<snapkeeper_proto::tonic::codegen::BoxStream<pb::PlanAssignmentResponse>> {
        let request = request.into_inner();
        let job = Job {
            scope: scope_in(request.scope)?,
            dry_run: true,
            include_unchanged: request.include_unchanged,
        };
        self.stream(job, None, plan_event_out)
    }

    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor, run_id = %request.get_ref().run_id))]
    async fn apply_assignment(
        &self,
        request: Request<pb::ApplyAssignmentRequest>,
    ) -> RpcResult<snapkeeper_proto::tonic::codegen::BoxStream<pb::ApplyAssignmentResponse>> {
        let request = request.into_inner();
        let scope = scope_in(request.scope)?;
        require_actor(&request.actor)?;
        let claim = self.assigner()?.claim(&scope)?;
        tracing::info!("assignment apply started");
        let job = Job { scope, dry_run: false, include_unchanged: request.include_unchanged };
        self.stream(job, Some(claim), apply_event_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_the_field_that_no_stored_value_could_match() {
        let long = "x".repeat(256);
        let status = check_filters(&[("volume_id", None), ("tenant_id", Some(&long))]).unwrap_err();
        assert_eq!(status.code(), snapkeeper_proto::tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("tenant_id: "), "{}", status.message());
        let ok = "domain-1".to_owned();
        assert!(check_filters(&[("tenant_id", Some(&ok)), ("vm_id", None)]).is_ok());
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_changed_filters() {
        let token = next_token(0, 100, 250, "a");
        assert_eq!(decode_token(&token, "a").unwrap(), 100);
        assert!(decode_token(&token, "b").is_err());
        assert!(decode_token("garbage", "a").is_err());
        assert_eq!(next_token(200, 50, 250, "a"), "");
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
