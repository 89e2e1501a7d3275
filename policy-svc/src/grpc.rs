//! The `PolicyService` gRPC API. RPCs answer `Unimplemented` until their domain lands; the contract
//! in `proto/snapkeeper/policy/v1` is already final.

use snapkeeper_proto::policy::v1::policy_service_server::PolicyService;

/// The gRPC face of policy-svc.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyApi;

#[snapkeeper_proto::tonic::async_trait]
impl PolicyService for PolicyApi {}
