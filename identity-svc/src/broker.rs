//! Every Keystone conversation of identity-svc: the admin session (connected on first use and kept
//! valid by the client), the service user and role lookups, role checks and grants, project-scoped
//! tokens with their caches, user token validation and login, grant revocation, and the figures
//! `Status` reports.
//!
//! One project's credentials are built under that project's own async lock, so concurrent callers
//! for one project share one Keystone round trip (the waiters find the fresh cache entry), while
//! different projects proceed in parallel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Duration, Utc};
use openstack::{
    AssignmentFilter, AuthMethod, DomainRef, ExposeSecret, OpenStack, ProjectRef, Scope, SecretString,
    TokenInfo, UserRef,
};
use service_kit::clock::Clock;

use crate::IdentityError;
use crate::cache::{self, CacheFigures, HitCounter, TtlCache};
use crate::config::Settings;
use crate::endpoints::{self, EndpointInfo};
use crate::mode::{self, GrantOutcome, Mode, ScopeMode};
use crate::secrets::PasswordSource;
use crate::store::{Grant, GrantSelector, GrantStore};

/// How long a role found (or granted) on a project is trusted without asking Keystone again. A
/// role removed meanwhile shows up as a 401 on the next token, which drops the entry.
const ROLE_CACHE_TTL: Duration = Duration::hours(1);
/// How long a handed-out token is trusted before the next hand-out checks it with Keystone
/// again. Callers that get a 401 ask again; without this a revoked token (password change, key
/// rotation) would be handed out until it expires.
pub const VERIFY_AFTER: Duration = Duration::seconds(60);
/// How long the service user is not tried again after Keystone refused its login. Keystone locks
/// accounts after repeated failures (`lockout_failure_attempts`): one wrong password must not
/// become a failed login per project in a run, nor leave grants for a user that cannot log in.
pub const REFUSED_LOGIN_BACKOFF: Duration = Duration::seconds(60);
/// Longest time a validated user token is answered from the cache (the contract's 60 s).
const USER_TOKEN_CACHE_TTL: Duration = Duration::seconds(60);
/// Longest user token accepted (the contract's 8 KiB).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest password accepted by `AuthenticateUser`.
const MAX_PASSWORD_BYTES: usize = 4096;

/// A request for one project's credentials.
#[derive(Debug, Clone, Default)]
pub struct ProjectRequest {
    /// Keystone project id.
    pub project_id: String,
    /// Change nothing in Keystone.
    pub dry_run: bool,
    /// Catalog region; `None` means the configured default.
    pub region: Option<String>,
    /// The run asking, recorded with any grant.
    pub run_id: Option<String>,
}

/// Credentials for one project, as `GetProjectCredentials` returns them.
#[derive(Debug, Clone)]
pub struct ProjectCredentials {
    /// The token; `None` in dry run when the role is missing.
    pub token: Option<SecretString>,
    /// Its expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// The project requested.
    pub project_id: String,
    /// Its name.
    pub project_name: String,
    /// Project the token is scoped to.
    pub token_project_id: String,
    /// User the token belongs to.
    pub user_id: String,
    /// Cinder endpoint of the token's catalog for the region.
    pub cinder_endpoint: String,
    /// Region of that endpoint.
    pub region: String,
    /// Whose identity the token carries.
    pub scope_mode: ScopeMode,
    /// Why the admin session is used.
    pub fallback_reason: String,
    /// What happened to the role.
    pub role_grant: GrantOutcome,
    /// Role checked or granted.
    pub role_name: String,
    /// True when no Keystone call was needed.
    pub cached: bool,
}

/// The admin session's credentials, as `GetAdminCredentials` returns them.
#[derive(Debug, Clone)]
pub struct AdminCredentials {
    /// The admin token.
    pub token: SecretString,
    /// What Keystone said about it.
    pub info: TokenInfo,
    /// Cinder endpoint for the region.
    pub cinder: EndpointInfo,
    /// Every endpoint of the region on the configured interface.
    pub endpoints: Vec<EndpointInfo>,
    /// True when no Keystone call was needed.
    pub cached: bool,
}

/// A user's login for `AuthenticateUser`.
#[derive(Debug, Clone)]
pub struct Login {
    /// User name (or e-mail when that is the name).
    pub username: String,
    /// Password.
    pub password: SecretString,
    /// Name of the user's domain.
    pub user_domain_name: String,
    /// Project scope by id.
    pub project_id: Option<String>,
    /// Project scope by name.
    pub project_name: Option<String>,
    /// Domain of `project_name`; `None` means the user's domain.
    pub project_domain_name: Option<String>,
}

/// The outcome of revoking one recorded grant.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The grant.
    pub grant: Grant,
    /// Removed (or would be, in dry run).
    pub revoked: bool,
    /// Why it was not removed; empty on success.
    pub error: String,
}

