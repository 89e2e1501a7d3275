//! The candidate index of a rule set: each rule is filed under one condition that pins a volume
//! field to a few exact values (or prefixes), so a volume is tested only against the rules filed
//! under its own values plus the rules nothing could file. The answer is the linear scan's: the
//! first rule in evaluation order whose conditions all hold.

use std::collections::HashMap;

use super::{CompiledRule, Condition, TextField, TextMatcher, TextMode};
use crate::decision::Volume;

/// Rules filed by the values one volume fact must equal or start with.
#[derive(Debug, Clone, Default)]
pub(super) struct RuleIndex {
    exact: Vec<ValueIndex<TextField>>,
    metadata: Vec<ValueIndex<String>>,
    prefix: Vec<PrefixIndex>,
    /// Rules without a condition to file them by; checked for every volume.
    unfiled: Vec<usize>,
}

/// Rule positions (evaluation order, ascending) by the value a fact must equal.
#[derive(Debug, Clone)]
struct ValueIndex<F> {
    fact: F,
    rules: HashMap<String, Vec<usize>>,
}

/// Rule positions (ascending) by a prefix the field must start with.
#[derive(Debug, Clone)]
struct PrefixIndex {
    field: TextField,
    /// The distinct prefix lengths in bytes, one lookup each.
    lengths: Vec<usize>,
    rules: HashMap<String, Vec<usize>>,
}

/// Where one rule is filed: every volume it can match has one of `values` there.
enum Filing<'a> {
    Exact(TextField, Vec<&'a str>),
    Metadata(&'a str, Vec<&'a str>),
    Prefix(TextField, Vec<&'a str>),
}

impl Filing<'_> {
    /// Lower is more selective: exact values of a field, then of a metadata key, then prefixes;
    /// fewer values first.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_, values) => (0, values.len()),
            Self::Metadata(_, values) => (1, values.len()),
            Self::Prefix(_, values) => (2, values.len()),
        }
    }
}

impl RuleIndex {
    /// Files every rule (`rules` in evaluation order) under its most selective condition.
    pub(super) fn new(rules: &[CompiledRule]) -> Self {
        let mut index = Self::default();
        for (position, rule) in rules.iter().enumerate() {
            let filing = rule.conditions.iter().filter_map(filing).min_by_key(Filing::rank);
            match filing {
                None => index.unfiled.push(position),
                Some(Filing::Exact(field, values)) => {
                    let at = slot(&mut index.exact, |i| i.fact == field, || ValueIndex::new(field));
                    file(&mut at.rules, &values, position);
                }
                Some(Filing::Metadata(key, values)) => {
                    let at = slot(&mut index.metadata, |i| i.fact == key, || ValueIndex::new(key.to_owned()));
                    file(&mut at.rules, &values, position);
                }
                Some(Filing::Prefix(field, values)) => {
                    let at = slot(
                        &mut index.prefix,
                        |i| i.field == field,
                        || PrefixIndex { field, lengths: Vec::new(), rules: HashMap::new() },
                    );
                    file(&mut at.rules, &values, position);
                    for value in values {
                        if !at.lengths.contains(&value.len()) {
                            at.lengths.push(value.len());
                        }
                    }
                }
            }
        }
        index
    }

    /// Position of the first rule whose conditions all hold. Each candidate list is scanned in
    /// ascending order only below the best match so far, so no rule after the answer in its
    /// list is tested and the answer is the lowest matching position overall.
    pub(super) fn first_match(&self, rules: &[CompiledRule], volume: &Volume) -> Option<usize> {
        let mut best = usize::MAX;
        let mut scan = |positions: &[usize]| {
            for &position in positions {
                if position >= best {
                    break;
                }
                if rules[position].matches(volume) {
                    best = position;
                    break;
                }
            }
        };
        for index in &self.exact {
            if let Some(positions) = index.rules.get(index.fact.read(volume)) {
                scan(positions);
            }
        }
        for index in &self.metadata {
            if let Some(positions) =
                volume.metadata.get(&index.fact).and_then(|v| index.rules.get(v.as_str()))
            {
                scan(positions);
            }
        }
        for index in &self.prefix {
            let value = index.field.read(volume);
            for &length in &index.lengths {
                if let Some(positions) = value.get(..length).and_then(|p| index.rules.get(p)) {
                    scan(positions);
                }
            }
        }
        scan(&self.unfiled);
        (best != usize::MAX).then_some(best)
    }
}

