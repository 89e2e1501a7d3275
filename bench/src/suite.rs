//! One measured run: the simulator and the four services as separate processes over gRPC on a
//! fresh database, run-now through snapshot-svc's StartRun, and the readings afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use snapkeeper_proto::prost_types::Timestamp;
use snapkeeper_proto::snapshot::v1 as pb;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;
use snapkeeper_proto::tonic::transport::Channel;
use sqlx::{AssertSqlSafe, Connection as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cloud::{self, SERVICE_PASSWORD, SERVICE_USER, Shape};
use crate::figures::{self, Measurement, SIMULATOR, Usage};

/// The binaries a run starts.
pub(crate) const BINARIES: [&str; 5] = [SIMULATOR, "identity-svc", "policy-svc", "audit-svc", "snapshot-svc"];

/// Where the services keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A SQLite file per service in a temporary folder.
    Sqlite,
    /// A fresh PostgreSQL database, a schema per service.
    Postgres,
}

impl Backend {
    /// Lower-case name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The cloud.
    pub(crate) shape: Shape,
    /// Added latency per OpenStack call.
    pub(crate) latency: Duration,
    /// AUTO_SNAPSHOT_CONCURRENCY.
    pub(crate) concurrency: u32,
    /// AUTO_SNAPSHOT_BATCH_SIZE.
    pub(crate) batch_size: u32,
    /// SNAPSHOT_OPENSTACK_RPS.
    pub(crate) openstack_rps: u32,
    /// Database.
    pub(crate) backend: Backend,
    /// PostgreSQL server URL (without database) for [`Backend::Postgres`].
    pub(crate) postgres_url: String,
    /// Folder of the binaries.
    pub(crate) bin_dir: PathBuf,
    /// Longest a run may take.
    pub(crate) timeout: Duration,
    /// Where to keep each run's logs, scenario and SQLite files (default: a temporary folder).
    pub(crate) keep_dir: Option<PathBuf>,
}

/// A child process, killed when dropped, with its log file.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().with_context(|| format!("{} exited early\n{}", self.name, tail(&self.log)))
    }

    fn usage(&self, ticks_per_sec: f64) -> anyhow::Result<Usage> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Ok(Usage {
            peak_rss_kib: figures::peak_rss_kib(&status).context("no VmHWM in /proc status")?,
            cpu_secs: figures::cpu_ticks(&stat).context("unreadable /proc stat")? as f64 / ticks_per_sec,
        })
    }
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(
    plan: &Plan,
    dir: &Path,
    name: &'static str,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Service> {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    let mut command = Command::new(plan.bin_dir.join(name));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // The simulator prints its URL on stdout; services log there, into the log file.
        .stdout(if name == SIMULATOR { Stdio::piped() } else { Stdio::from(file.try_clone()?) })
        .stderr(file)
        .kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("starting {}", plan.bin_dir.join(name).display()))?;
    Ok(Service { name, child, log })
}

/// Waits until a gRPC service reports SERVING.
async fn serving(service: &mut Service, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        if let Ok(Some(status)) = service.child.try_wait() {
            bail!("{} exited with {status}\n{}", service.name, tail(&service.log));
        }
        if let Ok(channel) = Channel::from_shared(url.to_owned())?.connect().await {
            let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
            if reply.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not become healthy\n{}", service.name, tail(&service.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh PostgreSQL database, dropped by [`FreshDatabase::drop_database`].
struct FreshDatabase {
    server: String,
    name: String,
}

impl FreshDatabase {
    async fn create(server: &str) -> anyhow::Result<Self> {
        let name = format!("snapkeeper_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .with_context(|| format!("connecting to PostgreSQL at {server}"))?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
        Ok(Self { server: server.to_owned(), name })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.server)).await?;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await?;
        Ok(())
    }
}

/// `SELECT COUNT(*)` of a table on either backend.
async fn count_rows(url: &str, backend: Backend, table: &'static str) -> anyhow::Result<i64> {
    // The table name is one of the constants of the callers.
    let query = AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    let count: i64 = match backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(url).await?;
            sqlx::query_scalar(query).fetch_one(&mut connection).await?
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await?;
            sqlx::query_scalar(query).fetch_one(&mut connection).await?
        }
    };
    Ok(count)
}

fn seconds(from: Option<&Timestamp>, to: Option<&Timestamp>) -> Option<f64> {
    let (from, to) = (from?, to?);
    Some((to.seconds - from.seconds) as f64 + f64::from(to.nanos - from.nanos) / 1e9)
}