/// What `RevokeGrants` did.
#[derive(Debug, Clone, Default)]
pub struct RevokeReport {
    /// Grants removed (or that would be).
    pub revoked: i32,
    /// Removals that failed.
    pub failed: i32,
    /// Grants someone else had already removed.
    pub already_absent: i32,
    /// One entry per grant.
    pub grants: Vec<Revocation>,
}

/// A failed Keystone call, without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoneFailure {
    /// When.
    pub at: DateTime<Utc>,
    /// What was attempted.
    pub operation: String,
    /// HTTP status; 0 without a response.
    pub http_status: u16,
    /// Scrubbed error text.
    pub message: String,
    /// `X-Openstack-Request-Id`, when there was one.
    pub request_id: String,
}

/// The figures `Status` reports.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Mode new credentials are issued in.
    pub mode: Mode,
    /// Service user name as configured.
    pub service_user_name: String,
    /// Its Keystone id, once looked up.
    pub service_user_id: String,
    /// Domain it is looked up in.
    pub service_user_domain: String,
    /// Role ensured.
    pub role_name: String,
    /// Its id, once looked up.
    pub role_id: String,
    /// `REVOKE_ROLE_AFTER_RUN`.
    pub revoke_role_after_run: bool,
    /// Where the password came from.
    pub password_source: PasswordSource,
    /// Keystone URL; empty without a cloud.
    pub keystone_url: String,
    /// Default region; empty when any.
    pub default_region: String,
    /// Expiry of the admin token last seen.
    pub admin_token_expires_at: Option<DateTime<Utc>>,
    /// Project token cache.
    pub project_tokens: CacheFigures,
    /// Role check cache.
    pub roles: CacheFigures,
    /// User token cache.
    pub user_tokens: CacheFigures,
    /// Grants made since start.
    pub grants_made: i64,
    /// Grants recorded and not revoked.
    pub grants_outstanding: i64,
    /// Admin fallbacks since start.
    pub admin_fallbacks: i64,
    /// The last failed Keystone call.
    pub last_keystone_error: Option<KeystoneFailure>,
}

/// The service user as Keystone knows it.
#[derive(Debug, Clone)]
struct ServiceUser {
    id: String,
}

/// A project-scoped token of the service user.
#[derive(Clone)]
struct ProjectToken {
    token: SecretString,
    info: TokenInfo,
    renew_at: DateTime<Utc>,
    verified_at: DateTime<Utc>,
}

type ProjectSlot = Arc<tokio::sync::Mutex<Option<ProjectToken>>>;

/// What the service user's side produced for a project.
enum Issued {
    /// A project-scoped token, and what happened to the role.
    Token(Box<ProjectToken>, GrantOutcome),
    /// Dry run with the role missing: no token can be issued.
    WouldGrant,
}

