//! The settings of the `identity-svc` binary, and their validation into [`Settings`].
//!
//! The service-user variables keep the seed's names and its `.env` habits: an empty value means
//! unset (`SNAPSHOT_SERVICE_USER_PASSWORD=` says "no password, use the admin session"), so they are
//! read as optional strings and empty ones dropped, never rejected. Secrets are [`SecretString`]s
//! from the moment clap reads them, and every `*_FILE` twin reads a mounted container secret.

use std::net::SocketAddr;
use std::path::Path;

use openstack::CloudConfig;
use secrecy::{ExposeSecret, SecretString};
use service_kit::config::{DatabaseArgs, MetricsArgs, SecurityArgs, TelemetryArgs};

use crate::IdentityError;
use crate::mode::Mode;
use crate::secrets::{self, PasswordSource, Redactor};

/// Role ensured on projects when `SNAPSHOT_SERVICE_USER_ROLE` is unset: least privilege.
pub const DEFAULT_ROLE: &str = "member";
/// Domain of the service user when `SNAPSHOT_SERVICE_USER_DOMAIN` is unset (the seed's default).
pub const DEFAULT_DOMAIN: &str = "default";

/// Settings of `identity-svc`; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "identity-svc",
    about = "Service-user identity, project-scoped credentials and token validation",
    version
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "IDENTITY_SVC_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// The snapshot service user and its password.
    #[command(flatten)]
    pub service_user: ServiceUserArgs,
    /// Where the service keeps its data.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Service-to-service credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Prometheus `/metrics` listener.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The admin cloud, when a launcher already built it (`snapkeeper up`); otherwise it is read
    /// from `OS_CLOUD` (clouds.yaml), the `OS_*` or the seed's `PF9_*` variables at start.
    #[arg(skip)]
    pub cloud: Option<CloudConfig>,
}

/// The snapshot service user (seed variable names). Empty values count as unset.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServiceUserArgs {
    /// Keystone name (or e-mail) of the service user that takes project-scoped tokens.
    #[arg(long = "service-user", env = "SNAPSHOT_SERVICE_USER_EMAIL")]
    pub email: Option<String>,
    /// Domain of the service user, by id or name (default `default`).
    #[arg(long = "service-user-domain", env = "SNAPSHOT_SERVICE_USER_DOMAIN")]
    pub domain: Option<String>,
    /// The service user's password in plain text.
    #[arg(long = "service-user-password", env = "SNAPSHOT_SERVICE_USER_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub password: Option<SecretString>,
    /// A file holding the plain-text password (container secret).
    #[arg(long = "service-user-password-file", env = "SNAPSHOT_SERVICE_USER_PASSWORD_FILE")]
    pub password_file: Option<String>,
    /// The password encrypted with Fernet under `SNAPSHOT_PASSWORD_KEY`.
    #[arg(long = "service-user-password-encrypted", env = "SNAPSHOT_USER_PASSWORD_ENCRYPTED", hide_env_values = true, value_parser = secret)]
    pub password_encrypted: Option<SecretString>,
    /// A file holding the Fernet ciphertext.
    #[arg(long = "service-user-password-encrypted-file", env = "SNAPSHOT_USER_PASSWORD_ENCRYPTED_FILE")]
    pub password_encrypted_file: Option<String>,
    /// The Fernet key (32 bytes, url-safe base64) that decrypts the password.
    #[arg(long = "password-key", env = "SNAPSHOT_PASSWORD_KEY", hide_env_values = true, value_parser = secret)]
    pub password_key: Option<SecretString>,
    /// A file holding the Fernet key.
    #[arg(long = "password-key-file", env = "SNAPSHOT_PASSWORD_KEY_FILE")]
    pub password_key_file: Option<String>,
    /// Role the service user gets on each project (default `member`; `admin` only where a cloud's
    /// policy needs it).
    #[arg(long = "service-user-role", env = "SNAPSHOT_SERVICE_USER_ROLE")]
    pub role: Option<String>,
    /// `true`: never use the service user; every project gets the admin session.
    #[arg(long = "service-user-disabled", env = "SNAPSHOT_SERVICE_USER_DISABLED")]
    pub disabled: Option<String>,
    /// `true`: snapshot-svc asks identity-svc to drop the grants a run caused once it ends.
    #[arg(long = "revoke-role-after-run", env = "REVOKE_ROLE_AFTER_RUN")]
    pub revoke_role_after_run: Option<String>,
}

/// Wraps a secret as soon as clap reads it, keeping empty values (they mean unset).
#[allow(clippy::unnecessary_wraps, reason = "clap's value_parser takes a fallible function")]
fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// The validated settings the service runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The admin cloud; `None` when no cloud variables are set at all.
    pub cloud: Option<CloudConfig>,
    /// Name or e-mail of the service user.
    pub service_user: Option<String>,
    /// Domain (id or name) the service user is looked up in.
    pub service_user_domain: String,
    /// The service user's password, when one is configured.
    pub password: Option<SecretString>,
    /// Where the password came from.
    pub password_source: PasswordSource,
    /// Role ensured on projects.
    pub role_name: String,
    /// Whether snapshot-svc should revoke the grants of a run when it ends.
    pub revoke_role_after_run: bool,
    /// Service user or admin session, decided once at start.
    pub mode: Mode,
    /// Scrubs the configured secrets out of any text that leaves the process.
    pub redactor: Redactor,
}

