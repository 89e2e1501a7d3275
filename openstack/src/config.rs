//! Where the cloud is and how to log in: an explicit struct, or read from `OS_*` variables,
//! `clouds.yaml` (`OS_CLOUD`), or the seed's `PF9_*` variables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::error::Error;

/// Everything needed to build a client.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Keystone v3 base URL, ending in `/v3`.
    pub auth_url: String,
    /// How to authenticate.
    pub auth: AuthMethod,
    /// Region for catalog lookups; `None` accepts any region.
    pub region: Option<String>,
    /// Catalog interface to use.
    pub interface: Interface,
    /// Verify TLS certificates (the seed's `PF9_VERIFY_TLS`).
    pub verify_tls: bool,
    /// Timeout for one HTTP request.
    pub request_timeout: Duration,
    /// Page size for Cinder and Nova lists.
    pub page_limit: u32,
    /// Retry, rate and concurrency limits.
    pub resilience: Resilience,
}

/// Retry, rate and concurrency limits shared by every clone of a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// Attempts per idempotent call, the first included.
    pub max_attempts: u32,
    /// First backoff step; doubled per attempt, full jitter.
    pub base_backoff: Duration,
    /// Upper bound of one backoff sleep (and of an honoured Retry-After).
    pub max_backoff: Duration,
    /// Sustained requests per second across the process; `None` = unlimited.
    pub requests_per_second: Option<f64>,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
    /// Requests in flight at once across the process.
    pub max_concurrency: usize,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            requests_per_second: Some(50.0),
            burst: 20,
            max_concurrency: 16,
        }
    }
}

/// Catalog interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// `public`
    #[default]
    Public,
    /// `internal`
    Internal,
    /// `admin`
    Admin,
}

impl Interface {
    /// The catalog spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Admin => "admin",
        }
    }

    fn parse(value: &str) -> Result<Self, Error> {
        match value.trim().trim_end_matches("URL").to_ascii_lowercase().as_str() {
            "public" => Ok(Self::Public),
            "internal" => Ok(Self::Internal),
            "admin" => Ok(Self::Admin),
            other => Err(Error::Config(format!("unknown interface {other:?}"))),
        }
    }
}

/// A domain by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// Domain id, e.g. `default`.
    Id(String),
    /// Domain name, e.g. `Default`.
    Name(String),
}

/// A user by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// User id.
    Id(String),
    /// User name and its domain.
    Name {
        /// User name.
        name: String,
        /// The user's domain.
        domain: DomainRef,
    },
}

/// A project by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// Project id.
    Id(String),
    /// Project name and its domain.
    Name {
        /// Project name.
        name: String,
        /// The project's domain.
        domain: DomainRef,
    },
}

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No scope (no catalog, only identity calls about oneself).
    Unscoped,
    /// One project.
    Project(ProjectRef),
    /// One domain.
    Domain(DomainRef),
}

/// How to authenticate to Keystone.
#[derive(Debug, Clone)]
pub enum AuthMethod {
    /// Password of a user.
    Password {
        /// The user.
        user: UserRef,
        /// The password.
        password: SecretString,
        /// Token scope.
        scope: Scope,
    },
    /// Application credential (scope is fixed by the credential).
    ApplicationCredential {
        /// Credential id; or name plus user.
        id: Option<String>,
        /// Credential name (needs `user`).
        name: Option<String>,
        /// Owner of a credential given by name.
        user: Option<UserRef>,
        /// The secret.
        secret: SecretString,
    },
    /// An existing token, optionally rescoped.
    Token {
        /// The token.
        token: SecretString,
        /// Scope to ask for; `Unscoped` keeps the token's own scope.
        scope: Scope,
    },
}

impl CloudConfig {
    /// A config with defaults for everything but the URL and the credentials.
    pub fn new(auth_url: &str, auth: AuthMethod) -> Self {
        Self {
            auth_url: normalise_auth_url(auth_url),
            auth,
            region: None,
            interface: Interface::Public,
            verify_tls: true,
            request_timeout: Duration::from_mins(1),
            page_limit: 500,
            resilience: Resilience::default(),
        }
    }

    /// Password login with a project scope, both by name in domains given by name.
    pub fn password(
        auth_url: &str,
        user: &str,
        user_domain: &str,
        password: &str,
        project: &str,
        project_domain: &str,
    ) -> Self {
        Self::new(
            auth_url,
            AuthMethod::Password {
                user: UserRef::Name { name: user.into(), domain: DomainRef::Name(user_domain.into()) },
                password: SecretString::from(password.to_owned()),
                scope: Scope::Project(ProjectRef::Name {
                    name: project.into(),
                    domain: DomainRef::Name(project_domain.into()),
                }),
            },
        )
    }