/// Why the service user could not serve a project: the reason and what happened to the role.
struct Fallback {
    reason: String,
    grant: GrantOutcome,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds the sessions, caches and figures of identity-svc.
pub struct Broker {
    settings: Settings,
    store: GrantStore,
    clock: Arc<dyn Clock>,
    admin: tokio::sync::OnceCell<OpenStack>,
    service_user: tokio::sync::OnceCell<ServiceUser>,
    role_id: tokio::sync::OnceCell<String>,
    project_tokens: Mutex<HashMap<String, ProjectSlot>>,
    project_token_hits: HitCounter,
    roles: Mutex<TtlCache<()>>,
    project_names: Mutex<TtlCache<String>>,
    user_tokens: Mutex<TtlCache<TokenInfo>>,
    admin_expiry: Mutex<Option<DateTime<Utc>>>,
    admin_verified_at: Mutex<Option<DateTime<Utc>>>,
    login_refused: Mutex<Option<(DateTime<Utc>, String)>>,
    grants_made: AtomicI64,
    admin_fallbacks: AtomicI64,
    last_error: Mutex<Option<KeystoneFailure>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("mode", &self.settings.mode).finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker for `settings`; nothing is asked of Keystone until the first request.
    pub fn new(settings: Settings, store: GrantStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings,
            store,
            clock,
            admin: tokio::sync::OnceCell::new(),
            service_user: tokio::sync::OnceCell::new(),
            role_id: tokio::sync::OnceCell::new(),
            project_tokens: Mutex::new(HashMap::new()),
            project_token_hits: HitCounter::default(),
            roles: Mutex::new(TtlCache::default()),
            project_names: Mutex::new(TtlCache::default()),
            user_tokens: Mutex::new(TtlCache::default()),
            admin_expiry: Mutex::new(None),
            admin_verified_at: Mutex::new(None),
            login_refused: Mutex::new(None),
            grants_made: AtomicI64::new(0),
            admin_fallbacks: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Requests sent per OpenStack operation by every session of this broker (admin, service
    /// user, users' logins), for tests and diagnostics; empty before the first connection.
    pub fn call_stats(&self) -> BTreeMap<String, openstack::CallStats> {
        self.admin.get().map(OpenStack::call_stats).unwrap_or_default()
    }

    /// Keystone requests sent so far (the sum of the `keystone.*` operations).
    pub fn keystone_requests(&self) -> u64 {
        self.call_stats().iter().filter(|(op, _)| op.starts_with("keystone.")).map(|(_, s)| s.attempts).sum()
    }

    // ----- the admin session -------------------------------------------------------------------

    async fn admin(&self) -> Result<&OpenStack, IdentityError> {
        let config = self.settings.cloud.as_ref().ok_or(IdentityError::NoCloud)?;
        self.admin
            .get_or_try_init(|| async {
                let admin = OpenStack::connect(config.clone()).await.map_err(|e| {
                    let detail = self.note_failure("authenticate admin", &e);
                    if matches!(e, openstack::Error::Unauthorized(_)) {
                        IdentityError::KeystoneUnavailable(format!("admin credentials rejected: {detail}"))
                    } else {
                        IdentityError::KeystoneUnavailable(detail)
                    }
                })?;
                // Just issued, so just verified; the info comes from the session, not Keystone.
                let info =
                    admin.token_info().await.map_err(|e| self.unavailable("authenticate admin", &e))?;
                *lock(&self.admin_expiry) = Some(info.expires_at);
                *lock(&self.admin_verified_at) = Some(self.clock.now());
                Ok(admin)
            })
            .await
    }

    /// The admin token and what Keystone said about it; `true` when Keystone was asked (the token
    /// was issued, or checked because it was last checked more than [`VERIFY_AFTER`] ago).
    async fn admin_token(&self, admin: &OpenStack) -> Result<(SecretString, TokenInfo, bool), IdentityError> {
        let now = self.clock.now();
        let (mut token, mut info) = self.current_admin_token(admin).await?;
        let mut asked = lock(&self.admin_expiry).replace(info.expires_at) != Some(info.expires_at);
        let verified_at = *lock(&self.admin_verified_at);
        if !asked && verified_at.is_none_or(|at| now - at > VERIFY_AFTER) {
            asked = true;
            // Validating the token with itself: a revoked one gets a 401, on which the client
            // re-authenticates once, and the subject then comes back 404.
            match admin.keystone().validate_token(&token).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    tracing::info!("the admin token was revoked; using the re-issued one");
                    (token, info) = self.current_admin_token(admin).await?;
                    *lock(&self.admin_expiry) = Some(info.expires_at);
                }
                Err(e) => {
                    self.note_failure("check admin token", &e);
                }
            }
        }
        if asked {
            *lock(&self.admin_verified_at) = Some(now);
        }
        Ok((token, info, asked))
    }

    async fn current_admin_token(
        &self,
        admin: &OpenStack,
    ) -> Result<(SecretString, TokenInfo), IdentityError> {
        let token = admin.token().await.map_err(|e| self.unavailable("renew admin token", &e))?;
        let info = admin.token_info().await.map_err(|e| self.unavailable("renew admin token", &e))?;
        Ok((token, info))
    }

    /// The admin session's token with the endpoints of `region` (default region when `None`).
    pub async fn admin_credentials(&self, region: Option<&str>) -> Result<AdminCredentials, IdentityError> {
        let connecting = self.admin.get().is_none();
        let admin = self.admin().await?;
        let (token, info, asked) = self.admin_token(admin).await?;
        let issued_now = asked || connecting;
        let region = region.or(self.default_region());
        let interface = admin.config().interface.as_str();
        let cinder = endpoints::cinder_endpoint(&info.catalog, interface, region).ok_or_else(|| {
            IdentityError::NoCinderEndpoint {
                interface: interface.to_owned(),
                region: region.unwrap_or("any").to_owned(),
            }
        })?;
        let endpoints = endpoints::region_endpoints(&info.catalog, interface, Some(&cinder.region));
        Ok(AdminCredentials { token, info, cinder, endpoints, cached: !issued_now })
    }

    fn default_region(&self) -> Option<&str> {
        self.settings.cloud.as_ref().and_then(|c| c.region.as_deref())
    }

    // ----- failures ----------------------------------------------------------------------------

    /// Remembers a failed Keystone call for `Status` and returns its scrubbed description.
    fn note_failure(&self, operation: &str, error: &openstack::Error) -> String {
        let message = self.settings.redactor.scrub(&error.to_string());
        tracing::warn!(operation, status = error.status().unwrap_or(0), error = %message, "keystone call failed");
        *lock(&self.last_error) = Some(KeystoneFailure {
            at: self.clock.now(),
            operation: operation.to_owned(),
            http_status: error.status().unwrap_or(0),
            message: message.clone(),
            request_id: error.request_id().unwrap_or_default().to_owned(),
        });
        message
    }

