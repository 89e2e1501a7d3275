//! The database a service owns: SQLite (embedded default, one file per service, WAL) or
//! PostgreSQL (production; one schema per service, so services can share a database without
//! sharing tables). Each service ships migrations for both dialects and runs them at start.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Executor};

use crate::KitError;

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> Result<Self, KitError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(KitError::Config("DATABASE_URL must start with sqlite:// or postgres://".to_owned()))
        }
    }
}

/// A service's migrations for both dialects (`sqlx::migrate!("./migrations/sqlite")`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// Migrations for SQLite.
    pub sqlite: &'static Migrator,
    /// Migrations for PostgreSQL.
    pub postgres: &'static Migrator,
}

/// A connection pool plus the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
}

/// Whether a database error passes with a retry: the pool or the connection is gone, or SQLite
/// stayed busy/locked past its busy timeout (codes 5, 6 and their extended forms). Services answer
/// these with Unavailable, not Internal.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Connections a SQLite pool opens at most, whatever is asked: SQLite takes one writer at a
/// time, so more connections add no throughput, only a page cache each.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

impl Database {
    /// Opens `url`. On PostgreSQL every connection works in `schema` (created if missing); on
    /// SQLite the file and its folder are created and WAL mode is on.
    pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<Self, KitError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        if !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(KitError::Config(format!("schema name {schema:?} must be lowercase letters and _")));
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if backend == Backend::Sqlite && !in_memory {
            create_parent_folder(url)?;
        }
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| KitError::Config(format!("DATABASE_URL is not a valid database url: {e}")))?
            .log_statements(tracing::log::LevelFilter::Debug)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let mut pool = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        // Every connection to an in-memory SQLite database is a new, empty database.
        pool = if in_memory {
            pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else if backend == Backend::Sqlite {
            pool.max_connections(max_connections.clamp(1, SQLITE_MAX_CONNECTIONS))
        } else {
            pool.max_connections(max_connections.max(1))
        };
        if backend == Backend::Postgres {
            let admin = pool.clone().max_connections(1).connect_with(options.clone()).await?;
            admin.execute(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).await?;
            admin.close().await;
        }
        let setup = match backend {
            Backend::Sqlite => {
                // A 1 MiB page cache per connection (SQLite's default is 2 MiB): the database file
                // stays in the OS page cache, so the services need not keep their own copies.
                "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; \
                 PRAGMA cache_size=-1024;"
                    .to_owned()
            }
            Backend::Postgres => format!("SET search_path TO {schema}"),
        };
        let pool = pool
            .after_connect(move |connection, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    connection.execute(AssertSqlSafe(setup)).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Applies the migrations of this database's dialect.
    pub async fn migrate(&self, migrations: Migrations) -> Result<(), KitError> {
        let migrator = match self.backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect, for the few statements that differ.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_parent_folder(url: &str) -> Result<(), KitError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|source| KitError::Io { path: parent.display().to_string(), source })?;
    }
    Ok(())
}
