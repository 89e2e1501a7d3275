//! REST errors: one JSON shape, `{"error": {"code", "message", "field"?}}`, with the HTTP status
//! that service_kit's error code maps to, so REST and gRPC agree on what went wrong.
//!
//! gRPC statuses from the services become [`ApiError`] in exactly one place
//! (`From<tonic::Status>`); request syntax problems the services never see (a malformed query
//! string or JSON body, a body over the size limit, too many login attempts) get their own
//! statuses here.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::{ErrorCode, ServiceError};
use utoipa::ToSchema;

/// An error answered by a REST endpoint.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
    retry_after_secs: Option<u64>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`, `field`) and people (`message`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_argument`, `not_found`, `unavailable`, `bad_request`.
    pub code: &'static str,
    /// A sentence naming the problem.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        Self { status, detail: ErrorDetail { code, message: message.into(), field }, retry_after_secs: None }
    }

    /// 422: a request value is invalid; `field` names it.
    pub fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        ServiceError::invalid(field, problem).into()
    }

    /// 400: the request could not be read at all (malformed query string or JSON).
    pub fn bad_request(message: impl Into<String>, field: Option<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message, field)
    }

    /// 401: no credentials, or credentials that do not check out.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::Unauthenticated, message).into()
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::PermissionDenied, message).into()
    }

    /// 404: the named object does not exist (or belongs to a project the caller cannot see).
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        ServiceError::not_found(kind, id).into()
    }

    /// 429: too many attempts; retry after the given number of seconds.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message, None);
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// A fault of ours; the detail goes to the log, never to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ServiceError::internal(detail).into()
    }

    /// Names the field as the REST body does: policy-svc names `exclusion.expires_at` where the
    /// body's field is `expires_at`.
    pub fn in_body(mut self, wrapper: &str) -> Self {
        let prefix = format!("{wrapper}.");
        if let Some(field) = self.detail.field.as_mut()
            && let Some(stripped) = field.strip_prefix(&prefix)
        {
            *field = stripped.to_owned();
            self.detail.message = self.detail.message.replacen(&prefix, "", 1);
        }
        self
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON detail, for responses that add fields beside it.
    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let ServiceError { code, message, field } = error;
        let message = if code == ErrorCode::Internal {
            // Upstream internal errors may carry exception text; it is logged, never echoed.
            tracing::error!(%message, "upstream internal error");
            "internal error; see the gateway log for this request id".to_owned()
        } else {
            message
        };
        Self::new(code.http(), code.as_str(), message, field)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from(ServiceError::from(status))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => {
                let (field, message) = split_field(&error.body_text());
                Self::invalid(field.unwrap_or_else(|| "body".to_owned()), message)
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with content-type application/json",
                None,
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            other => Self::bad_request(other.body_text(), Some("body".to_owned())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let (field, message) = split_field(&rejection.body_text());
        Self::bad_request(message, field)
    }
}

impl ApiError {
    /// 413: the body is larger than the configured limit.
    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body too large", None)
    }
}

/// Splits axum's "Failed to deserialize ...: path: problem" into the field path and the problem.
fn split_field(text: &str) -> (Option<String>, String) {
    let detail = text.split_once(": ").map_or(text, |(_, rest)| rest);
    let (path, problem) = match detail.split_once(": ") {
        Some((path, problem)) if !path.contains(' ') && !path.is_empty() => (path, problem),
        _ => (".", detail),
    };
    // serde names missing and unknown fields only inside the message.
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|marker| problem.split_once(marker))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let field = match (path, named) {
        (".", named) => named,
        (path, Some(name)) => Some(format!("{path}.{name}")),
        (path, None) => Some(path.to_owned()),
    };
    let message = match &field {
        Some(field) => format!("{field}: {problem}"),
        None => problem.to_owned(),
    };
    (field, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after_secs;
        let mut response = (status, Json(ErrorBody { error: self.detail })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A JSON body whose rejections are [`ApiError`]s (400 for syntax, 422 naming the field).
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A query string whose rejections are [`ApiError`]s (400 naming the parameter).
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A text body (a rules document) whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiText(pub String);

impl<S: Send + Sync> axum::extract::FromRequest<S> for ApiText {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match String::from_request(request, state).await {
            Ok(text) => Ok(Self(text)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Self::Rejection::payload_too_large())
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text(), Some("body".to_owned()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_taken_from_axum_rejection_text() {
        let (field, message) =
            split_field("Failed to deserialize query string: limit: invalid digit found in string");
        assert_eq!(field.as_deref(), Some("limit"));
        assert_eq!(message, "limit: invalid digit found in string");
        let (field, _) = split_field("Failed to parse the request body as JSON: expected value at line 1");
        assert_eq!(field, None);
    }

    #[test]
    fn upstream_internal_messages_are_not_echoed() {
        let error = ApiError::from(tonic::Status::internal("psycopg2 exploded: password=hunter2"));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.detail().message.contains("hunter2"));
    }
}
