//! The internal service credential: when `SNAPKEEPER_INTERNAL_TOKEN` is set, a server answers
//! only callers that present it as `authorization: Bearer <token>`. Health checks stay open so
//! orchestrators can probe without the secret.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use secrecy::{ExposeSecret, SecretString};

/// Paths that never need the credential.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

/// A tower layer that refuses gRPC calls without the internal credential.
#[derive(Clone, Default)]
pub struct InternalAuthLayer {
    expected: Option<Arc<SecretString>>,
}

impl InternalAuthLayer {
    /// A layer checking for `token`; `None` lets every call through.
    pub fn new(token: Option<SecretString>) -> Self {
        Self { expected: token.map(Arc::new) }
    }
}

impl<S> tower::Layer<S> for InternalAuthLayer {
    type Service = InternalAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InternalAuth { inner, expected: self.expected.clone() }
    }
}

/// The service produced by [`InternalAuthLayer`].
#[derive(Clone)]
pub struct InternalAuth<S> {
    inner: S,
    expected: Option<Arc<SecretString>>,
}

impl<S, B> tower::Service<http::Request<B>> for InternalAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match &self.expected {
            Some(expected) if !is_open(request.uri().path()) && !presents(&request, expected) => {
                tracing::warn!(path = %request.uri().path(), "refused call without the internal credential");
                let status = tonic::Status::unauthenticated(
                    "this service requires the internal credential (authorization: Bearer <SNAPKEEPER_INTERNAL_TOKEN>)",
                );
                Either::Right(ready(Ok(status.into_http())))
            }
            _ => Either::Left(self.inner.call(request)),
        }
    }
}

fn is_open(path: &str) -> bool {
    OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

fn presents<B>(request: &http::Request<B>, expected: &SecretString) -> bool {
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else {
        return false;
    };
    let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(token, expected.expose_secret().as_bytes())
}

/// Compares without an early exit so response time does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }

    #[test]
    fn health_is_open_and_services_are_not() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(!is_open("/snapkeeper.policy.v1.PolicyService/GetRules"));
        assert!(!is_open("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
    }
}
