//! The cloud as one run sees it. identity-svc is the only service holding passwords, so the admin
//! session comes from its GetAdminCredentials through policy-svc's [`Cloud`]: lazily, per region,
//! kept until shortly before the token expires and renewed once on Unauthorized; nothing is
//! contacted at start. On that session: one admin listing per region (volumes and snapshots of all
//! projects, paginated; projects, domains and servers for names), and that listing as the
//! inventory chunks audit-svc's SyncInventory takes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use openstack::{OpenStack, SnapshotQuery, VolumeQuery};
use policy_svc::PolicyError;
use policy_svc::cloud::Cloud;
use snapkeeper_proto::audit::v1 as audit;

use crate::SnapshotError;
use crate::run::timestamp;

/// Admin access to the cloud and the regions runs cover.
#[derive(Debug, Clone)]
pub struct Admin {
    cloud: Arc<Cloud>,
    configured: Vec<String>,
}

impl Admin {
    /// Admin access through `cloud` for the `configured` regions (`SNAPKEEPER_REGIONS`); none
    /// configured means the admin session's default region.
    pub fn new(cloud: Arc<Cloud>, configured: Vec<String>) -> Self {
        Self { cloud, configured }
    }

    /// The configured regions; empty when the admin session's default region is used.
    pub fn configured_regions(&self) -> &[String] {
        &self.configured
    }

    /// The regions a run covers by name: the configured ones, else the default region of the
    /// admin session (asking identity-svc when no session is cached yet).
    pub async fn regions(&self) -> Result<Vec<String>, SnapshotError> {
        if !self.configured.is_empty() {
            return Ok(self.configured.clone());
        }
        let name = self.call("", |client| async move { Ok(client.config().region.clone()) }).await?;
        Ok(vec![name.unwrap_or_default()])
    }

    /// Runs `call` with the admin client of `region` ("" = identity-svc's default region); an
    /// Unauthorized answer renews the session once.
    pub async fn call<T, F, Fut>(&self, region: &str, call: F) -> Result<T, SnapshotError>
    where
        F: Fn(OpenStack) -> Fut,
        Fut: Future<Output = Result<T, openstack::Error>>,
    {
        self.cloud.with_admin(region, call).await.map_err(|error| session_error(region, error))
    }
}

/// Names what failed: identity-svc (no admin session) or the cloud (a call on it).
fn session_error(region: &str, error: PolicyError) -> SnapshotError {
    let region = if region.is_empty() { "the default region" } else { region };
    match error {
        PolicyError::Cloud(error) => SnapshotError::OpenStack(error),
        PolicyError::Identity { code, message } => SnapshotError::Unavailable(format!(
            "no admin session for {region}: identity-svc answered {code:?}: {message}"
        )),
        other => SnapshotError::Unavailable(format!("no admin session for {region}: {other}")),
    }
}

/// Everything listed once per run and region.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// When listing began.
    pub listed_at: DateTime<Utc>,
    /// Volumes of every project.
    pub volumes: Vec<openstack::Volume>,
    /// Snapshots of every project.
    pub snapshots: Vec<openstack::Snapshot>,
    /// Projects by id.
    pub projects: HashMap<String, openstack::Project>,
    /// Domains by id.
    pub domains: HashMap<String, openstack::Domain>,
    /// Servers by id (empty on clouds without Nova).
    pub servers: HashMap<String, openstack::Server>,
}

