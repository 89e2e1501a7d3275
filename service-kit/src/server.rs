//! The gRPC server every service runs: its own services plus health and reflection (v1 and
//! v1alpha, so `grpcurl list` works), one span per request continuing the caller's trace, the
//! internal credential, optional (mutual) TLS, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::KitError;
use crate::config::SecurityArgs;
use crate::internal_auth::InternalAuthLayer;
use crate::telemetry::grpc_server_span;

/// Services every server offers beside its own, as listed by reflection.
const OPERATIONAL_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// How long a stopping server waits for in-flight calls unless told otherwise.
const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Collects a process's gRPC services and serves them.
pub struct GrpcServer {
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    security: SecurityArgs,
    drain_timeout: std::time::Duration,
}

impl GrpcServer {
    /// A server secured as `security` says.
    pub fn new(security: SecurityArgs) -> Self {
        Self {
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            descriptor_sets: Vec::new(),
            security,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Adds a generated tonic service; it is reported SERVING by the health service.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// How long a stopping server waits for in-flight calls (default 10 s); align it with the
    /// orchestrator's termination grace period.
    pub fn with_drain_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Registers an encoded `FileDescriptorSet` for server reflection.
    pub fn with_descriptor_set(mut self, descriptor_set: &'static [u8]) -> Self {
        self.descriptor_sets.push(descriptor_set);
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), KitError> {
        let address =
            listener.local_addr().map_err(|source| KitError::Io { path: "listener".into(), source })?;
        self.security.validate_for_listener(address)?;
        let (reporter, health) = tonic_health::server::health_reporter();
        for name in &self.service_names {
            reporter.set_service_status(*name, ServingStatus::Serving).await;
        }
        let mut routes = self.routes;
        routes.add_service(health);
        let mut reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in &self.descriptor_sets {
            reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(set);
            reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(set);
        }
        // Descriptor sets may describe more services than this process serves; list only ours.
        for name in self.service_names.iter().copied().chain(OPERATIONAL_SERVICES) {
            reflection_v1 = reflection_v1.with_service_name(name);
            reflection_v1alpha = reflection_v1alpha.with_service_name(name);
        }
        routes.add_service(reflection_v1.build_v1().map_err(|e| KitError::Config(e.to_string()))?);
        routes.add_service(reflection_v1alpha.build_v1alpha().map_err(|e| KitError::Config(e.to_string()))?);

        let mut builder = Server::builder();
        if let Some(tls) = server_tls(&self.security)? {
            builder = builder.tls_config(tls)?;
        }
        let names = self.service_names;
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            for name in names {
                reporter.set_service_status(name, ServingStatus::NotServing).await;
            }
            tracing::info!("shutting down gRPC server");
            let _ = stopping.send(());
        };
        // Streams such as WatchRun can outlive any reasonable stop; give in-flight calls a bound.
        let drain_timeout = self.drain_timeout;
        let drain_deadline = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tracing::info!(%address, "gRPC server listening");
        let serving = builder
            .layer(InternalAuthLayer::new(self.security.internal_token.clone()))
            .trace_fn(grpc_server_span)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming(listener), shutdown);
        tokio::select! {
            served = serving => served?,
            () = drain_deadline => {
                tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "in-flight calls still open after the drain timeout; stopping anyway");
            }
        }
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off: without it, small gRPC replies wait for the
/// peer's delayed ACK (about 40 ms a call).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

fn server_tls(security: &SecurityArgs) -> Result<Option<ServerTlsConfig>, KitError> {
    let files = security.read_tls()?;
    let Some((cert, key)) = files.cert_key else {
        return Ok(None);
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = files.ca {
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(tls))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received ctrl-c"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(address: std::net::SocketAddr) -> Result<TcpListener, KitError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| KitError::Io { path: format!("listen address {address}"), source })
}
