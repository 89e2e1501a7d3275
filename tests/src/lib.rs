//! Support for the end-to-end tests in `tests/`: finding the suite's binaries built by
//! `cargo build --workspace --bins`, and running them as child processes that are killed when
//! the test ends.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The path of a workspace binary next to the running test (`target/<profile>/<name>`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let test = std::env::current_exe()?;
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target/<profile>/deps parent")?;
    let path = profile_dir.join(name);
    if !path.exists() {
        bail!("{} is missing: run `cargo build --workspace --bins` before the tests", path.display());
    }
    Ok(path)
}

/// A running binary; killed when dropped.
pub struct Process {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

impl Process {
    /// Starts `name` with `args` and extra environment, capturing stdout.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut command = Command::new(binary(name)?);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("stdout was not captured")?;
        Ok(Self { child, stdout: BufReader::new(stdout).lines(), seen: Vec::new() })
    }

    /// Reads stdout until a line satisfies `matches`, within `timeout`.
    pub async fn wait_for_line(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let read = async {
            while let Some(line) = self.stdout.next_line().await? {
                self.seen.push(line.clone());
                if matches(&line) {
                    return Ok(line);
                }
            }
            bail!("process closed stdout; it printed:\n{}", self.seen.join("\n"))
        };
        tokio::time::timeout(timeout, read).await.context("timed out waiting for output")?
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit status.
    pub async fn interrupt(mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("process already exited")?;
        let status = Command::new("kill").args(["-INT", &pid.to_string()]).status().await?;
        if !status.success() {
            bail!("kill -INT {pid} failed");
        }
        // Keep draining stdout so the child never blocks on a full pipe while stopping.
        let drain = async { while let Ok(Some(_)) = self.stdout.next_line().await {} };
        let (exit, ()) = tokio::time::timeout(timeout, async { tokio::join!(self.child.wait(), drain) })
            .await
            .context("process did not stop in time")?;
        Ok(exit?)
    }
}

/// Whether a command is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs `grpcurl` with `args` and returns stdout, failing with its stderr.
pub async fn grpcurl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("grpcurl").args(args).output().await.context("running grpcurl")?;
    if !output.status.success() {
        bail!("grpcurl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// A long-running binary started with `--listen` and JSON logs; its stdout is read all along
/// (so it never blocks on a full pipe) and kept. Killed when dropped; can be stopped and started
/// again on the same address.
pub struct Daemon {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Where it listens.
    pub address: std::net::SocketAddr,
}

impl Daemon {
    /// Starts `name --listen 127.0.0.1:0 args...` with `LOG_FORMAT=json` and waits until it logs
    /// a message containing "listening" with its `address`.
    pub async fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut daemon = Self {
            name: name.to_owned(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
            env: env.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect(),
            child: None,
            lines: std::sync::Arc::default(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        daemon.launch().await?;
        Ok(daemon)
    }

    /// `http://address`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every stdout line so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(binary(&self.name)?);
        command
            .arg("--listen")
            .arg(self.address.to_string())
            .args(&self.args)
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", self.name))?;
        let stdout = child.stdout.take().context("stdout was not captured")?;
        self.child = Some(child);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let lines = std::sync::Arc::clone(&self.lines);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let address = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|fields| {
                    let listening = fields["message"].as_str().is_some_and(|m| m.contains("listening"));
                    listening.then(|| fields["address"].as_str().map(str::to_owned)).flatten()
                });
                if let Some(address) = address {
                    let _ = ready_tx.send(address);
                }
                lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let address =
            tokio::time::timeout(Duration::from_mins(1), ready_rx.recv()).await.ok().flatten().with_context(
                || format!("{} did not start; it printed:\n{}", self.name, self.output().join("\n")),
            )?;
        self.address = address.parse().with_context(|| format!("{} logged address {address}", self.name))?;
        Ok(())
    }

    /// Kills it (as a crash or an operator's `kill -9` would) and waits until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.with_context(|| format!("killing {}", self.name))?;
        }
        Ok(())
    }

    /// Starts it again on the same address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.launch().await
    }
}