    fn unavailable(&self, operation: &str, error: &openstack::Error) -> IdentityError {
        IdentityError::KeystoneUnavailable(format!("{operation}: {}", self.note_failure(operation, error)))
    }

    /// A fallback reason for a failed service-user step, noted for `Status`.
    fn reason(&self, step: &str, error: &openstack::Error) -> String {
        self.note_failure(step, error);
        self.settings.redactor.scrub(&mode::failure_reason(step, error))
    }

    // ----- lookups -----------------------------------------------------------------------------

    async fn project_name(
        &self,
        admin: &OpenStack,
        project_id: &str,
    ) -> Result<(String, bool), IdentityError> {
        let now = self.clock.now();
        if let Some(name) = lock(&self.project_names).get(project_id, now) {
            return Ok((name, true));
        }
        match admin.keystone().project(project_id).await {
            Ok(project) => {
                lock(&self.project_names).insert(
                    project_id.to_owned(),
                    project.name.clone(),
                    now + ROLE_CACHE_TTL,
                    now,
                );
                Ok((project.name, false))
            }
            Err(e) if e.is_not_found() => Err(IdentityError::ProjectNotFound(project_id.to_owned())),
            Err(e) => Err(self.unavailable("get project", &e)),
        }
    }

    async fn service_user(&self, admin: &OpenStack) -> Result<&ServiceUser, String> {
        let name = self.settings.service_user.as_deref().unwrap_or_default();
        let domain = &self.settings.service_user_domain;
        self.service_user
            .get_or_try_init(|| async {
                let domain_id = match admin.keystone().domain(domain).await {
                    Ok(found) => found.id,
                    Err(e) if e.is_not_found() => match admin.keystone().find_domain(domain).await {
                        Ok(Some(found)) => found.id,
                        Ok(None) => {
                            return Err(format!("service user domain {domain:?} not found in keystone"));
                        }
                        Err(e) => return Err(self.reason("service user domain lookup", &e)),
                    },
                    Err(e) => return Err(self.reason("service user domain lookup", &e)),
                };
                match admin.keystone().find_user(name, Some(&domain_id)).await {
                    Ok(Some(user)) if user.enabled => {
                        tracing::info!(user_id = %user.id, domain_id = %domain_id, "service user found");
                        Ok(ServiceUser { id: user.id })
                    }
                    Ok(Some(_)) => Err(format!("service user {name:?} is disabled in keystone")),
                    Ok(None) => Err(format!("service user {name:?} not found in domain {domain:?}")),
                    Err(e) => Err(self.reason("service user lookup", &e)),
                }
            })
            .await
    }

    async fn role_id(&self, admin: &OpenStack) -> Result<&String, String> {
        let name = &self.settings.role_name;
        self.role_id
            .get_or_try_init(|| async {
                match admin.keystone().find_role(name).await {
                    Ok(Some(role)) => Ok(role.id),
                    Ok(None) => {
                        Err(format!("role {name:?} does not exist in keystone (SNAPSHOT_SERVICE_USER_ROLE)"))
                    }
                    Err(e) => Err(self.reason("role lookup", &e)),
                }
            })
            .await
    }

    // ----- project credentials -----------------------------------------------------------------

