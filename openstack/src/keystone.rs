//! Keystone v3: domains, projects, users, roles, role assignments, token validation.
//!
//! Keystone lists are not paged by limit/marker: a deployment with `list_limit` set truncates
//! them and says `"truncated": true`. Project and user lists that come back truncated are asked
//! again per domain; if a domain's list is still truncated the call fails rather than return a
//! partial list.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::TokenInfo;
use crate::client::{Call, OpenStack, Service};
use crate::error::{ApiFailure, Error};

/// A Keystone domain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Domain {
    /// Id (`default` for the default domain).
    pub id: String,
    /// Name.
    pub name: String,
    /// Enabled flag.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A Keystone project.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Project {
    /// Id.
    pub id: String,
    /// Name (unique within its domain).
    pub name: String,
    /// Owning domain.
    pub domain_id: String,
    /// Enabled flag.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A Keystone user.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: String,
    /// Name (unique within its domain).
    pub name: String,
    /// Owning domain.
    pub domain_id: String,
    /// Email (an extra attribute; absent on many clouds).
    #[serde(default)]
    pub email: Option<String>,
    /// Enabled flag.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A Keystone role.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Role {
    /// Id.
    pub id: String,
    /// Name, e.g. `member`.
    pub name: String,
}

/// One role assignment of a user on a project or domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    /// Role id.
    pub role_id: String,
    /// Role name (when Keystone included names).
    pub role_name: Option<String>,
    /// User id (absent for group assignments).
    pub user_id: Option<String>,
    /// Project scope.
    pub project_id: Option<String>,
    /// Domain scope.
    pub domain_id: Option<String>,
}

/// Filters for [`Keystone::role_assignments`].
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    /// `user.id`
    pub user_id: Option<String>,
    /// `scope.project.id`
    pub project_id: Option<String>,
    /// `role.id`
    pub role_id: Option<String>,
}

/// A project to create.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// Name.
    pub name: String,
    /// Domain id.
    pub domain_id: String,
    /// Description.
    pub description: String,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Name.
    pub name: String,
    /// Domain id.
    pub domain_id: String,
    /// Password.
    pub password: SecretString,
    /// Email.
    pub email: Option<String>,
}

fn yes() -> bool {
    true
}

/// Keystone calls of one client.
#[derive(Debug, Clone, Copy)]
pub struct Keystone<'a> {
    client: &'a OpenStack,
}

impl<'a> Keystone<'a> {
    pub(crate) fn new(client: &'a OpenStack) -> Self {
        Self { client }
    }

    async fn list<T: DeserializeOwned>(&self, call: Call<'_>, key: &str) -> Result<(Vec<T>, bool), Error> {
        let body: Value = self.client.json(&call).await?;
        let truncated = body.get("truncated").and_then(Value::as_bool).unwrap_or(false);
        let items = body.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
        let items = serde_json::from_value(items).map_err(|e| Error::decode(call.operation, e))?;
        Ok((items, truncated))
    }

    /// All domains.
    pub async fn domains(&self) -> Result<Vec<Domain>, Error> {
        let op = "keystone.domains.list";
        let (domains, truncated) =
            self.list(Call::new(op, Service::Identity, Method::GET, "/domains"), "domains").await?;
        if truncated {
            return Err(Error::Truncated { operation: op.into() });
        }
        Ok(domains)
    }

    /// One domain by id.
    pub async fn domain(&self, id: &str) -> Result<Domain, Error> {
        let call =
            Call::new("keystone.domains.get", Service::Identity, Method::GET, format!("/domains/{id}"));
        take(self.client.json(&call).await?, "domain", call.operation)
    }

    /// A domain by name.
    pub async fn find_domain(&self, name: &str) -> Result<Option<Domain>, Error> {
        let call = Call::new("keystone.domains.list", Service::Identity, Method::GET, "/domains")
            .query("name", name);
        Ok(self.list::<Domain>(call, "domains").await?.0.into_iter().next())
    }

    /// Projects, optionally only those of one domain; complete even when Keystone truncates.
    pub async fn projects(&self, domain_id: Option<&str>) -> Result<Vec<Project>, Error> {
        let op = "keystone.projects.list";
        let mut call = Call::new(op, Service::Identity, Method::GET, "/projects");
        if let Some(domain_id) = domain_id {
            call = call.query("domain_id", domain_id);
        }
        let (projects, truncated) = self.list::<Project>(call, "projects").await?;
        if !truncated {
            return Ok(projects);
        }
        if domain_id.is_some() {
            return Err(Error::Truncated { operation: op.into() });
        }
        tracing::info!(operation = op, "keystone truncated the project list; listing per domain");
        let mut all = Vec::new();
        for domain in self.domains().await? {
            let call =
                Call::new(op, Service::Identity, Method::GET, "/projects").query("domain_id", &domain.id);
            let (projects, truncated) = self.list::<Project>(call, "projects").await?;
            if truncated {
                return Err(Error::Truncated { operation: op.into() });
            }
            all.extend(projects);
        }
        Ok(all)
    }

