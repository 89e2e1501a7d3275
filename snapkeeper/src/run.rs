//! `snapkeeper run`: starts a manual run through snapshot-svc (StartRun) and, with `--watch`,
//! follows it (WatchRun) with progress bars for batches and volumes and the service's ETA. When
//! stdout is not a terminal the bars stay hidden and each event becomes one plain line, so logs
//! and CI output stay readable. Ctrl-C stops watching, not the run.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{anyhow, bail};
use chrono::{SecondsFormat, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use snapkeeper_proto::snapshot::v1::{self as pb, watch_run_response::Event};

use crate::clients::ServiceArgs;
use crate::output::{duration_seconds, enum_label, human_duration, instant};

/// Settings of `snapkeeper run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Plan everything (creates, deletes, quota blocks, role grants) and change nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Only volumes of this Keystone project id (repeatable).
    #[arg(long = "project", value_name = "ID")]
    pub projects: Vec<String>,
    /// Only this policy (repeatable).
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Only this region (repeatable); every configured region when absent.
    #[arg(long = "region", value_name = "NAME")]
    pub regions: Vec<String>,
    /// Who starts the run, as recorded [default: $USER, else "snapkeeper-cli"].
    #[arg(long)]
    pub triggered_by: Option<String>,
    /// Follow the run until it ends with progress bars; exit 1 unless it completes (fully or partially).
    #[arg(long)]
    pub watch: bool,
    /// How to reach snapshot-svc.
    #[command(flatten)]
    pub services: ServiceArgs,
}

impl RunArgs {
    fn request(&self) -> pb::StartRunRequest {
        let scoped = !(self.projects.is_empty() && self.policies.is_empty() && self.regions.is_empty());
        let triggered_by = self
            .triggered_by
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|user| !user.trim().is_empty())
            .unwrap_or_else(|| "snapkeeper-cli".to_owned());
        pb::StartRunRequest {
            kind: pb::RunKind::Manual.into(),
            dry_run: self.dry_run,
            scope: scoped.then(|| pb::RunScope {
                project_ids: self.projects.clone(),
                policy_names: self.policies.clone(),
                region_names: self.regions.clone(),
            }),
            triggered_by,
        }
    }
}

/// Runs `snapkeeper run`.
pub async fn start(args: &RunArgs) -> anyhow::Result<()> {
    let mut snapshot = args.services.snapshot()?;
    let run = snapshot
        .client
        .start_run(args.request())
        .await
        .map_err(|status| snapshot.target.failed("StartRun", &status))?
        .into_inner()
        .run
        .ok_or_else(|| anyhow!("snapshot-svc accepted the run but returned none"))?;
    println!("{} queued by {}", run_name(&run), run.triggered_by);
    if !args.watch {
        println!("follow it with: snapkeeper runs, or run --watch next time");
        return Ok(());
    }
    let request =
        pb::WatchRunRequest { run_id: run.run_id.clone(), after_sequence: 0, include_volume_events: false };
    let mut stream = snapshot
        .client
        .watch_run(request)
        .await
        .map_err(|status| snapshot.target.failed("WatchRun", &status))?
        .into_inner();
    let display = Display::new(std::io::stdout().is_terminal());
    let mut watch = Watch::default();
    let finished = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let Some(event) = message.event else { continue };
                let lines = watch.apply(event);
                display.show(&watch, &lines);
                if let Some(finished) = watch.finished.take() {
                    break finished;
                }
            }
            Ok(None) => {
                display.clear();
                bail!(
                    "the event stream of run {} ended before the run did; `snapkeeper runs` shows its state",
                    run.run_id
                );
            }
            Err(status) => {
                display.clear();
                return Err(snapshot.target.failed("WatchRun", &status));
            }
        }
    };
    display.clear();
    println!("{}", summary(&finished));
    match finished.status() {
        pb::RunStatus::Completed | pb::RunStatus::Partial => Ok(()),
        other => bail!("{} ended {}", run_name(&finished), status_label(other)),
    }
}

/// What a watched run looks like so far, updated event by event.
#[derive(Debug, Default, Clone)]
pub struct Watch {
    /// Step being executed, e.g. `snapshots`.
    pub step: String,
    /// Overall progress 0 to 100.
    pub progress_pct: f64,
    /// Batches finished and planned.
    pub batches: (i64, i64),
    /// Volumes processed and in scope.
    pub volumes: (i64, i64),
    /// Counters so far.
    pub counters: pb::RunCounters,
    /// The service's estimate, as text (`10:42:00Z, in 3m05s`); empty until measurable.
    pub eta: String,
    /// Whether the run is a dry run.
    pub dry_run: bool,
    /// The final state, once `run_finished` arrived.
    pub finished: Option<pb::Run>,
}

