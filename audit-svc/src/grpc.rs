//! The `AuditService` gRPC API. RPCs answer `Unimplemented` until their domain lands; the contract
//! in `proto/snapkeeper/audit/v1` is already final.

use snapkeeper_proto::audit::v1::audit_service_server::AuditService;

/// The gRPC face of audit-svc.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditApi;

#[snapkeeper_proto::tonic::async_trait]
impl AuditService for AuditApi {}
