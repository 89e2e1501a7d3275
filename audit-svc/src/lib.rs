//! Audit-svc is the system of record: append-only records of runs and snapshot actions, the
//! inventory of each region, and the compliance report that judges each policy by its own cadence.
//!
//! A request enters at [`grpc`] (validation, proto conversion, error mapping), which uses the pure
//! domain modules [`events`] (event validation), [`inventory`] (the sync stream and metadata
//! facts), [`compliance`] (the judgement and its counts) and [`paging`] (page tokens), and the
//! edges [`store`] (SQL over SQLite or PostgreSQL; audit writes under the
//! `snapkeeper_audit_writer` role), [`directory`] (policy catalog and exclusions from policy-svc,
//! cached) and [`report`] (compliance over the stored facts, cached until they change);
//! [`metrics`] publishes the judgement as Prometheus series; [`webhooks`] signs and delivers
//! notifications (failed or partial runs, compliance below a threshold, quota forecast risk).
//! [`config`] holds the binary's settings; migrations live in `migrations/{sqlite,postgres}`.

pub mod compliance;
pub mod config;
pub mod directory;
pub mod events;
pub mod grpc;
pub mod inventory;
pub mod metrics;
pub mod paging;
pub mod report;
pub mod store;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use service_kit::client::{Timeouts, connect_lazy};
use service_kit::clock::SystemClock;
use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use service_kit::{ErrorCode, ServiceError};
use snapkeeper_proto::audit::v1::audit_service_server::AuditServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "audit";

/// What can go wrong in audit-svc.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
    /// A database call failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A request field is invalid.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, dotted (`events[3].event_id`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The request does not fit the stored state (e.g. a stale inventory sync).
    #[error("{0}")]
    FailedPrecondition(String),
    /// policy-svc cannot be reached and nothing is cached.
    #[error("{0}")]
    Unavailable(String),
    /// A stored row cannot be read back (a fault of ours).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl AuditError {
    /// An invalid-argument error naming the field.
    pub fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self::Invalid { field: field.into(), problem: problem.to_string() }
    }
}

impl From<AuditError> for ServiceError {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::Invalid { field, problem } => ServiceError::invalid(field, problem),
            AuditError::FailedPrecondition(message) => {
                ServiceError::new(ErrorCode::FailedPrecondition, message)
            }
            AuditError::Unavailable(message) => ServiceError::new(ErrorCode::Unavailable, message),
            AuditError::Database(error) if service_kit::db::is_transient(&error) => {
                ServiceError::new(ErrorCode::Unavailable, "database unavailable; retry later")
            }
            other => ServiceError::internal(other),
        }
    }
}

impl From<AuditError> for snapkeeper_proto::tonic::Status {
    fn from(err: AuditError) -> Self {
        ServiceError::from(err).into()
    }
}

/// How often the daily compliance roll-up checks whether today's is recorded.
const ROLLUP_CHECK_INTERVAL: Duration = Duration::from_mins(15);

/// Opens and migrates the database, then serves gRPC on `listener` until `shutdown` resolves.
/// Beside the RPCs it records the daily compliance roll-up once a day.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AuditError> {
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    let webhook_settings = config.webhooks.settings()?.map(Arc::new);
    let mut store = store::Store::open(database).await?;
    if let Some(settings) = &webhook_settings {
        store = store.with_webhook_urls(&settings.urls);
    }
    let channel = connect_lazy(&config.policy_url, &config.security, Timeouts::default())?;
    let source = Arc::new(directory::GrpcPolicySource::new(channel));
    let directory =
        directory::CachedDirectory::new(source, Duration::from_secs(config.policy_cache_ttl_secs));
    let mut report = report::ComplianceReport::new(store.clone(), directory, Arc::new(SystemClock));
    let mut sender = None;
    if let Some(settings) = webhook_settings {
        let wake = Arc::new(tokio::sync::Notify::new());
        report = report.with_alerts(Arc::clone(&settings), Arc::clone(&wake));
        sender = Some(tokio::spawn(webhooks::deliver(store.clone(), settings, wake)));
    }
    let report = Arc::new(report);
    // Stages of syncs this service was receiving when it stopped (past the abandon age).
    store.discard_abandoned_syncs(report.now()).await?;
    let daily = tokio::spawn(report::record_daily(Arc::clone(&report), ROLLUP_CHECK_INTERVAL));
    let gauges = tokio::spawn(metrics::track(
        Arc::clone(&report),
        Duration::from_secs(config.compliance_metrics_interval_secs),
    ));
    let result = GrpcServer::new(config.security)
        .add_service(AuditServiceServer::new(grpc::AuditApi::new(store, report)))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await;
    daily.abort();
    if let Some(sender) = sender {
        sender.abort();
    }
    gauges.abort();
    result?;
    Ok(())
}
