//! Identity-svc is the only service that holds OpenStack secrets: the admin session, the snapshot
//! service user's password (plain or Fernet-encrypted), and the role grants it makes. It hands out
//! project-scoped credentials and validates users' Keystone tokens for the gateway.
//!
//! Layout: [`config`] (the binary's settings), [`grpc`] (the `IdentityService` implementation), and the
//! migrations under `migrations/{sqlite,postgres}`, applied at start.

pub mod config;
pub mod grpc;

use std::future::Future;

use service_kit::db::{Database, Migrations};
use service_kit::server::GrpcServer;
use snapkeeper_proto::identity::v1::identity_service_server::IdentityServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// This service's schema for both database backends.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATIONS, postgres: &POSTGRES_MIGRATIONS };

/// The PostgreSQL schema, and SQLite file name, this service owns.
pub const SCHEMA: &str = "identity";

/// What can stop the service.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Starting a shared component (database, server) failed.
    #[error(transparent)]
    Kit(#[from] service_kit::KitError),
}

/// Opens and migrates the database, then serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IdentityError> {
    let url = config.database.url_for(SCHEMA);
    let database = Database::connect(&url, SCHEMA, config.database.max_connections).await?;
    database.migrate(MIGRATIONS).await?;
    GrpcServer::new(config.security)
        .add_service(IdentityServiceServer::new(grpc::IdentityApi))
        .with_descriptor_set(snapkeeper_proto::FILE_DESCRIPTOR_SET)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
