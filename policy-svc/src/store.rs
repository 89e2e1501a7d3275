//! SQL for rule set versions, the stored catalog, policy sets, assignments and exclusions. One
//! query path serves SQLite and PostgreSQL (sqlx `Any`): times are RFC 3339 UTC text with a fixed
//! width (so text order is time order), lists and maps are JSON text. Unique constraints live in
//! the database; a violation comes back as [`PolicyError::AlreadyExists`].

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use service_kit::db::Database;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::PolicyError;
use crate::catalog::{Policy, PolicySource, Retention, Stamp};
use crate::decision::{AssignmentFact, ExclusionFact};
use crate::schedule::Schedule;

/// Formats a time the way the tables store it.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, PolicyError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| PolicyError::Corrupt(format!("stored time {text:?}: {e}")))
}

fn parse_optional_time(text: Option<String>) -> Result<Option<DateTime<Utc>>, PolicyError> {
    text.filter(|t| !t.is_empty()).map(|t| parse_time(&t)).transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, PolicyError> {
    serde_json::from_str(text).map_err(|e| PolicyError::Corrupt(format!("stored {what}: {e}")))
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Serialising string lists and maps cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// How a rule set version arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSetSource {
    /// Through `ReplaceRules`.
    Api,
    /// From `POLICY_RULES_FILE`.
    File,
}

impl RuleSetSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::File => "file",
        }
    }
}

/// A stored rule set version (without its document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetVersion {
    /// 1, 2, ...
    pub version: i64,
    /// `sha256:<hex>` of the document.
    pub checksum: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Actor, or `file:<path>`.
    pub created_by: String,
    /// How it arrived.
    pub source: RuleSetSource,
    /// Why it changed.
    pub comment: String,
    /// Number of rules.
    pub rule_count: i64,
    /// Number of catalog entries it defines.
    pub policy_count: i64,
    /// Whether it is in force.
    pub active: bool,
}

/// A rule set version to store.
#[derive(Debug, Clone)]
pub struct NewRuleSet<'a> {
    /// The document as submitted.
    pub document: &'a str,
    /// Its checksum.
    pub checksum: &'a str,
    /// How it arrived.
    pub source: RuleSetSource,
    /// Actor, or `file:<path>`.
    pub created_by: &'a str,
    /// Why it changed.
    pub comment: &'a str,
    /// Number of rules.
    pub rule_count: i64,
    /// Number of catalog entries.
    pub policy_count: i64,
    /// Refuse unless this is the active version (0: none stored yet).
    pub expected_version: Option<i64>,
    /// When it is stored.
    pub now: DateTime<Utc>,
}

/// A policy set (seed table `snapshot_policy_sets`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySetRecord {
    /// Id.
    pub id: i64,
    /// Name, unique with tenant_id.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Applies to every project.
    pub is_global: bool,
    /// Project the set is scoped to; empty for global sets.
    pub tenant_id: String,
    /// Project name (display).
    pub tenant_name: String,
    /// Policy names.
    pub policies: Vec<String>,
    /// Retention per policy.
    pub retention_map: BTreeMap<String, u32>,
    /// 0..=1000, higher listed first.
    pub priority: i32,
    /// Offered for new assignments.
    pub is_active: bool,
    /// Audit fields.
    pub created_at: Option<DateTime<Utc>>,
    /// Creator.
    pub created_by: String,
    /// Last change.
    pub updated_at: Option<DateTime<Utc>>,
    /// Last changer.
    pub updated_by: String,
}

/// A manual per-volume assignment (seed table `snapshot_assignments`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssignmentRecord {
    /// Id.
    pub id: i64,
    /// Cinder volume id, unique.
    pub volume_id: String,
    /// Display fields.
    pub volume_name: String,
    /// Keystone domain id (the seed's tenant).
    pub tenant_id: String,
    /// Keystone domain name.
    pub tenant_name: String,
    /// Owning project.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Attached server.
    pub vm_id: String,
    /// Server name.
    pub vm_name: String,
    /// Policy set it was made from.
    pub policy_set_id: Option<i64>,
    /// Value for `auto_snapshot`.
    pub auto_snapshot: bool,
    /// Policy names.
    pub policies: Vec<String>,
    /// Retention per policy.
    pub retention_map: BTreeMap<String, u32>,
    /// `manual`, `api` or `rule-based`.
    pub assignment_source: String,
    /// Rules that matched when it was made.
    pub matched_rules: Vec<String>,
    /// Audit fields.
    pub created_at: Option<DateTime<Utc>>,
    /// Creator.
    pub created_by: String,
    /// Last change.
    pub updated_at: Option<DateTime<Utc>>,
    /// Last changer.
    pub updated_by: String,
    /// When metadata last matched it.
    pub last_verified_at: Option<DateTime<Utc>>,
}

impl AssignmentRecord {
    /// What evaluation needs of it.
    pub fn fact(&self) -> AssignmentFact {
        AssignmentFact {
            id: self.id,
            volume_id: self.volume_id.clone(),
            auto_snapshot: self.auto_snapshot,
            policies: self.policies.clone(),
            retention: self.retention_map.clone(),
        }
    }
}

