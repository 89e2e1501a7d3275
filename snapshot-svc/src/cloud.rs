//! The cloud as one run sees it. identity-svc is the only service holding passwords, so the admin
//! session comes from its GetAdminCredentials through policy-svc's [`Cloud`]: lazily, per region,
//! kept until shortly before the token expires and renewed once on Unauthorized; nothing is
//! contacted at start. On that session: one admin listing per region (volumes and snapshots of all
//! projects, page by page; projects, domains and servers for names), each page passed on as the
//! inventory chunks audit-svc's SyncInventory takes while it is listed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use openstack::{OpenStack, SnapshotQuery, VolumeQuery};
use policy_svc::PolicyError;
use policy_svc::cloud::Cloud;
use snapkeeper_proto::audit::v1 as audit;
use tokio::sync::mpsc;

use crate::SnapshotError;
use crate::listing::{IndexBuilder, SnapshotIndex};
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

/// Most items one SyncInventory chunk carries.
const INVENTORY_CHUNK: usize = 500;

/// What a listing keeps of the volumes and snapshots it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Volumes whole and our snapshots indexed, for planning.
    Everything,
    /// Only how many there were (a listing that is only sent on to audit-svc).
    Counts,
}

/// What a run keeps of one region's listing: volumes (less what only policy evaluation reads,
/// once decided) and names, snapshots reduced to ours.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// When listing began.
    pub listed_at: DateTime<Utc>,
    /// Volumes of every project.
    pub volumes: Vec<openstack::Volume>,
    /// Our snapshots (and the old system's) of every project by (volume, policy).
    pub snapshots: SnapshotIndex,
    /// Volumes listed (with [`Keep::Counts`] none are kept).
    pub volume_count: usize,
    /// Snapshots listed, ours or not.
    pub snapshot_count: usize,
    /// Projects by id.
    pub projects: HashMap<String, openstack::Project>,
    /// Domains by id.
    pub domains: HashMap<String, openstack::Domain>,
    /// Servers by id (empty on clouds without Nova).
    pub servers: HashMap<String, openstack::Server>,
}

