//! `snapkeeper policy validate FILE` (policy-svc's ValidateRules, or offline with the same rules
//! engine) and `snapkeeper policy explain VOLUME_ID` (policy-svc's Evaluate by id).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use policy_svc::catalog::Catalog;
use policy_svc::rules::{self, MAX_DOCUMENT_BYTES};
use snapkeeper_proto::policy::v1 as pb;

use crate::clients::ServiceArgs;
use crate::output::{Table, enum_label};

/// `snapkeeper policy ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PolicyCommand {
    /// Check a rules file and list every problem; exit 1 when it is invalid.
    Validate(ValidateArgs),
    /// Show what decides a volume's snapshot policies and why (which rule matched, why earlier ones did not).
    Explain(ExplainArgs),
}

/// Settings of `snapkeeper policy validate`.
#[derive(clap::Args, Debug, Clone)]
pub struct ValidateArgs {
    /// The rules file (the seed's JSON array, or the object form with a policy catalog).
    pub file: PathBuf,
    /// Validate here instead of asking policy-svc. Policy names must then be legacy names or
    /// defined in the file: catalog entries stored in policy-svc are not known offline.
    #[arg(long)]
    pub offline: bool,
    /// How to reach policy-svc.
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// Settings of `snapkeeper policy explain`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Cinder volume id.
    pub volume_id: String,
    /// Cinder region of the volume; policy-svc's default region when absent.
    #[arg(long)]
    pub region: Option<String>,
    /// How to reach policy-svc.
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// One problem of a rules document, whichever engine found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Kind, e.g. `unknown_key`.
    pub code: String,
    /// 0-based rule index, for rule problems.
    pub rule_index: Option<i64>,
    /// Rule name, when known.
    pub rule_name: String,
    /// Catalog entry, for catalog problems.
    pub policy_name: String,
    /// Offending key, e.g. `match.volume_type`.
    pub key: String,
    /// JSON Pointer to the offending value.
    pub path: String,
    /// Why.
    pub reason: String,
    /// 1-based line; 0 when unknown.
    pub line: i64,
}

/// The outcome of validating a rules document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
    /// Rules in the document.
    pub rule_count: i64,
    /// Catalog entries in the document.
    pub policy_count: i64,
    /// `sha256:...` the document would be stored under.
    pub checksum: String,
}

impl Validation {
    /// The result for people, one line per problem in the `FILE:LINE:` form editors understand.
    pub fn render(&self, file: &str, checked_by: &str) -> String {
        let figures =
            format!("{} rules, {} catalog entries, {}", self.rule_count, self.policy_count, self.checksum);
        if self.problems.is_empty() {
            return format!("{file}: valid ({figures}); checked {checked_by}\n");
        }
        let mut out = String::new();
        for problem in &self.problems {
            let location =
                if problem.line > 0 { format!("{file}:{}:", problem.line) } else { format!("{file}:") };
            let mut subject = Vec::new();
            if let Some(index) = problem.rule_index {
                subject.push(format!("rule {index} {:?}", problem.rule_name));
            }
            if !problem.policy_name.is_empty() {
                subject.push(format!("policy {:?}", problem.policy_name));
            }
            if !problem.key.is_empty() {
                subject.push(problem.key.clone());
            }
            let subject =
                if subject.is_empty() { String::new() } else { format!(" {}:", subject.join(", ")) };
            let path = if problem.path.is_empty() { "/" } else { problem.path.as_str() };
            let _ = writeln!(out, "{location}{subject} {} [{}, {path}]", problem.reason, problem.code);
        }
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        let _ = writeln!(out, "{file}: invalid, {count} {noun} ({figures}); checked {checked_by}");
        out
    }
}

/// Validates `document` with the rules engine of policy-svc, in this process, against an empty
/// stored catalog; the same limits as the RPC apply.
pub fn validate_offline(document: &str) -> anyhow::Result<Validation> {
    check_size(document)?;
    let validation = rules::validate(document, &Catalog::default());
    Ok(Validation {
        problems: validation
            .problems
            .into_iter()
            .map(|problem| Problem {
                code: snake_case(&format!("{:?}", problem.code)),
                rule_index: problem.rule_index.and_then(|index| i64::try_from(index).ok()),
                rule_name: problem.rule_name,
                policy_name: problem.policy_name,
                key: problem.key,
                path: problem.path,
                reason: problem.reason,
                line: i64::from(problem.line),
            })
            .collect(),
        rule_count: i64::try_from(validation.rule_count).unwrap_or(i64::MAX),
        policy_count: i64::try_from(validation.policy_count).unwrap_or(i64::MAX),
        checksum: validation.checksum,
    })
}

