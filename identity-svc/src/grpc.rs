//! The `IdentityService` gRPC API. RPCs answer `Unimplemented` until their domain lands; the contract
//! in `proto/snapkeeper/identity/v1` is already final.

use snapkeeper_proto::identity::v1::identity_service_server::IdentityService;

/// The gRPC face of identity-svc.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityApi;

#[snapkeeper_proto::tonic::async_trait]
impl IdentityService for IdentityApi {}
