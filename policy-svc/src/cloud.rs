//! The cloud as policy-svc sees it. identity-svc is the only service holding passwords, so the
//! admin session comes from its `GetAdminCredentials`: policy-svc builds an OpenStack client on
//! that token, keeps it per region until shortly before the token expires, and after an
//! Unauthorized asks identity-svc once more and repeats the call. The reads evaluation needs are
//! here too: the whole inventory (volumes, projects, domains: one listing each) and one volume.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use openstack::{
    AuthMethod, CloudConfig, OpenStack, ProjectRef, Resilience, Scope, SecretString, VolumeQuery,
};
use service_kit::client::{ServiceChannel, Timeouts, connect_lazy};
use service_kit::config::SecurityArgs;
use snapkeeper_proto::identity::v1 as identity;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;

use crate::PolicyError;
use crate::decision::Volume;

/// How long before its token expires a client is replaced; a shorter-lived token is replaced
/// after three quarters of the lifetime it had left when fetched.
const RENEW_MARGIN: Duration = Duration::minutes(5);

/// A Cinder volume with the Keystone names rules match on, and the server it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudVolume {
    /// The facts evaluation reads.
    pub facts: Volume,
    /// Nova server id of the first attachment; empty when detached.
    pub server_id: String,
}

/// The admin client of one region and when to stop using it.
#[derive(Clone)]
struct Session {
    client: OpenStack,
    renew_at: DateTime<Utc>,
    generation: u64,
}

/// Admin access to the cloud through identity-svc.
pub struct Cloud {
    identity: IdentityServiceClient<ServiceChannel>,
    page_limit: u32,
    resilience: Resilience,
    sessions: tokio::sync::Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").field("page_limit", &self.page_limit).finish_non_exhaustive()
    }
}