/// An exclusion (seed table `snapshot_exclusions`); `volume_id` empty means the whole project.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExclusionRecord {
    /// Id.
    pub id: i64,
    /// Excluded volume; empty for a project exclusion.
    pub volume_id: String,
    /// Display fields.
    pub volume_name: String,
    /// Keystone domain id.
    pub tenant_id: String,
    /// Keystone domain name.
    pub tenant_name: String,
    /// Project (excluded, or the volume's).
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Why.
    pub exclusion_reason: String,
    /// `manual`, `metadata-tag` or `api`.
    pub exclusion_source: String,
    /// When created.
    pub created_at: Option<DateTime<Utc>>,
    /// Creator.
    pub created_by: String,
    /// When it stops applying.
    pub expires_at: Option<DateTime<Utc>>,
}

impl ExclusionRecord {
    /// What evaluation needs of it.
    pub fn fact(&self) -> ExclusionFact {
        let some = |s: &String| (!s.is_empty()).then(|| s.clone());
        ExclusionFact {
            id: self.id,
            volume_id: some(&self.volume_id),
            project_id: some(&self.project_id),
            expires_at: self.expires_at,
        }
    }
}

/// Filters of ListPolicySets.
#[derive(Debug, Clone, Default)]
pub struct PolicySetFilter {
    /// Global or scoped only.
    pub is_global: Option<bool>,
    /// Scoped to this project.
    pub tenant_id: Option<String>,
    /// Active or inactive only.
    pub is_active: Option<bool>,
}

/// Filters of ListAssignments.
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    /// One volume.
    pub volume_id: Option<String>,
    /// Domain id.
    pub tenant_id: Option<String>,
    /// Project id.
    pub project_id: Option<String>,
    /// Server id.
    pub vm_id: Option<String>,
    /// auto_snapshot value.
    pub auto_snapshot: Option<bool>,
    /// Policy set id.
    pub policy_set_id: Option<i64>,
}

/// Filters of ListExclusions.
#[derive(Debug, Clone, Default)]
pub struct ExclusionFilter {
    /// One volume.
    pub volume_id: Option<String>,
    /// Project-wide and the project's volumes.
    pub project_id: Option<String>,
    /// Domain id.
    pub tenant_id: Option<String>,
    /// Only volume (`Some(true)`) or only project (`Some(false)`) exclusions.
    pub volume_scope: Option<bool>,
    /// Include expired ones.
    pub include_expired: bool,
}

/// A WHERE clause built from optional filters with `$n` placeholders.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    binds: Vec<BindValue>,
}

/// One bind value of a [`Where`].
#[derive(Clone)]
enum BindValue {
    Text(String),
    Bool(bool),
    Int(i64),
}

impl Where {
    fn push(&mut self, clause: &str, value: BindValue) {
        let n = self.binds.len() + 1;
        self.clauses.push(clause.replace('?', &format!("${n}")));
        self.binds.push(value);
    }

    fn text(&mut self, clause: &str, value: Option<&String>) {
        if let Some(value) = value {
            self.push(clause, BindValue::Text(value.clone()));
        }
    }

    fn flag(&mut self, clause: &str, value: Option<bool>) {
        if let Some(value) = value {
            self.push(clause, BindValue::Bool(value));
        }
    }

    fn int(&mut self, clause: &str, value: Option<i64>) {
        if let Some(value) = value {
            self.push(clause, BindValue::Int(value));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!(" WHERE {}", self.clauses.join(" AND ")) }
    }

    fn bind<'q>(
        &self,
        mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        for value in self.binds.iter().cloned() {
            query = match value {
                BindValue::Text(v) => query.bind(v),
                BindValue::Bool(v) => query.bind(v),
                BindValue::Int(v) => query.bind(v),
            };
        }
        query
    }
}

/// The policy-svc tables.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
}

const RULE_SET_COLUMNS: &str = "version, checksum, created_at, created_by, source, comment, rule_count, policy_count, CAST(CASE WHEN is_active THEN 1 ELSE 0 END AS BIGINT) AS is_active";
const POLICY_COLUMNS: &str = "name, description, schedule_cron, schedule_timezone, schedule_interval_seconds, \
     schedule_anchor, retention_count, retention_max_age_seconds, compliance_grace_seconds, created_at, updated_at, updated_by";
const SET_COLUMNS: &str = "id, name, description, CAST(CASE WHEN is_global THEN 1 ELSE 0 END AS BIGINT) AS is_global, tenant_id, tenant_name, \
     policies, retention_map, priority, CAST(CASE WHEN is_active THEN 1 ELSE 0 END AS BIGINT) AS is_active, created_at, created_by, updated_at, updated_by";
const ASSIGNMENT_COLUMNS: &str = "id, volume_id, volume_name, tenant_id, tenant_name, project_id, project_name, \
     vm_id, vm_name, policy_set_id, CAST(CASE WHEN auto_snapshot THEN 1 ELSE 0 END AS BIGINT) AS auto_snapshot, policies, retention_map, assignment_source, matched_rules, \
     created_at, created_by, updated_at, updated_by, last_verified_at";
