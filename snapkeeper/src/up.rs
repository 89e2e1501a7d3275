//! `snapkeeper up`: the four services and the gateway in one process, each on its own port and
//! talking real gRPC over loopback, sharing one shutdown.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use service_kit::config::{DatabaseArgs, SecurityArgs, ServiceUrls, TelemetryArgs};
use service_kit::db::Backend;
use service_kit::server::bind;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of `snapkeeper up`.
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Address of the REST API and UI.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    pub gateway_listen: SocketAddr,
    /// Address of policy-svc.
    #[arg(long, env = "POLICY_SVC_LISTEN", default_value = "127.0.0.1:50051")]
    pub policy_listen: SocketAddr,
    /// Address of identity-svc.
    #[arg(long, env = "IDENTITY_SVC_LISTEN", default_value = "127.0.0.1:50052")]
    pub identity_listen: SocketAddr,
    /// Address of snapshot-svc.
    #[arg(long, env = "SNAPSHOT_SVC_LISTEN", default_value = "127.0.0.1:50053")]
    pub snapshot_listen: SocketAddr,
    /// Address of audit-svc.
    #[arg(long, env = "AUDIT_SVC_LISTEN", default_value = "127.0.0.1:50054")]
    pub audit_listen: SocketAddr,
    /// SQLite folder, or a PostgreSQL URL in which each service keeps its own schema.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Service-to-service credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The bound addresses of a running suite.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The gateway (REST API and UI).
    pub gateway: SocketAddr,
    /// policy-svc.
    pub policy: SocketAddr,
    /// identity-svc.
    pub identity: SocketAddr,
    /// snapshot-svc.
    pub snapshot: SocketAddr,
    /// audit-svc.
    pub audit: SocketAddr,
}

/// A started suite; [`Suite::run_until`] keeps it running.
pub struct Suite {
    addresses: Addresses,
    storage: String,
    stop: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

/// Binds every port (failing early, naming the one that is taken) and starts every service.
pub async fn start(args: UpArgs) -> anyhow::Result<Suite> {
    let storage = match &args.database.database_url {
        None => format!("SQLite files in {}", args.database.data_dir.display()),
        Some(url) if Backend::of_url(url)? == Backend::Postgres => {
            "PostgreSQL (one schema per service)".to_owned()
        }
        Some(_) => anyhow::bail!(
            "DATABASE_URL for `snapkeeper up` must be a postgres:// URL; SQLite files go under --data-dir"
        ),
    };
    let policy = listen(args.policy_listen, "policy-svc").await?;
    let identity = listen(args.identity_listen, "identity-svc").await?;
    let snapshot = listen(args.snapshot_listen, "snapshot-svc").await?;
    let audit = listen(args.audit_listen, "audit-svc").await?;
    let gateway = listen(args.gateway_listen, "gateway").await?;
    let addresses = Addresses {
        gateway: gateway.local_addr()?,
        policy: policy.local_addr()?,
        identity: identity.local_addr()?,
        snapshot: snapshot.local_addr()?,
        audit: audit.local_addr()?,
    };

    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let (database, security, telemetry) = (args.database, args.security, args.telemetry);

    let config = policy_svc::Config {
        listen: addresses.policy,
        database: database.clone(),
        security: security.clone(),
        telemetry: telemetry.clone(),
    };
    tasks.spawn(supervise("policy-svc", policy_svc::serve(config, policy, stop.clone().cancelled_owned())));
    let config = identity_svc::Config {
        listen: addresses.identity,
        database: database.clone(),
        security: security.clone(),
        telemetry: telemetry.clone(),
    };
    tasks.spawn(supervise(
        "identity-svc",
        identity_svc::serve(config, identity, stop.clone().cancelled_owned()),
    ));
    let config = snapshot_svc::Config {
        listen: addresses.snapshot,
        database: database.clone(),
        security: security.clone(),
        telemetry: telemetry.clone(),
    };
    tasks.spawn(supervise(
        "snapshot-svc",
        snapshot_svc::serve(config, snapshot, stop.clone().cancelled_owned()),
    ));
    let config = audit_svc::Config {
        listen: addresses.audit,
        database,
        security: security.clone(),
        telemetry: telemetry.clone(),
    };
    tasks.spawn(supervise("audit-svc", audit_svc::serve(config, audit, stop.clone().cancelled_owned())));

    let url = |address: SocketAddr| format!("http://{address}");
    let config = gateway::Config {
        listen: addresses.gateway,
        services: ServiceUrls {
            policy_url: url(addresses.policy),
            identity_url: url(addresses.identity),
            snapshot_url: url(addresses.snapshot),
            audit_url: url(addresses.audit),
        },
        security,
        telemetry,
    };
    tasks.spawn(supervise("gateway", gateway::serve(config, gateway, stop.clone().cancelled_owned())));
    Ok(Suite { addresses, storage, stop, tasks })
}

async fn listen(address: SocketAddr, service: &str) -> anyhow::Result<TcpListener> {
    bind(address)
        .await
        .with_context(|| format!("{service} cannot listen on {address} (is another suite running?)"))
}

async fn supervise<E>(name: &'static str, service: impl Future<Output = Result<(), E>>) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    service.await.with_context(|| format!("{name} stopped"))
}

impl Suite {
    /// Where everything listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// What to tell the operator once the suite is up.
    pub fn banner(&self) -> String {
        let a = self.addresses;
        let mut text = format!("Snapkeeper is up ({}).\n\n", self.storage);
        let _ = writeln!(
            text,
            "  UI and REST API  http://{}/   (health /healthz, OpenAPI /api/openapi.json)",
            a.gateway
        );
        for (name, address) in [
            ("policy-svc", a.policy),
            ("identity-svc", a.identity),
            ("snapshot-svc", a.snapshot),
            ("audit-svc", a.audit),
        ] {
            let _ = writeln!(text, "  {name:<16} grpc://{address}");
        }
        let _ = write!(
            text,
            "\nTry:\n  grpcurl -plaintext {p} list\n  grpcurl -plaintext {p} describe snapkeeper.policy.v1.PolicyService\n  \
             grpcurl -plaintext -d '{{\"service\":\"snapkeeper.policy.v1.PolicyService\"}}' {p} grpc.health.v1.Health/Check\n\n\
             Press Ctrl-C to stop.",
            p = a.policy
        );
        text
    }

    /// Runs until `shutdown` resolves or a service fails, then stops every service.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            () = shutdown => Ok(()),
            Some(finished) = self.tasks.join_next() => match finished {
                Ok(Ok(())) => Err(anyhow::anyhow!("a service stopped unexpectedly")),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(anyhow::anyhow!("a service panicked: {join}")),
            },
        };
        self.stop.cancel();
        while let Some(finished) = self.tasks.join_next().await {
            if let Ok(Err(err)) = finished {
                tracing::warn!(error = %format!("{err:#}"), "service error during shutdown");
            }
        }
        tracing::info!("snapkeeper stopped");
        outcome
    }
}
