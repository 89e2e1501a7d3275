//! Argument groups that every binary flattens into its own typed config (clap, each flag with an
//! environment twin). Each binary validates its config at start and fails naming the variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::KitError;
use crate::telemetry::LogFormat;

/// Logging and tracing settings. OTLP export is driven by the standard `OTEL_*` variables.
#[derive(clap::Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// Log line format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Service-to-service security: a shared internal credential and optional (mutual) TLS.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Shared secret every service presents to the others as `authorization: Bearer ...`;
    /// servers refuse calls without it (health checks stay open).
    #[arg(long, env = "SNAPKEEPER_INTERNAL_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub internal_token: Option<SecretString>,
    /// PEM certificate this process presents (as a server, and as a client when mTLS is on).
    #[arg(long, env = "SNAPKEEPER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "SNAPKEEPER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle used to verify peers; on a server it also requires client certificates (mTLS).
    #[arg(long, env = "SNAPKEEPER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Allow a non-loopback listener without internal token or mTLS (for meshes that secure traffic).
    #[arg(long, env = "SNAPKEEPER_ALLOW_INSECURE", default_value_t = false)]
    pub allow_insecure: bool,
}

/// Parses a secret so that it is never printed by `Debug`.
pub fn parse_secret(value: &str) -> Result<SecretString, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(SecretString::from(value.to_owned()))
}

/// PEM material read from the configured files.
#[derive(Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert_key: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) ca: Option<Vec<u8>>,
}

impl SecurityArgs {
    /// Whether a bearer token is configured.
    pub fn token(&self) -> Option<&str> {
        self.internal_token.as_ref().map(ExposeSecret::expose_secret)
    }

    /// Checks the settings for a server listening on `listen`: a half-configured TLS pair is an
    /// error, and a non-loopback listener needs the internal token or mTLS unless explicitly allowed.
    pub fn validate_for_listener(&self, listen: SocketAddr) -> Result<(), KitError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(KitError::Config(
                "SNAPKEEPER_TLS_CERT and SNAPKEEPER_TLS_KEY must be set together".to_owned(),
            ));
        }
        let mutual_tls = self.tls_cert.is_some() && self.tls_ca.is_some();
        if !listen.ip().is_loopback() && self.internal_token.is_none() && !mutual_tls && !self.allow_insecure
        {
            return Err(KitError::Config(format!(
                "listening on non-loopback {listen} needs SNAPKEEPER_INTERNAL_TOKEN or mutual TLS \
                 (SNAPKEEPER_TLS_CERT, SNAPKEEPER_TLS_KEY, SNAPKEEPER_TLS_CA); \
                 set SNAPKEEPER_ALLOW_INSECURE=true only behind a mesh that secures traffic"
            )));
        }
        Ok(())
    }

    pub(crate) fn read_tls(&self) -> Result<TlsFiles, KitError> {
        let cert_key = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((read_file(cert)?, read_file(key)?)),
            (None, None) => None,
            _ => {
                return Err(KitError::Config(
                    "SNAPKEEPER_TLS_CERT and SNAPKEEPER_TLS_KEY must be set together".to_owned(),
                ));
            }
        };
        let ca = self.tls_ca.as_deref().map(read_file).transpose()?;
        Ok(TlsFiles { cert_key, ca })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, KitError> {
    std::fs::read(path).map_err(|source| KitError::Io { path: path.display().to_string(), source })
}

/// Where a service keeps its data.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` or `postgres://...`; default: a SQLite file under `--data-dir`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder for the embedded SQLite databases.
    #[arg(long, env = "SNAPKEEPER_DATA_DIR", default_value = ".snapkeeper")]
    pub data_dir: PathBuf,
    /// Most connections the pool opens (SQLite: at most 4).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: u32,
}

impl DatabaseArgs {
    /// The URL to open for `service`: the configured one, or `<data_dir>/<service>.db`.
    pub fn url_for(&self, service: &str) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join(format!("{service}.db")).display()),
        }
    }
}

/// Where the suite's gRPC services are, for the processes that call them.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceUrls {
    /// policy-svc gRPC URL.
    #[arg(long, env = "POLICY_SVC_URL", default_value = "http://127.0.0.1:50051")]
    pub policy_url: String,
    /// identity-svc gRPC URL.
    #[arg(long, env = "IDENTITY_SVC_URL", default_value = "http://127.0.0.1:50052")]
    pub identity_url: String,
    /// snapshot-svc gRPC URL.
    #[arg(long, env = "SNAPSHOT_SVC_URL", default_value = "http://127.0.0.1:50053")]
    pub snapshot_url: String,
    /// audit-svc gRPC URL.
    #[arg(long, env = "AUDIT_SVC_URL", default_value = "http://127.0.0.1:50054")]
    pub audit_url: String,
}

/// Where the Prometheus `/metrics` endpoint listens, apart from the service's own port.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Address of the Prometheus `/metrics` listener (e.g. `0.0.0.0:9464`); no listener when unset.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_listener_without_credentials_is_refused_with_the_variable_named() {
        let args = SecurityArgs::default();
        let public: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let err = args.validate_for_listener(public).unwrap_err();
        assert!(err.to_string().contains("SNAPKEEPER_INTERNAL_TOKEN"));
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        assert!(args.validate_for_listener(loopback).is_ok());
        let with_token =
            SecurityArgs { internal_token: parse_secret("s3cr3t").ok(), ..SecurityArgs::default() };
        assert!(with_token.validate_for_listener(public).is_ok());
    }

    #[test]
    fn half_a_tls_pair_is_refused() {
        let args = SecurityArgs { tls_cert: Some(PathBuf::from("/x.pem")), ..SecurityArgs::default() };
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(args.validate_for_listener(loopback).is_err());
    }

    #[test]
    fn secret_debug_does_not_print_the_value() {
        let args =
            SecurityArgs { internal_token: parse_secret("tok-123456").ok(), ..SecurityArgs::default() };
        assert!(!format!("{args:?}").contains("tok-123456"));
    }

    #[test]
    fn default_database_is_a_sqlite_file_per_service() {
        let args =
            DatabaseArgs { database_url: None, data_dir: PathBuf::from("/tmp/sk"), max_connections: 4 };
        assert_eq!(args.url_for("policy"), "sqlite:///tmp/sk/policy.db?mode=rwc");
    }
}