/// Validates `document` with policy-svc's ValidateRules.
pub async fn validate_online(services: &ServiceArgs, document: &str) -> anyhow::Result<Validation> {
    check_size(document)?;
    let mut policy = services.policy()?;
    let request = pb::ValidateRulesRequest { document: document.to_owned() };
    let response = policy
        .client
        .validate_rules(request)
        .await
        .map_err(|status| policy.target.failed("ValidateRules", &status))?
        .into_inner();
    Ok(Validation {
        problems: response
            .problems
            .iter()
            .map(|problem| Problem {
                code: enum_label(problem.code().as_str_name(), "PROBLEM_CODE_"),
                rule_index: problem.rule_index.map(i64::from),
                rule_name: problem.rule_name.clone(),
                policy_name: problem.policy_name.clone(),
                key: problem.key.clone(),
                path: problem.path.clone(),
                reason: problem.reason.clone(),
                line: i64::from(problem.line),
            })
            .collect(),
        rule_count: i64::from(response.rule_count),
        policy_count: i64::from(response.policy_count),
        checksum: response.checksum,
    })
}

/// The service refuses empty and oversized documents outright; say so before sending.
fn check_size(document: &str) -> anyhow::Result<()> {
    if document.trim().is_empty() {
        bail!("the rules file is empty");
    }
    if document.len() > MAX_DOCUMENT_BYTES {
        bail!("the rules file has {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted", document.len());
    }
    Ok(())
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// Runs `snapkeeper policy validate`: prints the result and fails when the file is invalid.
pub async fn validate(args: &ValidateArgs) -> anyhow::Result<()> {
    let file = args.file.display().to_string();
    let document = std::fs::read_to_string(&args.file).with_context(|| format!("reading {file}"))?;
    let (validation, checked_by) = if args.offline {
        (validate_offline(&document)?, "offline".to_owned())
    } else {
        let checked_by = format!("by policy-svc at {}", args.services.urls.policy_url);
        (validate_online(&args.services, &document).await?, checked_by)
    };
    print!("{}", validation.render(&file, &checked_by));
    if !validation.problems.is_empty() {
        bail!("{file} is invalid: {} problem(s)", validation.problems.len());
    }
    Ok(())
}

/// Runs `snapkeeper policy explain`.
pub async fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let mut policy = args.services.policy()?;
    let request = pb::EvaluateRequest {
        target: Some(pb::evaluate_request::Target::VolumeId(args.volume_id.clone())),
        region: args.region.clone().unwrap_or_default(),
        at: None,
    };
    let response = policy
        .client
        .evaluate(request)
        .await
        .map_err(|status| policy.target.failed("Evaluate", &status))?
        .into_inner();
    print!("{}", render_explanation(&response));
    Ok(())
}

