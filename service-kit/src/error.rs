//! One vocabulary of failure for gRPC and REST, so both say the same thing about one problem.
//!
//! Each crate keeps its own `thiserror` enum and converts it into a [`ServiceError`] at the edge;
//! the mapping to `tonic::Code` and HTTP status lives here and nowhere else.

use std::fmt;

/// What a caller can act on, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed; the field says which part.
    InvalidArgument,
    /// The named object does not exist.
    NotFound,
    /// The object already exists, or a conflicting operation is active.
    AlreadyExists,
    /// The system is not in a state that allows the operation.
    FailedPrecondition,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// The caller did not prove who it is.
    Unauthenticated,
    /// A dependency (database, cloud, another service) is not reachable; retrying may help.
    Unavailable,
    /// The operation is not implemented yet.
    Unimplemented,
    /// A fault of ours; details are in the logs, not in the response.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this error.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Unimplemented => tonic::Code::Unimplemented,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status for this error (REST gateway).
    pub fn http(self) -> http::StatusCode {
        match self {
            Self::InvalidArgument => http::StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => http::StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::FailedPrecondition => http::StatusCode::CONFLICT,
            Self::PermissionDenied => http::StatusCode::FORBIDDEN,
            Self::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            Self::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Unimplemented => http::StatusCode::NOT_IMPLEMENTED,
            Self::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable snake_case name used in JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::PermissionDenied => "permission_denied",
            Self::Unauthenticated => "unauthenticated",
            Self::Unavailable => "unavailable",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
        }
    }

    /// The code for a gRPC status received from another service.
    pub fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::InvalidArgument,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => Self::AlreadyExists,
            tonic::Code::FailedPrecondition => Self::FailedPrecondition,
            tonic::Code::PermissionDenied => Self::PermissionDenied,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Cancelled => Self::Unavailable,
            tonic::Code::Unimplemented => Self::Unimplemented,
            tonic::Code::Ok | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DataLoss => {
                Self::Internal
            }
        }
    }
}

/// Metadata key carrying the offending field name next to an InvalidArgument status.
pub const FIELD_METADATA_KEY: &str = "snapkeeper-field";

/// An error as it crosses a service boundary: a code, a message for humans, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// What the caller can act on.
    pub code: ErrorCode,
    /// A lowercase sentence without secrets.
    pub message: String,
    /// The request field at fault, dotted (`rules[2].match.size_gb`), when there is one.
    pub field: Option<String>,
}

impl ServiceError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None }
    }

    /// An InvalidArgument error naming the field and the problem.
    pub fn invalid(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        let field = field.into();
        Self { code: ErrorCode::InvalidArgument, message: format!("{field}: {problem}"), field: Some(field) }
    }

    /// A NotFound error for a kind of object and its id.
    pub fn not_found(kind: &str, id: impl fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{kind} {id} not found"))
    }

    /// An Internal error; the detail goes to the log, the caller gets a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the service log")
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ServiceError {}

/// Longest id, name or other short text a request may carry, in bytes.
pub const MAX_SHORT_TEXT_BYTES: usize = 255;

/// What is wrong with a short text field (an id, a name, a filter value), if anything: longer
/// than [`MAX_SHORT_TEXT_BYTES`] or holding control characters. No stored value can equal such a
/// text, and it would otherwise travel into queries, logs and page tokens.
pub fn short_text_problem(value: &str) -> Option<String> {
    if value.len() > MAX_SHORT_TEXT_BYTES {
        return Some(format!("{} bytes; at most {MAX_SHORT_TEXT_BYTES}", value.len()));
    }
    value.chars().any(char::is_control).then(|| "must not contain control characters".to_owned())
}

/// An InvalidArgument naming `field` when [`short_text_problem`] finds fault with `value`.
pub fn check_short_text(field: &str, value: &str) -> Result<(), ServiceError> {
    match short_text_problem(value) {
        Some(problem) => Err(ServiceError::invalid(field, problem)),
        None => Ok(()),
    }
}

/// Longest status message sent: messages quote caller input, and an oversized value must not
/// push the trailers past HTTP/2 header limits (the caller would see a protocol error instead).
const MAX_STATUS_MESSAGE_CHARS: usize = 1024;

/// Longest field path sent in metadata (a path can quote a caller's map key).
const MAX_FIELD_CHARS: usize = 256;

/// `text` cut to `max` characters, marked with `...` when cut.
fn cut_short(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(err: ServiceError) -> Self {
        let mut status =
            tonic::Status::new(err.code.grpc(), cut_short(err.message, MAX_STATUS_MESSAGE_CHARS));
        if let Some(field) = err.field.map(|field| cut_short(field, MAX_FIELD_CHARS))
            && let Ok(value) = field.parse()
        {
            status.metadata_mut().insert(FIELD_METADATA_KEY, value);
        }
        status
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(status: tonic::Status) -> Self {
        let field =
            status.metadata().get(FIELD_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self { code: ErrorCode::from_grpc(status.code()), message: status.message().to_owned(), field }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_on_both_transports() {
        let err = ServiceError::invalid("rules[1].priority", "must be >= 0");
        let status: tonic::Status = err.clone().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "rules[1].priority: must be >= 0");
        let back = ServiceError::from(status);
        assert_eq!(back, err);
        assert_eq!(back.code.http(), http::StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn every_code_round_trips_through_grpc() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::FailedPrecondition,
            ErrorCode::PermissionDenied,
            ErrorCode::Unauthenticated,
            ErrorCode::Unavailable,
            ErrorCode::Unimplemented,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc()), code);
        }
    }

    #[test]
    fn a_message_quoting_an_oversized_value_is_cut_short() {
        let huge = "x".repeat(1 << 20);
        let status: tonic::Status = ServiceError::not_found("policy", &huge).into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().starts_with("policy xxx") && status.message().ends_with("..."));
        assert_eq!(status.message().chars().count(), MAX_STATUS_MESSAGE_CHARS + 3);
        let status: tonic::Status =
            ServiceError::invalid(format!("retention_map.{huge}"), "unknown policy").into();
        let field = status.metadata().get(FIELD_METADATA_KEY).unwrap().to_str().unwrap();
        assert_eq!(field.chars().count(), MAX_FIELD_CHARS + 3);
    }

    #[test]
    fn short_text_is_refused_when_too_long_or_holding_control_characters() {
        assert!(check_short_text("volume_id", "").is_ok());
        assert!(check_short_text("volume_id", &"é".repeat(MAX_SHORT_TEXT_BYTES / 2)).is_ok());
        let long = check_short_text("filter.volume_id", &"x".repeat(MAX_SHORT_TEXT_BYTES + 1)).unwrap_err();
        assert_eq!(long.code, ErrorCode::InvalidArgument);
        assert_eq!(long.field.as_deref(), Some("filter.volume_id"));
        assert!(long.message.contains("at most 255"), "{}", long.message);
        let control = check_short_text("region", "one\ntwo").unwrap_err();
        assert_eq!(control.field.as_deref(), Some("region"));
        assert!(control.message.contains("control characters"));
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status: tonic::Status = ServiceError::internal("password=hunter2 in connection string").into();
        assert!(!status.message().contains("hunter2"));
    }
}
