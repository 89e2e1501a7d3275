//! Who may do what: Keystone roles map to `snapshots:read|write|admin`, and a user scoped to an
//! ordinary project sees and changes only that project's data.

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A Snapkeeper permission; each includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// `snapshots:read`: every GET.
    Read,
    /// `snapshots:write`: policy sets, assignments and exclusions.
    Write,
    /// `snapshots:admin`: the rules, deleting policy sets, starting and cancelling runs.
    Admin,
}

impl Permission {
    /// The seed's permission name, e.g. `snapshots:write`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "snapshots:read",
            Self::Write => "snapshots:write",
            Self::Admin => "snapshots:admin",
        }
    }
}

/// Keystone role names (case-insensitive) to permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap(Vec<(String, Permission)>);

impl RoleMap {
    /// Parses `role=read|write|admin` pairs separated by commas.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, permission) =
                pair.split_once('=').ok_or_else(|| format!("{pair:?} is not role=permission"))?;
            let permission = match permission.trim().trim_start_matches("snapshots:") {
                "read" => Permission::Read,
                "write" => Permission::Write,
                "admin" => Permission::Admin,
                other => return Err(format!("{other:?} is not read, write or admin")),
            };
            pairs.push((role.trim().to_ascii_lowercase(), permission));
        }
        if pairs.is_empty() {
            return Err("the role map is empty".to_owned());
        }
        Ok(Self(pairs))
    }

    /// The highest permission any of `roles` maps to.
    pub fn permission(&self, roles: &[String]) -> Option<Permission> {
        roles
            .iter()
            .filter_map(|role| {
                let role = role.to_ascii_lowercase();
                self.0.iter().find(|(name, _)| *name == role).map(|(_, permission)| *permission)
            })
            .max()
    }
}

/// Which projects' data a user reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scope {
    /// Every project (system scope, the admin project, or a configured global project).
    Global,
    /// One Keystone project.
    Project {
        /// Project id.
        id: String,
        /// Project name.
        name: String,
    },
}

/// An authenticated user as the handlers see them.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Keystone user id.
    pub user_id: String,
    /// Keystone user name (recorded as the actor of changes).
    pub user_name: String,
    /// Highest permission from the user's roles.
    pub permission: Permission,
    /// Which projects the user reaches.
    pub scope: Scope,
}

/// A caller holding at least `snapshots:read` (checked before the request body is read).
#[derive(Debug)]
pub struct CanRead(pub Principal);

/// A caller holding at least `snapshots:write` (checked before the request body is read).
#[derive(Debug)]
pub struct CanWrite(pub Principal);

/// A caller holding `snapshots:admin` (checked before the request body is read).
#[derive(Debug)]
pub struct CanAdmin(pub Principal);

/// What a list request may see of one project filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectFilter {
    /// Filter by this project, or not at all.
    Use(Option<String>),
    /// The caller asked for a project they cannot see: the answer is empty.
    Nothing,
}

impl Principal {
    /// Fails with 403 unless the user holds `needed`.
    pub fn require(&self, needed: Permission) -> Result<(), ApiError> {
        if self.permission >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this needs {}", needed.name())))
        }
    }

    /// Fails with 403 unless the user sees every project (changes that affect all projects).
    pub fn require_global(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Global => Ok(()),
            Scope::Project { .. } => {
                Err(ApiError::forbidden("this affects every project; a project-scoped token cannot do it"))
            }
        }
    }

    /// The project filter to send to a service for a requested one.
    pub fn project_filter(&self, requested: Option<String>) -> ProjectFilter {
        match (&self.scope, requested) {
            (Scope::Global, requested) => ProjectFilter::Use(requested),
            (Scope::Project { id, .. }, None) => ProjectFilter::Use(Some(id.clone())),
            (Scope::Project { id, .. }, Some(requested)) if *id == requested => {
                ProjectFilter::Use(Some(requested))
            }
            (Scope::Project { .. }, Some(_)) => ProjectFilter::Nothing,
        }
    }

    /// Whether the user may see data of `project_id`.
    pub fn sees(&self, project_id: &str) -> bool {
        match &self.scope {
            Scope::Global => true,
            Scope::Project { id, .. } => id == project_id,
        }
    }

    /// The user's own project, when project-scoped.
    pub fn own_project(&self) -> Option<&str> {
        match &self.scope {
            Scope::Global => None,
            Scope::Project { id, .. } => Some(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_of(project: &str) -> Principal {
        Principal {
            user_id: "u".into(),
            user_name: "alice".into(),
            permission: Permission::Write,
            scope: Scope::Project { id: project.into(), name: project.into() },
        }
    }

    #[test]
    fn the_highest_mapped_role_wins_and_unknown_roles_grant_nothing() {
        let map = RoleMap::parse("admin=admin,member=write,reader=read").unwrap();
        assert_eq!(map.permission(&["reader".into(), "member".into()]), Some(Permission::Write));
        assert_eq!(map.permission(&["Admin".into()]), Some(Permission::Admin));
        assert_eq!(map.permission(&["creator".into()]), None);
        assert!(RoleMap::parse("").is_err());
        assert!(RoleMap::parse("member").is_err());
    }

    #[test]
    fn a_project_scoped_user_is_held_to_the_own_project() {
        let alice = member_of("p1");
        assert_eq!(alice.project_filter(None), ProjectFilter::Use(Some("p1".into())));
        assert_eq!(alice.project_filter(Some("p1".into())), ProjectFilter::Use(Some("p1".into())));
        assert_eq!(alice.project_filter(Some("p2".into())), ProjectFilter::Nothing);
        assert!(alice.sees("p1") && !alice.sees("p2"));
        assert!(alice.require(Permission::Write).is_ok());
        assert_eq!(alice.require(Permission::Admin).unwrap_err().status(), http::StatusCode::FORBIDDEN);
        assert!(alice.require_global().is_err());
    }
}