    /// Credentials for one project: the service user's project-scoped token after ensuring its
    /// role, from the cache when it is still fresh, else the admin session with the reason.
    pub async fn project_credentials(
        &self,
        request: &ProjectRequest,
    ) -> Result<ProjectCredentials, IdentityError> {
        validate_id("project_id", &request.project_id)?;
        if let Some(run_id) = &request.run_id {
            validate_id("run_id", run_id)?;
        }
        if let Mode::AdminOnly { reason } = &self.settings.mode {
            let admin = self.admin().await?;
            let (project_name, name_cached) = self.project_name(admin, &request.project_id).await?;
            let mut credentials =
                self.admin_session_for(request, project_name, ScopeMode::AdminOnly, reason.clone()).await?;
            credentials.role_grant = GrantOutcome::NotApplicable;
            credentials.cached = credentials.cached && name_cached;
            return Ok(credentials);
        }
        let slot = {
            let mut slots = lock(&self.project_tokens);
            Arc::clone(slots.entry(request.project_id.clone()).or_default())
        };
        // Callers for the same project queue here; the first does the Keystone work.
        let mut entry = slot.lock().await;
        let now = self.clock.now();
        if let Some(cached) = entry.as_mut().filter(|t| now < t.renew_at) {
            if now - cached.verified_at <= VERIFY_AFTER {
                self.project_token_hits.record(true);
                return self.service_user_credentials(request, cached, GrantOutcome::AlreadyPresent, true);
            }
            let admin = self.admin().await?;
            match admin.keystone().validate_token(&cached.token).await {
                Ok(_) => {
                    cached.verified_at = now;
                    self.project_token_hits.record(true);
                    return self.service_user_credentials(
                        request,
                        cached,
                        GrantOutcome::AlreadyPresent,
                        false,
                    );
                }
                Err(e) if e.is_not_found() => {
                    tracing::info!(project_id = %request.project_id, "a cached project token was revoked; issuing a new one");
                    lock(&self.roles).remove(&request.project_id);
                }
                // Keystone cannot say: the token was good a minute ago, so hand it out.
                Err(e) => {
                    self.note_failure("check project token", &e);
                    self.project_token_hits.record(true);
                    return self.service_user_credentials(
                        request,
                        cached,
                        GrantOutcome::AlreadyPresent,
                        true,
                    );
                }
            }
        }
        self.project_token_hits.record(false);
        *entry = None;
        let admin = self.admin().await?;
        let project_name = match self.project_name(admin, &request.project_id).await {
            Ok((name, _)) => name,
            Err(e) => {
                // No slot is kept for ids Keystone does not know, so bad ids cannot grow the map.
                if matches!(e, IdentityError::ProjectNotFound(_)) {
                    lock(&self.project_tokens).remove(&request.project_id);
                }
                return Err(e);
            }
        };
        match self.issue_project_token(admin, request).await {
            Ok(Issued::Token(token, grant)) => {
                let credentials = self.service_user_credentials(request, &token, grant, false);
                *entry = Some(*token);
                credentials
            }
            Ok(Issued::WouldGrant) => Ok(self.would_grant(request, project_name)),
            Err(Fallback { reason, grant }) => {
                self.admin_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(project_id = %request.project_id, reason = %reason, "using the admin session for the project");
                let mut credentials =
                    self.admin_session_for(request, project_name, ScopeMode::AdminFallback, reason).await?;
                credentials.role_grant = grant;
                credentials.cached = false;
                Ok(credentials)
            }
        }
    }

    /// Ensures the role and issues the service user's token for the project.
    async fn issue_project_token(
        &self,
        admin: &OpenStack,
        request: &ProjectRequest,
    ) -> Result<Issued, Fallback> {
        let not_applicable = |reason| Fallback { reason, grant: GrantOutcome::NotApplicable };
        let user = self.service_user(admin).await.map_err(not_applicable)?.clone();
        let now = self.clock.now();
        if let Some((until, reason)) = lock(&self.login_refused).as_ref().filter(|(until, _)| now < *until) {
            return Err(not_applicable(format!(
                "{reason} (not retried before {})",
                until.format("%H:%M:%SZ")
            )));
        }
        let role_id = self.role_id(admin).await.map_err(not_applicable)?.clone();
        let grant = self.ensure_role(admin, request, &user, &role_id).await?;
        if grant == GrantOutcome::WouldGrant {
            return Ok(Issued::WouldGrant);
        }
        let Some(password) = self.settings.password.clone() else {
            return Err(not_applicable("no service user password configured".to_owned()));
        };
        let method = AuthMethod::Password {
            user: UserRef::Id(user.id.clone()),
            password,
            scope: Scope::Project(ProjectRef::Id(request.project_id.clone())),
        };
        let client = match admin.with_auth(method).await {
            Ok(client) => client,
            Err(e) => {
                let reason = self.reason("service user authentication", &e);
                if matches!(e, openstack::Error::Unauthorized(_)) {
                    // A role removed behind our back looks like this too: check again next time.
                    lock(&self.roles).remove(&request.project_id);
                    *lock(&self.login_refused) =
                        Some((self.clock.now() + REFUSED_LOGIN_BACKOFF, reason.clone()));
                }
                return Err(Fallback { reason, grant });
            }
        };
        *lock(&self.login_refused) = None;
        let issued = async { Ok::<_, openstack::Error>((client.token().await?, client.token_info().await?)) };
        let (token, info) =
            issued.await.map_err(|e| Fallback { reason: self.reason("service user token", &e), grant })?;
        if info.project_id() != Some(request.project_id.as_str()) {
            return Err(Fallback {
                reason: "keystone scoped the service user token to another project".to_owned(),
                grant,
            });
        }
        let renew_at = cache::renew_at(info.issued_at, info.expires_at);
        let verified_at = self.clock.now();
        Ok(Issued::Token(Box::new(ProjectToken { token, info, renew_at, verified_at }), grant))
    }