/// How to start the suite as separate binaries ([`Binaries::start`]).
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Keystone URL of the cloud (the simulator's `/v3`).
    pub auth_url: String,
    /// Cloud admin user name and password (project `admin`, domain `Default`).
    pub admin: (String, String),
    /// Service user identity-svc takes project tokens for, and its password.
    pub service_user: (String, String),
    /// Folder for SQLite files (ignored by services given `database_url`).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL for snapshot-svc and audit-svc instead of SQLite.
    pub database_url: Option<String>,
    /// The gateway's session signing key.
    pub jwt_secret: String,
    /// Variables every binary gets (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`, `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Variables for one binary only: (binary, name, value).
    pub service_env: Vec<(String, String, String)>,
    /// Extra arguments of snapshot-svc (batch size, concurrency...).
    pub snapshot_args: Vec<String>,
}

/// identity-svc, policy-svc, audit-svc, snapshot-svc and the gateway, each its own process,
/// talking real gRPC over loopback.
pub struct Binaries {
    /// identity-svc.
    pub identity: Daemon,
    /// policy-svc.
    pub policy: Daemon,
    /// audit-svc.
    pub audit: Daemon,
    /// snapshot-svc.
    pub snapshot: Daemon,
    /// The gateway.
    pub gateway: Daemon,
}