impl Cloud {
    /// Cloud access through the identity-svc at `identity_url`; Cinder lists `page_limit` volumes
    /// per page. Connects lazily, so policy-svc starts while identity-svc is still down.
    pub fn connect(
        identity_url: &str,
        security: &SecurityArgs,
        page_limit: u32,
    ) -> Result<Self, PolicyError> {
        let channel = connect_lazy(identity_url, security, Timeouts::default())?;
        Ok(Self {
            identity: IdentityServiceClient::new(channel),
            page_limit,
            resilience: Resilience::default(),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Uses these retry, rate and in-flight limits for the admin sessions (and the project
    /// sessions derived from them) instead of the client's defaults.
    pub fn with_resilience(mut self, resilience: Resilience) -> Self {
        self.resilience = resilience;
        self
    }

    /// The admin client of `region` ("" = identity-svc's default), fetched when there is none
    /// or it is about to expire. The lock is held across the fetch so concurrent callers share it.
    async fn session(&self, region: &str) -> Result<Session, PolicyError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(region)
            && Utc::now() < session.renew_at
        {
            return Ok(session.clone());
        }
        let generation = sessions.get(region).map_or(0, |s| s.generation + 1);
        let session = self.open(region, generation).await?;
        sessions.insert(region.to_owned(), session.clone());
        Ok(session)
    }

    /// Drops the session of `region` unless another caller already replaced it.
    async fn forget(&self, region: &str, generation: u64) {
        let mut sessions = self.sessions.lock().await;
        if sessions.get(region).is_some_and(|s| s.generation == generation) {
            sessions.remove(region);
        }
    }

    async fn open(&self, region: &str, generation: u64) -> Result<Session, PolicyError> {
        let request = identity::GetAdminCredentialsRequest { region: region.to_owned() };
        let credentials = self.identity.clone().get_admin_credentials(request).await?.into_inner();
        let auth_url = credentials
            .endpoints
            .iter()
            .filter(|e| e.service_type == "identity" && e.interface == "public")
            .find(|e| credentials.region.is_empty() || e.region == credentials.region)
            .map(|e| e.url.clone())
            .ok_or_else(|| PolicyError::Identity {
                code: snapkeeper_proto::tonic::Code::FailedPrecondition,
                message: "admin credentials carry no public identity endpoint".to_owned(),
            })?;
        let expires_at = credentials
            .expires_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
            .ok_or_else(|| PolicyError::Identity {
                code: snapkeeper_proto::tonic::Code::Internal,
                message: "admin credentials carry no expires_at".to_owned(),
            })?;
        // Re-issuing the token scoped to the admin's project brings its catalog (Cinder endpoint)
        // along; an unscoped re-issue would have none.
        let scope = if credentials.project_id.is_empty() {
            Scope::Unscoped
        } else {
            Scope::Project(ProjectRef::Id(credentials.project_id.clone()))
        };
        let mut config = CloudConfig::new(
            &auth_url,
            AuthMethod::Token { token: SecretString::from(credentials.token), scope },
        );
        config.region = (!credentials.region.is_empty()).then(|| credentials.region.clone());
        config.page_limit = self.page_limit;
        config.resilience = self.resilience.clone();
        let client = OpenStack::connect(config).await?;
        // Token expiry is the issuer's wall clock, not the service's injectable clock.
        let now = Utc::now();
        let margin = RENEW_MARGIN.min((expires_at - now) / 4);
        tracing::debug!(region = %credentials.region, %expires_at, "admin session from identity-svc");
        Ok(Session { client, renew_at: expires_at - margin, generation })
    }

    /// Runs `call` with the admin client of `region`; when the cloud answers Unauthorized, fetches
    /// new credentials from identity-svc once and runs it again.
    pub async fn with_admin<T, F, Fut>(&self, region: &str, call: F) -> Result<T, PolicyError>
    where
        F: Fn(OpenStack) -> Fut,
        Fut: Future<Output = Result<T, openstack::Error>>,
    {
        let session = self.session(region).await?;
        match call(session.client).await {
            Err(openstack::Error::Unauthorized(failure)) => {
                tracing::info!(
                    operation = %failure.operation,
                    "admin token rejected; asking identity-svc for new credentials once"
                );
                self.forget(region, session.generation).await;
                let fresh = self.session(region).await?;
                Ok(call(fresh.client).await?)
            }
            other => Ok(other?),
        }
    }

    /// Every volume of `region` (all projects) with project and domain names: one paginated
    /// Cinder listing and one Keystone listing each of projects and domains.
    pub async fn inventory(&self, region: &str) -> Result<Vec<CloudVolume>, PolicyError> {
        let (volumes, projects, domains) = self
            .with_admin(region, |admin| async move {
                let all = VolumeQuery { all_tenants: true, ..VolumeQuery::default() };
                let cinder = admin.cinder();
                let keystone = admin.keystone();
                tokio::try_join!(cinder.volumes(&all), keystone.projects(None), keystone.domains())
            })
            .await?;
        let domain_names: HashMap<String, String> = domains.into_iter().map(|d| (d.id, d.name)).collect();
        let projects: HashMap<String, (String, String)> =
            projects.into_iter().map(|p| (p.id, (p.name, p.domain_id))).collect();
        Ok(volumes
            .into_iter()
            .map(|volume| {
                let project = volume.project_id.as_ref().and_then(|id| projects.get(id));
                let (project_name, domain_id) = project.cloned().unwrap_or_default();
                let domain_name = domain_names.get(&domain_id).cloned().unwrap_or_default();
                cloud_volume(volume, project_name, domain_id, domain_name)
            })
            .collect())
    }

    /// One volume by id with its project and domain names; `None` when Cinder does not know it.
    pub async fn volume(&self, region: &str, id: &str) -> Result<Option<CloudVolume>, PolicyError> {
        self.with_admin(region, |admin| async move {
            let volume = match admin.cinder().volume(id).await {
                Err(e) if e.is_not_found() => return Ok(None),
                other => other?,
            };
            let Some(project_id) = volume.project_id.clone() else {
                return Ok(Some(cloud_volume(volume, String::new(), String::new(), String::new())));
            };
            let project = admin.keystone().project(&project_id).await?;
            let domain = admin.keystone().domain(&project.domain_id).await?;
            Ok(Some(cloud_volume(volume, project.name, domain.id, domain.name)))
        })
        .await
    }
}

fn cloud_volume(
    volume: openstack::Volume,
    project_name: String,
    domain_id: String,
    domain_name: String,
) -> CloudVolume {
    let server_id = volume.attachments.iter().find_map(|a| a.server_id.clone()).unwrap_or_default();
    CloudVolume {
        facts: Volume {
            id: volume.id,
            name: volume.name,
            project_id: volume.project_id.unwrap_or_default(),
            project_name,
            domain_id,
            domain_name,
            volume_type: volume.volume_type.unwrap_or_default(),
            size_gb: i64::try_from(volume.size).unwrap_or(i64::MAX),
            bootable: volume.bootable,
            availability_zone: volume.availability_zone.unwrap_or_default(),
            status: volume.status,
            metadata: volume.metadata,
        },
        server_id,
    }
}