    /// Makes sure the service user holds the role on the project: cached, else looked up, else
    /// granted (recorded first) unless this is a dry run.
    async fn ensure_role(
        &self,
        admin: &OpenStack,
        request: &ProjectRequest,
        user: &ServiceUser,
        role_id: &str,
    ) -> Result<GrantOutcome, Fallback> {
        let project_id = &request.project_id;
        let now = self.clock.now();
        if lock(&self.roles).get(project_id, now).is_some() {
            return Ok(GrantOutcome::AlreadyPresent);
        }
        let filter = AssignmentFilter {
            user_id: Some(user.id.clone()),
            project_id: Some(project_id.clone()),
            role_id: Some(role_id.to_owned()),
        };
        let assignments = admin.keystone().role_assignments(&filter).await.map_err(|e| Fallback {
            reason: self.reason("role assignment check", &e),
            grant: GrantOutcome::NotApplicable,
        })?;
        let present = assignments.iter().any(|a| {
            a.role_id == role_id
                && a.user_id.as_deref() == Some(&user.id)
                && a.project_id.as_deref() == Some(project_id)
        });
        if present {
            lock(&self.roles).insert(project_id.clone(), (), now + ROLE_CACHE_TTL, now);
            return Ok(GrantOutcome::AlreadyPresent);
        }
        if request.dry_run {
            return Ok(GrantOutcome::WouldGrant);
        }
        let grant = Grant {
            project_id: project_id.clone(),
            user_id: user.id.clone(),
            role_id: role_id.to_owned(),
            role_name: self.settings.role_name.clone(),
            run_id: request.run_id.clone(),
            granted_at: now,
        };
        if let Err(e) = self.store.record(&grant).await {
            tracing::error!(project_id = %project_id, error = %e, "cannot record the role grant; not granting");
            return Err(Fallback {
                reason: "the role grant could not be recorded".to_owned(),
                grant: GrantOutcome::Failed,
            });
        }
        if let Err(e) = admin.keystone().grant_project_role(project_id, &user.id, role_id).await {
            if let Err(forget) = self.store.forget(&grant).await {
                tracing::error!(project_id = %project_id, error = %forget, "cannot forget a refused role grant");
            }
            let step = format!("granting role {}", self.settings.role_name);
            return Err(Fallback { reason: self.reason(&step, &e), grant: GrantOutcome::Failed });
        }
        self.grants_made.fetch_add(1, Ordering::Relaxed);
        lock(&self.roles).insert(project_id.clone(), (), now + ROLE_CACHE_TTL, now);
        tracing::info!(
            project_id = %project_id,
            role = %self.settings.role_name,
            run_id = request.run_id.as_deref().unwrap_or(""),
            "granted the service user its role on the project"
        );
        Ok(GrantOutcome::Granted)
    }

    fn service_user_credentials(
        &self,
        request: &ProjectRequest,
        token: &ProjectToken,
        grant: GrantOutcome,
        cached: bool,
    ) -> Result<ProjectCredentials, IdentityError> {
        let interface = self.interface();
        let region = request.region.as_deref().or(self.default_region());
        let cinder = endpoints::cinder_endpoint(&token.info.catalog, interface, region).ok_or_else(|| {
            IdentityError::NoCinderEndpoint {
                interface: interface.to_owned(),
                region: region.unwrap_or("any").to_owned(),
            }
        })?;
        let project = token.info.project.as_ref();
        Ok(ProjectCredentials {
            token: Some(token.token.clone()),
            expires_at: Some(token.info.expires_at),
            project_id: request.project_id.clone(),
            project_name: project.map(|p| p.name.clone()).unwrap_or_default(),
            token_project_id: project.map(|p| p.id.clone()).unwrap_or_default(),
            user_id: token.info.user.id.clone(),
            cinder_endpoint: cinder.url,
            region: cinder.region,
            scope_mode: ScopeMode::ServiceUser,
            fallback_reason: String::new(),
            role_grant: grant,
            role_name: self.settings.role_name.clone(),
            cached,
        })
    }

    fn would_grant(&self, request: &ProjectRequest, project_name: String) -> ProjectCredentials {
        tracing::info!(project_id = %request.project_id, role = %self.settings.role_name, "dry run: the role is missing; not granted");
        ProjectCredentials {
            token: None,
            expires_at: None,
            project_id: request.project_id.clone(),
            project_name,
            token_project_id: request.project_id.clone(),
            user_id: self.service_user.get().map(|u| u.id.clone()).unwrap_or_default(),
            cinder_endpoint: String::new(),
            region: request
                .region
                .clone()
                .or_else(|| self.default_region().map(str::to_owned))
                .unwrap_or_default(),
            scope_mode: ScopeMode::ServiceUser,
            fallback_reason: String::new(),
            role_grant: GrantOutcome::WouldGrant,
            role_name: self.settings.role_name.clone(),
            cached: false,
        }
    }

    async fn admin_session_for(
        &self,
        request: &ProjectRequest,
        project_name: String,
        scope_mode: ScopeMode,
        reason: String,
    ) -> Result<ProjectCredentials, IdentityError> {
        let credentials = self.admin_credentials(request.region.as_deref()).await?;
        Ok(ProjectCredentials {
            token: Some(credentials.token),
            expires_at: Some(credentials.info.expires_at),
            project_id: request.project_id.clone(),
            project_name,
            token_project_id: credentials.info.project_id().unwrap_or_default().to_owned(),
            user_id: credentials.info.user.id.clone(),
            cinder_endpoint: credentials.cinder.url,
            region: credentials.cinder.region,
            scope_mode,
            fallback_reason: reason,
            role_grant: GrantOutcome::NotApplicable,
            role_name: self.settings.role_name.clone(),
            cached: credentials.cached,
        })
    }