impl Binaries {
    /// Starts the services in dependency order, each on a free port.
    pub async fn start(options: &SuiteOptions) -> anyhow::Result<Self> {
        let data_dir = options.data_dir.to_str().context("data dir is not UTF-8")?;
        let mut common: Vec<(&str, &str)> = vec![("SNAPKEEPER_DATA_DIR", data_dir)];
        common.extend(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let with = |name: &str, extra: &[(&'static str, &str)]| -> Vec<(String, String)> {
            let own = options.service_env.iter().filter(|(binary, _, _)| binary == name);
            common
                .iter()
                .chain(extra)
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .chain(own.map(|(_, k, v)| (k.clone(), v.clone())))
                .collect()
        };
        let start = |name: &'static str, args: Vec<String>, env: Vec<(String, String)>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Daemon::start(name, &args, &env).await
        };
        let identity = start(
            "identity-svc",
            vec![
                "--service-user".to_owned(),
                options.service_user.0.clone(),
                "--service-user-password".to_owned(),
                options.service_user.1.clone(),
            ],
            with(
                "identity-svc",
                &[
                    ("OS_AUTH_URL", &options.auth_url),
                    ("OS_USERNAME", &options.admin.0),
                    ("OS_PASSWORD", &options.admin.1),
                    ("OS_PROJECT_NAME", "admin"),
                    ("OS_USER_DOMAIN_NAME", "Default"),
                    ("OS_PROJECT_DOMAIN_NAME", "Default"),
                    ("OS_REGION_NAME", "RegionOne"),
                ],
            ),
        )
        .await?;
        let policy =
            start("policy-svc", vec!["--identity-url".to_owned(), identity.url()], with("policy-svc", &[]))
                .await?;
        let database: Vec<(&'static str, &str)> =
            options.database_url.as_deref().map(|url| vec![("DATABASE_URL", url)]).unwrap_or_default();
        let audit =
            start("audit-svc", vec!["--policy-url".to_owned(), policy.url()], with("audit-svc", &database))
                .await?;
        let mut snapshot_args = vec![
            "--policy-url".to_owned(),
            policy.url(),
            "--identity-url".to_owned(),
            identity.url(),
            "--audit-url".to_owned(),
            audit.url(),
            "--scheduler-enabled".to_owned(),
            "false".to_owned(),
        ];
        snapshot_args.extend(options.snapshot_args.iter().cloned());
        let snapshot = start("snapshot-svc", snapshot_args, with("snapshot-svc", &database)).await?;
        let gateway = start(
            "gateway",
            vec![
                "--policy-url".to_owned(),
                policy.url(),
                "--identity-url".to_owned(),
                identity.url(),
                "--snapshot-url".to_owned(),
                snapshot.url(),
                "--audit-url".to_owned(),
                audit.url(),
            ],
            with("gateway", &[("GATEWAY_JWT_SECRET", &options.jwt_secret)]),
        )
        .await?;
        Ok(Self { identity, policy, audit, snapshot, gateway })
    }

    /// A gateway session for a cloud-wide admin, signed as the gateway signs its own.
    pub fn admin_session(jwt_secret: &str) -> anyhow::Result<String> {
        session_token(jwt_secret, "admin")
    }
}

/// A gateway session token (HS256, cloud-wide) for user `name` with `role`.
pub fn session_token(jwt_secret: &str, role: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": "snapkeeper-gateway",
        "sub": format!("id-{role}"),
        "name": format!("e2e-{role}"),
        "roles": [role],
        "global": true,
        "csrf": "not-used-with-bearer",
        "iat": now,
        "exp": now + 3600,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(jwt_secret.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key)?)
}

/// The service user's name in [`small_cloud`].
pub const SERVICE_USER: &str = "snapkeeper-svc";

/// A small cloud: `projects` tenant projects (`p00`, `p01`...) with `volumes` volumes each, the
/// service user (member of every tenant, password `password`) and unlimited quotas; the admin is
/// the simulator's `admin` / [`openstack_sim::ADMIN_PASSWORD`].
pub fn small_cloud(projects: usize, volumes: usize, password: &str) -> openstack_sim::Scenario {
    use openstack_sim::{AssignmentSpec, ProjectSpec, QuotaSpec, UserSpec, VolumeSpec};
    let mut s = openstack_sim::Scenario::minimal();
    s.users.push(UserSpec {
        name: SERVICE_USER.to_owned(),
        password: password.to_owned(),
        ..UserSpec::default()
    });
    for p in 0..projects {
        let project = format!("p{p:02}");
        s.projects.push(ProjectSpec { name: project.clone(), ..ProjectSpec::default() });
        s.assignments.push(AssignmentSpec {
            user: SERVICE_USER.to_owned(),
            role: "member".to_owned(),
            project: Some(project.clone()),
            domain: None,
        });
        for v in 0..volumes {
            s.volumes.push(VolumeSpec {
                project: project.clone(),
                name: format!("{project}-vol-{v}"),
                size: Some(1),
                ..VolumeSpec::default()
            });
        }
    }
    s.default_quota = Some(QuotaSpec { volumes: Some(-1), snapshots: Some(-1), gigabytes: Some(-1) });
    s
}

/// Makes `rules` the active rule set of the policy-svc at `url`.
pub async fn replace_rules(url: &str, rules: &str) -> anyhow::Result<()> {
    use snapkeeper_proto::policy::v1::ReplaceRulesRequest;
    use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
    let mut client = PolicyServiceClient::connect(url.to_owned()).await?;
    let request = ReplaceRulesRequest {
        document: rules.to_owned(),
        actor: "e2e".to_owned(),
        ..ReplaceRulesRequest::default()
    };
    let replaced = client.replace_rules(request).await?.into_inner();
    if !replaced.accepted {
        bail!("rules refused: {:?}", replaced.problems);
    }
    Ok(())
}

/// A PostgreSQL cluster of its own (initdb into a temporary folder, its own port), so a test may
/// restart it without touching the machine's server. As root it runs as the `postgres` OS user,
/// since PostgreSQL refuses to run as root. Stopped when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    folder: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`, if any.
    pub fn binaries() -> Option<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    }

    /// Creates and starts a cluster on a free loopback port.
    pub async fn start(bin: PathBuf) -> anyhow::Result<Self> {
        let folder = tempfile::Builder::new().prefix("snapkeeper-pg-").tempdir()?;
        // The cluster's owner (postgres when we are root) must be able to create its folders.
        std::fs::set_permissions(folder.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let cluster = Self { bin, folder, port };
        let data = cluster.data();
        cluster
            .run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .await?;
        cluster.pg_ctl("start").await?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server (fast shutdown: open sessions are cut, as in a failover or upgrade).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl("restart").await
    }

    fn data(&self) -> String {
        self.folder.path().join("data").display().to_string()
    }

    fn log(&self) -> String {
        self.folder.path().join("server.log").display().to_string()
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.folder.path().display()
        )
    }

    async fn pg_ctl(&self, action: &str) -> anyhow::Result<()> {
        let (data, log, options) = (self.data(), self.log(), self.options());
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-m", "fast", "-w", "-t", "60", action])
            .await
    }

    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::from(self.command(program));
        let output = command.args(args).output().await.with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            bail!(
                "{program} {args:?} failed: {}{}\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}