/// One line about a watched run: events are printed in every mode, progress lines only when no
/// bars are drawn (the bars show the same figures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Something happened (a step, a batch, the end).
    Event(String),
    /// The figures changed.
    Progress(String),
}

impl Watch {
    /// Takes one event in and says what to print about it.
    pub fn apply(&mut self, event: Event) -> Vec<Line> {
        match event {
            Event::Snapshot(run) => {
                self.take_run(&run);
                vec![Line::Event(format!("{}: {}", run_name(&run), status_label(run.status())))]
            }
            Event::StepChanged(step) => {
                let key = enum_label(step.key().as_str_name(), "STEP_KEY_");
                let status = enum_label(step.status().as_str_name(), "STEP_STATUS_");
                if step.status() == pb::StepStatus::Running {
                    self.step.clone_from(&key);
                }
                let mut text = format!("step {key} ({}): {status}", step.label);
                for extra in [&step.detail, &step.error] {
                    if !extra.is_empty() {
                        let _ = write!(text, "; {extra}");
                    }
                }
                vec![Line::Event(text)]
            }
            Event::BatchStarted(batch) => vec![Line::Event(format!(
                "batch {} started: {} project(s), {} volumes{}",
                self.batch_name(batch.batch_number),
                batch.project_ids.len(),
                batch.total_volumes,
                region_suffix(&batch.region),
            ))],
            Event::BatchFinished(batch) => {
                self.batches.0 = self.batches.0.max(i64::from(batch.batch_number));
                let mut text = format!(
                    "batch {} {}: {} created, {} deleted, {} failed, {} quota-blocked, {} skipped",
                    self.batch_name(batch.batch_number),
                    enum_label(batch.status().as_str_name(), "BATCH_STATUS_"),
                    batch.completed,
                    batch.deleted,
                    batch.failed,
                    batch.quota_blocked,
                    batch.skipped,
                );
                if !batch.error_message.is_empty() {
                    let _ = write!(text, "; {}", batch.error_message);
                }
                vec![Line::Event(text)]
            }
            // Not requested (include_volume_events is false); nothing to show if a server sends it.
            Event::VolumeProcessed(_) => Vec::new(),
            Event::Progress(progress) => {
                self.step = enum_label(progress.current_step().as_str_name(), "STEP_KEY_");
                self.progress_pct = progress.progress_pct;
                self.batches = (i64::from(progress.completed_batches), i64::from(progress.total_batches));
                let counters = progress.counters.unwrap_or_default();
                self.volumes = (counters.processed_volumes, counters.total_volumes);
                self.counters = counters;
                self.eta = eta_text(progress.estimated_finish_at.as_ref());
                let elapsed = human_duration(duration_seconds(progress.elapsed.as_ref()));
                vec![Line::Progress(format!(
                    "progress {:.1}% step {}: batches {}/{}, volumes {}/{}, {}; {:.1} volumes/min, elapsed {elapsed}{}",
                    self.progress_pct,
                    self.step,
                    self.batches.0,
                    self.batches.1,
                    self.volumes.0,
                    self.volumes.1,
                    self.counters_text(),
                    progress.volumes_per_minute,
                    if self.eta.is_empty() { String::new() } else { format!(", ETA {}", self.eta) },
                ))]
            }
            Event::RunFinished(run) => {
                self.take_run(&run);
                let line = format!("{} finished: {}", run_name(&run), status_label(run.status()));
                self.finished = Some(run);
                vec![Line::Event(line)]
            }
        }
    }

    /// `3/10`, or `3` while the number of batches is not known yet.
    fn batch_name(&self, number: i32) -> String {
        if self.batches.1 > 0 { format!("{number}/{}", self.batches.1) } else { number.to_string() }
    }

    fn take_run(&mut self, run: &pb::Run) {
        self.dry_run = run.dry_run;
        self.progress_pct = run.progress_pct;
        self.batches = (i64::from(run.completed_batches), i64::from(run.total_batches));
        let counters = run.counters.unwrap_or_default();
        self.volumes = (counters.processed_volumes, counters.total_volumes);
        self.counters = counters;
        self.eta = eta_text(run.estimated_finish_at.as_ref());
        if let Some(step) = run.steps.iter().find(|step| step.status() == pb::StepStatus::Running) {
            self.step = enum_label(step.key().as_str_name(), "STEP_KEY_");
        }
    }

