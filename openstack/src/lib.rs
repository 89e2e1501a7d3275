//! Snapkeeper's OpenStack client: Keystone v3, Cinder v3 and (read-only) Nova over HTTP.
//!
//! [`CloudConfig`] says where the cloud is (explicit, `OS_*`, `clouds.yaml`, or the seed's
//! `PF9_*`); [`OpenStack::connect`] authenticates and hands out [`Keystone`], [`Cinder`] and
//! [`Nova`] views. Every request goes through one shared transport: a token-bucket rate limit
//! and a concurrency limit for the whole process, a tracing span per attempt (operation, method,
//! status, request id), retries with jittered backoff for what is safe to retry, one
//! re-authentication on 401, and per-operation counters. Creates are never blindly repeated.
//! [`register_metrics`] exposes the calls as Prometheus series (latency by service, operation
//! and status; retries; rate-limit waits).
//!
//! ```no_run
//! # async fn run() -> Result<(), openstack::Error> {
//! use openstack::{AuthMethod, CloudConfig, NewSnapshot, OpenStack, VolumeQuery};
//! let admin = OpenStack::connect(CloudConfig::from_env()?).await?;
//! let all = VolumeQuery { all_tenants: true, ..VolumeQuery::default() };
//! for volume in admin.cinder().volumes(&all).await? {
//!     println!("{} {} GiB in {:?}", volume.id, volume.size, volume.project_id);
//! }
//! // Another identity (e.g. the service user scoped to one project) shares the limits:
//! # let service_user: AuthMethod = todo!();
//! let tenant = admin.with_auth(service_user).await?;
//! # let volume_id = String::new();
//! tenant.cinder().create_snapshot(&NewSnapshot { volume_id, force: true, ..NewSnapshot::default() }).await?;
//! # Ok(()) }
//! ```

mod auth;
mod catalog;
mod cinder;
mod client;
mod config;
mod error;
mod keystone;
mod metrics;
mod nova;
mod transport;

pub use auth::{NamedRef, TokenInfo, TokenProject};
pub use catalog::{BLOCK_STORAGE_TYPES, COMPUTE_TYPES, Catalog, CatalogEntry, Endpoint};
pub use cinder::{
    Attachment, Cinder, IDEMPOTENCY_METADATA_KEY, Limits, NewSnapshot, NewVolume, Page, QuotaSet, QuotaUsage,
    Snapshot, SnapshotQuery, Volume, VolumeQuery,
};
pub use client::OpenStack;
pub use config::{
    AuthMethod, CloudConfig, DomainRef, Interface, ProjectRef, Resilience, Scope, UserRef, clouds_yaml_paths,
};
pub use error::{ApiFailure, Error};
pub use keystone::{
    AssignmentFilter, Domain, Keystone, NewProject, NewUser, Project, Role, RoleAssignment, User,
};
pub use metrics::register_metrics;
pub use nova::{Nova, Server};
pub use secrecy::{ExposeSecret, SecretString};
pub use transport::{CINDER_MICROVERSION, CallStats};
