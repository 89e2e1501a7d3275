//! Audit-svc is the system of record: append-only records of runs and actions, the inventory of
//! volumes and snapshots, and the compliance report that judges each policy by its own cadence.
//!
//! Layout: [`config`] (the binary's settings), [`grpc`] (the `AuditService` implementation), and the
//! migrations under `migrations/{sqlite,postgres}`, applied at start.

pub mod config;
pub mod grpc;

use std::future::Future;

use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use snapkeeper_proto::audit::v1::audit_service_server::AuditServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "audit";

/// What can stop the service.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
}

/// Opens and migrates the database, then serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AuditError> {
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    GrpcServer::new(config.security)
        .add_service(AuditServiceServer::new(grpc::AuditApi))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
