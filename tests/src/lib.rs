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
