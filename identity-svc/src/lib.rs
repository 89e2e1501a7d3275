//! Identity-svc is the only service that holds OpenStack secrets: the admin session, the snapshot
//! service user's password (plain or Fernet-encrypted), and the role grants it makes. It hands out
//! project-scoped credentials and validates users' Keystone tokens for the gateway.
//!
//! Layout: [`config`] (settings, validated into [`config::Settings`] at start), [`secrets`]
//! (password sources, Fernet, redaction), [`mode`] (service user or admin session, and why),
//! [`cache`] (expiring caches, token hashes), [`endpoints`] (catalog endpoint per region),
//! [`broker`] (every Keystone conversation: admin session, role checks and grants, project tokens,
//! user tokens, revocation), [`store`] (the `role_grants` table) and [`grpc`] (the
//! `IdentityService`: validate, call the broker, map errors). A `GetProjectCredentials` call flows
//! grpc -> broker (cache, role check, recorded grant, token) -> grpc. Migrations live under
//! `migrations/{sqlite,postgres}` and run at start.

pub mod broker;
pub mod cache;
pub mod config;
pub mod endpoints;
pub mod grpc;
pub mod metrics;
pub mod mode;
pub mod secrets;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use service_kit::clock::SystemClock;
use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use service_kit::{ErrorCode, ServiceError};
use snapkeeper_proto::identity::v1::identity_service_server::IdentityServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "identity";

/// Everything that can go wrong in identity-svc; converted to a [`ServiceError`] at the gRPC edge.
/// Messages never contain a password, key or token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
    /// A setting is missing or malformed; the message names the variable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No cloud is configured, so nothing can be asked of Keystone.
    #[error("no cloud configured: set OS_CLOUD, OS_AUTH_URL or PF9_AUTH_URL")]
    NoCloud,
    /// A request field is missing or malformed.
    #[error("{field}: {problem}")]
    InvalidArgument {
        /// The request field, as named in the proto.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Keystone does not know the project.
    #[error("project {0} not found in keystone")]
    ProjectNotFound(String),
    /// The token's catalog has no Cinder endpoint for the interface and region.
    #[error("no cinder endpoint ({interface}) in region {region} of the catalog")]
    NoCinderEndpoint {
        /// Catalog interface looked for.
        interface: String,
        /// Region looked for (`any` when unset).
        region: String,
    },
    /// Keystone could not be reached, answered 5xx, or refused the admin credentials.
    #[error("keystone unavailable: {0}")]
    KeystoneUnavailable(String),
    /// Keystone refused a user's token or credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The operation needs the service user mode.
    #[error("not in service user mode: {0}")]
    NotServiceUserMode(String),
    /// The grants table could not be read or written.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row does not parse.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl IdentityError {
    /// An InvalidArgument error for `field`.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidArgument { field, problem: problem.into() }
    }
}

impl From<IdentityError> for ServiceError {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::InvalidArgument { field, problem } => Self::invalid(field, problem),
            IdentityError::ProjectNotFound(_) => Self::new(ErrorCode::NotFound, err.to_string()),
            IdentityError::NoCloud
            | IdentityError::NoCinderEndpoint { .. }
            | IdentityError::NotServiceUserMode(_) => {
                Self::new(ErrorCode::FailedPrecondition, err.to_string())
            }
            IdentityError::KeystoneUnavailable(_) => Self::new(ErrorCode::Unavailable, err.to_string()),
            IdentityError::Unauthenticated(_) => Self::new(ErrorCode::Unauthenticated, err.to_string()),
            IdentityError::Kit(_)
            | IdentityError::Config(_)
            | IdentityError::Database(_)
            | IdentityError::Corrupt(_) => Self::internal(err),
        }
    }
}

/// Validates the settings, opens and migrates the database, then serves gRPC on `listener` until
/// `shutdown` resolves. A malformed setting (Fernet key, ciphertext, cloud variables) stops here;
/// an unreachable Keystone does not (RPCs answer Unavailable until it is back).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IdentityError> {
    let settings = config.settings()?;
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    let store = store::GrantStore::new(database);
    let broker = Arc::new(broker::Broker::new(settings, store, Arc::new(SystemClock)));
    GrpcServer::new(config.security)
        .add_service(IdentityServiceServer::new(grpc::IdentityApi::new(broker)))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
