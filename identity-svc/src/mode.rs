//! Whose identity a project gets, and why: the mode decided once from the configuration, the scope
//! of one answer, what happened to the role, and the fallback reasons (pure, no I/O).

/// How new project credentials are issued, decided at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The service user, scoped to each project.
    ServiceUser,
    /// The admin session for every project.
    AdminOnly {
        /// Why, for `Status` and every response.
        reason: String,
    },
}

impl Mode {
    /// The service user when it is enabled, named and has a password; the admin session otherwise.
    pub fn decide(disabled: bool, service_user: Option<&str>, has_password: bool) -> Self {
        let reason = if disabled {
            "SNAPSHOT_SERVICE_USER_DISABLED=true"
        } else if service_user.is_none() {
            "no service user configured (SNAPSHOT_SERVICE_USER_EMAIL)"
        } else if !has_password {
            "no service user password configured"
        } else {
            return Self::ServiceUser;
        };
        Self::AdminOnly { reason: reason.to_owned() }
    }

    /// Why the admin session is used; empty in service user mode.
    pub fn reason(&self) -> &str {
        match self {
            Self::ServiceUser => "",
            Self::AdminOnly { reason } => reason,
        }
    }
}

/// Whose identity one set of project credentials carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeMode {
    /// The service user, scoped to the requested project.
    ServiceUser,
    /// The admin session because the service user failed for this project.
    AdminFallback,
    /// The admin session because the service user is disabled or has no password.
    AdminOnly,
}

/// What happened to the service user's role on a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The assignment existed; nothing changed.
    AlreadyPresent,
    /// identity-svc granted it during this call.
    Granted,
    /// Dry run: it is missing and would be granted.
    WouldGrant,
    /// The grant was attempted and refused.
    Failed,
    /// No grant applies (admin session, or the role was never checked).
    NotApplicable,
}

/// A fallback reason for a failed step: the HTTP status and Keystone's own words, or the
/// transport problem. Built from `openstack::Error`, whose texts never carry a secret.
pub fn failure_reason(step: &str, error: &openstack::Error) -> String {
    match error.failure() {
        Some(failure) if failure.message.is_empty() => format!("{step} failed: HTTP {}", failure.status),
        Some(failure) => format!("{step} failed: HTTP {} ({})", failure.status, failure.message),
        None => format!("{step} failed: {error}"),
    }
}

/// Whether `error` means Keystone is unreachable or overloaded rather than that it said no.
pub fn is_unavailable(error: &openstack::Error) -> bool {
    match error {
        openstack::Error::Transport { .. } | openstack::Error::RateLimited { .. } => true,
        openstack::Error::Api(failure) => failure.status >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openstack::{ApiFailure, Error};

    #[test]
    fn mode_needs_an_enabled_named_user_with_a_password() {
        assert_eq!(Mode::decide(false, Some("svc"), true), Mode::ServiceUser);
        assert_eq!(Mode::decide(true, Some("svc"), true).reason(), "SNAPSHOT_SERVICE_USER_DISABLED=true");
        assert!(Mode::decide(false, None, true).reason().contains("SNAPSHOT_SERVICE_USER_EMAIL"));
        assert_eq!(Mode::decide(false, Some("svc"), false).reason(), "no service user password configured");
        assert_eq!(Mode::ServiceUser.reason(), "");
    }

    #[test]
    fn reasons_carry_status_and_keystone_message() {
        let failure = ApiFailure {
            operation: "keystone.auth.tokens.create".into(),
            status: 401,
            request_id: Some("req-1".into()),
            message: "The request you have made requires authentication.".into(),
        };
        let reason = failure_reason("service user authentication", &Error::Unauthorized(failure));
        assert_eq!(
            reason,
            "service user authentication failed: HTTP 401 (The request you have made requires authentication.)"
        );
        let down = Error::Transport {
            operation: "keystone.auth.tokens.create".into(),
            message: "connection refused".into(),
            timed_out: false,
            sent: false,
        };
        assert!(is_unavailable(&down));
        assert!(failure_reason("role check", &down).contains("connection refused"));
    }
}
