//! Keystone authentication: the request body per method, the token it returns, and the session
//! that keeps a token fresh (renewed before expiry, re-issued once after a 401).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::catalog::{Catalog, CatalogEntry};
use crate::config::{AuthMethod, DomainRef, ProjectRef, Scope, UserRef};
use crate::error::Error;
use crate::transport::{Idempotency, Request, Transport};

/// A named Keystone object (role, domain) as a token reports it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NamedRef {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// The project a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProject {
    /// Project id.
    pub id: String,
    /// Project name.
    pub name: String,
    /// Domain of the project.
    pub domain: NamedRef,
}

/// What Keystone says about a token: who, which scope, which roles, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The user.
    pub user: NamedRef,
    /// The user's domain.
    pub user_domain: NamedRef,
    /// Project scope, if any.
    pub project: Option<TokenProject>,
    /// Domain scope, if any.
    pub domain: Option<NamedRef>,
    /// Roles on the scope.
    pub roles: Vec<NamedRef>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Issue time.
    pub issued_at: Option<DateTime<Utc>>,
    /// Service catalog (empty for unscoped tokens and validations without catalog).
    pub catalog: Catalog,
}

impl TokenInfo {
    /// Whether the token carries `role` (case-insensitive, as Keystone role names are).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.name.eq_ignore_ascii_case(role))
    }

    /// Project id of a project-scoped token.
    pub fn project_id(&self) -> Option<&str> {
        self.project.as_ref().map(|p| p.id.as_str())
    }

    pub(crate) fn from_body(operation: &str, body: &[u8]) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Envelope {
            token: Body,
        }
        #[derive(Deserialize)]
        struct Body {
            user: User,
            #[serde(default)]
            project: Option<Project>,
            #[serde(default)]
            domain: Option<NamedRef>,
            #[serde(default)]
            roles: Vec<NamedRef>,
            expires_at: DateTime<Utc>,
            #[serde(default)]
            issued_at: Option<DateTime<Utc>>,
            #[serde(default)]
            catalog: Vec<CatalogEntry>,
        }
        #[derive(Deserialize)]
        struct User {
            id: String,
            #[serde(default)]
            name: String,
            domain: NamedRef,
        }
        #[derive(Deserialize)]
        struct Project {
            id: String,
            #[serde(default)]
            name: String,
            domain: NamedRef,
        }
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| Error::decode(operation, e))?;
        let token = envelope.token;
        Ok(Self {
            user: NamedRef { id: token.user.id, name: token.user.name },
            user_domain: token.user.domain,
            project: token.project.map(|p| TokenProject { id: p.id, name: p.name, domain: p.domain }),
            domain: token.domain,
            roles: token.roles,
            expires_at: token.expires_at,
            issued_at: token.issued_at,
            catalog: Catalog { entries: token.catalog },
        })
    }
}

fn domain_json(domain: &DomainRef) -> Value {
    match domain {
        DomainRef::Id(id) => json!({ "id": id }),
        DomainRef::Name(name) => json!({ "name": name }),
    }
}

fn user_json(user: &UserRef) -> Value {
    match user {
        UserRef::Id(id) => json!({ "id": id }),
        UserRef::Name { name, domain } => json!({ "name": name, "domain": domain_json(domain) }),
    }
}

fn scope_json(scope: &Scope) -> Option<Value> {
    match scope {
        Scope::Unscoped => None,
        Scope::Project(ProjectRef::Id(id)) => Some(json!({ "project": { "id": id } })),
        Scope::Project(ProjectRef::Name { name, domain }) => {
            Some(json!({ "project": { "name": name, "domain": domain_json(domain) } }))
        }
        Scope::Domain(domain) => Some(json!({ "domain": domain_json(domain) })),
    }
}

/// The `POST /v3/auth/tokens` body. It holds the secret: never log it.
pub(crate) fn auth_body(method: &AuthMethod) -> Value {
    let (identity, scope) = match method {
        AuthMethod::Password { user, password, scope } => {
            let mut user = user_json(user);
            user["password"] = Value::String(password.expose_secret().to_owned());
            (json!({ "methods": ["password"], "password": { "user": user } }), scope_json(scope))
        }
        AuthMethod::ApplicationCredential { id, name, user, secret } => {
            let mut credential = json!({ "secret": secret.expose_secret() });
            if let Some(id) = id {
                credential["id"] = json!(id);
            }
            if let Some(name) = name {
                credential["name"] = json!(name);
            }
            if let Some(user) = user {
                credential["user"] = user_json(user);
            }
            (json!({ "methods": ["application_credential"], "application_credential": credential }), None)
        }
        AuthMethod::Token { token, scope } => {
            (json!({ "methods": ["token"], "token": { "id": token.expose_secret() } }), scope_json(scope))
        }
    };
    let mut auth = json!({ "identity": identity });
    if let Some(scope) = scope {
        auth["scope"] = scope;
    }
    json!({ "auth": auth })
}

