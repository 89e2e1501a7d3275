//! Snapshot-svc runs the work: the scheduler and run-now pipeline, due snapshots created in each
//! tenant's own project, retention, quota checks, batches with progress, and the outbox that
//! carries every action to audit-svc.
//!
//! A run flows: `StartRun` ([`grpc`]) queues it in the database ([`store`], one active run per
//! kind by a unique index); a [`worker`] claims it and the [`runner`] executes the steps
//! policy_assign (policy-svc), inventory_pre (audit-svc), snapshots, inventory_post with a
//! heartbeat. The snapshots step lists each region once with the admin session identity-svc hands
//! out ([`cloud`]: no cloud password here, nothing contacted at start; [`listing`]), asks
//! policy-svc for decisions and slots, plans a batch at a time ([`plan`]) with the pure modules
//! [`due`], [`retention`], [`quota`], [`batches`], [`naming`] and [`progress`], then creates (work
//! item first) and deletes;
//! each action commits with its audit event ([`records`]) into the outbox the relay delivers.
//! [`forecast`] is the pure quota forecast behind ForecastQuota, [`quota_outlook`] its reading of
//! the cloud (also after each scheduled run, which records the projects at risk); [`run`] the run
//! model; [`config`]
//! the settings; [`metrics`] the Prometheus series.

pub mod batches;
pub mod cloud;
pub mod config;
pub mod due;
pub mod forecast;
pub mod grpc;
pub mod listing;
pub mod metrics;
pub mod naming;
pub mod plan;
pub mod progress;
pub mod quota;
pub mod quota_outlook;
pub mod records;
pub mod retention;
pub mod run;
pub mod runner;
pub mod store;
pub mod worker;

use std::future::Future;
use std::sync::Arc;

use service_kit::client::{Timeouts, connect_lazy};
use service_kit::clock::{Clock, SystemClock};
use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use service_kit::{ErrorCode, ServiceError};
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1::snapshot_service_server::SnapshotServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "snapshot";

/// What can go wrong in snapshot-svc.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
    /// A setting is invalid; the message names the variable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A database call failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row cannot be read back (a fault of ours).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A run of the same kind is active (the message names it).
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
    /// A dependency (another service, the cloud) could not be reached or answered oddly.
    #[error("{0}")]
    Unavailable(String),
    /// OpenStack refused or failed a call.
    #[error("openstack: {0}")]
    OpenStack(#[from] openstack::Error),
}

impl SnapshotError {
    /// A NotFound error for a kind of object and its id.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("{kind} {id} not found"))
    }

    /// An InvalidArgument error naming the field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }

    /// An error from another service's answer.
    pub fn upstream(service: &str, status: &snapkeeper_proto::tonic::Status) -> Self {
        Self::Unavailable(format!("{service}: {:?}: {}", status.code(), status.message()))
    }
}

impl From<SnapshotError> for ServiceError {
    fn from(err: SnapshotError) -> Self {
        match err {
            SnapshotError::Invalid { field, reason } => Self::invalid(field, reason),
            SnapshotError::NotFound(message) => Self::new(ErrorCode::NotFound, message),
            SnapshotError::AlreadyExists(message) => Self::new(ErrorCode::AlreadyExists, message),
            SnapshotError::FailedPrecondition(message) => Self::new(ErrorCode::FailedPrecondition, message),
            SnapshotError::Unavailable(message) => Self::new(ErrorCode::Unavailable, message),
            SnapshotError::OpenStack(error) => Self::new(ErrorCode::Unavailable, error.to_string()),
            SnapshotError::Database(error) if service_kit::db::is_transient(&error) => {
                Self::new(ErrorCode::Unavailable, "database unavailable; retry with backoff")
            }
            other => Self::internal(other),
        }
    }
}

impl From<SnapshotError> for snapkeeper_proto::tonic::Status {
    fn from(err: SnapshotError) -> Self {
        ServiceError::from(err).into()
    }
}

