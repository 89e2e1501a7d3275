//! `snapkeeper-bench`: generates a simulator cloud, starts openstack-sim and the four services as
//! separate processes over gRPC (SQLite or PostgreSQL), runs run-now to completion and prints wall
//! time, OpenStack calls by operation, the latency bound and efficiency, audit records, and peak
//! RSS and CPU seconds per service. `--sweep` repeats it at 1k, 10k and 50k volumes; `--write`
//! puts the table into a Markdown file.

mod cloud;
mod figures;
mod suite;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::cloud::Shape;
use crate::figures::Measurement;
use crate::suite::{BINARIES, Backend, Plan};

/// Sizes of `--sweep`, in volumes.
const SWEEP_VOLUMES: [usize; 3] = [1_000, 10_000, 50_000];

/// A full run over a generated simulator cloud, measured against the API-latency bound.
#[derive(Debug, Parser)]
#[command(name = "snapkeeper-bench", version)]
struct Cli {
    /// Tenant projects (ignored with --sweep).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    projects: u64,
    /// Volumes per project.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    volumes: u64,
    /// Policies every volume is enrolled in.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    policies: u64,
    /// Existing snapshots of ours per volume, spread over the policies.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=100))]
    snapshots: u64,
    /// Retention count of every policy (older snapshots beyond it are deleted by the run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    retention: u32,
    /// Added latency of every OpenStack call, milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Projects processed at once (snapshot-svc's AUTO_SNAPSHOT_CONCURRENCY).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// OpenStack requests per second snapshot-svc may send (its SNAPSHOT_OPENSTACK_RPS; the
    /// service's default is 50, 0 lifts the limit so the run meets the latency bound).
    #[arg(long, default_value_t = 0)]
    openstack_rps: u32,
    /// Volumes per batch (snapshot-svc's AUTO_SNAPSHOT_BATCH_SIZE).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_size: u32,
    /// Databases to measure, comma-separated: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// PostgreSQL server (each run creates and drops its own database there).
    #[arg(long, env = "BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres_url: String,
    /// Run 1k, 10k and 50k volumes (projects = volumes / --volumes) and print the growth.
    #[arg(long)]
    sweep: bool,
    /// Largest volume count the sweep goes to.
    #[arg(long, default_value_t = 50_000)]
    sweep_max: usize,
    /// Folder of the service binaries; default: the folder of this binary.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Build the release binaries with cargo first (done anyway when one is missing and
    /// --bin-dir is not given).
    #[arg(long)]
    build: bool,
    /// Keep each run's logs, scenario, rules and SQLite files in a folder under this one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Longest one run may take, seconds.
    #[arg(long, default_value_t = 3_600)]
    timeout_secs: u64,
    /// Exit with an error unless every run completed with as many snapshots created as were due.
    #[arg(long)]
    check: bool,
    /// Markdown file to put the figures into (between this run's markers, else appended).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Name of the section `--write` replaces, so several configurations share one file.
    #[arg(long, default_value = "main")]
    label: String,
}

fn backends(names: &[String]) -> anyhow::Result<Vec<Backend>> {
    names
        .iter()
        .map(|name| match name.trim() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => bail!("--backends: unknown backend '{other}' (sqlite, postgres)"),
        })
        .collect()
}

/// The folder holding the service binaries, building them in release mode when asked or missing.
fn binaries(cli: &Cli) -> anyhow::Result<PathBuf> {
    let missing = |dir: &Path| BINARIES.iter().any(|b| !dir.join(b).is_file());
    if let Some(dir) = &cli.bin_dir {
        if missing(dir) {
            bail!("--bin-dir {}: one of {BINARIES:?} is missing", dir.display());
        }
        return Ok(dir.clone());
    }
    let own = std::env::current_exe()?;
    let own_dir = own.parent().context("this binary has no folder")?.to_path_buf();
    if !cli.build && !missing(&own_dir) {
        return Ok(own_dir);
    }
    let mut command =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["build", "--release", "--bins"]);
    for bin in BINARIES {
        command.args(["-p", bin]);
    }
    eprintln!("building release binaries: {command:?}");
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    let output = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata")?;
    let target = metadata["target_directory"].as_str().context("cargo metadata names no target directory")?;
    let dir = Path::new(target).join("release");
    if missing(&dir) {
        bail!("{} lacks one of {BINARIES:?} after building", dir.display());
    }
    Ok(dir)
}

