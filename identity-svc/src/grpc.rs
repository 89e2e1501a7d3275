//! The `IdentityService` gRPC API: reads the request, asks the [`Broker`], and maps domain types and
//! errors to the contract in `proto/snapkeeper/identity/v1`. Token fields are secrets: handlers
//! are instrumented without their requests, and nothing here logs a token or password.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use openstack::{ExposeSecret, SecretString, TokenInfo};
use service_kit::ServiceError;
use snapkeeper_proto::identity::v1 as pb;
use snapkeeper_proto::identity::v1::identity_service_server::IdentityService;
use snapkeeper_proto::prost_types::Timestamp;
use snapkeeper_proto::tonic::{self, Request, Response, Status};

use crate::IdentityError;
use crate::broker::{Broker, KeystoneFailure, Login, ProjectRequest};
use crate::cache::CacheFigures;
use crate::endpoints::EndpointInfo;
use crate::mode::{GrantOutcome, Mode, ScopeMode};
use crate::store::GrantSelector;

/// The gRPC face of identity-svc.
#[derive(Debug, Clone)]
pub struct IdentityApi {
    broker: Arc<Broker>,
}

impl IdentityApi {
    /// The API over `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

fn status(err: IdentityError) -> Status {
    ServiceError::from(err).into()
}

fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn optional(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

fn scope_mode(mode: ScopeMode) -> pb::ScopeMode {
    match mode {
        ScopeMode::ServiceUser => pb::ScopeMode::ServiceUser,
        ScopeMode::AdminFallback => pb::ScopeMode::AdminFallback,
        ScopeMode::AdminOnly => pb::ScopeMode::AdminOnly,
    }
}

fn role_grant(outcome: GrantOutcome) -> pb::RoleGrant {
    match outcome {
        GrantOutcome::AlreadyPresent => pb::RoleGrant::AlreadyPresent,
        GrantOutcome::Granted => pb::RoleGrant::Granted,
        GrantOutcome::WouldGrant => pb::RoleGrant::WouldGrant,
        GrantOutcome::Failed => pb::RoleGrant::Failed,
        GrantOutcome::NotApplicable => pb::RoleGrant::NotApplicable,
    }
}

fn cache_stats(figures: CacheFigures) -> pb::CacheStats {
    pb::CacheStats {
        entries: figures.entries,
        hits: figures.hits,
        misses: figures.misses,
        hit_rate: figures.hit_rate(),
    }
}

fn endpoint(info: EndpointInfo) -> pb::CatalogEndpoint {
    pb::CatalogEndpoint {
        service_type: info.service_type,
        interface: info.interface,
        region: info.region,
        url: info.url,
    }
}

fn keystone_error(failure: KeystoneFailure) -> pb::KeystoneError {
    pb::KeystoneError {
        at: Some(timestamp(failure.at)),
        operation: failure.operation,
        http_status: i32::from(failure.http_status),
        message: failure.message,
        request_id: failure.request_id,
    }
}

/// The contract's view of a token: identity, scope and sorted role names.
fn identity(info: &TokenInfo) -> pb::UserIdentity {
    let mut roles: Vec<String> = info.roles.iter().map(|r| r.name.clone()).collect();
    roles.sort();
    roles.dedup();
    let (scope, project_id, project_name, scope_domain) = match (&info.project, &info.domain) {
        (Some(project), _) => {
            (pb::TokenScope::Project, project.id.clone(), project.name.clone(), Some(project.domain.clone()))
        }
        (None, Some(domain)) => (pb::TokenScope::Domain, String::new(), String::new(), Some(domain.clone())),
        // The client does not expose `system`; a token with roles but no project or domain scope
        // can only be system-scoped.
        (None, None) if !roles.is_empty() => (pb::TokenScope::System, String::new(), String::new(), None),
        (None, None) => (pb::TokenScope::Unscoped, String::new(), String::new(), None),
    };
    pb::UserIdentity {
        user_id: info.user.id.clone(),
        user_name: info.user.name.clone(),
        user_domain_id: info.user_domain.id.clone(),
        user_domain_name: info.user_domain.name.clone(),
        scope: scope.into(),
        project_id,
        project_name,
        scope_domain_id: scope_domain.as_ref().map(|d| d.id.clone()).unwrap_or_default(),
        scope_domain_name: scope_domain.map(|d| d.name).unwrap_or_default(),
        // The client does not expose `is_admin_project`; Keystone's default admin project is the
        // one its policies call admin, so this stays false rather than guess.
        is_admin_project: false,
        roles,
        issued_at: info.issued_at.map(timestamp),
        expires_at: Some(timestamp(info.expires_at)),
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    #[tracing::instrument(skip_all, fields(project_id, dry_run, scope_mode, cached))]
    async fn get_project_credentials(
        &self,
        request: Request<pb::GetProjectCredentialsRequest>,
    ) -> Result<Response<pb::GetProjectCredentialsResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::Span::current();
        span.record("project_id", request.project_id.as_str());
        span.record("dry_run", request.dry_run);
        let request = ProjectRequest {
            project_id: request.project_id,
            dry_run: request.dry_run,
            region: optional(request.region),
            run_id: optional(request.run_id),
        };
        let credentials = self.broker.project_credentials(&request).await.map_err(status)?;
        span.record("scope_mode", scope_mode(credentials.scope_mode).as_str_name());
        span.record("cached", credentials.cached);
        crate::metrics::credentials_issued(
            scope_mode(credentials.scope_mode).as_str_name(),
            credentials.cached,
        );
        Ok(Response::new(pb::GetProjectCredentialsResponse {
            token: credentials.token.map(|t| t.expose_secret().to_owned()).unwrap_or_default(),
            expires_at: credentials.expires_at.map(timestamp),
            project_id: credentials.project_id,
            project_name: credentials.project_name,
            token_project_id: credentials.token_project_id,
            user_id: credentials.user_id,
            cinder_endpoint: credentials.cinder_endpoint,
            region: credentials.region,
            scope_mode: scope_mode(credentials.scope_mode).into(),
            fallback_reason: credentials.fallback_reason,
            role_grant: role_grant(credentials.role_grant).into(),
            role_name: credentials.role_name,
            cached: credentials.cached,
        }))
    }

    #[tracing::instrument(skip_all, fields(cached))]
    async fn get_admin_credentials(
        &self,
        request: Request<pb::GetAdminCredentialsRequest>,
    ) -> Result<Response<pb::GetAdminCredentialsResponse>, Status> {
        let region = request.into_inner().region;
        service_kit::error::check_short_text("region", &region)?;
        let region = optional(region);
        let credentials = self.broker.admin_credentials(region.as_deref()).await.map_err(status)?;
        tracing::Span::current().record("cached", credentials.cached);
        let project = credentials.info.project.clone();
        Ok(Response::new(pb::GetAdminCredentialsResponse {
            token: credentials.token.expose_secret().to_owned(),
            expires_at: Some(timestamp(credentials.info.expires_at)),
            user_id: credentials.info.user.id.clone(),
            user_name: credentials.info.user.name.clone(),
            project_id: project.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
            project_name: project.map(|p| p.name).unwrap_or_default(),
            cinder_endpoint: credentials.cinder.url,
            region: credentials.cinder.region,
            endpoints: credentials.endpoints.into_iter().map(endpoint).collect(),
            cached: credentials.cached,
        }))
    }

    #[tracing::instrument(skip_all, fields(cached))]
    async fn validate_user_token(
        &self,
        request: Request<pb::ValidateUserTokenRequest>,
    ) -> Result<Response<pb::ValidateUserTokenResponse>, Status> {
        let token = SecretString::from(request.into_inner().token);
        let (info, cached) = self.broker.validate_user_token(&token).await.map_err(status)?;
        tracing::Span::current().record("cached", cached);
        Ok(Response::new(pb::ValidateUserTokenResponse { identity: Some(identity(&info)) }))
    }

    #[tracing::instrument(skip_all, fields(username))]
    async fn authenticate_user(
        &self,
        request: Request<pb::AuthenticateUserRequest>,
    ) -> Result<Response<pb::AuthenticateUserResponse>, Status> {
        let request = request.into_inner();
        tracing::Span::current().record("username", request.username.as_str());
        let login = Login {
            username: request.username,
            password: SecretString::from(request.password),
            user_domain_name: request.user_domain_name,
            project_id: optional(request.project_id),
            project_name: optional(request.project_name),
            project_domain_name: optional(request.project_domain_name),
        };
        let (token, info) = self.broker.authenticate_user(login).await.map_err(status)?;
        Ok(Response::new(pb::AuthenticateUserResponse {
            identity: Some(identity(&info)),
            token: token.expose_secret().to_owned(),
        }))
    }

    #[tracing::instrument(skip_all, fields(dry_run))]
    async fn revoke_grants(
        &self,
        request: Request<pb::RevokeGrantsRequest>,
    ) -> Result<Response<pb::RevokeGrantsResponse>, Status> {
        let request = request.into_inner();
        tracing::Span::current().record("dry_run", request.dry_run);
        let selector = match request.selector {
            Some(pb::revoke_grants_request::Selector::RunId(run_id)) if !run_id.is_empty() => {
                GrantSelector::Run(run_id)
            }
            Some(pb::revoke_grants_request::Selector::All(true)) => GrantSelector::All,
            _ => return Err(status(IdentityError::invalid("selector", "set run_id or all"))),
        };
        let report = self.broker.revoke_grants(&selector, request.dry_run).await.map_err(status)?;
        Ok(Response::new(pb::RevokeGrantsResponse {
            revoked: report.revoked,
            failed: report.failed,
            already_absent: report.already_absent,
            grants: report
                .grants
                .into_iter()
                .map(|r| pb::GrantRevocation {
                    project_id: r.grant.project_id,
                    role_name: r.grant.role_name,
                    granted_at: Some(timestamp(r.grant.granted_at)),
                    run_id: r.grant.run_id.unwrap_or_default(),
                    revoked: r.revoked,
                    error: r.error,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let report = self.broker.status().await.map_err(status)?;
        let mode = match report.mode {
            Mode::ServiceUser => pb::ScopeMode::ServiceUser,
            Mode::AdminOnly { .. } => pb::ScopeMode::AdminOnly,
        };
        Ok(Response::new(pb::StatusResponse {
            mode: mode.into(),
            mode_reason: report.mode.reason().to_owned(),
            service_user_name: report.service_user_name,
            service_user_id: report.service_user_id,
            service_user_domain: report.service_user_domain,
            role_name: report.role_name,
            role_id: report.role_id,
            revoke_role_after_run: report.revoke_role_after_run,
            password_source: report.password_source.as_str().to_owned(),
            keystone_url: report.keystone_url,
            default_region: report.default_region,
            admin_token_expires_at: report.admin_token_expires_at.map(timestamp),
            project_token_cache: Some(cache_stats(report.project_tokens)),
            role_cache: Some(cache_stats(report.roles)),
            user_token_cache: Some(cache_stats(report.user_tokens)),
            grants_made: report.grants_made,
            grants_outstanding: report.grants_outstanding,
            admin_fallbacks: report.admin_fallbacks,
            last_keystone_error: report.last_keystone_error.map(keystone_error),
        }))
    }
}
