//! What every Snapkeeper service binary shares, so the four services and the gateway behave alike.
//!
//! - [`config`]: clap argument groups every binary flattens into its own typed config.
//! - [`telemetry`]: one subscriber (text or JSON logs, OTLP traces when configured) and W3C
//!   trace-context propagation helpers for gRPC and HTTP.
//! - [`server`]: the gRPC server (health, reflection, request spans, internal credential, TLS,
//!   graceful shutdown); [`client`]: channels to other services carrying the same context.
//! - [`db`]: the SQLite/PostgreSQL pool with per-backend migrations; [`error`]: one error code
//!   mapped to gRPC and HTTP statuses; [`clock`]: time as a parameter.
//! - [`metrics`]: the process's Prometheus registry and its `/metrics` listener.

pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod internal_auth;
pub mod metrics;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ErrorCode, ServiceError};

/// What can fail while starting or running a service.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A setting is missing or malformed; the message names the variable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The gRPC transport failed (bind, TLS, serve).
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A file (certificate, key) could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The telemetry pipeline could not be built.
    #[error("telemetry: {0}")]
    Telemetry(String),
}