/// Cores, memory and CPU model of this machine.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("{cores} cores, {:.1} GiB RAM, {model}", mem_kib as f64 / 1024.0 / 1024.0)
}

fn write_markdown(path: &Path, label: &str, command: &str, all: &[Measurement]) -> anyhow::Result<()> {
    let begin = format!("<!-- bench:{label}:begin -->");
    let end = format!("<!-- bench:{label}:end -->");
    let mut section = String::new();
    let _ = writeln!(section, "{begin}");
    let _ = writeln!(section, "Machine: {}  ", machine());
    let _ = writeln!(section, "Measured: {}  ", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
    let _ = writeln!(section, "Command: `{command}`\n");
    section.push_str(&figures::markdown_table(all));
    section.push_str("\nOpenStack calls by operation and step times:\n\n");
    section.push_str(&figures::markdown_calls(all));
    let _ = writeln!(section, "\nGrowth (relative to the smallest run of each backend):\n\n```");
    section.push_str(&figures::growth(all));
    let _ = writeln!(section, "```\n{end}");
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (existing.find(&begin), existing.find(&end)) {
        (Some(from), Some(to)) if from < to => {
            format!("{}{}{}", &existing[..from], section.trim_end(), &existing[to + end.len()..])
        }
        _ if existing.is_empty() => format!("# Benchmarks\n\n{section}"),
        _ => format!("{}\n\n{section}", existing.trim_end()),
    };
    std::fs::write(path, text).with_context(|| path.display().to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backends = backends(&cli.backends)?;
    let bin_dir = binaries(&cli)?;
    let volumes_per_project = cli.volumes as usize;
    let project_counts: Vec<usize> = if cli.sweep {
        SWEEP_VOLUMES
            .iter()
            .filter(|v| **v <= cli.sweep_max)
            .map(|v| (v / volumes_per_project).max(1))
            .collect()
    } else {
        vec![cli.projects as usize]
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!("machine: {}\nbinaries: {}", machine(), bin_dir.display());
    let mut all = Vec::new();
    for projects in project_counts {
        for backend in &backends {
            let plan = Plan {
                shape: Shape {
                    projects,
                    volumes_per_project,
                    policies: cli.policies as usize,
                    snapshots_per_volume: cli.snapshots as usize,
                    retention: cli.retention,
                },
                latency: Duration::from_millis(cli.latency_ms),
                concurrency: cli.concurrency,
                batch_size: cli.batch_size,
                openstack_rps: cli.openstack_rps,
                backend: *backend,
                postgres_url: cli.postgres_url.clone(),
                bin_dir: bin_dir.clone(),
                timeout: Duration::from_secs(cli.timeout_secs),
                keep_dir: cli.keep.clone(),
            };
            let measured = suite::measure(&plan)
                .await
                .with_context(|| format!("{projects} projects on {}", backend.name()))?;
            println!("{}", figures::describe(&measured));
            println!(
                "expected: due {}, deletes {}",
                plan.shape.expected_creates(),
                plan.shape.expected_deletes()
            );
            all.push(measured);
        }
    }
    if all.len() > 1 {
        println!("growth:\n{}", figures::growth(&all));
    }
    if cli.check {
        for m in &all {
            if m.status != "completed" || m.due == 0 || m.created != m.due {
                bail!(
                    "{} / {} volumes: run {}, {} due, {} created",
                    m.backend,
                    m.volumes,
                    m.status,
                    m.due,
                    m.created
                );
            }
        }
    }
    if let Some(path) = &cli.write {
        write_markdown(path, &cli.label, &command, &all)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
