//! `snapkeeper runs`: the runs snapshot-svc knows (ListRuns), newest first, as a table or JSON.

use chrono::Utc;
use serde_json::{Value, json};
use snapkeeper_proto::snapshot::v1 as pb;

use crate::clients::ServiceArgs;
use crate::output::{Table, enum_label, human_duration, instant, rfc3339, short_time};

/// Settings of `snapkeeper runs`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunsArgs {
    /// Only runs of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Only runs in this state (repeatable).
    #[arg(long = "status", value_enum)]
    pub statuses: Vec<State>,
    /// Only dry runs (`true`) or only real runs (`false`).
    #[arg(long, value_name = "BOOL")]
    pub dry_run: Option<bool>,
    /// Only runs started by this user (or `scheduler`).
    #[arg(long)]
    pub triggered_by: Option<String>,
    /// Most runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How to reach snapshot-svc.
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// Run kind filter.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Started by a person or a script.
    Manual,
    /// Started by the scheduler.
    Scheduled,
}

/// Run state filter.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Queued.
    Pending,
    /// Executing.
    Running,
    /// Finished without failures.
    Completed,
    /// Finished with some failed or quota-blocked volumes.
    Partial,
    /// A step failed.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Its heartbeat stopped.
    Interrupted,
}

impl State {
    fn wire(self) -> pb::RunStatus {
        match self {
            Self::Pending => pb::RunStatus::Pending,
            Self::Running => pb::RunStatus::Running,
            Self::Completed => pb::RunStatus::Completed,
            Self::Partial => pb::RunStatus::Partial,
            Self::Failed => pb::RunStatus::Failed,
            Self::Cancelled => pb::RunStatus::Cancelled,
            Self::Interrupted => pb::RunStatus::Interrupted,
        }
    }
}

/// Runs `snapkeeper runs`.
pub async fn list(args: &RunsArgs) -> anyhow::Result<()> {
    let mut snapshot = args.services.snapshot()?;
    let mut runs = Vec::new();
    let mut page_token = String::new();
    while runs.len() < args.limit {
        let request = pb::ListRunsRequest {
            kind: args.kind.map(|kind| match kind {
                Kind::Manual => pb::RunKind::Manual.into(),
                Kind::Scheduled => pb::RunKind::Scheduled.into(),
            }),
            statuses: args.statuses.iter().map(|state| state.wire().into()).collect(),
            created: None,
            dry_run: args.dry_run,
            triggered_by: args.triggered_by.clone(),
            page_size: i32::try_from((args.limit - runs.len()).min(1000)).unwrap_or(1000),
            page_token: page_token.clone(),
        };
        let page = snapshot
            .client
            .list_runs(request)
            .await
            .map_err(|status| snapshot.target.failed("ListRuns", &status))?
            .into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    runs.truncate(args.limit);
    if args.json {
        let rows: Vec<Value> = runs.iter().map(run_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if runs.is_empty() {
        println!("no runs");
    } else {
        print!("{}", table(&runs).render());
    }
    Ok(())
}

/// The runs as a table; a dry run's snapshot columns show what it would have done.
pub fn table(runs: &[pb::Run]) -> Table {
    let mut table = Table::new(&[
        "RUN",
        "KIND",
        "STATUS",
        "DRY RUN",
        "BY",
        "CREATED (UTC)",
        "TOOK",
        "VOLUMES",
        "CREATED",
        "DELETED",
        "FAILED",
        "QUOTA",
        "PROGRESS",
        "ERRORS",
    ]);
    for run in runs {
        let c = run.counters.unwrap_or_default();
        let (created, deleted) = if run.dry_run {
            (c.would_create, c.would_delete)
        } else {
            (c.snapshots_created, c.snapshots_deleted)
        };
        let took = match instant(run.started_at.as_ref()) {
            Some(start) => {
                let end = instant(run.finished_at.as_ref()).unwrap_or_else(Utc::now);
                human_duration((end - start).num_seconds())
            }
            None => "-".to_owned(),
        };
        let mut errors: String = run.error_summary.chars().take(60).collect();
        if run.error_summary.chars().count() > 60 {
            errors.push('…');
        }
        table.row(vec![
            run.run_id.clone(),
            enum_label(run.kind().as_str_name(), "RUN_KIND_"),
            enum_label(run.status().as_str_name(), "RUN_STATUS_"),
            if run.dry_run { "yes" } else { "no" }.to_owned(),
            run.triggered_by.clone(),
            short_time(run.created_at.as_ref()),
            took,
            c.total_volumes.to_string(),
            created.to_string(),
            deleted.to_string(),
            c.snapshots_failed.to_string(),
            c.quota_blocked.to_string(),
            format!("{:.0}%", run.progress_pct),
            errors,
        ]);
    }
    table
}

fn run_json(run: &pb::Run) -> Value {
    let c = run.counters.unwrap_or_default();
    json!({
        "run_id": run.run_id,
        "kind": enum_label(run.kind().as_str_name(), "RUN_KIND_"),
        "status": enum_label(run.status().as_str_name(), "RUN_STATUS_"),
        "dry_run": run.dry_run,
        "triggered_by": run.triggered_by,
        "created_at": rfc3339(run.created_at.as_ref()),
        "started_at": rfc3339(run.started_at.as_ref()),
        "finished_at": rfc3339(run.finished_at.as_ref()),
        "progress_pct": run.progress_pct,
        "total_batches": run.total_batches,
        "completed_batches": run.completed_batches,
        "counters": {
            "total_volumes": c.total_volumes,
            "processed_volumes": c.processed_volumes,
            "due": c.due,
            "snapshots_created": c.snapshots_created,
            "snapshots_recovered": c.snapshots_recovered,
            "snapshots_deleted": c.snapshots_deleted,
            "snapshots_failed": c.snapshots_failed,
            "deletes_failed": c.deletes_failed,
            "volumes_skipped": c.volumes_skipped,
            "quota_blocked": c.quota_blocked,
            "would_create": c.would_create,
            "would_delete": c.would_delete,
            "role_grants": c.role_grants,
        },
        "error_summary": run.error_summary,
    })
}

#[cfg(test)]
mod tests {
    use snapkeeper_proto::prost_types::Timestamp;

    use super::*;

    #[test]
    fn a_dry_run_row_shows_what_it_would_do() {
        let run = pb::Run {
            run_id: "0193".into(),
            kind: pb::RunKind::Manual.into(),
            status: pb::RunStatus::Completed.into(),
            dry_run: true,
            triggered_by: "ops".into(),
            created_at: Some(Timestamp { seconds: 1_771_149_600, nanos: 0 }),
            started_at: Some(Timestamp { seconds: 1_771_149_600, nanos: 0 }),
            finished_at: Some(Timestamp { seconds: 1_771_149_700, nanos: 0 }),
            counters: Some(pb::RunCounters {
                total_volumes: 9,
                would_create: 7,
                would_delete: 2,
                ..Default::default()
            }),
            progress_pct: 100.0,
            ..pb::Run::default()
        };
        let text = table(std::slice::from_ref(&run)).render();
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "0193",
                "manual",
                "completed",
                "yes",
                "ops",
                "2026-02-15",
                "10:00",
                "1m40s",
                "9",
                "7",
                "2",
                "0",
                "0",
                "100%"
            ]
        );
        assert_eq!(run_json(&run)["counters"]["would_create"], 7);
    }
}