    /// Reads the process environment: `OS_CLOUD` (clouds.yaml) first, then `OS_AUTH_URL` and
    /// the other `OS_*` variables, then the seed's `PF9_*` variables.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// As [`CloudConfig::from_env`], with the variables supplied by `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        if let Some(cloud) = lookup("OS_CLOUD") {
            let files = clouds_yaml_paths(lookup);
            return Self::from_clouds_yaml(&cloud, &files);
        }
        if lookup("OS_AUTH_URL").is_some() {
            return Self::from_os_vars(lookup);
        }
        if lookup("PF9_AUTH_URL").is_some() {
            return Self::from_pf9_vars(lookup);
        }
        Err(Error::Config("set OS_CLOUD, OS_AUTH_URL or PF9_AUTH_URL".into()))
    }

    /// Reads the standard `OS_*` variables through `lookup`.
    pub fn from_os_vars(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |names: &[&str]| names.iter().find_map(|n| lookup(n));
        let fields = Fields {
            auth_url: get(&["OS_AUTH_URL"]),
            auth_type: get(&["OS_AUTH_TYPE"]),
            username: get(&["OS_USERNAME"]),
            user_id: get(&["OS_USER_ID"]),
            password: get(&["OS_PASSWORD"]),
            user_domain_name: get(&["OS_USER_DOMAIN_NAME"]),
            user_domain_id: get(&["OS_USER_DOMAIN_ID"]),
            project_name: get(&["OS_PROJECT_NAME", "OS_TENANT_NAME"]),
            project_id: get(&["OS_PROJECT_ID", "OS_TENANT_ID"]),
            project_domain_name: get(&["OS_PROJECT_DOMAIN_NAME"]),
            project_domain_id: get(&["OS_PROJECT_DOMAIN_ID"]),
            domain_name: get(&["OS_DOMAIN_NAME"]),
            domain_id: get(&["OS_DOMAIN_ID"]),
            default_domain: get(&["OS_DEFAULT_DOMAIN", "OS_DEFAULT_DOMAIN_ID"]),
            app_cred_id: get(&["OS_APPLICATION_CREDENTIAL_ID"]),
            app_cred_name: get(&["OS_APPLICATION_CREDENTIAL_NAME"]),
            app_cred_secret: get(&["OS_APPLICATION_CREDENTIAL_SECRET"]),
            token: get(&["OS_TOKEN"]),
            region: get(&["OS_REGION_NAME"]),
            interface: get(&["OS_INTERFACE", "OS_ENDPOINT_TYPE"]),
            verify: match get(&["OS_INSECURE"]) {
                Some(v) => Some(!parse_bool("OS_INSECURE", &v)?),
                None => None,
            },
        };
        fields.build("OS_* variables")
    }

    /// Reads the seed's `PF9_*` variables through `lookup`, with the seed's defaults
    /// (domains `Default` by name, project `service`, timeout 60 s, page limit 500).
    pub fn from_pf9_vars(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let required = |name: &str| lookup(name).ok_or_else(|| Error::Config(format!("{name} is required")));
        let or = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_owned());
        let mut config = Self::password(
            &required("PF9_AUTH_URL")?,
            &required("PF9_USERNAME")?,
            &or("PF9_USER_DOMAIN", "Default"),
            &required("PF9_PASSWORD")?,
            &or("PF9_PROJECT_NAME", "service"),
            &or("PF9_PROJECT_DOMAIN", "Default"),
        );
        config.region = lookup("PF9_REGION_NAME");
        config.verify_tls = parse_bool("PF9_VERIFY_TLS", &or("PF9_VERIFY_TLS", "true"))?;
        let timeout: f64 = parse_number("PF9_REQUEST_TIMEOUT", &or("PF9_REQUEST_TIMEOUT", "60"))?;
        if !(timeout > 0.0 && timeout.is_finite()) {
            return Err(Error::Config("PF9_REQUEST_TIMEOUT must be a positive number".into()));
        }
        config.request_timeout = Duration::from_secs_f64(timeout);
        config.page_limit = parse_number("PF9_PAGE_LIMIT", &or("PF9_PAGE_LIMIT", "500"))?;
        if config.page_limit == 0 {
            return Err(Error::Config("PF9_PAGE_LIMIT must be at least 1".into()));
        }
        Ok(config)
    }

    /// Reads cloud `cloud` from the first of `files` that exists (and `secure.yaml` beside it).
    pub fn from_clouds_yaml(cloud: &str, files: &[PathBuf]) -> Result<Self, Error> {
        let Some(path) = files.iter().find(|p| p.is_file()) else {
            return Err(Error::Config(format!(
                "OS_CLOUD={cloud} but no clouds.yaml found (looked in {})",
                files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let secure = path.with_file_name("secure.yaml");
        let secure_text = std::fs::read_to_string(&secure).ok();
        Self::from_clouds_yaml_str(cloud, &text, secure_text.as_deref())
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses cloud `cloud` out of clouds.yaml text (plus optional secure.yaml text).
    pub fn from_clouds_yaml_str(cloud: &str, clouds: &str, secure: Option<&str>) -> Result<Self, Error> {
        let mut entry = cloud_entry(cloud, clouds)?
            .ok_or_else(|| Error::Config(format!("cloud {cloud:?} not in clouds.yaml")))?;
        if let Some(secure) = secure
            && let Some(extra) = cloud_entry(cloud, secure)?
        {
            merge(&mut entry, extra);
        }
        let top = flatten(&entry);
        let auth = entry.get("auth").map(flatten).unwrap_or_default();
        let a = |key: &str| auth.get(key).cloned();
        let fields = Fields {
            auth_url: a("auth_url"),
            auth_type: top.get("auth_type").cloned(),
            username: a("username"),
            user_id: a("user_id"),
            password: a("password"),
            user_domain_name: a("user_domain_name"),
            user_domain_id: a("user_domain_id"),
            project_name: a("project_name").or_else(|| a("tenant_name")),
            project_id: a("project_id").or_else(|| a("tenant_id")),
            project_domain_name: a("project_domain_name"),
            project_domain_id: a("project_domain_id"),
            domain_name: a("domain_name"),
            domain_id: a("domain_id"),
            default_domain: a("default_domain").or_else(|| a("default_domain_id")),
            app_cred_id: a("application_credential_id"),
            app_cred_name: a("application_credential_name"),
            app_cred_secret: a("application_credential_secret"),
            token: a("token"),
            region: top.get("region_name").cloned(),
            interface: top.get("interface").cloned(),
            verify: match top.get("verify") {
                Some(v) => Some(parse_bool("verify", v)?),
                None => None,
            },
        };
        fields.build("clouds.yaml")
    }
}

/// Standard clouds.yaml search order: `OS_CLIENT_CONFIG_FILE`, the working directory,
/// `~/.config/openstack`, `/etc/openstack`.
pub fn clouds_yaml_paths(lookup: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(file) = lookup("OS_CLIENT_CONFIG_FILE") {
        paths.push(PathBuf::from(file));
    }
    paths.push(PathBuf::from("clouds.yaml"));
    if let Some(home) = lookup("HOME") {
        paths.push(Path::new(&home).join(".config/openstack/clouds.yaml"));
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

fn normalise_auth_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.ends_with("/v3") { trimmed.to_owned() } else { format!("{trimmed}/v3") }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(Error::Config(format!("{name}: {other:?} is not a boolean"))),
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, Error> {
    value.trim().parse().map_err(|_| Error::Config(format!("{name}: {value:?} is not a number")))
}

type YamlMap = serde_yaml_ng::Mapping;

fn cloud_entry(cloud: &str, text: &str) -> Result<Option<YamlMap>, Error> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| Error::Config(format!("clouds.yaml: {e}")))?;
    Ok(doc.get("clouds").and_then(|c| c.get(cloud)).and_then(serde_yaml_ng::Value::as_mapping).cloned())
}

fn merge(base: &mut YamlMap, extra: YamlMap) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(serde_yaml_ng::Value::Mapping(inner)), serde_yaml_ng::Value::Mapping(more)) => {
                merge(inner, more);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Scalar entries of a mapping as strings (YAML booleans and numbers included).
fn flatten(value: &impl YamlLike) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(map) = value.mapping() {
        for (key, value) in map {
            let Some(key) = key.as_str() else { continue };
            let text = match value {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                _ => continue,
            };
            out.insert(key.to_owned(), text);
        }
    }
    out
}

trait YamlLike {
    fn mapping(&self) -> Option<&YamlMap>;
}

impl YamlLike for YamlMap {
    fn mapping(&self) -> Option<&YamlMap> {
        Some(self)
    }
}

impl YamlLike for serde_yaml_ng::Value {
    fn mapping(&self) -> Option<&YamlMap> {
        self.as_mapping()
    }
}

/// The union of what OS_* and clouds.yaml can say, before deciding the auth method.
#[derive(Default)]
struct Fields {
    auth_url: Option<String>,
    auth_type: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    default_domain: Option<String>,
    app_cred_id: Option<String>,
    app_cred_name: Option<String>,
    app_cred_secret: Option<String>,
    token: Option<String>,
    region: Option<String>,
    interface: Option<String>,
    verify: Option<bool>,
}

impl Fields {
    fn domain(&self, id: Option<&String>, name: Option<&String>) -> DomainRef {
        match (id, name) {
            (Some(id), _) => DomainRef::Id(id.clone()),
            (None, Some(name)) => DomainRef::Name(name.clone()),
            // keystoneauth's fallback: the default domain's id.
            (None, None) => DomainRef::Id(self.default_domain.clone().unwrap_or_else(|| "default".into())),
        }
    }

    fn scope(&self) -> Scope {
        if let Some(id) = &self.project_id {
            return Scope::Project(ProjectRef::Id(id.clone()));
        }
        if let Some(name) = &self.project_name {
            return Scope::Project(ProjectRef::Name {
                name: name.clone(),
                domain: self.domain(self.project_domain_id.as_ref(), self.project_domain_name.as_ref()),
            });
        }
        match (&self.domain_id, &self.domain_name) {
            (Some(id), _) => Scope::Domain(DomainRef::Id(id.clone())),
            (None, Some(name)) => Scope::Domain(DomainRef::Name(name.clone())),
            (None, None) => Scope::Unscoped,
        }
    }

    fn user(&self, source: &str) -> Result<UserRef, Error> {
        if let Some(id) = &self.user_id {
            return Ok(UserRef::Id(id.clone()));
        }
        let name = self
            .username
            .clone()
            .ok_or_else(|| Error::Config(format!("{source}: no username or user id")))?;
        Ok(UserRef::Name {
            name,
            domain: self.domain(self.user_domain_id.as_ref(), self.user_domain_name.as_ref()),
        })
    }

    fn build(self, source: &str) -> Result<CloudConfig, Error> {
        let auth_url =
            self.auth_url.clone().ok_or_else(|| Error::Config(format!("{source}: no auth_url")))?;
        let auth_type = self.auth_type.clone().unwrap_or_else(|| {
            if self.app_cred_secret.is_some() {
                "v3applicationcredential".into()
            } else if self.token.is_some() && self.password.is_none() {
                "v3token".into()
            } else {
                "password".into()
            }
        });
        let auth = match auth_type.as_str() {
            "password" | "v3password" => AuthMethod::Password {
                user: self.user(source)?,
                password: SecretString::from(
                    self.password.clone().ok_or_else(|| Error::Config(format!("{source}: no password")))?,
                ),
                scope: self.scope(),
            },
            "v3applicationcredential" | "applicationcredential" => {
                let user = if self.user_id.is_some() || self.username.is_some() {
                    Some(self.user(source)?)
                } else {
                    None
                };
                if self.app_cred_id.is_none() && (self.app_cred_name.is_none() || user.is_none()) {
                    return Err(Error::Config(format!(
                        "{source}: application credential needs an id, or a name and a user"
                    )));
                }
                AuthMethod::ApplicationCredential {
                    id: self.app_cred_id.clone(),
                    name: self.app_cred_name.clone(),
                    user,
                    secret: SecretString::from(self.app_cred_secret.clone().ok_or_else(|| {
                        Error::Config(format!("{source}: no application credential secret"))
                    })?),
                }
            }
            "token" | "v3token" => AuthMethod::Token {
                token: SecretString::from(
                    self.token.clone().ok_or_else(|| Error::Config(format!("{source}: no token")))?,
                ),
                scope: self.scope(),
            },
            other => return Err(Error::Config(format!("{source}: unsupported auth type {other:?}"))),
        };
        let mut config = CloudConfig::new(&auth_url, auth);
        config.region = self.region;
        if let Some(interface) = &self.interface {
            config.interface = Interface::parse(interface)?;
        }
        if let Some(verify) = self.verify {
            config.verify_tls = verify;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn os_vars_give_a_project_scoped_password_login() {
        let lookup = vars(&[
            ("OS_AUTH_URL", "http://127.0.0.1:5000/v3/"),
            ("OS_USERNAME", "admin"),
            ("OS_PASSWORD", "adminpass"),
            ("OS_PROJECT_NAME", "admin"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "internal"),
        ]);
        let config = CloudConfig::from_lookup(&lookup).expect("config");
        assert_eq!(config.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(config.region.as_deref(), Some("RegionOne"));
        assert_eq!(config.interface, Interface::Internal);
        let AuthMethod::Password { user, password, scope } = config.auth else { panic!("not password") };
        assert_eq!(user, UserRef::Name { name: "admin".into(), domain: DomainRef::Name("Default".into()) });
        assert_eq!(password.expose_secret(), "adminpass");
        assert_eq!(
            scope,
            Scope::Project(ProjectRef::Name {
                name: "admin".into(),
                domain: DomainRef::Id("default".into())
            })
        );
    }

    #[test]
    fn os_vars_domain_scope_and_app_credentials() {
        let lookup = vars(&[
            ("OS_AUTH_URL", "http://h:5000"),
            ("OS_USER_ID", "u1"),
            ("OS_PASSWORD", "p"),
            ("OS_DOMAIN_NAME", "acme"),
        ]);
        let config = CloudConfig::from_lookup(&lookup).expect("config");
        assert_eq!(config.auth_url, "http://h:5000/v3");
        let AuthMethod::Password { scope, .. } = config.auth else { panic!("not password") };
        assert_eq!(scope, Scope::Domain(DomainRef::Name("acme".into())));

        let lookup = vars(&[
            ("OS_AUTH_URL", "http://h:5000/v3"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "ac1"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s3cret"),
        ]);
        let config = CloudConfig::from_lookup(&lookup).expect("config");
        assert!(
            matches!(config.auth, AuthMethod::ApplicationCredential { id: Some(ref id), .. } if id == "ac1")
        );
        assert!(!format!("{config:?}").contains("s3cret"), "secret leaked into Debug");
    }

    #[test]
    fn pf9_vars_keep_the_seed_defaults() {
        let lookup = vars(&[
            ("PF9_AUTH_URL", "https://pf9.example/keystone/v3"),
            ("PF9_USERNAME", "ops@example.com"),
            ("PF9_PASSWORD", "pw"),
            ("PF9_REGION_NAME", "region-b"),
            ("PF9_VERIFY_TLS", "false"),
            ("PF9_REQUEST_TIMEOUT", "12.5"),
            ("PF9_PAGE_LIMIT", "100"),
        ]);
        let config = CloudConfig::from_lookup(&lookup).expect("config");
        assert!(!config.verify_tls);
        assert_eq!(config.request_timeout, Duration::from_millis(12_500));
        assert_eq!(config.page_limit, 100);
        assert_eq!(config.region.as_deref(), Some("region-b"));
        let AuthMethod::Password { user, scope, .. } = config.auth else { panic!("not password") };
        assert_eq!(
            user,
            UserRef::Name { name: "ops@example.com".into(), domain: DomainRef::Name("Default".into()) }
        );
        assert_eq!(
            scope,
            Scope::Project(ProjectRef::Name {
                name: "service".into(),
                domain: DomainRef::Name("Default".into())
            })
        );
        let bad = vars(&[
            ("PF9_AUTH_URL", "x"),
            ("PF9_USERNAME", "u"),
            ("PF9_PASSWORD", "p"),
            ("PF9_PAGE_LIMIT", "many"),
        ]);
        let err = CloudConfig::from_lookup(&bad).expect_err("bad page limit");
        assert!(err.to_string().contains("PF9_PAGE_LIMIT"));
    }

    #[test]
    fn clouds_yaml_with_secure_yaml_merge() {
        let clouds = r"
clouds:
  other:
    auth: {auth_url: 'http://x/v3'}
  realos-admin:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      project_id: p123
      user_domain_name: Default
    region_name: RegionTwo
    interface: admin
    verify: false
";
        let secure = "clouds:\n  realos-admin:\n    auth:\n      password: fromsecure\n";
        let config = CloudConfig::from_clouds_yaml_str("realos-admin", clouds, Some(secure)).expect("config");
        assert_eq!(config.region.as_deref(), Some("RegionTwo"));
        assert_eq!(config.interface, Interface::Admin);
        assert!(!config.verify_tls);
        let AuthMethod::Password { password, scope, .. } = config.auth else { panic!("not password") };
        assert_eq!(password.expose_secret(), "fromsecure");
        assert_eq!(scope, Scope::Project(ProjectRef::Id("p123".into())));
        let err = CloudConfig::from_clouds_yaml_str("nope", clouds, None).expect_err("missing cloud");
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn clouds_yaml_is_found_through_os_client_config_file() {
        let dir = std::env::temp_dir().join(format!("clouds-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("clouds.yaml");
        std::fs::write(
            &file,
            "clouds:\n  c:\n    auth: {auth_url: 'http://k/v3', username: u, password: p}\n",
        )
        .expect("write");
        let path = file.display().to_string();
        let lookup = vars(&[("OS_CLOUD", "c"), ("OS_CLIENT_CONFIG_FILE", path.as_str())]);
        let config = CloudConfig::from_lookup(&lookup).expect("config");
        assert_eq!(config.auth_url, "http://k/v3");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
