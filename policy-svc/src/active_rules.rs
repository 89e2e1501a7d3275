//! The rule set in force: loaded from the database, replaced through `ReplaceRules` or the rules
//! file, and re-read when another replica changed it. A document with problems is never stored,
//! so it can never replace the active set.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use service_kit::clock::Clock;

use crate::PolicyError;
use crate::catalog::Catalog;
use crate::rules::{self, Problem, RuleSet, Validation};
use crate::store::{NewRuleSet, RuleSetSource, RuleSetVersion, Store};

/// The document "[]" in force before any rule set was stored.
pub const EMPTY_DOCUMENT: &str = "[]";

/// A compiled rule set and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedRules {
    /// The stored version; `None` before any was stored (version 0).
    pub version: Option<RuleSetVersion>,
    /// The document as submitted.
    pub document: String,
    /// The compiled rules.
    pub rules: RuleSet,
}

impl LoadedRules {
    /// The version number; 0 before any was stored.
    pub fn version_number(&self) -> i64 {
        self.version.as_ref().map_or(0, |v| v.version)
    }
}

/// What a replace did.
#[derive(Debug, Clone)]
pub struct ReplaceOutcome {
    /// The document is valid and in force.
    pub accepted: bool,
    /// It equals the active one; no version was created.
    pub unchanged: bool,
    /// Every problem, when not accepted.
    pub problems: Vec<Problem>,
    /// The version in force after the call.
    pub active: Option<RuleSetVersion>,
}

/// A document to make active.
#[derive(Debug, Clone, Copy)]
pub struct Replacement<'a> {
    /// The document text.
    pub document: &'a str,
    /// How it arrives.
    pub source: RuleSetSource,
    /// Actor, or `file:<path>`.
    pub actor: &'a str,
    /// Why it changes.
    pub comment: &'a str,
    /// Refuse unless this version is active.
    pub expected_version: Option<i64>,
    /// When.
    pub now: DateTime<Utc>,
}

/// The active rule set, cached, with the store behind it.
#[derive(Debug)]
pub struct ActiveRules {
    store: Store,
    current: RwLock<Arc<LoadedRules>>,
}

impl ActiveRules {
    /// Loads the active version from the store.
    pub async fn load(store: Store) -> Result<Self, PolicyError> {
        let loaded = Self::read(&store).await?;
        Ok(Self { store, current: RwLock::new(Arc::new(loaded)) })
    }

    /// The store, for the other tables.
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn read(store: &Store) -> Result<LoadedRules, PolicyError> {
        let Some((version, document)) = store.active_rule_set().await? else {
            return Ok(LoadedRules {
                version: None,
                document: EMPTY_DOCUMENT.to_owned(),
                rules: RuleSet::empty(),
            });
        };
        let rules =
            compile_stored(&document, &Catalog::new([], store.list_policies().await?), version.version)?;
        Ok(LoadedRules { version: Some(version), document, rules })
    }

    fn cached(&self) -> Arc<LoadedRules> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn set(&self, loaded: LoadedRules) -> Arc<LoadedRules> {
        crate::metrics::rules_in_force(loaded.version_number());
        let loaded = Arc::new(loaded);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&loaded);
        loaded
    }

    /// The rule set in force; re-read when the database holds a newer one (another replica, or
    /// a catalog change that alters retention).
    pub async fn current(&self) -> Result<Arc<LoadedRules>, PolicyError> {
        let cached = self.cached();
        if self.store.active_version().await? == cached.version_number() {
            return Ok(cached);
        }
        Ok(self.set(Self::read(&self.store).await?))
    }

    /// The catalog decisions resolve names in: the document's entries over the stored ones.
    pub async fn catalog(&self, loaded: &LoadedRules) -> Result<Catalog, PolicyError> {
        Ok(Catalog::new(loaded.rules.policies().to_vec(), self.store.list_policies().await?))
    }

    /// Validates a document against the stored catalog.
    pub async fn validate(&self, document: &str) -> Result<Validation, PolicyError> {
        let stored = Catalog::new([], self.store.list_policies().await?);
        Ok(rules::validate(document, &stored))
    }

    /// Validates and, when valid, stores and activates a document.
    pub async fn replace(&self, replacement: Replacement<'_>) -> Result<ReplaceOutcome, PolicyError> {
        let validation = self.validate(replacement.document).await?;
        let Some(rule_set) = validation.rule_set else {
            let active = self.current().await?.version.clone();
            if let Some(expected) = replacement.expected_version
                && expected != active.as_ref().map_or(0, |v| v.version)
            {
                return Err(PolicyError::FailedPrecondition(format!(
                    "expected_version {expected} is not the active version {}",
                    active.as_ref().map_or(0, |v| v.version)
                )));
            }
            return Ok(ReplaceOutcome {
                accepted: false,
                unchanged: false,
                problems: validation.problems,
                active,
            });
        };
        let new = NewRuleSet {
            document: replacement.document,
            checksum: &validation.checksum,
            source: replacement.source,
            created_by: replacement.actor,
            comment: replacement.comment,
            rule_count: i64::try_from(validation.rule_count).unwrap_or(i64::MAX),
            policy_count: i64::try_from(validation.policy_count).unwrap_or(i64::MAX),
            expected_version: replacement.expected_version,
            now: replacement.now,
        };
        let (version, created) = self.store.store_rule_set(&new).await?;
        if created {
            tracing::info!(version = version.version, actor = replacement.actor, "rule set replaced");
            self.set(LoadedRules {
                version: Some(version.clone()),
                document: replacement.document.to_owned(),
                rules: rule_set,
            });
        }
        Ok(ReplaceOutcome {
            accepted: true,
            unchanged: !created,
            problems: Vec::new(),
            active: Some(version),
        })
    }
}

