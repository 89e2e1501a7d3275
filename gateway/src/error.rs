//! REST errors: one JSON shape, `{"error": {"code", "message", "field"?}}`, with the HTTP status
//! that service_kit's error code maps to, so REST and gRPC agree on what went wrong.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::{ErrorCode, ServiceError};
use utoipa::ToSchema;

/// An error answered by a REST endpoint.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`, `field`) and people (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_argument`, `not_found`, `unavailable`.
    pub code: &'static str,
    /// A sentence naming the problem.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self(ServiceError::from(status))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ServiceError { code, message, field } = self.0;
        if code == ErrorCode::Internal {
            tracing::error!(%message, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code: code.as_str(), message, field } };
        (code.http(), Json(body)).into_response()
    }
}