/// Opens and migrates the database, prepares the clients of the other services and the admin
/// cloud access (all lazy: nothing is contacted until a run or request needs it, so the service
/// starts while identity-svc or the cloud is still down), starts the worker, relay and (when
/// enabled) scheduler, then serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SnapshotError> {
    config.validate().map_err(SnapshotError::Config)?;
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    let store = store::Store::new(database);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let host = config.host_name();
    let cloud = policy_svc::cloud::Cloud::connect(
        &config.services.identity_url,
        &config.security,
        config.cinder_page_size,
    )
    .map_err(|error| match error {
        policy_svc::PolicyError::Kit(error) => SnapshotError::Kit(error),
        other => SnapshotError::Config(format!("IDENTITY_SVC_URL: {other}")),
    })?
    .with_resilience(config.resilience());
    let admin = cloud::Admin::new(Arc::new(cloud), config.regions.clone());
    let timeouts = Timeouts::default();
    let clients = runner::Clients {
        policy: PolicyServiceClient::new(connect_lazy(
            &config.services.policy_url,
            &config.security,
            timeouts,
        )?),
        identity: IdentityServiceClient::new(connect_lazy(
            &config.services.identity_url,
            &config.security,
            timeouts,
        )?),
        audit: AuditServiceClient::new(connect_lazy(&config.services.audit_url, &config.security, timeouts)?),
    };
    let heartbeat_timeout = chrono::Duration::seconds(config.heartbeat_timeout_secs as i64);
    let settings = runner::Settings {
        host: host.clone(),
        batch_size: config.batch_size as usize,
        batch_delay: std::time::Duration::from_secs_f64(config.batch_delay_secs),
        concurrency: config.concurrency as usize,
        heartbeat_interval: std::time::Duration::from_secs((config.heartbeat_timeout_secs / 4).clamp(1, 5)),
        max_size_gb: config.max_size_gb,
        max_new: config.max_new,
        error_grace: chrono::Duration::hours(i64::from(config.error_grace_hours)),
        delete_timeout: std::time::Duration::from_mins(2),
    };
    let runner =
        runner::Runner::new(store.clone(), Arc::clone(&clock), clients.clone(), admin.clone(), settings);
    let worker = worker::Worker::new(
        store.clone(),
        Arc::clone(&clock),
        runner.clone(),
        host.clone(),
        heartbeat_timeout,
    );
    let relay = worker::Relay::new(store.clone(), Arc::clone(&clock), clients.audit.clone());
    let mut background = vec![
        tokio::spawn(worker.run(std::time::Duration::from_secs(2))),
        tokio::spawn(relay.run(std::time::Duration::from_secs(2))),
    ];
    let batch_delay = chrono::Duration::milliseconds((config.batch_delay_secs * 1000.0) as i64);
    if config.scheduler_enabled {
        let scheduler = worker::Scheduler::new(
            store.clone(),
            Arc::clone(&clock),
            host.clone(),
            chrono::Duration::minutes(i64::from(config.snapshot_interval_minutes)),
            config.dry_run,
            i64::from(config.batch_size),
            batch_delay,
        )
        .with_policy_assign(
            chrono::Duration::minutes(i64::from(config.policy_assign_interval_minutes)),
            runner.clone(),
        );
        background.push(tokio::spawn(scheduler.run(std::time::Duration::from_secs(15))));
    }
    let api = grpc::SnapshotApi::new(grpc::ApiSettings {
        store,
        clock,
        policy: clients.policy,
        admin,
        host,
        scheduler_enabled: config.scheduler_enabled,
        snapshot_interval: chrono::Duration::minutes(i64::from(config.snapshot_interval_minutes)),
        policy_assign_interval: chrono::Duration::minutes(i64::from(config.policy_assign_interval_minutes)),
        batch_size: i64::from(config.batch_size),
        batch_delay,
    });
    let served = GrpcServer::new(config.security)
        .add_service(SnapshotServiceServer::new(api))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await;
    for task in background {
        task.abort();
    }
    served?;
    Ok(())
}