    /// One project by id.
    pub async fn project(&self, id: &str) -> Result<Project, Error> {
        let call =
            Call::new("keystone.projects.get", Service::Identity, Method::GET, format!("/projects/{id}"));
        take(self.client.json(&call).await?, "project", call.operation)
    }

    /// A project by name within a domain.
    pub async fn find_project(&self, name: &str, domain_id: &str) -> Result<Option<Project>, Error> {
        let call = Call::new("keystone.projects.list", Service::Identity, Method::GET, "/projects")
            .query("name", name)
            .query("domain_id", domain_id);
        Ok(self.list::<Project>(call, "projects").await?.0.into_iter().next())
    }

    /// Creates a project (test setup and demos).
    pub async fn create_project(&self, project: &NewProject) -> Result<Project, Error> {
        let call = Call::new("keystone.projects.create", Service::Identity, Method::POST, "/projects").body(json!({
            "project": {"name": project.name, "domain_id": project.domain_id, "description": project.description, "enabled": true}
        }));
        take(self.client.json(&call).await?, "project", call.operation)
    }

    /// Disables then deletes a project.
    pub async fn delete_project(&self, id: &str) -> Result<(), Error> {
        let disable = Call::new(
            "keystone.projects.update",
            Service::Identity,
            Method::PATCH,
            format!("/projects/{id}"),
        )
        .body(json!({"project": {"enabled": false}}));
        self.client.send(&disable).await?;
        let call = Call::new(
            "keystone.projects.delete",
            Service::Identity,
            Method::DELETE,
            format!("/projects/{id}"),
        );
        self.client.send(&call).await?;
        Ok(())
    }

    /// Users, optionally of one domain and with one exact name; complete even when truncated.
    pub async fn users(&self, domain_id: Option<&str>, name: Option<&str>) -> Result<Vec<User>, Error> {
        let op = "keystone.users.list";
        let make = |domain: Option<&str>| {
            let mut call = Call::new(op, Service::Identity, Method::GET, "/users");
            if let Some(domain) = domain {
                call = call.query("domain_id", domain);
            }
            if let Some(name) = name {
                call = call.query("name", name);
            }
            call
        };
        let (users, truncated) = self.list::<User>(make(domain_id), "users").await?;
        if !truncated {
            return Ok(users);
        }
        if domain_id.is_some() {
            return Err(Error::Truncated { operation: op.into() });
        }
        let mut all = Vec::new();
        for domain in self.domains().await? {
            let (users, truncated) = self.list::<User>(make(Some(&domain.id)), "users").await?;
            if truncated {
                return Err(Error::Truncated { operation: op.into() });
            }
            all.extend(users);
        }
        Ok(all)
    }

    /// One user by id.
    pub async fn user(&self, id: &str) -> Result<User, Error> {
        let call = Call::new("keystone.users.get", Service::Identity, Method::GET, format!("/users/{id}"));
        take(self.client.json(&call).await?, "user", call.operation)
    }