    /// Snapshot figures: what was done, or for a dry run what would be.
    fn counters_text(&self) -> String {
        let c = &self.counters;
        if self.dry_run {
            format!(
                "would create {}, would delete {}, {} quota-blocked",
                c.would_create, c.would_delete, c.quota_blocked
            )
        } else {
            format!(
                "{} created, {} deleted, {} failed, {} quota-blocked",
                c.snapshots_created, c.snapshots_deleted, c.snapshots_failed, c.quota_blocked
            )
        }
    }
}

/// `run <id>`, or `dry run <id>`.
fn run_name(run: &pb::Run) -> String {
    if run.dry_run { format!("dry run {}", run.run_id) } else { format!("run {}", run.run_id) }
}

fn region_suffix(region: &str) -> String {
    if region.is_empty() { String::new() } else { format!(" in {region}") }
}

fn status_label(status: pb::RunStatus) -> String {
    enum_label(status.as_str_name(), "RUN_STATUS_")
}

fn eta_text(estimate: Option<&snapkeeper_proto::prost_types::Timestamp>) -> String {
    let Some(at) = instant(estimate) else { return String::new() };
    let left = (at - Utc::now()).num_seconds();
    format!("{} (in {})", at.to_rfc3339_opts(SecondsFormat::Secs, true), human_duration(left))
}

/// The closing line of a finished run.
pub fn summary(run: &pb::Run) -> String {
    let took = match (instant(run.started_at.as_ref()), instant(run.finished_at.as_ref())) {
        (Some(start), Some(end)) => format!(" in {}", human_duration((end - start).num_seconds())),
        _ => String::new(),
    };
    let c = run.counters.unwrap_or_default();
    let figures = if run.dry_run {
        format!(
            "{} volumes, would create {}, would delete {}, {} quota-blocked, {} skipped, {} role grants",
            c.total_volumes,
            c.would_create,
            c.would_delete,
            c.quota_blocked,
            c.volumes_skipped,
            c.role_grants
        )
    } else {
        format!(
            "{} volumes, {} created, {} deleted, {} failed, {} delete failures, {} quota-blocked, {} skipped",
            c.total_volumes,
            c.snapshots_created,
            c.snapshots_deleted,
            c.snapshots_failed,
            c.deletes_failed,
            c.quota_blocked,
            c.volumes_skipped
        )
    };
    let mut text = format!("{} {}{took}: {figures}", run_name(run), status_label(run.status()));
    if !run.error_summary.is_empty() {
        let _ = write!(text, "\nerrors: {}", run.error_summary);
    }
    text
}

/// Progress bars on a terminal, plain lines elsewhere.
struct Display {
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
}