/// Runs the plan once and measures it.
pub(crate) async fn measure(plan: &Plan) -> anyhow::Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let kept = plan
        .keep_dir
        .as_ref()
        .map(|parent| parent.join(format!("{}-{}", plan.backend.name(), plan.shape.volumes())));
    if let Some(kept) = &kept {
        std::fs::create_dir_all(kept)?;
    }
    let dir_path = kept.as_deref().unwrap_or(dir.path());
    let scenario_file = dir_path.join("scenario.json");
    std::fs::write(&scenario_file, serde_json::to_vec(&cloud::scenario(&plan.shape, chrono::Utc::now()))?)?;
    let rules_file = dir_path.join("rules.json");
    std::fs::write(&rules_file, serde_json::to_vec_pretty(&cloud::rules(&plan.shape))?)?;

    let mut sim = spawn(
        plan,
        dir_path,
        SIMULATOR,
        &[
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            &scenario_file.to_string_lossy(),
            "--latency-ms",
            &plan.latency.as_millis().to_string(),
            "--snapshot-delay-ms",
            "0",
        ],
        &[],
    )?;
    let stdout = sim.child.stdout.take().context("simulator stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let auth_url = tokio::time::timeout(Duration::from_mins(5), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("OS_AUTH_URL=") {
                return Ok(url.to_owned());
            }
        }
        bail!("openstack-sim stopped before listening\n{}", tail(&sim.log))
    })
    .await
    .context("openstack-sim did not start in 5 minutes")??;
    // Keep draining the simulator's stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let sim_base = auth_url.trim_end_matches("/v3").to_owned();

    let database = match plan.backend {
        Backend::Postgres => Some(FreshDatabase::create(&plan.postgres_url).await?),
        Backend::Sqlite => None,
    };
    let database_url = |service: &str| match &database {
        Some(db) => db.url(),
        None => format!("sqlite://{}?mode=rwc", dir_path.join(format!("{service}.db")).display()),
    };
    let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
    let [identity_addr, policy_addr, audit_addr, snapshot_addr] = ports.map(|p| format!("127.0.0.1:{p}"));
    let url = |addr: &str| format!("http://{addr}");

    let mut identity = spawn(
        plan,
        dir_path,
        "identity-svc",
        &[],
        &[
            ("IDENTITY_SVC_LISTEN", identity_addr.clone()),
            ("OS_AUTH_URL", auth_url.clone()),
            ("OS_USERNAME", openstack_sim::ADMIN_USER.to_owned()),
            ("OS_PASSWORD", openstack_sim::ADMIN_PASSWORD.to_owned()),
            ("OS_PROJECT_NAME", openstack_sim::ADMIN_PROJECT.to_owned()),
            ("OS_USER_DOMAIN_NAME", "Default".to_owned()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".to_owned()),
            ("OS_REGION_NAME", "RegionOne".to_owned()),
            ("SNAPSHOT_SERVICE_USER_EMAIL", SERVICE_USER.to_owned()),
            ("SNAPSHOT_SERVICE_USER_PASSWORD", SERVICE_PASSWORD.to_owned()),
            ("DATABASE_URL", database_url("identity")),
        ],
    )?;
    serving(&mut identity, &url(&identity_addr)).await?;
    let mut policy = spawn(
        plan,
        dir_path,
        "policy-svc",
        &[],
        &[
            ("POLICY_SVC_LISTEN", policy_addr.clone()),
            ("POLICY_RULES_FILE", rules_file.to_string_lossy().into_owned()),
            ("IDENTITY_SVC_URL", url(&identity_addr)),
            ("DATABASE_URL", database_url("policy")),
        ],
    )?;
    serving(&mut policy, &url(&policy_addr)).await?;
    let mut audit = spawn(
        plan,
        dir_path,
        "audit-svc",
        &[],
        &[
            ("AUDIT_SVC_LISTEN", audit_addr.clone()),
            ("POLICY_SVC_URL", url(&policy_addr)),
            ("DATABASE_URL", database_url("audit")),
        ],
    )?;
    serving(&mut audit, &url(&audit_addr)).await?;
    let mut snapshot = spawn(
        plan,
        dir_path,
        "snapshot-svc",
        &[],
        &[
            ("SNAPSHOT_SVC_LISTEN", snapshot_addr.clone()),
            ("IDENTITY_SVC_URL", url(&identity_addr)),
            ("POLICY_SVC_URL", url(&policy_addr)),
            ("AUDIT_SVC_URL", url(&audit_addr)),
            ("SNAPSHOT_SVC_URL", url(&snapshot_addr)),
            ("DATABASE_URL", database_url("snapshot")),
            ("SNAPSHOT_SCHEDULER_ENABLED", "false".to_owned()),
            ("SNAPSHOT_SVC_HOST", "bench".to_owned()),
            ("AUTO_SNAPSHOT_CONCURRENCY", plan.concurrency.to_string()),
            ("AUTO_SNAPSHOT_BATCH_SIZE", plan.batch_size.to_string()),
            ("SNAPSHOT_OPENSTACK_RPS", plan.openstack_rps.to_string()),
        ],
    )?;
    serving(&mut snapshot, &url(&snapshot_addr)).await?;

    let http = reqwest::Client::new();
    http.delete(format!("{sim_base}/_sim/stats")).send().await?.error_for_status()?;
    let ticks_per_sec = clock_ticks().await;
    let services = [&identity, &policy, &audit, &snapshot, &sim];
    let cpu_before: Vec<f64> =
        services.iter().map(|s| s.usage(ticks_per_sec).map(|u| u.cpu_secs)).collect::<Result<_, _>>()?;

    let mut api = SnapshotServiceClient::connect(url(&snapshot_addr)).await?;
    let started = Instant::now();
    let request = pb::StartRunRequest {
        kind: pb::RunKind::Manual.into(),
        triggered_by: "bench".to_owned(),
        ..Default::default()
    };
    let run_id = api
        .start_run(request)
        .await
        .context("StartRun")?
        .into_inner()
        .run
        .context("StartRun returned no run")?
        .run_id;
    let run = loop {
        let run = api
            .get_run(pb::GetRunRequest { run_id: run_id.clone(), ..Default::default() })
            .await
            .context("GetRun")?
            .into_inner()
            .run
            .context("GetRun returned no run")?;
        if !matches!(pb::RunStatus::try_from(run.status), Ok(pb::RunStatus::Pending | pb::RunStatus::Running))
        {
            break run;
        }
        if started.elapsed() > plan.timeout {
            bail!("the run did not finish in {:?}\n{}", plan.timeout, tail(&snapshot.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    let calls: BTreeMap<String, u64> = {
        let stats: serde_json::Value =
            http.get(format!("{sim_base}/_sim/stats")).send().await?.error_for_status()?.json().await?;
        stats["operations"]
            .as_object()
            .map(|ops| ops.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
            .unwrap_or_default()
    };
    let mut usage = BTreeMap::new();
    for (service, before) in services.iter().zip(&cpu_before) {
        let mut u = service.usage(ticks_per_sec)?;
        u.cpu_secs -= before;
        usage.insert(service.name.to_owned(), u);
    }

    let counters = run.counters.unwrap_or_default();
    // The outbox relay delivers to audit-svc in the background: wait until snapshot-svc's outbox
    // is empty, then count what audit-svc holds.
    let (outbox, records) = match plan.backend {
        Backend::Sqlite => ("outbox", "snapshot_records"),
        Backend::Postgres => ("snapshot.outbox", "audit.snapshot_records"),
    };
    let drain_started = Instant::now();
    loop {
        let waiting = count_rows(&database_url("snapshot"), plan.backend, outbox).await?;
        if waiting == 0 {
            break;
        }
        if drain_started.elapsed() > Duration::from_mins(2) {
            eprintln!(
                "{waiting} audit events still in snapshot-svc's outbox after 120 s\n{}",
                tail(&snapshot.log)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit_drain = drain_started.elapsed();
    let audit_count = count_rows(&database_url("audit"), plan.backend, records).await?;
    let status = pb::RunStatus::try_from(run.status).map_or("unknown".to_owned(), |s| {
        s.as_str_name().trim_start_matches("RUN_STATUS_").to_ascii_lowercase()
    });
    if !matches!(pb::RunStatus::try_from(run.status), Ok(pb::RunStatus::Completed | pb::RunStatus::Partial)) {
        eprintln!("run {run_id} ended {status}: {}\n{}", run.error_summary, tail(&snapshot.log));
    }
    let steps = run
        .steps
        .iter()
        .map(|s| {
            let name = pb::StepKey::try_from(s.key).map_or("step".to_owned(), |k| {
                k.as_str_name().trim_start_matches("STEP_KEY_").to_ascii_lowercase()
            });
            (name, seconds(s.started_at.as_ref(), s.finished_at.as_ref()).unwrap_or(0.0))
        })
        .collect();
    let measurement = Measurement {
        backend: plan.backend.name().to_owned(),
        projects: plan.shape.projects,
        volumes: plan.shape.volumes(),
        latency: plan.latency,
        concurrency: plan.concurrency,
        openstack_rps: plan.openstack_rps,
        status,
        wall,
        steps,
        calls,
        due: counters.due,
        created: counters.snapshots_created,
        deleted: counters.snapshots_deleted,
        failed: counters.snapshots_failed + counters.deletes_failed,
        audit_records: audit_count,
        audit_drain,
        usage,
    };
    for service in [snapshot, audit, policy, identity, sim] {
        let mut child = service.child;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if let Some(database) = database {
        database.drop_database().await?;
    }
    Ok(measurement)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else Linux's 100).
async fn clock_ticks() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().await;
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