impl Listing {
    /// Lists `region` with the admin session, volumes and snapshots page by page so a big cloud
    /// is never held whole: each page is reduced as it arrives and, with `inventory`, first sent
    /// on as SyncInventory chunks. A closed `inventory` stops the sending, not the listing.
    pub async fn fetch(
        admin: &Admin,
        region: &str,
        now: DateTime<Utc>,
        inventory: Option<&mpsc::Sender<audit::InventoryChunk>>,
        keep: Keep,
    ) -> Result<Self, SnapshotError> {
        let (projects, domains, servers) = admin
            .call(region, |client| async move {
                let keystone = client.keystone();
                let (projects, domains) = tokio::try_join!(keystone.projects(None), keystone.domains())?;
                let servers = if client.has_compute().await? {
                    client.nova().servers(true).await?.unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok((projects, domains, servers))
            })
            .await?;
        let names = chunks_of(&domains, |part| audit::InventoryChunk {
            domains: part.iter().map(inventory_domain).collect(),
            ..audit::InventoryChunk::default()
        })
        .chain(chunks_of(&projects, |part| audit::InventoryChunk {
            projects: part.iter().map(inventory_project).collect(),
            ..audit::InventoryChunk::default()
        }))
        .chain(chunks_of(&servers, |part| audit::InventoryChunk {
            servers: part.iter().map(inventory_server).collect(),
            ..audit::InventoryChunk::default()
        }));
        send(inventory, names).await;
        let mut listing = Self {
            listed_at: now,
            projects: projects.into_iter().map(|p| (p.id.clone(), p)).collect(),
            domains: domains.into_iter().map(|d| (d.id.clone(), d)).collect(),
            servers: servers.into_iter().map(|s| (s.id.clone(), s)).collect(),
            ..Self::default()
        };
        let all_volumes = VolumeQuery { all_tenants: true, ..VolumeQuery::default() };
        let all_snapshots = SnapshotQuery { all_tenants: true, ..SnapshotQuery::default() };
        let volumes = pages(
            admin,
            region,
            inventory,
            |client, marker| {
                let query = all_volumes.clone();
                async move { client.cinder().volume_page(&query, marker.as_deref()).await }
            },
            |part| audit::InventoryChunk {
                volumes: part.iter().map(inventory_volume).collect(),
                ..audit::InventoryChunk::default()
            },
            |page| {
                listing.volume_count += page.len();
                if keep == Keep::Everything {
                    listing.volumes.extend(page);
                }
            },
        );
        let mut index = IndexBuilder::default();
        let mut snapshot_count = 0;
        let snapshots = pages(
            admin,
            region,
            inventory,
            |client, marker| {
                let query = all_snapshots.clone();
                async move { client.cinder().snapshot_page(&query, marker.as_deref()).await }
            },
            |part| audit::InventoryChunk {
                snapshots: part.iter().map(inventory_snapshot).collect(),
                ..audit::InventoryChunk::default()
            },
            |page| {
                snapshot_count += page.len();
                if keep == Keep::Everything {
                    for snapshot in &page {
                        index.add(snapshot);
                    }
                }
            },
        );
        tokio::try_join!(volumes, snapshots)?;
        listing.volumes.shrink_to_fit();
        listing.snapshots = index.build();
        listing.snapshot_count = snapshot_count;
        Ok(listing)
    }

    /// Drops what only policy evaluation reads of the volumes (metadata, description, zone),
    /// once the decisions are made: the plan holds the listing through the whole snapshots step.
    pub fn forget_rule_inputs(&mut self) {
        for volume in &mut self.volumes {
            volume.metadata = BTreeMap::new();
            volume.description = None;
            volume.availability_zone = None;
        }
    }

    /// The counts a SyncInventory end message states for this listing.
    pub fn sync_end(&self) -> audit::SyncEnd {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        audit::SyncEnd {
            domain_count: count(self.domains.len()),
            project_count: count(self.projects.len()),
            server_count: count(self.servers.len()),
            volume_count: count(self.volume_count),
            snapshot_count: count(self.snapshot_count),
        }
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
}

/// Sends `chunks` on to audit-svc unless it has stopped reading (its answer says why).
async fn send(
    sink: Option<&mpsc::Sender<audit::InventoryChunk>>,
    chunks: impl Iterator<Item = audit::InventoryChunk>,
) {
    let Some(sink) = sink.filter(|sink| !sink.is_closed()) else { return };
    for chunk in chunks {
        if sink.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Follows one listing page by page: each page goes to `sink` as chunks filled by `fill`, then
/// to `keep`. Every page is its own admin call, so a renewed session resumes at its marker.
async fn pages<T, F, Fut>(
    admin: &Admin,
    region: &str,
    sink: Option<&mpsc::Sender<audit::InventoryChunk>>,
    page: F,
    fill: impl Fn(&[T]) -> audit::InventoryChunk,
    mut keep: impl FnMut(Vec<T>),
) -> Result<(), SnapshotError>
where
    F: Fn(OpenStack, Option<String>) -> Fut,
    Fut: Future<Output = Result<openstack::Page<T>, openstack::Error>>,
{
    let mut marker: Option<String> = None;
    loop {
        let listed = admin.call(region, |client| page(client, marker.clone())).await?;
        send(sink, chunks_of(&listed.items, &fill)).await;
        keep(listed.items);
        match listed.next {
            Some(next) => marker = Some(next),
            None => return Ok(()),
        }
    }
}

/// `items` as SyncInventory chunks of at most [`INVENTORY_CHUNK`] items, made by `fill`.
fn chunks_of<'a, T>(
    items: &'a [T],
    fill: impl Fn(&[T]) -> audit::InventoryChunk + 'a,
) -> impl Iterator<Item = audit::InventoryChunk> + 'a {
    items.chunks(INVENTORY_CHUNK).map(fill)
}

fn inventory_domain(domain: &openstack::Domain) -> audit::InventoryDomain {
    audit::InventoryDomain { id: domain.id.clone(), name: domain.name.clone(), enabled: domain.enabled }
}

fn inventory_project(project: &openstack::Project) -> audit::InventoryProject {
    audit::InventoryProject {
        id: project.id.clone(),
        name: project.name.clone(),
        domain_id: project.domain_id.clone(),
        enabled: project.enabled,
    }
}

fn inventory_server(server: &openstack::Server) -> audit::InventoryServer {
    audit::InventoryServer {
        id: server.id.clone(),
        name: server.name.clone(),
        project_id: server.project_id.clone().unwrap_or_default(),
        status: server.status.clone(),
    }
}

fn inventory_volume(volume: &openstack::Volume) -> audit::InventoryVolume {
    audit::InventoryVolume {
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
    }
}

fn inventory_snapshot(snapshot: &openstack::Snapshot) -> audit::InventorySnapshot {
    audit::InventorySnapshot {
        id: snapshot.id.clone(),
        name: snapshot.name.clone(),
        volume_id: snapshot.volume_id.clone(),
        project_id: snapshot.project_id.clone().unwrap_or_default(),
        status: snapshot.status.clone(),
        size_gb: snapshot.size as i64,
        metadata: snapshot.metadata.clone().into_iter().collect(),
        created_at: snapshot.created_at.map(timestamp),
        updated_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_items_become_chunks_of_at_most_the_limit() {
        let snapshots: Vec<openstack::Snapshot> = (0..=INVENTORY_CHUNK * 2)
            .map(|i| {
                crate::listing::tests::cinder(&format!("s{i}"), "v1", &[("policy", "daily_5")], "available")
            })
            .collect();
        let chunks: Vec<audit::InventoryChunk> = chunks_of(&snapshots, |part| audit::InventoryChunk {
            snapshots: part.iter().map(inventory_snapshot).collect(),
            ..audit::InventoryChunk::default()
        })
        .collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.snapshots.len()).collect();
        assert_eq!(sizes, [INVENTORY_CHUNK, INVENTORY_CHUNK, 1]);
        let last = &chunks[2].snapshots[0];
        assert_eq!(
            (last.id.as_str(), last.volume_id.as_str()),
            (snapshots[INVENTORY_CHUNK * 2].id.as_str(), "v1")
        );
        assert_eq!(last.metadata.get("policy").map(String::as_str), Some("daily_5"));
        assert!(chunks_of(&snapshots[..0], |_| audit::InventoryChunk::default()).next().is_none());
    }
}