impl<F> ValueIndex<F> {
    fn new(fact: F) -> Self {
        Self { fact, rules: HashMap::new() }
    }
}

/// The entry of `list` that `is_it` picks, added by `new` when there is none.
fn slot<T>(list: &mut Vec<T>, is_it: impl Fn(&T) -> bool, new: impl FnOnce() -> T) -> &mut T {
    let at = list.iter().position(is_it).unwrap_or_else(|| {
        list.push(new());
        list.len() - 1
    });
    &mut list[at]
}

/// Adds `position` under each value; positions arrive ascending, so the lists stay sorted.
fn file(rules: &mut HashMap<String, Vec<usize>>, values: &[&str], position: usize) {
    for value in values {
        let positions = rules.entry((*value).to_owned()).or_default();
        // A list may name one value twice.
        if positions.last() != Some(&position) {
            positions.push(position);
        }
    }
}

/// How `condition` can file its rule, if it can.
fn filing(condition: &Condition) -> Option<Filing<'_>> {
    match condition {
        Condition::Text { field, matcher, .. } => match matcher.mode {
            TextMode::Equals if matcher.regexes.is_empty() => Some(Filing::Exact(*field, literals(matcher))),
            // A value equal to a literal also starts with it.
            TextMode::Equals | TextMode::Prefix => prefixes(matcher).map(|p| Filing::Prefix(*field, p)),
            TextMode::Contains => None,
        },
        // A rule that also takes an absent key matches volumes without it: no value to file by.
        Condition::MetadataEquals { key, absent_ok: false, matcher: Some(matcher) }
            if matcher.regexes.is_empty() =>
        {
            Some(Filing::Metadata(key, literals(matcher)))
        }
        Condition::MetadataEquals { .. }
        | Condition::MetadataContains { .. }
        | Condition::Size { .. }
        | Condition::Bootable(_) => None,
    }
}

fn literals(matcher: &TextMatcher) -> Vec<&str> {
    matcher.literals.iter().map(String::as_str).collect()
}

/// The literals plus a required prefix of every regex; `None` when a regex has none.
fn prefixes(matcher: &TextMatcher) -> Option<Vec<&str>> {
    let mut all = literals(matcher);
    for regex in &matcher.regexes {
        all.push(anchored_prefix(regex.as_str())?);
    }
    Some(all)
}