/// An Evaluate response for people: the volume, the decision, the policies, each rule checked.
pub fn render_explanation(response: &pb::EvaluateResponse) -> String {
    let mut out = String::new();
    if let Some(volume) = &response.volume {
        let name = if volume.name.is_empty() { "(no name)" } else { volume.name.as_str() };
        let volume_type = if volume.volume_type.is_empty() { "-" } else { volume.volume_type.as_str() };
        let _ = writeln!(
            out,
            "volume {} {name:?}: project {} ({}), domain {}, type {volume_type}, {} GiB, {}, bootable {}",
            volume.id,
            volume.project_name,
            volume.project_id,
            volume.domain_name,
            volume.size_gb,
            volume.status,
            volume.bootable,
        );
    }
    let Some(decision) = &response.decision else {
        out.push_str("no decision returned\n");
        return out;
    };
    let source = enum_label(decision.source().as_str_name(), "DECISION_SOURCE_");
    let decided_by = match decision.source() {
        pb::DecisionSource::Rule => format!(
            "rule {:?} (index {})",
            decision.matched_rule_name,
            decision.matched_rule_index.unwrap_or_default()
        ),
        pb::DecisionSource::Exclusion => match &response.exclusion {
            Some(exclusion) => format!("exclusion {} ({})", exclusion.id, exclusion.exclusion_reason),
            None => format!("exclusion {}", decision.exclusion_id.unwrap_or_default()),
        },
        pb::DecisionSource::Assignment => {
            format!("manual assignment {}", decision.assignment_id.unwrap_or_default())
        }
        pb::DecisionSource::None | pb::DecisionSource::Unspecified => {
            "nothing: no rule matched, the volume keeps its metadata".to_owned()
        }
    };
    let _ = writeln!(
        out,
        "decided by {decided_by} [{source}], rule set v{}: {}, auto_snapshot {}",
        decision.rule_set_version,
        if decision.enrolled { "enrolled" } else { "not enrolled" },
        decision.auto_snapshot
    );
    if !decision.policies.is_empty() {
        let mut table = Table::new(&["POLICY", "KEEP", "RETENTION FROM", "KNOWN"]);
        for policy in &decision.policies {
            table.row(vec![
                policy.name.clone(),
                policy.retention_count.to_string(),
                enum_label(policy.retention_source().as_str_name(), "RETENTION_SOURCE_"),
                if policy.known { "yes" } else { "no: no schedule" }.to_owned(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if let Some(explanation) = &decision.explanation {
        let _ = writeln!(out, "\nwhy: {}", explanation.summary);
        if !explanation.rule_checks.is_empty() {
            let mut table =
                Table::new(&["MATCHED", "PRIORITY", "INDEX", "RULE", "FIRST FAILED KEY", "REASON"]);
            for check in &explanation.rule_checks {
                table.row(vec![
                    if check.matched { "yes" } else { "no" }.to_owned(),
                    check.priority.to_string(),
                    check.rule_index.to_string(),
                    check.rule_name.clone(),
                    check.failed_key.clone(),
                    check.reason.clone(),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
    }
    if !response.metadata_changes.is_empty() {
        out.push_str("\nvolume metadata ApplyAssignment would write now:\n");
        for change in &response.metadata_changes {
            let _ = writeln!(
                out,
                "  {}: {} -> {}",
                change.key,
                change.old_value.as_deref().unwrap_or("(absent)"),
                change.new_value.as_deref().unwrap_or("(removed)")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_validation_lists_every_problem_with_its_line() {
        let document = r#"[
  {"name": "lab", "priority": 10, "match": {"size": 5}, "policies": [], "auto_snapshot": false},
  {"name": "all", "priority": 20, "match": {}, "policies": ["daily_5"], "retention": {"daily_5": 0}}
]"#;
        let validation = validate_offline(document).unwrap();
        assert_eq!(validation.rule_count, 2);
        let codes: Vec<&str> = validation.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["unknown_key", "invalid_retention"], "{validation:?}");
        let text = validation.render("rules.json", "offline");
        assert!(text.contains("rule 0 \"lab\", match.size:"), "{text}");
        assert!(
            text.contains("rules.json: invalid, 2 problems (2 rules, 0 catalog entries, sha256:"),
            "{text}"
        );
    }

    #[test]
    fn offline_validation_accepts_the_seed_file_and_refuses_empty_ones() {
        let seed = r#"[
  {"name": "Exclude lab / playground tenants", "priority": 10,
   "match": {"tenant_name": ["lab", "playground"]}, "policies": [], "auto_snapshot": false},
  {"name": "Prod tenants - daily + 1st + 15th", "priority": 20, "match": {},
   "policies": ["daily_5", "monthly_1st", "monthly_15th"], "auto_snapshot": true,
   "retention": {"daily_5": 5, "monthly_1st": 1, "monthly_15th": 1}}
]"#;
        let validation = validate_offline(seed).unwrap();
        assert!(validation.problems.is_empty(), "{validation:?}");
        assert!(validation.render("seed.json", "offline").starts_with("seed.json: valid (2 rules"));
        assert!(validate_offline("  \n").unwrap_err().to_string().contains("empty"));
    }
}