/// Compiles a stored document; stored documents were valid when stored, so a problem now is a
/// fault (e.g. a catalog entry removed behind the service's back).
pub fn compile_stored(document: &str, stored: &Catalog, version: i64) -> Result<RuleSet, PolicyError> {
    let validation = rules::validate(document, stored);
    if let Some(rules) = validation.rule_set {
        return Ok(rules);
    }
    for problem in &validation.problems {
        tracing::error!(version, key = %problem.key, reason = %problem.reason, "stored rule set no longer compiles");
    }
    Err(PolicyError::Corrupt(format!("stored rule set version {version} no longer compiles")))
}

/// Watches `POLICY_RULES_FILE`: at start and whenever its modification time or size changes, a
/// changed document is validated and, when valid, made active.
#[derive(Debug)]
pub struct RulesFileWatcher {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    last_checksum: Option<String>,
}

impl RulesFileWatcher {
    /// A watcher of `path` that has not looked yet.
    pub fn new(path: PathBuf) -> Self {
        Self { path, seen: None, last_checksum: None }
    }

    /// Looks at the file once. Returns whether a new version became active. A missing or
    /// unreadable file is an error; a document with problems is logged, problem by problem.
    pub async fn poll(&mut self, active: &ActiveRules, now: DateTime<Utc>) -> Result<bool, PolicyError> {
        let file_name = self.path.display().to_string();
        let io = |source| PolicyError::RulesFile { path: file_name.clone(), source };
        let meta = tokio::fs::metadata(&self.path).await.map_err(io)?;
        let stamp = (meta.modified().map_err(io)?, meta.len());
        if self.seen == Some(stamp) {
            return Ok(false);
        }
        self.seen = Some(stamp);
        let document = tokio::fs::read_to_string(&self.path).await.map_err(io)?;
        let checksum = rules::checksum(&document);
        if self.last_checksum.as_deref() == Some(checksum.as_str()) {
            return Ok(false);
        }
        self.last_checksum = Some(checksum);
        let actor = format!("file:{file_name}");
        let outcome = active
            .replace(Replacement {
                document: &document,
                source: RuleSetSource::File,
                actor: &actor,
                comment: "loaded from POLICY_RULES_FILE",
                expected_version: None,
                now,
            })
            .await?;
        if !outcome.accepted {
            for problem in &outcome.problems {
                tracing::warn!(
                    file = %file_name,
                    rule_index = ?problem.rule_index,
                    rule = %problem.rule_name,
                    policy = %problem.policy_name,
                    key = %problem.key,
                    path = %problem.path,
                    reason = %problem.reason,
                    "rules file problem"
                );
            }
            tracing::warn!(
                file = %file_name,
                problems = outcome.problems.len(),
                active_version = outcome.active.as_ref().map_or(0, |v| v.version),
                "rules file rejected; the active rule set stays"
            );
            return Ok(false);
        }
        if !outcome.unchanged {
            tracing::info!(file = %file_name, version = outcome.active.as_ref().map_or(0, |v| v.version), "rules file loaded");
        }
        Ok(!outcome.unchanged)
    }

    /// Polls every `every` until the task is aborted; errors are logged and polling goes on.
    pub async fn run(mut self, active: Arc<ActiveRules>, clock: Arc<dyn Clock>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(err) = self.poll(&active, clock.now()).await {
                tracing::warn!(error = %err, "rules file check failed; the active rule set stays");
            }
        }
    }
}
