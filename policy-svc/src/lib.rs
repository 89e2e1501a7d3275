//! Policy-svc owns which volumes get which snapshot policies: the rule set (versioned), the policy
//! catalog with schedules and retention, policy sets, manual assignments and exclusions. It
//! evaluates a volume to a decision with an explanation and plans the Cinder volume metadata.
//!
//! Pure, synchronous domain modules (no I/O; snapkeeper's other services may use them as a
//! library, e.g. `policy_svc::schedule` for due-ness and compliance windows):
//! [`rules`] (parse, validate, compile, match, explain), [`decision`] (precedence: exclusion >
//! assignment > first matching rule), [`catalog`] (policies and legacy names), [`schedule`] (cron
//! with time zone or interval; slots, DST-aware), [`metadata`] (our volume metadata keys and the
//! change set). I/O at the edges: [`store`] (SQL), [`active_rules`] (the rule set in force and the
//! `POLICY_RULES_FILE` watcher), [`cloud`] (the admin session from identity-svc; Cinder and Keystone
//! reads), [`assignment`] (plan and apply over the cloud), [`grpc`] (the `PolicyService`),
//! [`config`] (the binary's settings).

pub mod active_rules;
pub mod assignment;
pub mod catalog;
pub mod cloud;
pub mod config;
pub mod decision;
pub mod grpc;
pub mod metadata;
pub mod metrics;
pub mod rules;
pub mod schedule;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use service_kit::clock::{Clock, SystemClock};
use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use service_kit::{ErrorCode, ServiceError};
use snapkeeper_proto::policy::v1::policy_service_server::PolicyServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "policy";

/// What can go wrong in policy-svc.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
    /// A database call failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row cannot be read back (a fault of ours).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique constraint refused the write.
    #[error("{0}")]
    AlreadyExists(String),
    /// The state does not allow the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The request field, dotted.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An OpenStack call failed (Cinder or Keystone unreachable, or refusing).
    #[error("openstack: {0}")]
    Cloud(#[from] openstack::Error),
    /// identity-svc did not hand out admin credentials.
    #[error("identity-svc: {message}")]
    Identity {
        /// The status identity-svc answered with (or ours, for an unusable answer).
        code: snapkeeper_proto::tonic::Code,
        /// What it said.
        message: String,
    },
    /// The rules file could not be read.
    #[error("reading rules file {path}: {source}")]
    RulesFile {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl PolicyError {
    /// A NotFound error for a kind of object and its id.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("{kind} {id} not found"))
    }

    /// An InvalidArgument error naming the field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
}

impl From<snapkeeper_proto::tonic::Status> for PolicyError {
    fn from(status: snapkeeper_proto::tonic::Status) -> Self {
        Self::Identity { code: status.code(), message: status.message().to_owned() }
    }
}

impl From<PolicyError> for ServiceError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::Invalid { field, reason } => Self::invalid(field, reason),
            PolicyError::NotFound(message) => Self::new(ErrorCode::NotFound, message),
            PolicyError::AlreadyExists(message) => Self::new(ErrorCode::AlreadyExists, message),
            PolicyError::FailedPrecondition(message) => Self::new(ErrorCode::FailedPrecondition, message),
            PolicyError::Database(ref error) if service_kit::db::is_transient(error) => {
                tracing::warn!(error = %err, "database unavailable");
                Self::new(ErrorCode::Unavailable, "database unavailable; retry with backoff")
            }
            // identity-svc's own precondition (e.g. no Cinder endpoint in the region) is the
            // caller's to fix; anything else from it or the cloud may pass with a retry.
            PolicyError::Identity { code: snapkeeper_proto::tonic::Code::FailedPrecondition, message } => {
                Self::new(ErrorCode::FailedPrecondition, format!("identity-svc: {message}"))
            }
            PolicyError::Cloud(_) | PolicyError::Identity { .. } => {
                tracing::warn!(error = %err, "cloud unavailable");
                Self::new(ErrorCode::Unavailable, err.to_string())
            }
            other => Self::internal(other),
        }
    }
}

impl From<PolicyError> for snapkeeper_proto::tonic::Status {
    fn from(err: PolicyError) -> Self {
        ServiceError::from(err).into()
    }
}

/// Opens and migrates the database, loads the active rules (and the rules file, watched for
/// changes), reaches the cloud through identity-svc, then serves gRPC on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), PolicyError> {
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let active = Arc::new(active_rules::ActiveRules::load(store::Store::new(database)).await?);
    let watcher = match &config.rules_file {
        Some(path) => {
            let mut watcher = active_rules::RulesFileWatcher::new(path.clone());
            watcher.poll(&active, clock.now()).await?;
            let active = Arc::clone(&active);
            let clock = Arc::clone(&clock);
            let every = config.rules_poll_interval;
            Some(tokio::spawn(async move { watcher.run(active, clock, every).await }))
        }
        None => None,
    };
    let cloud =
        Arc::new(cloud::Cloud::connect(&config.identity_url, &config.security, config.cinder_page_size)?);
    let assigner = assignment::Assigner::new(
        cloud,
        Arc::clone(&active),
        Arc::clone(&clock),
        usize::from(config.write_concurrency),
    );
    let api = grpc::PolicyApi::new(Arc::clone(&active), clock).with_assigner(Arc::new(assigner));
    let served = GrpcServer::new(config.security)
        .add_service(PolicyServiceServer::new(api))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    served?;
    Ok(())
}