/// The literal text every match of `pattern` starts with, read conservatively: the pattern must
/// start with `^` (start of text without a multi-line flag, which would have to come first) and
/// have no `|` anywhere (a top-level alternative would drop the anchor); then plain characters
/// count, up to the first that may be syntax. A quantifier after them (`?`, `*`, `{`) makes the
/// last one optional, so it is dropped.
fn anchored_prefix(pattern: &str) -> Option<&str> {
    let body = pattern.strip_prefix('^')?;
    if pattern.contains('|') {
        return None;
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_/:@,=%".contains(c);
    let end = body.find(|c: char| !plain(c)).unwrap_or(body.len());
    let end = match body[end..].chars().next() {
        // The run is ASCII, so one byte back is a char boundary.
        Some('?' | '*' | '{') => end.saturating_sub(1),
        _ => end,
    };
    (end > 0).then(|| &body[..end])
}

#[cfg(test)]
mod tests {
    use super::anchored_prefix;
    use crate::catalog::Catalog;
    use crate::decision::Volume;
    use crate::rules::{RuleSet, validate};

    /// Rules named by their position, all enrolling.
    fn rule_set(matches: &[&str]) -> RuleSet {
        let rules: Vec<String> = matches
            .iter()
            .enumerate()
            .map(|(i, m)| format!(r#"{{"name": "r{i}", "match": {m}, "policies": ["daily_1"]}}"#))
            .collect();
        let validation = validate(&format!("[{}]", rules.join(",")), &Catalog::default());
        assert!(validation.problems.is_empty(), "{:?}", validation.problems);
        validation.rule_set.unwrap()
    }

    /// The rule the index finds, checked against the linear scan.
    fn first(rules: &RuleSet, volume: &Volume) -> Option<String> {
        let indexed = rules.first_match(volume, false).0.map(|r| r.name.clone());
        let linear = rules.first_match(volume, true).0.map(|r| r.name.clone());
        assert_eq!(indexed, linear, "{volume:?}");
        indexed
    }

    fn volume(project: &str, name: &str, metadata: &[(&str, &str)]) -> Volume {
        Volume {
            id: "vol-1".into(),
            name: name.into(),
            project_name: project.into(),
            metadata: metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Volume::default()
        }
    }

    /// Positions of the rules checked for every volume.
    fn unfiled(rules: &RuleSet) -> &[usize] {
        &rules.index.unfiled
    }

    #[test]
    fn exact_values_are_case_sensitive_and_lists_file_a_rule_once_per_value() {
        let rules = rule_set(&[r#"{"tenant_name": "Prod"}"#, r#"{"tenant_name": ["lab", "dev", "lab"]}"#]);
        assert!(unfiled(&rules).is_empty());
        let by_tenant = &rules.index.exact[0].rules;
        assert_eq!(by_tenant.len(), 3);
        assert_eq!(by_tenant["lab"], vec![1]);
        assert_eq!(first(&rules, &volume("Prod", "x", &[])).as_deref(), Some("r0"));
        assert_eq!(first(&rules, &volume("prod", "x", &[])), None);
        assert_eq!(first(&rules, &volume("PROD", "x", &[])), None);
        assert_eq!(first(&rules, &volume("dev", "x", &[])).as_deref(), Some("r1"));
        assert_eq!(first(&rules, &volume("LAB", "x", &[])), None);
    }

    #[test]
    fn an_unfiled_rule_before_a_filed_one_still_wins_and_the_order_is_evaluation_order() {
        let rules = rule_set(&[
            r#"{"tenant_name": "prod", "volume_name_contains": "db"}"#,
            r#"{"volume_name_contains": "data"}"#,
            r#"{"tenant_name": "prod"}"#,
            "{}",
        ]);
        assert_eq!(unfiled(&rules), [1, 3]);
        assert_eq!(first(&rules, &volume("prod", "db-data", &[])).as_deref(), Some("r0"));
        assert_eq!(first(&rules, &volume("prod", "data", &[])).as_deref(), Some("r1"));
        assert_eq!(first(&rules, &volume("prod", "x", &[])).as_deref(), Some("r2"));
        assert_eq!(first(&rules, &volume("lab", "db", &[])).as_deref(), Some("r3"));
    }

    #[test]
    fn metadata_values_file_a_rule_unless_an_absent_key_also_matches() {
        let rules = rule_set(&[
            r#"{"metadata_equals": {"tier": "gold", "env": ["prod", 1]}}"#,
            r#"{"metadata_equals": {"tier": null}}"#,
            r#"{"metadata_equals": {"tier": ["silver", null]}}"#,
            r#"{"metadata_contains": {"tier": "old"}}"#,
            r#"{"metadata_equals": {"tier": {"regex": "^bronze"}}}"#,
        ]);
        assert_eq!(unfiled(&rules), [1, 2, 3, 4]);
        // Filed under one key only: "env" has two values and "tier" one, so "tier" is chosen.
        assert_eq!(rules.index.metadata.len(), 1);
        assert_eq!(rules.index.metadata[0].fact, "tier");
        assert_eq!(
            first(&rules, &volume("p", "x", &[("tier", "gold"), ("env", "1")])).as_deref(),
            Some("r0")
        );
        assert_eq!(
            first(&rules, &volume("p", "x", &[("tier", "gold"), ("env", "dev")])).as_deref(),
            Some("r3")
        );
        assert_eq!(first(&rules, &volume("p", "x", &[("tier", "GOLD"), ("env", "prod")])), None);
        assert_eq!(first(&rules, &volume("p", "x", &[])).as_deref(), Some("r1"));
        assert_eq!(first(&rules, &volume("p", "x", &[("tier", "silver")])).as_deref(), Some("r2"));
        assert_eq!(first(&rules, &volume("p", "x", &[("tier", "bronze-1")])).as_deref(), Some("r4"));
    }

    #[test]
    fn prefixes_and_anchored_regexes_file_by_prefix_and_a_nameless_volume_is_known_by_its_id() {
        let rules = rule_set(&[
            r#"{"volume_name_prefix": ["db-", "pg"]}"#,
            r#"{"volume_name": {"regex": "^app-\\d+$"}}"#,
            r#"{"volume_name": ["vol-1", {"regex": "^web"}]}"#,
            r#"{"volume_name": {"regex": "-old$"}}"#,
            r#"{"volume_name_prefix": ""}"#,
        ]);
        assert_eq!(unfiled(&rules), [3]);
        let prefix = &rules.index.prefix[0];
        let mut lengths = prefix.lengths.clone();
        lengths.sort_unstable();
        assert_eq!(lengths, [0, 2, 3, 4, 5]);
        assert_eq!(first(&rules, &volume("p", "pg-1", &[])).as_deref(), Some("r0"));
        assert_eq!(first(&rules, &volume("p", "app-12", &[])).as_deref(), Some("r1"));
        assert_eq!(first(&rules, &volume("p", "app-x", &[])).as_deref(), Some("r4"));
        assert_eq!(first(&rules, &volume("p", "", &[])).as_deref(), Some("r2"));
        assert_eq!(first(&rules, &volume("p", "vol-1", &[])).as_deref(), Some("r2"));
        assert_eq!(first(&rules, &volume("p", "vol-12", &[])).as_deref(), Some("r4"));
        assert_eq!(first(&rules, &volume("p", "db-old", &[])).as_deref(), Some("r0"));
        assert_eq!(first(&rules, &volume("p", "web-old", &[])).as_deref(), Some("r2"));
        assert_eq!(first(&rules, &volume("p", "x-old", &[])).as_deref(), Some("r3"));
    }

    #[test]
    fn an_empty_rule_set_matches_nothing() {
        assert_eq!(first(&RuleSet::empty(), &volume("p", "x", &[])), None);
    }

    #[test]
    fn anchored_prefix_takes_only_the_text_every_match_starts_with() {
        assert_eq!(anchored_prefix(r"^app-12-\d+$"), Some("app-12-"));
        assert_eq!(anchored_prefix("^prod"), Some("prod"));
        assert_eq!(anchored_prefix("^db_x:1/a@b,c=d%e.*"), Some("db_x:1/a@b,c=d%e"));
        assert_eq!(anchored_prefix("^ab+c"), Some("ab"));
        // A quantified last character may be missing.
        assert_eq!(anchored_prefix("^abc?"), Some("ab"));
        assert_eq!(anchored_prefix("^abc*d"), Some("ab"));
        assert_eq!(anchored_prefix("^abc{0,2}"), Some("ab"));
        assert_eq!(anchored_prefix("^a?"), None);
        // Unanchored, alternatives, flags, escapes and classes give no prefix.
        assert_eq!(anchored_prefix("prod"), None);
        assert_eq!(anchored_prefix("^prod|lab"), None);
        assert_eq!(anchored_prefix("^(prod|lab)"), None);
        assert_eq!(anchored_prefix("(?i)^prod"), None);
        assert_eq!(anchored_prefix("(?m)^prod"), None);
        assert_eq!(anchored_prefix(r"^\w+"), None);
        assert_eq!(anchored_prefix("^[p]rod"), None);
        assert_eq!(anchored_prefix("^.rod"), None);
        assert_eq!(anchored_prefix("^"), None);
        // Syntax after the run ends it without changing it.
        assert_eq!(anchored_prefix("^pro(?i)D"), Some("pro"));
        assert_eq!(anchored_prefix("^pro$"), Some("pro"));
        assert_eq!(anchored_prefix("^pré"), Some("pr"));
    }
}