    /// A user by name, or else by email, within `domain_id` (or all domains). The name is sent
    /// query-encoded (an email's `+` survives). Several matches across domains is an error: the
    /// old system took the first one, which could be someone else's account.
    pub async fn find_user(
        &self,
        name_or_email: &str,
        domain_id: Option<&str>,
    ) -> Result<Option<User>, Error> {
        let mut matches = self.users(domain_id, Some(name_or_email)).await?;
        if matches.is_empty() {
            // Keystone cannot filter on the email extra attribute; match it here.
            matches = self
                .users(domain_id, None)
                .await?
                .into_iter()
                .filter(|u| u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(name_or_email)))
                .collect();
        }
        if matches.len() > 1 {
            return Err(Error::Conflict(ApiFailure {
                operation: "keystone.users.find".into(),
                status: 409,
                request_id: None,
                message: format!("{} users match {name_or_email:?}; give the user's domain", matches.len()),
            }));
        }
        Ok(matches.pop())
    }

    /// Creates a user (test setup and demos).
    pub async fn create_user(&self, user: &NewUser) -> Result<User, Error> {
        let mut body = json!({"user": {
            "name": user.name, "domain_id": user.domain_id,
            "password": user.password.expose_secret(), "enabled": true
        }});
        if let Some(email) = &user.email {
            body["user"]["email"] = json!(email);
        }
        let call = Call::new("keystone.users.create", Service::Identity, Method::POST, "/users").body(body);
        take(self.client.json(&call).await?, "user", call.operation)
    }

    /// Deletes a user.
    pub async fn delete_user(&self, id: &str) -> Result<(), Error> {
        let call =
            Call::new("keystone.users.delete", Service::Identity, Method::DELETE, format!("/users/{id}"));
        self.client.send(&call).await?;
        Ok(())
    }

    /// All roles.
    pub async fn roles(&self) -> Result<Vec<Role>, Error> {
        let call = Call::new("keystone.roles.list", Service::Identity, Method::GET, "/roles");
        Ok(self.list(call, "roles").await?.0)
    }

    /// A role by name.
    pub async fn find_role(&self, name: &str) -> Result<Option<Role>, Error> {
        let call =
            Call::new("keystone.roles.list", Service::Identity, Method::GET, "/roles").query("name", name);
        Ok(self.list::<Role>(call, "roles").await?.0.into_iter().next())
    }

    /// Role assignments matching `filter`, with names.
    pub async fn role_assignments(&self, filter: &AssignmentFilter) -> Result<Vec<RoleAssignment>, Error> {
        let mut call =
            Call::new("keystone.role_assignments.list", Service::Identity, Method::GET, "/role_assignments")
                .query("include_names", "1");
        if let Some(user) = &filter.user_id {
            call = call.query("user.id", user);
        }
        if let Some(project) = &filter.project_id {
            call = call.query("scope.project.id", project);
        }
        if let Some(role) = &filter.role_id {
            call = call.query("role.id", role);
        }
        let (raw, _) = self.list::<Value>(call, "role_assignments").await?;
        let text = |v: &Value, path: &[&str]| {
            path.iter().try_fold(v, |v, key| v.get(key)).and_then(Value::as_str).map(str::to_owned)
        };
        Ok(raw
            .iter()
            .filter_map(|a| {
                Some(RoleAssignment {
                    role_id: text(a, &["role", "id"])?,
                    role_name: text(a, &["role", "name"]),
                    user_id: text(a, &["user", "id"]),
                    project_id: text(a, &["scope", "project", "id"]),
                    domain_id: text(a, &["scope", "domain", "id"]),
                })
            })
            .collect())
    }

    /// Grants `role_id` to `user_id` on `project_id` (idempotent).
    pub async fn grant_project_role(
        &self,
        project_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> Result<(), Error> {
        let path = format!("/projects/{project_id}/users/{user_id}/roles/{role_id}");
        self.client.send(&Call::new("keystone.roles.grant", Service::Identity, Method::PUT, path)).await?;
        Ok(())
    }

    /// Whether `user_id` holds `role_id` on `project_id` directly.
    pub async fn check_project_role(
        &self,
        project_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> Result<bool, Error> {
        let path = format!("/projects/{project_id}/users/{user_id}/roles/{role_id}");
        match self
            .client
            .send(&Call::new("keystone.roles.check", Service::Identity, Method::HEAD, path))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Revokes `role_id` from `user_id` on `project_id`.
    pub async fn revoke_project_role(
        &self,
        project_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> Result<(), Error> {
        let path = format!("/projects/{project_id}/users/{user_id}/roles/{role_id}");
        self.client
            .send(&Call::new("keystone.roles.revoke", Service::Identity, Method::DELETE, path))
            .await?;
        Ok(())
    }

    /// Revokes a token (a user's logout, or a test forcing re-authentication).
    pub async fn revoke_token(&self, subject: &SecretString) -> Result<(), Error> {
        let call =
            Call::new("keystone.auth.tokens.revoke", Service::Identity, Method::DELETE, "/auth/tokens")
                .header("X-Subject-Token", subject.expose_secret());
        self.client.send(&call).await?;
        Ok(())
    }

    /// Validates someone else's token: their user, scope, roles and expiry. A token Keystone
    /// does not know is `Error::NotFound`.
    pub async fn validate_token(&self, subject: &SecretString) -> Result<TokenInfo, Error> {
        let call = Call::new("keystone.auth.tokens.validate", Service::Identity, Method::GET, "/auth/tokens")
            .query("nocatalog", "1")
            .header("X-Subject-Token", subject.expose_secret());
        let response = self.client.send(&call).await?;
        TokenInfo::from_body(call.operation, &response.body)
    }
}

/// The object inside `{"project": {...}}` and friends.
pub(crate) fn take<T: DeserializeOwned>(mut body: Value, key: &str, operation: &str) -> Result<T, Error> {
    let inner = body
        .get_mut(key)
        .map(Value::take)
        .ok_or_else(|| Error::decode(operation, format!("no {key:?} in body")))?;
    serde_json::from_value(inner).map_err(|e| Error::decode(operation, e))
}