impl Config {
    /// Validates the settings, reading the cloud from the process environment when
    /// [`Config::cloud`] is unset. Errors name the variable and never contain a secret.
    pub fn settings(&self) -> Result<Settings, IdentityError> {
        self.settings_with(&|name| std::env::var(name).ok())
    }

    /// [`Config::settings`] with the cloud variables supplied by `lookup`.
    pub fn settings_with(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Settings, IdentityError> {
        let lookup = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let cloud = match &self.cloud {
            Some(cloud) => Some(cloud.clone()),
            None if ["OS_CLOUD", "OS_AUTH_URL", "PF9_AUTH_URL"].iter().any(|name| lookup(name).is_some()) => {
                Some(
                    CloudConfig::from_lookup(&lookup)
                        .map_err(|e| IdentityError::Config(format!("cloud: {e}")))?,
                )
            }
            None => None,
        };
        let args = &self.service_user;
        let disabled = flag("SNAPSHOT_SERVICE_USER_DISABLED", args.disabled.as_deref())?;
        let revoke_role_after_run = flag("REVOKE_ROLE_AFTER_RUN", args.revoke_role_after_run.as_deref())?;
        let service_user = non_empty(args.email.as_deref());
        let (password, password_source) = self.password()?;
        let mode = Mode::decide(disabled, service_user.as_deref(), password.is_some());
        let mut redactor = Redactor::default();
        if let Some(password) = &password {
            redactor.add(password);
        }
        for secret in [&args.password, &args.password_encrypted, &args.password_key].into_iter().flatten() {
            redactor.add(secret);
        }
        if let Some(cloud) = &cloud {
            redactor.add_cloud(cloud);
        }
        Ok(Settings {
            cloud,
            service_user,
            service_user_domain: non_empty(args.domain.as_deref())
                .unwrap_or_else(|| DEFAULT_DOMAIN.to_owned()),
            password,
            password_source,
            role_name: non_empty(args.role.as_deref()).unwrap_or_else(|| DEFAULT_ROLE.to_owned()),
            revoke_role_after_run,
            mode,
            redactor,
        })
    }

    /// The plain-text password if one is given (the seed's order), else the Fernet one.
    fn password(&self) -> Result<(Option<SecretString>, PasswordSource), IdentityError> {
        let args = &self.service_user;
        let plain = secret_input(
            "SNAPSHOT_SERVICE_USER_PASSWORD",
            args.password.as_ref(),
            args.password_file.as_deref(),
            secrets::Trim::LineEnd,
        )?;
        let ciphertext = secret_input(
            "SNAPSHOT_USER_PASSWORD_ENCRYPTED",
            args.password_encrypted.as_ref(),
            args.password_encrypted_file.as_deref(),
            secrets::Trim::Whitespace,
        )?;
        let key = secret_input(
            "SNAPSHOT_PASSWORD_KEY",
            args.password_key.as_ref(),
            args.password_key_file.as_deref(),
            secrets::Trim::Whitespace,
        )?;
        if let Some((password, _)) = plain {
            if ciphertext.is_some() {
                tracing::warn!(
                    "SNAPSHOT_SERVICE_USER_PASSWORD is set; SNAPSHOT_USER_PASSWORD_ENCRYPTED is ignored"
                );
            }
            return Ok((Some(password), PasswordSource::Plaintext));
        }
        match (ciphertext, key) {
            (None, None) => Ok((None, PasswordSource::None)),
            (Some(_), None) => Err(IdentityError::Config(
                "SNAPSHOT_USER_PASSWORD_ENCRYPTED is set but SNAPSHOT_PASSWORD_KEY (or SNAPSHOT_PASSWORD_KEY_FILE) is not"
                    .to_owned(),
            )),
            (None, Some(_)) => Err(IdentityError::Config(
                "SNAPSHOT_PASSWORD_KEY is set but SNAPSHOT_USER_PASSWORD_ENCRYPTED (or its _FILE) is not".to_owned(),
            )),
            (Some((ciphertext, ciphertext_from_file)), Some((key, key_from_file))) => {
                let password = secrets::decrypt_password(&key, &ciphertext).map_err(IdentityError::Config)?;
                let source = if ciphertext_from_file || key_from_file {
                    PasswordSource::FernetFile
                } else {
                    PasswordSource::Fernet
                };
                Ok((Some(password), source))
            }
        }
    }
}

/// A secret from `var` or from the file `var`_FILE names (not both); `true` when from the file.
fn secret_input(
    var: &str,
    value: Option<&SecretString>,
    file: Option<&str>,
    trim: secrets::Trim,
) -> Result<Option<(SecretString, bool)>, IdentityError> {
    let value = value.filter(|v| !v.expose_secret().is_empty());
    let file = non_empty(file);
    match (value, file) {
        (Some(_), Some(_)) => Err(IdentityError::Config(format!("set {var} or {var}_FILE, not both"))),
        (Some(value), None) => Ok(Some((value.clone(), false))),
        (None, Some(path)) => {
            let secret = secrets::read_secret_file(Path::new(&path), trim)
                .map_err(|problem| IdentityError::Config(format!("{var}_FILE: {problem}")))?;
            Ok(Some((secret, true)))
        }
        (None, None) => Ok(None),
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// A boolean variable the way the seed's `.env` files write them; empty means false.
fn flag(var: &str, value: Option<&str>) -> Result<bool, IdentityError> {
    match non_empty(value).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some(_) => Err(IdentityError::Config(format!("{var} must be true or false"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["identity-svc"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_seed_values_mean_unset_and_give_admin_only() {
        let config = parse(&[
            "--service-user",
            "snap@example.com",
            "--service-user-password",
            "",
            "--service-user-disabled",
            "",
            "--service-user-role",
            "",
            "--service-user-domain",
            "",
        ]);
        let settings = config.settings_with(&no_env).unwrap();
        assert_eq!(settings.password_source, PasswordSource::None);
        assert!(
            matches!(settings.mode, Mode::AdminOnly { ref reason } if reason.contains("no service user password"))
        );
        assert_eq!(settings.role_name, "member");
        assert_eq!(settings.service_user_domain, "default");
        assert!(settings.cloud.is_none());
    }

    #[test]
    fn disabled_wins_over_a_password() {
        let config = parse(&[
            "--service-user",
            "snap",
            "--service-user-password",
            "pw-1",
            "--service-user-disabled",
            "TRUE",
        ]);
        let settings = config.settings_with(&no_env).unwrap();
        assert!(
            matches!(settings.mode, Mode::AdminOnly { ref reason } if reason == "SNAPSHOT_SERVICE_USER_DISABLED=true")
        );
    }

    #[test]
    fn a_bad_flag_names_its_variable() {
        let config = parse(&["--revoke-role-after-run", "maybe"]);
        let err = config.settings_with(&no_env).unwrap_err().to_string();
        assert!(err.contains("REVOKE_ROLE_AFTER_RUN"), "{err}");
    }

    #[test]
    fn fernet_needs_both_halves_and_names_the_missing_one() {
        let key = fernet::Fernet::generate_key();
        let config = parse(&[&format!("--password-key={key}")]);
        let err = config.settings_with(&no_env).unwrap_err().to_string();
        assert!(err.contains("SNAPSHOT_USER_PASSWORD_ENCRYPTED"), "{err}");
        assert!(!err.contains(&key));
    }

    #[test]
    fn value_and_file_together_are_refused() {
        let config = parse(&[
            "--service-user-password",
            "pw-secret-1",
            "--service-user-password-file",
            "/run/secrets/pw",
        ]);
        let err = config.settings_with(&no_env).unwrap_err().to_string();
        assert!(err.contains("SNAPSHOT_SERVICE_USER_PASSWORD_FILE"), "{err}");
        assert!(!err.contains("pw-secret-1"));
    }

    #[test]
    fn files_supply_key_and_ciphertext() {
        let key = fernet::Fernet::generate_key();
        let ciphertext = fernet::Fernet::new(&key).unwrap().encrypt(b"from-files");
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key");
        let ciphertext_path = dir.path().join("ciphertext");
        std::fs::write(&key_path, format!("{key}\n")).unwrap();
        std::fs::write(&ciphertext_path, format!("{ciphertext}\n")).unwrap();
        let config = parse(&[
            "--service-user",
            "snap",
            "--password-key-file",
            key_path.to_str().unwrap(),
            "--service-user-password-encrypted-file",
            ciphertext_path.to_str().unwrap(),
        ]);
        let settings = config.settings_with(&no_env).unwrap();
        assert_eq!(settings.password_source, PasswordSource::FernetFile);
        assert_eq!(settings.password.unwrap().expose_secret(), "from-files");
        assert_eq!(settings.mode, Mode::ServiceUser);
    }

    #[test]
    fn a_half_configured_cloud_fails_at_start_naming_the_variable() {
        let config = parse(&[]);
        let lookup = |name: &str| (name == "PF9_AUTH_URL").then(|| "http://keystone:5000/v3".to_owned());
        let err = config.settings_with(&lookup).unwrap_err().to_string();
        assert!(err.contains("PF9_USERNAME"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = parse(&["--service-user-password", "hunter2-secret", "--password-key", "k3y-secret"]);
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2-secret") && !printed.contains("k3y-secret"), "{printed}");
    }
}