impl Display {
    fn new(terminal: bool) -> Self {
        if !terminal {
            return Self { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{prefix:>8} [{bar:32}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let batches = multi.add(ProgressBar::new(0).with_style(style.clone()).with_prefix("batches"));
        let volumes = multi.add(ProgressBar::new(0).with_style(style).with_prefix("volumes"));
        batches.enable_steady_tick(Duration::from_millis(500));
        Self { bars: Some((multi, batches, volumes)) }
    }

    fn show(&self, watch: &Watch, lines: &[Line]) {
        let Some((multi, batches, volumes)) = &self.bars else {
            for line in lines {
                match line {
                    Line::Event(text) | Line::Progress(text) => println!("{text}"),
                }
            }
            return;
        };
        for line in lines {
            if let Line::Event(text) = line {
                let _ = multi.println(text);
            }
        }
        batches.set_length(u64::try_from(watch.batches.1).unwrap_or(0));
        batches.set_position(u64::try_from(watch.batches.0).unwrap_or(0));
        batches.set_message(format!("{:.1}% step {}", watch.progress_pct, watch.step));
        volumes.set_length(u64::try_from(watch.volumes.1).unwrap_or(0));
        volumes.set_position(u64::try_from(watch.volumes.0).unwrap_or(0));
        let eta = if watch.eta.is_empty() { String::new() } else { format!(", ETA {}", watch.eta) };
        volumes.set_message(format!("{}{eta}", watch.counters_text()));
    }

    fn clear(&self) {
        if let Some((multi, batches, volumes)) = &self.bars {
            // Finished bars stop their steady tick, so nothing redraws over the summary.
            batches.finish_and_clear();
            volumes.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use snapkeeper_proto::prost_types::{Duration as ProtoDuration, Timestamp};

    use super::*;

    fn run(status: pb::RunStatus) -> pb::Run {
        pb::Run {
            run_id: "0193".into(),
            status: status.into(),
            total_batches: 2,
            counters: Some(pb::RunCounters { total_volumes: 40, ..pb::RunCounters::default() }),
            ..pb::Run::default()
        }
    }

    #[test]
    fn events_become_lines_and_figures() {
        let mut watch = Watch::default();
        assert_eq!(
            watch.apply(Event::Snapshot(run(pb::RunStatus::Running))),
            [Line::Event("run 0193: running".into())]
        );
        assert_eq!(watch.batches, (0, 2));
        let step = pb::RunStep {
            key: pb::StepKey::Snapshots.into(),
            label: "Auto Snapshots".into(),
            status: pb::StepStatus::Running.into(),
            ..pb::RunStep::default()
        };
        assert_eq!(
            watch.apply(Event::StepChanged(step)),
            [Line::Event("step snapshots (Auto Snapshots): running".into())]
        );
        let batch = pb::Batch {
            batch_number: 1,
            project_ids: vec!["p1".into(), "p2".into()],
            total_volumes: 20,
            region: "RegionOne".into(),
            ..pb::Batch::default()
        };
        assert_eq!(
            watch.apply(Event::BatchStarted(batch)),
            [Line::Event("batch 1/2 started: 2 project(s), 20 volumes in RegionOne".into())]
        );
        let progress = pb::RunProgress {
            progress_pct: 50.0,
            current_step: pb::StepKey::Snapshots.into(),
            counters: Some(pb::RunCounters {
                total_volumes: 40,
                processed_volumes: 20,
                snapshots_created: 18,
                quota_blocked: 2,
                ..pb::RunCounters::default()
            }),
            completed_batches: 1,
            total_batches: 2,
            current_batch: 2,
            volumes_per_minute: 10.0,
            estimated_finish_at: None,
            elapsed: Some(ProtoDuration { seconds: 125, nanos: 0 }),
        };
        assert_eq!(watch.apply(Event::Progress(progress)), [Line::Progress(
            "progress 50.0% step snapshots: batches 1/2, volumes 20/40, 18 created, 0 deleted, 0 failed, \
             2 quota-blocked; 10.0 volumes/min, elapsed 2m05s"
                .into()
        )]);
        assert_eq!(watch.volumes, (20, 40));
        let mut done = run(pb::RunStatus::Partial);
        done.started_at = Some(Timestamp { seconds: 1000, nanos: 0 });
        done.finished_at = Some(Timestamp { seconds: 1185, nanos: 0 });
        done.error_summary = "finance: gigabytes quota".into();
        watch.apply(Event::RunFinished(done));
        let finished = watch.finished.take().unwrap();
        assert_eq!(
            summary(&finished),
            "run 0193 partial in 3m05s: 40 volumes, 0 created, 0 deleted, 0 failed, 0 delete failures, \
             0 quota-blocked, 0 skipped\nerrors: finance: gigabytes quota"
        );
    }

    #[test]
    fn scope_is_sent_only_when_given() {
        let args = |projects: Vec<String>| RunArgs {
            dry_run: true,
            projects,
            policies: Vec::new(),
            regions: Vec::new(),
            triggered_by: Some("ops".into()),
            watch: false,
            services: ServiceArgsFixture::args(),
        };
        let unscoped = args(Vec::new()).request();
        assert!(unscoped.scope.is_none() && unscoped.dry_run);
        assert_eq!(unscoped.triggered_by, "ops");
        assert_eq!(unscoped.kind(), pb::RunKind::Manual);
        let scoped = args(vec!["p1".into()]).request();
        assert_eq!(scoped.scope.unwrap().project_ids, ["p1"]);
    }

    /// Default service settings, as clap would build them with no flags.
    struct ServiceArgsFixture;

    impl ServiceArgsFixture {
        fn args() -> ServiceArgs {
            use clap::Parser as _;
            #[derive(clap::Parser)]
            struct Wrapper {
                #[command(flatten)]
                services: ServiceArgs,
            }
            Wrapper::parse_from(["test"]).services
        }
    }
}
