//! A stopping service does not hang on a stream that never ends: in-flight calls get the drain
//! timeout, then the server returns.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use service_kit::client::{Timeouts, connect_lazy};
use service_kit::config::SecurityArgs;
use service_kit::server::GrpcServer;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;
use snapkeeper_proto::snapshot::v1::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use snapkeeper_proto::snapshot::v1::{WatchRunRequest, WatchRunResponse};
use tokio::net::TcpListener;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

struct EndlessWatch;

#[tonic::async_trait]
impl SnapshotService for EndlessWatch {
    async fn watch_run(
        &self,
        _: Request<WatchRunRequest>,
    ) -> Result<Response<BoxStream<WatchRunResponse>>, Status> {
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

#[tokio::test]
async fn a_server_stops_within_the_drain_timeout_despite_an_open_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = GrpcServer::new(SecurityArgs::default())
        .with_drain_timeout(Duration::from_millis(300))
        .add_service(SnapshotServiceServer::new(EndlessWatch));
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let channel = connect_lazy(&url, &SecurityArgs::default(), Timeouts::default()).unwrap();
    let _stream = SnapshotServiceClient::new(channel).watch_run(WatchRunRequest::default()).await.unwrap();

    let asked = Instant::now();
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), serving).await;
    let waited = asked.elapsed();
    assert!(result.is_ok(), "the server must return despite the open stream");
    result.unwrap().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(300), "in-flight calls get the drain timeout first ({waited:?})");
}
