//! The one error type of the crate: what failed, with the operation and request id to find it in
//! the service logs.

use std::fmt;
use std::time::Duration;

/// What an OpenStack service answered when it refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// Operation name, e.g. `cinder.snapshots.create`.
    pub operation: String,
    /// HTTP status code.
    pub status: u16,
    /// `X-Openstack-Request-Id` (or `x-compute-request-id`) of the response.
    pub request_id: Option<String>,
    /// The service's own message (`itemNotFound.message`, `error.message`, ...).
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with HTTP {}", self.operation, self.status)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to OpenStack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is incomplete or contradictory.
    #[error("openstack configuration: {0}")]
    Config(String),
    /// Keystone refused the credentials or the token (401).
    #[error("unauthorized: {0}")]
    Unauthorized(ApiFailure),
    /// Policy denied the call (403).
    #[error("forbidden: {0}")]
    Forbidden(ApiFailure),
    /// The object does not exist or is not visible to this token (404).
    #[error("not found: {0}")]
    NotFound(ApiFailure),
    /// The object is in a state that does not allow the call (409).
    #[error("conflict: {0}")]
    Conflict(ApiFailure),
    /// The request was malformed or invalid for the object's state (400).
    #[error("bad request: {0}")]
    BadRequest(ApiFailure),
    /// Cinder's over-quota answer (413 `overLimit`).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(ApiFailure),
    /// Rate limited (429) and out of retries.
    #[error("rate limited: {failure}")]
    RateLimited {
        /// The last 429 response.
        failure: ApiFailure,
        /// What the service asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Any other non-success status (5xx after retries, 406, ...).
    #[error("{0}")]
    Api(ApiFailure),
    /// The request did not complete: connect error, reset, or timeout.
    #[error("{operation}: transport error: {message}")]
    Transport {
        /// Operation name.
        operation: String,
        /// What the HTTP stack said (never contains a token).
        message: String,
        /// Whether the request timed out.
        timed_out: bool,
        /// Whether the request may have reached the server (anything but a failed connect),
        /// i.e. whether a create may have happened.
        sent: bool,
    },
    /// The response body was not what the API reference promises.
    #[error("{operation}: unexpected response: {message}")]
    Decode {
        /// Operation name.
        operation: String,
        /// What did not parse.
        message: String,
    },
    /// The catalog has no endpoint for the service at this interface and region.
    #[error("no {service_type} endpoint for interface {interface} in region {region}")]
    NoEndpoint {
        /// Service types looked for, e.g. `block-storage|volumev3|volume`.
        service_type: String,
        /// Interface looked for.
        interface: String,
        /// Region looked for (`any` when unset).
        region: String,
    },
    /// Keystone truncated a list even after narrowing the query per domain.
    #[error("{operation}: keystone truncated the list (raise [DEFAULT] list_limit)")]
    Truncated {
        /// Operation name.
        operation: String,
    },
}

impl Error {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        self.failure().map(|f| f.status)
    }

    /// The service's answer, when there was one.
    pub fn failure(&self) -> Option<&ApiFailure> {
        match self {
            Self::Unauthorized(f)
            | Self::Forbidden(f)
            | Self::NotFound(f)
            | Self::Conflict(f)
            | Self::BadRequest(f)
            | Self::QuotaExceeded(f)
            | Self::Api(f)
            | Self::RateLimited { failure: f, .. } => Some(f),
            _ => None,
        }
    }

    /// The request id of the failed response, for the audit trail.
    pub fn request_id(&self) -> Option<&str> {
        self.failure().and_then(|f| f.request_id.as_deref())
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    pub(crate) fn from_status(failure: ApiFailure, retry_after: Option<Duration>) -> Self {
        match failure.status {
            400 => Self::BadRequest(failure),
            401 => Self::Unauthorized(failure),
            403 => Self::Forbidden(failure),
            404 => Self::NotFound(failure),
            409 => Self::Conflict(failure),
            413 => Self::QuotaExceeded(failure),
            429 => Self::RateLimited { failure, retry_after },
            _ => Self::Api(failure),
        }
    }

    pub(crate) fn decode(operation: &str, message: impl fmt::Display) -> Self {
        Self::Decode { operation: operation.to_owned(), message: message.to_string() }
    }
}

/// Pulls the human message out of the error bodies Cinder, Nova and Keystone send:
/// `{"itemNotFound": {"code": 404, "message": ".."}}` and `{"error": {"message": ".."}}`.
pub(crate) fn service_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).chars().take(300).collect();
    };
    if let Some(object) = value.as_object() {
        for inner in object.values() {
            if let Some(message) = inner.get("message").and_then(serde_json::Value::as_str) {
                return message.to_owned();
            }
        }
    }
    value.to_string().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_of_cinder_and_keystone_bodies() {
        let cinder = br#"{"overLimit": {"code": 413, "message": "SnapshotLimitExceeded: Maximum number of snapshots allowed (1) exceeded"}}"#;
        assert!(service_message(cinder).starts_with("SnapshotLimitExceeded"));
        let keystone =
            br#"{"error":{"code":404,"message":"Could not find project: x.","title":"Not Found"}}"#;
        assert_eq!(service_message(keystone), "Could not find project: x.");
        assert_eq!(service_message(b"plain text"), "plain text");
    }

    #[test]
    fn status_413_is_its_own_variant() {
        let failure = ApiFailure {
            operation: "cinder.snapshots.create".into(),
            status: 413,
            request_id: Some("req-1".into()),
            message: "SnapshotLimitExceeded".into(),
        };
        let err = Error::from_status(failure, None);
        assert!(matches!(err, Error::QuotaExceeded(_)));
        assert_eq!(err.request_id(), Some("req-1"));
        assert!(err.to_string().contains("cinder.snapshots.create failed with HTTP 413 (request req-1)"));
    }
}
