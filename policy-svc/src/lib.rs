//! Policy-svc owns which volumes get which snapshot policies: the rule set (versioned), the policy
//! catalog with schedules and retention, policy sets, manual assignments and exclusions. It
//! evaluates a volume to a decision with an explanation and writes the resulting Cinder volume
//! metadata.
//!
//! Layout: [`config`] (the binary's settings), [`grpc`] (the `PolicyService` implementation), and the
//! migrations under `migrations/{sqlite,postgres}`, applied at start.

pub mod config;
pub mod grpc;

use std::future::Future;

use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use snapkeeper_proto::policy::v1::policy_service_server::PolicyServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "policy";

/// What can stop the service.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
}

/// Opens and migrates the database, then serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), PolicyError> {
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    GrpcServer::new(config.security)
        .add_service(PolicyServiceServer::new(grpc::PolicyApi))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