    fn interface(&self) -> &'static str {
        self.settings.cloud.as_ref().map_or("public", |c| c.interface.as_str())
    }

    /// Forgets what is cached about a project (after its grant was revoked).
    async fn forget_project(&self, project_id: &str) {
        lock(&self.roles).remove(project_id);
        let slot = lock(&self.project_tokens).get(project_id).cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    // ----- users' tokens -----------------------------------------------------------------------

    /// Who a user's token belongs to, its scope and roles; answered from a short cache keyed by
    /// the token's hash. `true` when cached.
    pub async fn validate_user_token(
        &self,
        token: &SecretString,
    ) -> Result<(TokenInfo, bool), IdentityError> {
        let text = token.expose_secret();
        if text.is_empty() {
            return Err(IdentityError::invalid("token", "required"));
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(IdentityError::invalid("token", "longer than 8 KiB"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdentityError::invalid("token", "not a keystone token (printable ASCII only)"));
        }
        let key = cache::token_hash(text);
        let now = self.clock.now();
        if let Some(info) = lock(&self.user_tokens).get(&key, now) {
            return Ok((info, true));
        }
        let admin = self.admin().await?;
        match admin.keystone().validate_token(token).await {
            Ok(info) if info.expires_at > now => {
                let until = info.expires_at.min(now + USER_TOKEN_CACHE_TTL);
                lock(&self.user_tokens).insert(key, info.clone(), until, now);
                Ok((info, false))
            }
            Ok(_) => Err(IdentityError::Unauthenticated("token expired".to_owned())),
            Err(e) if e.is_not_found() => {
                Err(IdentityError::Unauthenticated("token invalid, expired or revoked".to_owned()))
            }
            Err(e) => Err(self.unavailable("validate token", &e)),
        }
    }

    /// Checks a user's credentials with Keystone and returns the user's token and identity.
    pub async fn authenticate_user(&self, login: Login) -> Result<(SecretString, TokenInfo), IdentityError> {
        validate_login(&login)?;
        let admin = self.admin().await?;
        let scope = match (&login.project_id, &login.project_name) {
            (Some(id), None) => Scope::Project(ProjectRef::Id(id.clone())),
            (None, Some(name)) => Scope::Project(ProjectRef::Name {
                name: name.clone(),
                domain: DomainRef::Name(
                    login.project_domain_name.clone().unwrap_or_else(|| login.user_domain_name.clone()),
                ),
            }),
            _ => Scope::Unscoped,
        };
        let method = AuthMethod::Password {
            user: UserRef::Name {
                name: login.username.clone(),
                domain: DomainRef::Name(login.user_domain_name.clone()),
            },
            password: login.password,
            scope,
        };
        let refused = || {
            IdentityError::Unauthenticated(
                "wrong credentials, disabled user, or no role on the requested project".to_owned(),
            )
        };
        let client = match admin.with_auth(method).await {
            Ok(client) => client,
            // A user's mistake, not a Keystone failure: not noted for Status.
            Err(
                openstack::Error::Unauthorized(_)
                | openstack::Error::NotFound(_)
                | openstack::Error::BadRequest(_),
            ) => {
                return Err(refused());
            }
            Err(e) => return Err(self.unavailable("authenticate user", &e)),
        };
        let token = client.token().await.map_err(|e| self.unavailable("authenticate user", &e))?;
        let info = client.token_info().await.map_err(|e| self.unavailable("authenticate user", &e))?;
        Ok((token, info))
    }

    // ----- grants ------------------------------------------------------------------------------

    /// Removes the grants identity-svc recorded, for one run or all; dry run only lists them.
    pub async fn revoke_grants(
        &self,
        selector: &GrantSelector,
        dry_run: bool,
    ) -> Result<RevokeReport, IdentityError> {
        if let GrantSelector::Run(run_id) = selector {
            validate_id("run_id", run_id)?;
        }
        if let Mode::AdminOnly { reason } = &self.settings.mode {
            return Err(IdentityError::NotServiceUserMode(reason.clone()));
        }
        let grants = self.store.open_grants(selector).await?;
        let mut report = RevokeReport::default();
        if dry_run {
            report.revoked = grants.len() as i32;
            report.grants = grants
                .into_iter()
                .map(|grant| Revocation { grant, revoked: true, error: String::new() })
                .collect();
            return Ok(report);
        }
        if grants.is_empty() {
            return Ok(report);
        }
        let admin = self.admin().await?;
        for grant in grants {
            let outcome =
                admin.keystone().revoke_project_role(&grant.project_id, &grant.user_id, &grant.role_id).await;
            // A grant gone from Keystone leaves the record either way; a failed one stays for a retry.
            let (revoked, gone, error) = match outcome {
                Ok(()) => {
                    report.revoked += 1;
                    (true, true, String::new())
                }
                Err(e) if e.is_not_found() => {
                    report.already_absent += 1;
                    (false, true, "already absent in keystone".to_owned())
                }
                Err(e) => {
                    report.failed += 1;
                    (false, false, self.note_failure("revoke role", &e))
                }
            };
            if gone {
                self.store.mark_revoked(&grant, self.clock.now()).await?;
                self.forget_project(&grant.project_id).await;
            }
            tracing::info!(project_id = %grant.project_id, role = %grant.role_name, revoked, "role grant handled");
            report.grants.push(Revocation { grant, revoked, error });
        }
        Ok(report)
    }

    // ----- status ------------------------------------------------------------------------------

    /// Mode, service user, cache figures and the last Keystone error; never calls Keystone.
    pub async fn status(&self) -> Result<StatusReport, IdentityError> {
        let grants_outstanding = self.store.outstanding().await?;
        let now = self.clock.now();
        let live_tokens = {
            let slots = lock(&self.project_tokens);
            slots
                .values()
                .filter(|slot| {
                    slot.try_lock().is_ok_and(|entry| entry.as_ref().is_some_and(|t| now < t.renew_at))
                })
                .count() as i64
        };
        Ok(StatusReport {
            mode: self.settings.mode.clone(),
            service_user_name: self.settings.service_user.clone().unwrap_or_default(),
            service_user_id: self.service_user.get().map(|u| u.id.clone()).unwrap_or_default(),
            service_user_domain: self.settings.service_user_domain.clone(),
            role_name: self.settings.role_name.clone(),
            role_id: self.role_id.get().cloned().unwrap_or_default(),
            revoke_role_after_run: self.settings.revoke_role_after_run,
            password_source: self.settings.password_source,
            keystone_url: self.settings.cloud.as_ref().map(|c| c.auth_url.clone()).unwrap_or_default(),
            default_region: self.default_region().unwrap_or_default().to_owned(),
            admin_token_expires_at: *lock(&self.admin_expiry),
            project_tokens: self.project_token_hits.figures(live_tokens),
            roles: lock(&self.roles).figures(now),
            user_tokens: lock(&self.user_tokens).figures(now),
            grants_made: self.grants_made.load(Ordering::Relaxed),
            grants_outstanding,
            admin_fallbacks: self.admin_fallbacks.load(Ordering::Relaxed),
            last_keystone_error: lock(&self.last_error).clone(),
        })
    }
}

/// Ids go into Keystone URL paths: only the characters Keystone ids use, so nothing can change
/// the path.
fn validate_id(field: &'static str, id: &str) -> Result<(), IdentityError> {
    if id.is_empty() {
        return Err(IdentityError::invalid(field, "required"));
    }
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(IdentityError::invalid(field, "must be at most 128 letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

fn validate_login(login: &Login) -> Result<(), IdentityError> {
    if login.username.is_empty() {
        return Err(IdentityError::invalid("username", "required"));
    }
    let password = login.password.expose_secret();
    if password.is_empty() {
        return Err(IdentityError::invalid("password", "required"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(IdentityError::invalid("password", "longer than 4096 bytes"));
    }
    if login.user_domain_name.is_empty() {
        return Err(IdentityError::invalid("user_domain_name", "required"));
    }
    if login.project_id.is_some() && login.project_name.is_some() {
        return Err(IdentityError::invalid("project_id", "give project_id or project_name, not both"));
    }
    if let Some(project_id) = &login.project_id {
        validate_id("project_id", project_id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_change_a_url_path_are_refused() {
        assert!(validate_id("project_id", "0a1b2c3d4e5f").is_ok());
        for bad in ["", "../users", "a/b", "a?b=c", "a b", &"x".repeat(129)] {
            let err = validate_id("project_id", bad).unwrap_err().to_string();
            assert!(err.starts_with("project_id: "), "{err}");
        }
    }

    #[test]
    fn logins_name_the_field_at_fault() {
        let login = Login {
            username: "alice".into(),
            password: SecretString::from("pw".to_owned()),
            user_domain_name: "Default".into(),
            project_id: Some("p1".into()),
            project_name: Some("web".into()),
            project_domain_name: None,
        };
        assert!(validate_login(&login).unwrap_err().to_string().starts_with("project_id: "));
        let no_domain = Login { user_domain_name: String::new(), project_name: None, ..login.clone() };
        assert!(validate_login(&no_domain).unwrap_err().to_string().starts_with("user_domain_name: "));
        let long = Login { password: SecretString::from("x".repeat(4097)), project_name: None, ..login };
        assert!(validate_login(&long).unwrap_err().to_string().starts_with("password: "));
    }
}