const EXCLUSION_COLUMNS: &str = "id, volume_id, volume_name, tenant_id, tenant_name, project_id, project_name, \
     exclusion_reason, exclusion_source, created_at, created_by, expires_at";

/// Reads a boolean column selected as `CAST(CASE WHEN col THEN 1 ELSE 0 END AS BIGINT)`: the Any driver cannot decode
/// SQLite's BOOLEAN.
fn flag(row: &AnyRow, column: &str) -> Result<bool, PolicyError> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

fn text(row: &AnyRow, column: &str) -> Result<String, PolicyError> {
    Ok(row.try_get::<Option<String>, _>(column)?.unwrap_or_default())
}

impl Store {
    /// A store over an opened, migrated database.
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    fn pool(&self) -> &AnyPool {
        self.database.pool()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.database.ping().await
    }

    // ---- rule sets ----

    fn rule_set_version(row: &AnyRow) -> Result<RuleSetVersion, PolicyError> {
        let source = match text(row, "source")?.as_str() {
            "file" => RuleSetSource::File,
            _ => RuleSetSource::Api,
        };
        Ok(RuleSetVersion {
            version: row.try_get("version")?,
            checksum: text(row, "checksum")?,
            created_at: parse_time(&text(row, "created_at")?)?,
            created_by: text(row, "created_by")?,
            source,
            comment: text(row, "comment")?,
            rule_count: row.try_get("rule_count")?,
            policy_count: row.try_get("policy_count")?,
            active: flag(row, "is_active")?,
        })
    }

    /// The active version and its document, if any was stored.
    pub async fn active_rule_set(&self) -> Result<Option<(RuleSetVersion, String)>, PolicyError> {
        let sql = format!("SELECT {RULE_SET_COLUMNS}, document FROM rule_sets WHERE is_active = TRUE");
        let row = sqlx::query(AssertSqlSafe(sql)).fetch_optional(self.pool()).await?;
        row.map(|r| Ok((Self::rule_set_version(&r)?, text(&r, "document")?))).transpose()
    }

