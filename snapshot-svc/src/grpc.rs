//! The `SnapshotService` gRPC API. RPCs answer `Unimplemented` until their domain lands; the contract
//! in `proto/snapkeeper/snapshot/v1` is already final.

use snapkeeper_proto::snapshot::v1::snapshot_service_server::SnapshotService;

/// The gRPC face of snapshot-svc.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotApi;

#[snapkeeper_proto::tonic::async_trait]
impl SnapshotService for SnapshotApi {}