impl Listing {
    /// Lists `region` with the admin session.
    pub async fn fetch(admin: &Admin, region: &str, now: DateTime<Utc>) -> Result<Self, SnapshotError> {
        let (volumes, snapshots, projects, domains, servers) = admin
            .call(region, |client| async move {
                let cinder = client.cinder();
                let keystone = client.keystone();
                let all_volumes = VolumeQuery { all_tenants: true, ..VolumeQuery::default() };
                let all_snapshots = SnapshotQuery { all_tenants: true, ..SnapshotQuery::default() };
                let (volumes, snapshots, projects, domains) = tokio::try_join!(
                    cinder.volumes(&all_volumes),
                    cinder.snapshots(&all_snapshots),
                    keystone.projects(None),
                    keystone.domains(),
                )?;
                let servers = if client.has_compute().await? {
                    client.nova().servers(true).await?.unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok((volumes, snapshots, projects, domains, servers))
            })
            .await?;
        Ok(Self {
            listed_at: now,
            volumes,
            snapshots,
            projects: projects.into_iter().map(|p| (p.id.clone(), p)).collect(),
            domains: domains.into_iter().map(|d| (d.id.clone(), d)).collect(),
            servers: servers.into_iter().map(|s| (s.id.clone(), s)).collect(),
        })
    }

    /// Project name and domain (id, name) of a project id; empty strings when unknown.
    pub fn project_names(&self, project_id: &str) -> (String, String, String) {
        match self.projects.get(project_id) {
            Some(project) => {
                let domain = self.domains.get(&project.domain_id).map(|d| d.name.clone()).unwrap_or_default();
                (project.name.clone(), project.domain_id.clone(), domain)
            }
            None => (String::new(), String::new(), String::new()),
        }
    }

    /// The first attached server (id, name) of a volume.
    pub fn first_server(&self, volume: &openstack::Volume) -> Option<(String, String)> {
        let id = volume.attachments.iter().find_map(|a| a.server_id.clone())?;
        let name = self.servers.get(&id).map(|s| s.name.clone()).unwrap_or_default();
        Some((id, name))
    }

    /// The listing as SyncInventory chunks of at most `per_chunk` items, and the end counts.
    pub fn inventory_chunks(&self, per_chunk: usize) -> (Vec<audit::InventoryChunk>, audit::SyncEnd) {
        let per_chunk = per_chunk.max(1);
        let mut chunks = Vec::new();
        let mut chunk = audit::InventoryChunk::default();
        let mut in_chunk = 0;
        let mut flush = |chunk: &mut audit::InventoryChunk, in_chunk: &mut usize, force: bool| {
            if *in_chunk >= per_chunk || (force && *in_chunk > 0) {
                chunks.push(std::mem::take(chunk));
                *in_chunk = 0;
            }
        };
        for domain in self.domains.values() {
            chunk.domains.push(audit::InventoryDomain {
                id: domain.id.clone(),
                name: domain.name.clone(),
                enabled: domain.enabled,
            });
            in_chunk += 1;
            flush(&mut chunk, &mut in_chunk, false);
        }
        for project in self.projects.values() {
            chunk.projects.push(audit::InventoryProject {
                id: project.id.clone(),
                name: project.name.clone(),
                domain_id: project.domain_id.clone(),
                enabled: project.enabled,
            });
            in_chunk += 1;
            flush(&mut chunk, &mut in_chunk, false);
        }
        for server in self.servers.values() {
            chunk.servers.push(audit::InventoryServer {
                id: server.id.clone(),
                name: server.name.clone(),
                project_id: server.project_id.clone().unwrap_or_default(),
                status: server.status.clone(),
            });
            in_chunk += 1;
            flush(&mut chunk, &mut in_chunk, false);
        }
        for volume in &self.volumes {
            chunk.volumes.push(audit::InventoryVolume {
                id: volume.id.clone(),
                name: volume.name.clone(),
                project_id: volume.project_id.clone().unwrap_or_default(),
                status: volume.status.clone(),
                size_gb: volume.size as i64,
                volume_type: volume.volume_type.clone().unwrap_or_default(),
                bootable: volume.bootable,
                availability_zone: volume.availability_zone.clone().unwrap_or_default(),
                metadata: volume.metadata.clone().into_iter().collect(),
                attached_server_ids: volume.attachments.iter().filter_map(|a| a.server_id.clone()).collect(),
                created_at: volume.created_at.map(timestamp),
                updated_at: None,
            });
            in_chunk += 1;
            flush(&mut chunk, &mut in_chunk, false);
        }
        for snapshot in &self.snapshots {
            chunk.snapshots.push(audit::InventorySnapshot {
                id: snapshot.id.clone(),
                name: snapshot.name.clone(),
                volume_id: snapshot.volume_id.clone(),
                project_id: snapshot.project_id.clone().unwrap_or_default(),
                status: snapshot.status.clone(),
                size_gb: snapshot.size as i64,
                metadata: snapshot.metadata.clone().into_iter().collect(),
                created_at: snapshot.created_at.map(timestamp),
                updated_at: None,
            });
            in_chunk += 1;
            flush(&mut chunk, &mut in_chunk, false);
        }
        flush(&mut chunk, &mut in_chunk, true);
        let end = audit::SyncEnd {
            domain_count: self.domains.len() as i64,
            project_count: self.projects.len() as i64,
            server_count: self.servers.len() as i64,
            volume_count: self.volumes.len() as i64,
            snapshot_count: self.snapshots.len() as i64,
        };
        (chunks, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_is_chunked_and_counted() {
        let mut listing = Listing::default();
        for i in 0..5 {
            listing.snapshots.push(crate::listing::tests::cinder(&format!("s{i}"), "v1", &[], "available"));
        }
        listing.domains.insert(
            "default".to_owned(),
            openstack::Domain { id: "default".to_owned(), name: "Default".to_owned(), enabled: true },
        );
        let (chunks, end) = listing.inventory_chunks(2);
        assert_eq!(chunks.len(), 3);
        assert_eq!((end.snapshot_count, end.domain_count), (5, 1));
        let items: usize = chunks.iter().map(|c| c.snapshots.len() + c.domains.len()).sum();
        assert_eq!(items, 6);
    }
}
