//! SQL for the `role_grants` table: the role grants identity-svc made, so they can be listed and
//! revoked. One query path serves SQLite and PostgreSQL (sqlx `Any`); times are RFC 3339 UTC text
//! with a fixed width. A grant is recorded before it is made (and forgotten if Keystone refuses),
//! so a crash in between leaves a record of a grant that may not exist, never the reverse.

use chrono::{DateTime, SecondsFormat, Utc};
use service_kit::db::Database;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::IdentityError;

/// One role grant identity-svc made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Project the role was granted on.
    pub project_id: String,
    /// The service user.
    pub user_id: String,
    /// Role id.
    pub role_id: String,
    /// Role name.
    pub role_name: String,
    /// The run that caused it, if any.
    pub run_id: Option<String>,
    /// When it was granted.
    pub granted_at: DateTime<Utc>,
}

/// Which recorded grants to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSelector {
    /// Those made for one run.
    Run(String),
    /// All not yet revoked.
    All,
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, IdentityError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| IdentityError::Corrupt(format!("stored time {text:?}: {e}")))
}

/// The grants table.
#[derive(Debug, Clone)]
pub struct GrantStore {
    database: Database,
}

impl GrantStore {
    /// A store over a migrated database.
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Records a grant about to be made.
    pub async fn record(&self, grant: &Grant) -> Result<(), IdentityError> {
        sqlx::query(
            "INSERT INTO role_grants (project_id, user_id, role_id, role_name, run_id, granted_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&grant.project_id)
        .bind(&grant.user_id)
        .bind(&grant.role_id)
        .bind(&grant.role_name)
        .bind(grant.run_id.as_deref())
        .bind(time_text(grant.granted_at))
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// Forgets a grant Keystone refused.
    pub async fn forget(&self, grant: &Grant) -> Result<(), IdentityError> {
        sqlx::query(
            "DELETE FROM role_grants WHERE project_id = $1 AND user_id = $2 AND role_id = $3 AND granted_at = $4",
        )
        .bind(&grant.project_id)
        .bind(&grant.user_id)
        .bind(&grant.role_id)
        .bind(time_text(grant.granted_at))
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// Grants not yet revoked, oldest first.
    pub async fn open_grants(&self, selector: &GrantSelector) -> Result<Vec<Grant>, IdentityError> {
        const COLUMNS: &str = "project_id, user_id, role_id, role_name, run_id, granted_at";
        let rows = match selector {
            GrantSelector::All => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM role_grants WHERE revoked_at IS NULL ORDER BY granted_at, project_id"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.database.pool()).await?
            }
            GrantSelector::Run(run_id) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM role_grants WHERE revoked_at IS NULL AND run_id = $1 \
                     ORDER BY granted_at, project_id"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(self.database.pool()).await?
            }
        };
        rows.iter().map(grant_of).collect()
    }

    /// Marks a grant as gone from Keystone.
    pub async fn mark_revoked(&self, grant: &Grant, at: DateTime<Utc>) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE role_grants SET revoked_at = $1 \
             WHERE project_id = $2 AND user_id = $3 AND role_id = $4 AND granted_at = $5",
        )
        .bind(time_text(at))
        .bind(&grant.project_id)
        .bind(&grant.user_id)
        .bind(&grant.role_id)
        .bind(time_text(grant.granted_at))
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// Grants recorded and not yet revoked.
    pub async fn outstanding(&self) -> Result<i64, IdentityError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM role_grants WHERE revoked_at IS NULL")
            .fetch_one(self.database.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}

fn grant_of(row: &AnyRow) -> Result<Grant, IdentityError> {
    Ok(Grant {
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        role_id: row.try_get("role_id")?,
        role_name: row.try_get("role_name")?,
        run_id: row.try_get::<Option<String>, _>("run_id")?.filter(|r| !r.is_empty()),
        granted_at: parse_time(&row.try_get::<String, _>("granted_at")?)?,
    })
}