/// A token and what Keystone said about it.
pub(crate) struct Authenticated {
    pub(crate) token: SecretString,
    pub(crate) info: TokenInfo,
}

impl Authenticated {
    /// Renew when less than a quarter of the lifetime (at most 5 minutes) is left, so a long
    /// pagination does not start on a token about to die.
    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        let lifetime =
            self.info.issued_at.map_or(chrono::Duration::hours(1), |issued| self.info.expires_at - issued);
        let margin = (lifetime / 4).min(chrono::Duration::minutes(5));
        now + margin < self.info.expires_at
    }
}

/// Holds the current token of one identity. Concurrent callers share one re-authentication.
pub(crate) struct Session {
    auth_url: String,
    method: AuthMethod,
    current: tokio::sync::Mutex<Option<Arc<Authenticated>>>,
}

impl Session {
    pub(crate) fn new(auth_url: &str, method: AuthMethod) -> Self {
        Self { auth_url: auth_url.to_owned(), method, current: tokio::sync::Mutex::new(None) }
    }

    /// A fresh token, authenticating if there is none or it is close to expiry.
    pub(crate) async fn token(&self, transport: &Transport) -> Result<Arc<Authenticated>, Error> {
        let mut current = self.current.lock().await;
        if let Some(auth) = current.as_ref()
            && auth.is_fresh(Utc::now())
        {
            return Ok(Arc::clone(auth));
        }
        let fresh = Arc::new(self.authenticate(transport).await?);
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Drops `stale` after a 401 so the next [`Session::token`] re-authenticates; a token
    /// another caller already replaced is left alone.
    pub(crate) async fn invalidate(&self, stale: &Arc<Authenticated>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *current = None;
        }
    }

    async fn authenticate(&self, transport: &Transport) -> Result<Authenticated, Error> {
        const OPERATION: &str = "keystone.auth.tokens.create";
        let body = auth_body(&self.method);
        let request = Request {
            operation: OPERATION,
            method: Method::POST,
            url: format!("{}/auth/tokens", self.auth_url),
            query: Vec::new(),
            token: None,
            project_id: None,
            headers: Vec::new(),
            body: Some(&body),
        };
        // Issuing a token changes nothing that a repeat would duplicate.
        let response = transport.execute(&request, Idempotency::Idempotent).await?;
        let token = response
            .header("x-subject-token")
            .ok_or_else(|| Error::decode(OPERATION, "no X-Subject-Token header"))?
            .to_owned();
        let info = TokenInfo::from_body(OPERATION, &response.body)?;
        tracing::debug!(
            user_id = %info.user.id,
            project_id = info.project_id().unwrap_or(""),
            expires_at = %info.expires_at,
            "keystone token issued"
        );
        Ok(Authenticated { token: SecretString::from(token), info })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_body_scopes_by_name_and_domain() {
        let method = AuthMethod::Password {
            user: UserRef::Name {
                name: "ops+snap@example.com".into(),
                domain: DomainRef::Name("Default".into()),
            },
            password: SecretString::from("pw".to_owned()),
            scope: Scope::Project(ProjectRef::Name {
                name: "lab".into(),
                domain: DomainRef::Id("default".into()),
            }),
        };
        let body = auth_body(&method);
        assert_eq!(body["auth"]["identity"]["password"]["user"]["name"], "ops+snap@example.com");
        assert_eq!(body["auth"]["identity"]["password"]["user"]["domain"]["name"], "Default");
        assert_eq!(body["auth"]["scope"]["project"]["domain"]["id"], "default");
        let unscoped =
            AuthMethod::Token { token: SecretString::from("t".to_owned()), scope: Scope::Unscoped };
        assert!(auth_body(&unscoped)["auth"].get("scope").is_none());
    }

    #[test]
    fn renewal_margin_is_a_quarter_of_short_lifetimes() {
        let issued = Utc::now();
        let auth = Authenticated {
            token: SecretString::from("t".to_owned()),
            info: TokenInfo {
                user: NamedRef { id: "u".into(), name: "u".into() },
                user_domain: NamedRef { id: "default".into(), name: "Default".into() },
                project: None,
                domain: None,
                roles: vec![],
                expires_at: issued + chrono::Duration::seconds(8),
                issued_at: Some(issued),
                catalog: Catalog::default(),
            },
        };
        assert!(auth.is_fresh(issued + chrono::Duration::seconds(5)));
        assert!(!auth.is_fresh(issued + chrono::Duration::seconds(7)));
    }
}