    /// A version and its document.
    pub async fn rule_set(&self, version: i64) -> Result<Option<(RuleSetVersion, String)>, PolicyError> {
        let sql = format!("SELECT {RULE_SET_COLUMNS}, document FROM rule_sets WHERE version = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(version).fetch_optional(self.pool()).await?;
        row.map(|r| Ok((Self::rule_set_version(&r)?, text(&r, "document")?))).transpose()
    }

    /// The active version number; 0 before any was stored.
    pub async fn active_version(&self) -> Result<i64, PolicyError> {
        let row = sqlx::query("SELECT version FROM rule_sets WHERE is_active = TRUE")
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("version")).transpose()?.unwrap_or(0))
    }

    /// Versions newest first.
    pub async fn list_rule_set_versions(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RuleSetVersion>, PolicyError> {
        let sql =
            format!("SELECT {RULE_SET_COLUMNS} FROM rule_sets ORDER BY version DESC LIMIT $1 OFFSET $2");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(limit).bind(offset).fetch_all(self.pool()).await?;
        rows.iter().map(Self::rule_set_version).collect()
    }

    /// Stores a validated document as the new active version, in one transaction. Returns the
    /// active version afterwards and whether it is new (`false`: same checksum as the active one).
    pub async fn store_rule_set(&self, new: &NewRuleSet<'_>) -> Result<(RuleSetVersion, bool), PolicyError> {
        let mut tx = self.pool().begin().await?;
        let sql = format!("SELECT {RULE_SET_COLUMNS} FROM rule_sets WHERE is_active = TRUE");
        let active = sqlx::query(AssertSqlSafe(sql)).fetch_optional(&mut *tx).await?;
        let active = active.as_ref().map(Self::rule_set_version).transpose()?;
        let active_version = active.as_ref().map_or(0, |a| a.version);
        if let Some(expected) = new.expected_version
            && expected != active_version
        {
            return Err(PolicyError::FailedPrecondition(format!(
                "expected_version {expected} is not the active version {active_version}"
            )));
        }
        if let Some(active) = active
            && active.checksum == new.checksum
        {
            return Ok((active, false));
        }
        let max: Option<i64> =
            sqlx::query("SELECT MAX(version) AS v FROM rule_sets").fetch_one(&mut *tx).await?.try_get("v")?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query("UPDATE rule_sets SET is_active = FALSE WHERE is_active = TRUE")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO rule_sets (version, document, checksum, source, created_by, created_at, comment, rule_count, \
             policy_count, is_active) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE)",
        )
        .bind(version)
        .bind(new.document)
        .bind(new.checksum)
        .bind(new.source.as_str())
        .bind(new.created_by)
        .bind(time_text(new.now))
        .bind(new.comment)
        .bind(new.rule_count)
        .bind(new.policy_count)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let stored = RuleSetVersion {
            version,
            checksum: new.checksum.to_owned(),
            created_at: parse_time(&time_text(new.now))?,
            created_by: new.created_by.to_owned(),
            source: new.source,
            comment: new.comment.to_owned(),
            rule_count: new.rule_count,
            policy_count: new.policy_count,
            active: true,
        };
        Ok((stored, true))
    }

    // ---- catalog ----

    fn policy(row: &AnyRow) -> Result<Policy, PolicyError> {
        let name = text(row, "name")?;
        let corrupt = |what: String| PolicyError::Corrupt(format!("policy {name}: {what}"));
        let cron: Option<String> = row.try_get("schedule_cron")?;
        let interval: Option<i64> = row.try_get("schedule_interval_seconds")?;
        let schedule = match (cron, interval) {
            (Some(cron), _) => Schedule::cron(&cron, &text(row, "schedule_timezone")?),
            (None, Some(seconds)) => {
                let anchor = parse_optional_time(row.try_get("schedule_anchor")?)?;
                Schedule::interval(Duration::seconds(seconds), anchor)
            }
            (None, None) => return Err(corrupt("no schedule".to_owned())),
        }
        .map_err(|e| corrupt(e.to_string()))?;
        let count: i64 = row.try_get("retention_count")?;
        let max_age: Option<i64> = row.try_get("retention_max_age_seconds")?;
        let grace: i64 = row.try_get("compliance_grace_seconds")?;
        Ok(Policy {
            description: text(row, "description")?,
            schedule,
            retention: Retention {
                count: u32::try_from(count).map_err(|e| corrupt(e.to_string()))?,
                max_age: max_age.map(Duration::seconds),
            },
            compliance_grace: Duration::seconds(grace),
            source: PolicySource::Catalog,
            stamp: Some(Stamp {
                created_at: parse_time(&text(row, "created_at")?)?,
                updated_at: parse_time(&text(row, "updated_at")?)?,
                updated_by: text(row, "updated_by")?,
            }),
            name,
        })
    }

    /// Every stored catalog entry, by name.
    pub async fn list_policies(&self) -> Result<Vec<Policy>, PolicyError> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policies ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        rows.iter().map(Self::policy).collect()
    }

    /// One stored catalog entry.
    pub async fn get_policy(&self, name: &str) -> Result<Option<Policy>, PolicyError> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policies WHERE name = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(name).fetch_optional(self.pool()).await?;
        row.as_ref().map(Self::policy).transpose()
    }

    /// Creates or replaces a catalog entry; returns whether it was created.
    pub async fn upsert_policy(
        &self,
        policy: &Policy,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PolicyError> {
        let (cron, zone, interval, anchor) = match &policy.schedule {
            Schedule::Cron(cron) => {
                (Some(cron.expression().to_owned()), Some(cron.zone().name().to_owned()), None, None)
            }
            Schedule::Interval { every, anchor } => {
                (None, None, Some(every.num_seconds()), Some(time_text(*anchor)))
            }
        };
        let now = time_text(now);
        let mut tx = self.pool().begin().await?;
        let exists = sqlx::query("SELECT name FROM policies WHERE name = $1")
            .bind(&policy.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let sql = if exists {
            "UPDATE policies SET description = $2, schedule_cron = $3, schedule_timezone = $4, schedule_interval_seconds = $5, \
             schedule_anchor = $6, retention_count = $7, retention_max_age_seconds = $8, compliance_grace_seconds = $9, \
             updated_at = $10, updated_by = $11 WHERE name = $1"
        } else {
            "INSERT INTO policies (name, description, schedule_cron, schedule_timezone, schedule_interval_seconds, \
             schedule_anchor, retention_count, retention_max_age_seconds, compliance_grace_seconds, created_at, updated_at, \
             updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)"
        };
        sqlx::query(sql)
            .bind(&policy.name)
            .bind(&policy.description)
            .bind(cron)
            .bind(zone)
            .bind(interval)
            .bind(anchor)
            .bind(i64::from(policy.retention.count))
            .bind(policy.retention.max_age.map(|d| d.num_seconds()))
            .bind(policy.compliance_grace.num_seconds())
            .bind(&now)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(!exists)
    }

    /// Deletes a catalog entry; returns whether it existed.
    pub async fn delete_policy(&self, name: &str) -> Result<bool, PolicyError> {
        let done =
            sqlx::query("DELETE FROM policies WHERE name = $1").bind(name).execute(self.pool()).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Names of policy sets and volumes of assignments that use `policy` (at most `limit` each).
    pub async fn policy_referrers(&self, policy: &str, limit: usize) -> Result<Vec<String>, PolicyError> {
        let mut referrers = Vec::new();
        let sets = sqlx::query("SELECT name, policies FROM snapshot_policy_sets ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        for row in &sets {
            let names: Vec<String> = from_json(&text(row, "policies")?, "policies")?;
            if names.iter().any(|n| n == policy) && referrers.len() < limit {
                referrers.push(format!("policy set '{}'", text(row, "name")?));
            }
        }
        let assignments =
            sqlx::query("SELECT volume_id, policies FROM snapshot_assignments ORDER BY volume_id")
                .fetch_all(self.pool())
                .await?;
        for row in &assignments {
            let names: Vec<String> = from_json(&text(row, "policies")?, "policies")?;
            if names.iter().any(|n| n == policy) && referrers.len() < limit * 2 {
                referrers.push(format!("assignment of volume {}", text(row, "volume_id")?));
            }
        }
        Ok(referrers)
    }

    /// Every policy name used by policy sets and assignments.
    pub async fn used_policy_names(&self) -> Result<Vec<String>, PolicyError> {
        let mut names = Vec::new();
        for sql in ["SELECT policies FROM snapshot_policy_sets", "SELECT policies FROM snapshot_assignments"]
        {
            for row in sqlx::query(sql).fetch_all(self.pool()).await? {
                names.extend(from_json::<Vec<String>>(&text(&row, "policies")?, "policies")?);
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    // ---- policy sets ----

    fn policy_set(row: &AnyRow) -> Result<PolicySetRecord, PolicyError> {
        Ok(PolicySetRecord {
            id: row.try_get("id")?,
            name: text(row, "name")?,
            description: text(row, "description")?,
            is_global: flag(row, "is_global")?,
            tenant_id: text(row, "tenant_id")?,
            tenant_name: text(row, "tenant_name")?,
            policies: from_json(&text(row, "policies")?, "policies")?,
            retention_map: from_json(&text(row, "retention_map")?, "retention_map")?,
            priority: i32::try_from(row.try_get::<i64, _>("priority")?).unwrap_or_default(),
            is_active: flag(row, "is_active")?,
            created_at: parse_optional_time(row.try_get("created_at")?)?,
            created_by: text(row, "created_by")?,
            updated_at: parse_optional_time(row.try_get("updated_at")?)?,
            updated_by: text(row, "updated_by")?,
        })
    }

    /// A page of policy sets (priority desc, created_at desc) and the total matching.
    pub async fn list_policy_sets(
        &self,
        filter: &PolicySetFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<PolicySetRecord>, i64), PolicyError> {
        let mut w = Where::default();
        w.flag("is_global = ?", filter.is_global);
        w.text("tenant_id = ?", filter.tenant_id.as_ref());
        w.flag("is_active = ?", filter.is_active);
        let order = " ORDER BY priority DESC, created_at DESC, id DESC";
        let (rows, total) = self.page(SET_COLUMNS, "snapshot_policy_sets", &w, order, offset, limit).await?;
        Ok((rows.iter().map(Self::policy_set).collect::<Result<_, _>>()?, total))
    }

    /// One policy set.
    pub async fn get_policy_set(&self, id: i64) -> Result<Option<PolicySetRecord>, PolicyError> {
        let sql = format!("SELECT {SET_COLUMNS} FROM snapshot_policy_sets WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        row.as_ref().map(Self::policy_set).transpose()
    }

    /// Inserts a policy set; returns it with id and timestamps.
    pub async fn create_policy_set(
        &self,
        set: &PolicySetRecord,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<PolicySetRecord, PolicyError> {
        let now_text = time_text(now);
        let row = sqlx::query(
            "INSERT INTO snapshot_policy_sets (name, description, is_global, tenant_id, tenant_name, policies, retention_map, \
             priority, is_active, created_at, created_by, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9, $10, $9, $10) RETURNING id",
        )
        .bind(&set.name)
        .bind(&set.description)
        .bind(set.is_global)
        .bind((!set.tenant_id.is_empty()).then(|| set.tenant_id.clone()))
        .bind(&set.tenant_name)
        .bind(to_json(&set.policies))
        .bind(to_json(&set.retention_map))
        .bind(i64::from(set.priority))
        .bind(&now_text)
        .bind(actor)
        .fetch_one(self.pool())
        .await
        .map_err(|e| unique(e, &format!("a policy set named '{}' already exists in this scope", set.name)))?;
        let id: i64 = row.try_get("id")?;
        self.get_policy_set(id).await?.ok_or_else(|| PolicyError::not_found("policy set", id))
    }

    /// Writes every field of an existing policy set.
    pub async fn update_policy_set(
        &self,
        set: &PolicySetRecord,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<PolicySetRecord, PolicyError> {
        let done = sqlx::query(
            "UPDATE snapshot_policy_sets SET name = $2, description = $3, is_global = $4, tenant_id = $5, tenant_name = $6, \
             policies = $7, retention_map = $8, priority = $9, is_active = $10, updated_at = $11, updated_by = $12 WHERE id = $1",
        )
        .bind(set.id)
        .bind(&set.name)
        .bind(&set.description)
        .bind(set.is_global)
        .bind((!set.tenant_id.is_empty()).then(|| set.tenant_id.clone()))
        .bind(&set.tenant_name)
        .bind(to_json(&set.policies))
        .bind(to_json(&set.retention_map))
        .bind(i64::from(set.priority))
        .bind(set.is_active)
        .bind(time_text(now))
        .bind(actor)
        .execute(self.pool())
        .await
        .map_err(|e| unique(e, &format!("a policy set named '{}' already exists in this scope", set.name)))?;
        if done.rows_affected() == 0 {
            return Err(PolicyError::not_found("policy set", set.id));
        }
        self.get_policy_set(set.id).await?.ok_or_else(|| PolicyError::not_found("policy set", set.id))
    }

    /// Deletes a policy set unless assignments reference it (the database refuses too).
    pub async fn delete_policy_set(&self, id: i64) -> Result<(), PolicyError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM snapshot_assignments WHERE policy_set_id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await?;
        let referencing: i64 = row.try_get("n")?;
        if referencing > 0 {
            return Err(PolicyError::FailedPrecondition(format!(
                "policy set {id} is referenced by {referencing} assignment(s); change or delete them first"
            )));
        }
        let done = sqlx::query("DELETE FROM snapshot_policy_sets WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(|e| {
                if let sqlx::Error::Database(db) = &e
                    && db.is_foreign_key_violation()
                {
                    return PolicyError::FailedPrecondition(format!(
                        "policy set {id} is referenced by assignments"
                    ));
                }
                PolicyError::from(e)
            })?;
        if done.rows_affected() == 0 {
            return Err(PolicyError::not_found("policy set", id));
        }
        Ok(())
    }

    async fn page(
        &self,
        columns: &str,
        table: &str,
        w: &Where,
        order: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<AnyRow>, i64), PolicyError> {
        let count_sql = format!("SELECT COUNT(*) AS n FROM {table}{}", w.sql());
        let total: i64 =
            w.bind(sqlx::query(AssertSqlSafe(count_sql))).fetch_one(self.pool()).await?.try_get("n")?;
        let n = w.binds.len();
        let sql =
            format!("SELECT {columns} FROM {table}{}{order} LIMIT ${} OFFSET ${}", w.sql(), n + 1, n + 2);
        let rows =
            w.bind(sqlx::query(AssertSqlSafe(sql))).bind(limit).bind(offset).fetch_all(self.pool()).await?;
        Ok((rows, total))
    }

    // ---- assignments ----

    fn assignment(row: &AnyRow) -> Result<AssignmentRecord, PolicyError> {
        Ok(AssignmentRecord {
            id: row.try_get("id")?,
            volume_id: text(row, "volume_id")?,
            volume_name: text(row, "volume_name")?,
            tenant_id: text(row, "tenant_id")?,
            tenant_name: text(row, "tenant_name")?,
            project_id: text(row, "project_id")?,
            project_name: text(row, "project_name")?,
            vm_id: text(row, "vm_id")?,
            vm_name: text(row, "vm_name")?,
            policy_set_id: row.try_get("policy_set_id")?,
            auto_snapshot: flag(row, "auto_snapshot")?,
            policies: from_json(&text(row, "policies")?, "policies")?,
            retention_map: from_json(&text(row, "retention_map")?, "retention_map")?,
            assignment_source: text(row, "assignment_source")?,
            matched_rules: from_json(&text(row, "matched_rules")?, "matched_rules")?,
            created_at: parse_optional_time(row.try_get("created_at")?)?,
            created_by: text(row, "created_by")?,
            updated_at: parse_optional_time(row.try_get("updated_at")?)?,
            updated_by: text(row, "updated_by")?,
            last_verified_at: parse_optional_time(row.try_get("last_verified_at")?)?,
        })
    }

    /// A page of assignments ordered by volume id, and the total matching.
    pub async fn list_assignments(
        &self,
        filter: &AssignmentFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<AssignmentRecord>, i64), PolicyError> {
        let mut w = Where::default();
        w.text("volume_id = ?", filter.volume_id.as_ref());
        w.text("tenant_id = ?", filter.tenant_id.as_ref());
        w.text("project_id = ?", filter.project_id.as_ref());
        w.text("vm_id = ?", filter.vm_id.as_ref());
        w.flag("auto_snapshot = ?", filter.auto_snapshot);
        w.int("policy_set_id = ?", filter.policy_set_id);
        let (rows, total) = self
            .page(ASSIGNMENT_COLUMNS, "snapshot_assignments", &w, " ORDER BY volume_id", offset, limit)
            .await?;
        Ok((rows.iter().map(Self::assignment).collect::<Result<_, _>>()?, total))
    }

    /// The assignment of one volume.
    pub async fn get_assignment(&self, volume_id: &str) -> Result<Option<AssignmentRecord>, PolicyError> {
        let sql = format!("SELECT {ASSIGNMENT_COLUMNS} FROM snapshot_assignments WHERE volume_id = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(volume_id).fetch_optional(self.pool()).await?;
        row.as_ref().map(Self::assignment).transpose()
    }

    /// Every assignment (for bulk evaluation).
    pub async fn all_assignments(&self) -> Result<Vec<AssignmentRecord>, PolicyError> {
        let sql = format!("SELECT {ASSIGNMENT_COLUMNS} FROM snapshot_assignments");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        rows.iter().map(Self::assignment).collect()
    }

    /// Inserts an assignment.
    pub async fn create_assignment(
        &self,
        a: &AssignmentRecord,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<AssignmentRecord, PolicyError> {
        let now_text = time_text(now);
        sqlx::query(
            "INSERT INTO snapshot_assignments (volume_id, volume_name, tenant_id, tenant_name, project_id, project_name, vm_id, \
             vm_name, policy_set_id, auto_snapshot, policies, retention_map, assignment_source, matched_rules, created_at, \
             created_by, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $15, $16)",
        )
        .bind(&a.volume_id)
        .bind(&a.volume_name)
        .bind(&a.tenant_id)
        .bind(&a.tenant_name)
        .bind(&a.project_id)
        .bind(&a.project_name)
        .bind(&a.vm_id)
        .bind(&a.vm_name)
        .bind(a.policy_set_id)
        .bind(a.auto_snapshot)
        .bind(to_json(&a.policies))
        .bind(to_json(&a.retention_map))
        .bind(&a.assignment_source)
        .bind(to_json(&a.matched_rules))
        .bind(&now_text)
        .bind(actor)
        .execute(self.pool())
        .await
        .map_err(|e| unique(e, &format!("volume {} already has an assignment", a.volume_id)))?;
        self.get_assignment(&a.volume_id)
            .await?
            .ok_or_else(|| PolicyError::not_found("assignment of volume", &a.volume_id))
    }

    /// Writes every field of an existing assignment.
    pub async fn update_assignment(
        &self,
        a: &AssignmentRecord,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<AssignmentRecord, PolicyError> {
        let done = sqlx::query(
            "UPDATE snapshot_assignments SET volume_name = $2, tenant_id = $3, tenant_name = $4, project_name = $5, vm_id = $6, \
             vm_name = $7, policy_set_id = $8, auto_snapshot = $9, policies = $10, retention_map = $11, updated_at = $12, \
             updated_by = $13 WHERE volume_id = $1",
        )
        .bind(&a.volume_id)
        .bind(&a.volume_name)
        .bind(&a.tenant_id)
        .bind(&a.tenant_name)
        .bind(&a.project_name)
        .bind(&a.vm_id)
        .bind(&a.vm_name)
        .bind(a.policy_set_id)
        .bind(a.auto_snapshot)
        .bind(to_json(&a.policies))
        .bind(to_json(&a.retention_map))
        .bind(time_text(now))
        .bind(actor)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(PolicyError::not_found("assignment of volume", &a.volume_id));
        }
        self.get_assignment(&a.volume_id)
            .await?
            .ok_or_else(|| PolicyError::not_found("assignment of volume", &a.volume_id))
    }

    /// Records that ApplyAssignment found these volumes' metadata matching their assignments.
    pub async fn mark_assignments_verified(
        &self,
        volume_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), PolicyError> {
        if volume_ids.is_empty() {
            return Ok(());
        }
        let now_text = time_text(now);
        let mut tx = self.pool().begin().await?;
        for volume_id in volume_ids {
            sqlx::query("UPDATE snapshot_assignments SET last_verified_at = $1 WHERE volume_id = $2")
                .bind(&now_text)
                .bind(volume_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the assignment of a volume.
    pub async fn delete_assignment(&self, volume_id: &str) -> Result<(), PolicyError> {
        let done = sqlx::query("DELETE FROM snapshot_assignments WHERE volume_id = $1")
            .bind(volume_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(PolicyError::not_found("assignment of volume", volume_id));
        }
        Ok(())
    }

    // ---- exclusions ----

    fn exclusion(row: &AnyRow) -> Result<ExclusionRecord, PolicyError> {
        Ok(ExclusionRecord {
            id: row.try_get("id")?,
            volume_id: text(row, "volume_id")?,
            volume_name: text(row, "volume_name")?,
            tenant_id: text(row, "tenant_id")?,
            tenant_name: text(row, "tenant_name")?,
            project_id: text(row, "project_id")?,
            project_name: text(row, "project_name")?,
            exclusion_reason: text(row, "exclusion_reason")?,
            exclusion_source: text(row, "exclusion_source")?,
            created_at: parse_optional_time(row.try_get("created_at")?)?,
            created_by: text(row, "created_by")?,
            expires_at: parse_optional_time(row.try_get("expires_at")?)?,
        })
    }

    /// A page of exclusions (newest first) and the total matching, as of `now`.
    pub async fn list_exclusions(
        &self,
        filter: &ExclusionFilter,
        now: DateTime<Utc>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ExclusionRecord>, i64), PolicyError> {
        let mut w = Where::default();
        w.text("volume_id = ?", filter.volume_id.as_ref());
        w.text("project_id = ?", filter.project_id.as_ref());
        w.text("tenant_id = ?", filter.tenant_id.as_ref());
        match filter.volume_scope {
            Some(true) => w.clauses.push("volume_id IS NOT NULL".to_owned()),
            Some(false) => w.clauses.push("volume_id IS NULL".to_owned()),
            None => {}
        }
        let now_text = time_text(now);
        if !filter.include_expired {
            w.text("(expires_at IS NULL OR expires_at > ?)", Some(&now_text));
        }
        let order = " ORDER BY created_at DESC, id DESC";
        let (rows, total) =
            self.page(EXCLUSION_COLUMNS, "snapshot_exclusions", &w, order, offset, limit).await?;
        Ok((rows.iter().map(Self::exclusion).collect::<Result<_, _>>()?, total))
    }

    /// One exclusion by id.
    pub async fn get_exclusion(&self, id: i64) -> Result<Option<ExclusionRecord>, PolicyError> {
        let sql = format!("SELECT {EXCLUSION_COLUMNS} FROM snapshot_exclusions WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        row.as_ref().map(Self::exclusion).transpose()
    }

    /// Exclusions of a volume or its project, expired ones included.
    pub async fn exclusions_for(
        &self,
        volume_id: &str,
        project_id: &str,
    ) -> Result<Vec<ExclusionRecord>, PolicyError> {
        let sql = format!(
            "SELECT {EXCLUSION_COLUMNS} FROM snapshot_exclusions WHERE volume_id = $1 OR (volume_id IS NULL AND project_id = $2)"
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(volume_id).bind(project_id).fetch_all(self.pool()).await?;
        rows.iter().map(Self::exclusion).collect()
    }

    /// Every exclusion (for bulk evaluation).
    pub async fn all_exclusions(&self) -> Result<Vec<ExclusionRecord>, PolicyError> {
        let sql = format!("SELECT {EXCLUSION_COLUMNS} FROM snapshot_exclusions");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        rows.iter().map(Self::exclusion).collect()
    }

    /// Inserts an exclusion.
    pub async fn create_exclusion(
        &self,
        e: &ExclusionRecord,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ExclusionRecord, PolicyError> {
        let optional = |s: &String| (!s.is_empty()).then(|| s.clone());
        let conflict = if e.volume_id.is_empty() {
            format!("project {} already has an exclusion", e.project_id)
        } else {
            format!("volume {} already has an exclusion", e.volume_id)
        };
        let row = sqlx::query(
            "INSERT INTO snapshot_exclusions (volume_id, volume_name, tenant_id, tenant_name, project_id, project_name, \
             exclusion_reason, exclusion_source, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(optional(&e.volume_id))
        .bind(&e.volume_name)
        .bind(&e.tenant_id)
        .bind(&e.tenant_name)
        .bind(optional(&e.project_id))
        .bind(&e.project_name)
        .bind(&e.exclusion_reason)
        .bind(&e.exclusion_source)
        .bind(time_text(now))
        .bind(actor)
        .bind(e.expires_at.map(time_text))
        .fetch_one(self.pool())
        .await
        .map_err(|err| unique(err, &conflict))?;
        let id: i64 = row.try_get("id")?;
        self.get_exclusion(id).await?.ok_or_else(|| PolicyError::not_found("exclusion", id))
    }

    /// Writes reason and expiry of an exclusion.
    pub async fn update_exclusion(&self, e: &ExclusionRecord) -> Result<ExclusionRecord, PolicyError> {
        let done = sqlx::query(
            "UPDATE snapshot_exclusions SET exclusion_reason = $2, expires_at = $3 WHERE id = $1",
        )
        .bind(e.id)
        .bind(&e.exclusion_reason)
        .bind(e.expires_at.map(time_text))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(PolicyError::not_found("exclusion", e.id));
        }
        self.get_exclusion(e.id).await?.ok_or_else(|| PolicyError::not_found("exclusion", e.id))
    }

    /// Finds the exclusion a delete selects: by id, by volume, or the project-wide one.
    pub async fn find_exclusion(
        &self,
        selector: &ExclusionSelector,
    ) -> Result<Option<ExclusionRecord>, PolicyError> {
        let (clause, value) = match selector {
            ExclusionSelector::Id(id) => return self.get_exclusion(*id).await,
            ExclusionSelector::Volume(v) => ("volume_id = $1", v),
            ExclusionSelector::Project(p) => ("volume_id IS NULL AND project_id = $1", p),
        };
        let sql = format!("SELECT {EXCLUSION_COLUMNS} FROM snapshot_exclusions WHERE {clause}");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(value.clone()).fetch_optional(self.pool()).await?;
        row.as_ref().map(Self::exclusion).transpose()
    }

    /// Deletes an exclusion by id.
    pub async fn delete_exclusion(&self, id: i64) -> Result<(), PolicyError> {
        let done = sqlx::query("DELETE FROM snapshot_exclusions WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(PolicyError::not_found("exclusion", id));
        }
        Ok(())
    }
}

/// Which exclusion a delete names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusionSelector {
    /// By id.
    Id(i64),
    /// The volume-scoped exclusion of a volume.
    Volume(String),
    /// The project-scoped exclusion of a project.
    Project(String),
}

/// Maps a unique violation to AlreadyExists with `message`; other errors pass through.
fn unique(err: sqlx::Error, message: &str) -> PolicyError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return PolicyError::AlreadyExists(message.to_owned());
        }
        if db.is_foreign_key_violation() {
            return PolicyError::NotFound("the referenced policy set does not exist".to_owned());
        }
    }
    PolicyError::from(err)
}
