//! Channels from the gateway to the four services.

use service_kit::KitError;
use service_kit::client::{ServiceChannel, Timeouts, connect_lazy};
use service_kit::config::{SecurityArgs, ServiceUrls};
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::identity::v1::identity_service_client::IdentityServiceClient;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;

/// One service the gateway depends on.
#[derive(Clone)]
pub struct Dependency {
    /// Short name shown in health reports (`policy-svc`).
    pub name: &'static str,
    /// Fully qualified gRPC service name, as its health service reports it.
    pub grpc_service: &'static str,
    /// The URL it was configured with.
    pub url: String,
    /// The channel to it.
    pub channel: ServiceChannel,
}

/// The gateway's view of the suite.
#[derive(Clone)]
pub struct Upstream {
    /// policy-svc, identity-svc, snapshot-svc, audit-svc, in that order.
    pub dependencies: Vec<Dependency>,
}

impl Upstream {
    /// A policy-svc client.
    pub fn policy(&self) -> PolicyServiceClient<ServiceChannel> {
        PolicyServiceClient::new(self.dependencies[0].channel.clone())
    }

    /// An identity-svc client.
    pub fn identity(&self) -> IdentityServiceClient<ServiceChannel> {
        IdentityServiceClient::new(self.dependencies[1].channel.clone())
    }

    /// A snapshot-svc client.
    pub fn snapshot(&self) -> SnapshotServiceClient<ServiceChannel> {
        SnapshotServiceClient::new(self.dependencies[2].channel.clone())
    }

    /// An audit-svc client.
    pub fn audit(&self) -> AuditServiceClient<ServiceChannel> {
        AuditServiceClient::new(self.dependencies[3].channel.clone())
    }

    /// Lazily connecting channels to every service (nothing is dialled until first use).
    pub fn connect(urls: &ServiceUrls, security: &SecurityArgs) -> Result<Self, KitError> {
        let services = [
            ("policy-svc", "snapkeeper.policy.v1.PolicyService", &urls.policy_url),
            ("identity-svc", "snapkeeper.identity.v1.IdentityService", &urls.identity_url),
            ("snapshot-svc", "snapkeeper.snapshot.v1.SnapshotService", &urls.snapshot_url),
            ("audit-svc", "snapkeeper.audit.v1.AuditService", &urls.audit_url),
        ];
        let mut dependencies = Vec::with_capacity(services.len());
        for (name, grpc_service, url) in services {
            let channel = connect_lazy(url, security, Timeouts::default())?;
            dependencies.push(Dependency { name, grpc_service, url: url.clone(), channel });
        }
        Ok(Self { dependencies })
    }
}
