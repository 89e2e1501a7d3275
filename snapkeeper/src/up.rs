//! `snapkeeper up`: the four services and the gateway in one process, each on its own port and
//! talking real gRPC over loopback, sharing one shutdown.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use openstack::{CloudConfig, SecretString};
use openstack_sim::{Faults, Scenario, SimConfig, SimHandle, Simulator};
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
    /// Prometheus `/metrics` of the gateway (default: a free loopback port, printed at start).
    #[arg(long, env = "GATEWAY_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub gateway_metrics_listen: SocketAddr,
    /// Prometheus `/metrics` of policy-svc.
    #[arg(long, env = "POLICY_SVC_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub policy_metrics_listen: SocketAddr,
    /// Prometheus `/metrics` of identity-svc.
    #[arg(long, env = "IDENTITY_SVC_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub identity_metrics_listen: SocketAddr,
    /// Prometheus `/metrics` of snapshot-svc.
    #[arg(long, env = "SNAPSHOT_SVC_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub snapshot_metrics_listen: SocketAddr,
    /// Prometheus `/metrics` of audit-svc.
    #[arg(long, env = "AUDIT_SVC_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub audit_metrics_listen: SocketAddr,
    /// A cloud from clouds.yaml; without it (and without `OS_AUTH_URL`/`PF9_AUTH_URL`) the suite
    /// runs against the built-in simulator with a demo cloud.
    #[arg(long, env = "OS_CLOUD")]
    pub cloud: Option<String>,
    /// Where the built-in simulator listens (loopback only).
    #[arg(long, env = "SNAPKEEPER_SIM_LISTEN", default_value = "127.0.0.1:5050")]
    pub sim_listen: SocketAddr,
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
    /// Each component's Prometheus `/metrics` listener, gateway first.
    pub metrics: [(&'static str, SocketAddr); 5],
}

/// The demo cloud's own service user, which snapshots land in tenants' projects through.
const DEMO_SERVICE_USER: &str = "snapkeeper-svc";

/// The cloud the suite works on.
pub enum Cloud {
    /// A real cloud, from clouds.yaml or the `OS_*`/`PF9_*` variables.
    Real(CloudConfig),
    /// The built-in simulator with the demo cloud.
    Simulated {
        /// How to reach the simulator as its admin.
        config: CloudConfig,
        /// The demo users' password, which the demo's service user `snapkeeper-svc` has too.
        password: SecretString,
        /// The running simulator.
        handle: SimHandle,
    },
}

impl Cloud {
    /// The configuration services use to reach the cloud.
    pub fn config(&self) -> &CloudConfig {
        match self {
            Self::Real(config) | Self::Simulated { config, .. } => config,
        }
    }
}

/// The real cloud named by `--cloud`, `OS_*` or `PF9_*`, else a simulator with the demo cloud.
async fn cloud(args: &UpArgs) -> anyhow::Result<Cloud> {
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let named = args.cloud.clone().filter(|name| !name.is_empty());
    if named.is_some() || env("OS_AUTH_URL").is_some() || env("PF9_AUTH_URL").is_some() {
        let lookup = |name: &str| if name == "OS_CLOUD" { named.clone() } else { env(name) };
        let config = CloudConfig::from_lookup(&lookup).context("reading the cloud configuration")?;
        return Ok(Cloud::Real(config));
    }
    let password = env("SNAPKEEPER_DEMO_PASSWORD").unwrap_or_else(|| "demo".to_owned());
    let handle = Simulator::start(SimConfig {
        addr: args.sim_listen,
        scenario: Scenario::demo_with_password(&password),
        faults: Faults::default(),
        snapshot_delay: Duration::from_secs(2),
        volume_delay: Duration::from_secs(2),
        token_ttl: Duration::from_hours(1),
        keystone_list_limit: None,
    })
    .await
    .with_context(|| format!("the simulator cannot listen on {} (use --sim-listen)", args.sim_listen))?;
    let config = CloudConfig::password(&handle.auth_url(), "admin", "Default", &password, "admin", "Default");
    Ok(Cloud::Simulated { config, password: SecretString::from(password), handle })
}

/// A started suite; [`Suite::run_until`] keeps it running.
pub struct Suite {
    addresses: Addresses,
    storage: String,
    cloud: Cloud,
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
    if !args.sim_listen.ip().is_loopback() {
        anyhow::bail!("--sim-listen {}: the simulator listens on loopback only", args.sim_listen);
    }
    let policy = listen(args.policy_listen, "policy-svc").await?;
    let identity = listen(args.identity_listen, "identity-svc").await?;
    let snapshot = listen(args.snapshot_listen, "snapshot-svc").await?;
    let audit = listen(args.audit_listen, "audit-svc").await?;
    let gateway = listen(args.gateway_listen, "gateway").await?;
    let mut metrics_listeners = Vec::with_capacity(5);
    for (name, address) in [
        ("gateway", args.gateway_metrics_listen),
        ("policy-svc", args.policy_metrics_listen),
        ("identity-svc", args.identity_metrics_listen),
        ("snapshot-svc", args.snapshot_metrics_listen),
        ("audit-svc", args.audit_metrics_listen),
    ] {
        let listener = listen(address, name).await.context("binding the metrics listener")?;
        metrics_listeners.push((name, listener));
    }
    let mut metrics = [("", args.gateway_metrics_listen); 5];
    for (slot, (name, listener)) in metrics.iter_mut().zip(&metrics_listeners) {
        *slot = (*name, listener.local_addr()?);
    }
    let addresses = Addresses {
        gateway: gateway.local_addr()?,
        policy: policy.local_addr()?,
        identity: identity.local_addr()?,
        snapshot: snapshot.local_addr()?,
        audit: audit.local_addr()?,
        metrics,
    };

    let cloud = cloud(&args).await?;
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let (database, security, telemetry) = (args.database, args.security, args.telemetry);

    macro_rules! configure {
        ($service:ident, $name:literal, $listen:expr) => {{
            // Defaults and environment first, so settings a service adds need no change here.
            let mut config =
                $service::Config::try_parse_from([$name]).context(concat!("configuring ", $name))?;
            config.listen = $listen;
            config.database = database.clone();
            config.security = security.clone();
            config.telemetry = telemetry.clone();
            config
        }};
    }
    for (name, listener) in metrics_listeners {
        let mut registry = service_kit::metrics::registry();
        match name {
            "gateway" => gateway::metrics::register(&mut registry),
            "policy-svc" => policy_svc::metrics::register(&mut registry),
            "identity-svc" => identity_svc::metrics::register(&mut registry),
            "snapshot-svc" => {
                let config = snapshot_svc::Config::try_parse_from(["snapshot-svc"])
                    .context("configuring snapshot-svc")?;
                snapshot_svc::metrics::register(&mut registry, &config, chrono::Utc::now());
            }
            _ => audit_svc::metrics::register(&mut registry),
        }
        let stopped = stop.clone().cancelled_owned();
        tasks.spawn(supervise(name, service_kit::metrics::serve(listener, registry, stopped)));
    }
    let url = |address: SocketAddr| format!("http://{address}");
    let urls = ServiceUrls {
        policy_url: url(addresses.policy),
        identity_url: url(addresses.identity),
        snapshot_url: url(addresses.snapshot),
        audit_url: url(addresses.audit),
    };
    let mut config = configure!(policy_svc, "policy-svc", addresses.policy);
    config.identity_url.clone_from(&urls.identity_url);
    tasks.spawn(supervise("policy-svc", policy_svc::serve(config, policy, stop.clone().cancelled_owned())));
    let mut config = configure!(identity_svc, "identity-svc", addresses.identity);
    // identity-svc is the only service that holds the cloud's passwords.
    config.cloud = Some(cloud.config().clone());
    if let Cloud::Simulated { password, .. } = &cloud
        && config.service_user.email.is_none()
    {
        config.service_user.email = Some(DEMO_SERVICE_USER.to_owned());
        config.service_user.password = Some(password.clone());
    }
    tasks.spawn(supervise(
        "identity-svc",
        identity_svc::serve(config, identity, stop.clone().cancelled_owned()),
    ));
    let mut config = configure!(snapshot_svc, "snapshot-svc", addresses.snapshot);
    config.services = urls.clone();
    tasks.spawn(supervise(
        "snapshot-svc",
        snapshot_svc::serve(config, snapshot, stop.clone().cancelled_owned()),
    ));
    let mut config = configure!(audit_svc, "audit-svc", addresses.audit);
    config.policy_url.clone_from(&urls.policy_url);
    tasks.spawn(supervise("audit-svc", audit_svc::serve(config, audit, stop.clone().cancelled_owned())));

    let mut config = gateway::Config::try_parse_from(["gateway"]).context("configuring the gateway")?;
    config.listen = addresses.gateway;
    config.services = urls;
    config.security = security;
    config.telemetry = telemetry;
    tasks.spawn(supervise("gateway", gateway::serve(config, gateway, stop.clone().cancelled_owned())));
    Ok(Suite { addresses, storage, cloud, stop, tasks })
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
        let cloud = match &self.cloud {
            Cloud::Real(config) => format!("cloud {}", config.auth_url),
            Cloud::Simulated { handle, .. } => {
                format!(
                    "simulated demo cloud {}, users demo-admin (project admin) / demo-reader (project web)",
                    handle.auth_url()
                )
            }
        };
        let mut text = format!("Snapkeeper is up ({}; {cloud}).\n\n", self.storage);
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
        text.push('\n');
        for (name, address) in a.metrics {
            let _ = writeln!(text, "  {name:<16} metrics http://{address}/metrics");
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
        if let Cloud::Simulated { handle, .. } = self.cloud {
            handle.shutdown().await;
        }
        tracing::info!("snapkeeper stopped");
        outcome
    }
}
