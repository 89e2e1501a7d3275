//! `snapkeeper compliance`: audit-svc's judgement per enrolled (volume, policy) (GetCompliance,
//! every page), with the contract's filters, as a table with a summary, as CSV, or as JSON.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use snapkeeper_proto::audit::v1 as pb;

use crate::clients::ServiceArgs;
use crate::output::{Table, csv_record, enum_label, rfc3339, short_time, timestamp};

/// Settings of `snapkeeper compliance`.
#[derive(clap::Args, Debug, Clone)]
pub struct ComplianceArgs {
    /// Window in days for policies without a known cadence (1 to 365) [service default: 2].
    #[arg(long)]
    pub days: Option<i32>,
    /// Only volumes of projects in this Keystone domain (the seed's tenant_id).
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// Only volumes of this Keystone project.
    #[arg(long)]
    pub project_id: Option<String>,
    /// Only rows of this policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// Only rows in this state (repeatable).
    #[arg(long = "status", value_enum)]
    pub statuses: Vec<Judgement>,
    /// Only rows of this volume.
    #[arg(long)]
    pub volume_id: Option<String>,
    /// Only rows of this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only rows whose last good snapshot is at or after this instant (RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub last_good_after: Option<DateTime<Utc>>,
    /// Only rows whose last good snapshot is before this instant (RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub last_good_before: Option<DateTime<Utc>>,
    /// Row order.
    #[arg(long, value_enum, default_value_t = Order::Severity)]
    pub order_by: Order,
    /// Reverse the order.
    #[arg(long)]
    pub descending: bool,
    /// Also show roll-ups by domain, project and policy.
    #[arg(long)]
    pub rollups: bool,
    /// Also show manual snapshots (not made by Snapkeeper) of the matching projects.
    #[arg(long)]
    pub manual_snapshots: bool,
    /// Most rows to fetch; all when absent.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON (rows, summary and whatever else was asked for).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the rows as CSV.
    #[arg(long)]
    pub csv: bool,
    /// How to reach audit-svc.
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// Compliance state filter.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// A good snapshot exists for the latest slot past its grace.
    Compliant,
    /// Enrolled after that slot.
    Pending,
    /// The latest attempt was blocked by quota.
    QuotaBlocked,
    /// The snapshot for that slot is missing.
    Missing,
    /// An active exclusion applies.
    Excluded,
}

/// Row order.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// quota_blocked, missing, compliant, pending, excluded; oldest snapshot first.
    Severity,
    /// By volume name.
    VolumeName,
    /// By project name.
    ProjectName,
    /// By policy name.
    PolicyName,
    /// By last good snapshot, none first.
    LastSnapshotAt,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|err| format!("{err}; expected RFC 3339, e.g. 2026-02-15T00:00:00Z"))
}

impl ComplianceArgs {
    fn request(&self, page_size: usize, page_token: String) -> pb::GetComplianceRequest {
        let last_good =
            (self.last_good_after.is_some() || self.last_good_before.is_some()).then(|| pb::TimeRange {
                start: self.last_good_after.map(timestamp),
                end: self.last_good_before.map(timestamp),
            });
        pb::GetComplianceRequest {
            days: self.days,
            tenant_id: self.tenant_id.clone(),
            project_id: self.project_id.clone(),
            policy: self.policy.clone(),
            statuses: self
                .statuses
                .iter()
                .map(|judgement| {
                    match judgement {
                        Judgement::Compliant => pb::ComplianceStatus::Compliant,
                        Judgement::Pending => pb::ComplianceStatus::Pending,
                        Judgement::QuotaBlocked => pb::ComplianceStatus::QuotaBlocked,
                        Judgement::Missing => pb::ComplianceStatus::Missing,
                        Judgement::Excluded => pb::ComplianceStatus::Excluded,
                    }
                    .into()
                })
                .collect(),
            volume_id: self.volume_id.clone(),
            last_good_snapshot: last_good,
            region: self.region.clone(),
            order_by: match self.order_by {
                Order::Severity => pb::ComplianceOrder::Severity,
                Order::VolumeName => pb::ComplianceOrder::VolumeName,
                Order::ProjectName => pb::ComplianceOrder::ProjectName,
                Order::PolicyName => pb::ComplianceOrder::PolicyName,
                Order::LastSnapshotAt => pb::ComplianceOrder::LastSnapshotAt,
            }
            .into(),
            descending: self.descending,
            include_rollups: self.rollups,
            include_manual_snapshots: self.manual_snapshots,
            manual_snapshots_limit: 1000,
            page_size: i32::try_from(page_size.min(1000)).unwrap_or(1000),
            page_token,
        }
    }
}

/// One compliance row as printed in CSV and JSON (the seed's fields plus the cadence-aware ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Judgement.
    pub status: String,
    /// True when compliant.
    pub compliant: bool,
    /// Cinder volume id.
    pub volume_id: String,
    /// Volume name.
    pub volume_name: String,
    /// Volume type.
    pub volume_type: String,
    /// Keystone domain id (the seed's tenant_id).
    pub tenant_id: String,
    /// Keystone domain name.
    pub tenant_name: String,
    /// Keystone project id.
    pub project_id: String,
    /// Keystone project name.
    pub project_name: String,
    /// Nova server id.
    pub vm_id: String,
    /// Nova server name.
    pub vm_name: String,
    /// Policy.
    pub policy_name: String,
    /// Human-readable schedule.
    pub policy_cadence: String,
    /// Retention count.
    pub retention_count: i32,
    /// Our available snapshots.
    pub snapshot_count: i32,
    /// Newest snapshot of ours in any state but deleted.
    pub last_snapshot_at: String,
    /// Newest available snapshot of ours.
    pub last_good_snapshot_at: String,
    /// Slot judged.
    pub judged_slot: String,
    /// Next slot.
    pub next_due_at: String,
    /// Why.
    pub reason: String,
    /// Region.
    pub region: String,
    /// First seen enrolled.
    pub enrolled_at: String,
}

/// Column titles of the CSV output, in [`Row::csv_fields`] order.
pub const CSV_HEADER: [&str; 22] = [
    "status",
    "compliant",
    "volume_id",
    "volume_name",
    "volume_type",
    "tenant_id",
    "tenant_name",
    "project_id",
    "project_name",
    "vm_id",
    "vm_name",
    "policy_name",
    "policy_cadence",
    "retention_count",
    "snapshot_count",
    "last_snapshot_at",
    "last_good_snapshot_at",
    "judged_slot",
    "next_due_at",
    "reason",
    "region",
    "enrolled_at",
];

impl Row {
    /// The row of the contract, times in RFC 3339 UTC.
    pub fn from_wire(row: &pb::ComplianceRow) -> Self {
        Self {
            status: enum_label(row.status().as_str_name(), "COMPLIANCE_STATUS_"),
            compliant: row.compliant,
            volume_id: row.volume_id.clone(),
            volume_name: row.volume_name.clone(),
            volume_type: row.volume_type.clone(),
            tenant_id: row.tenant_id.clone(),
            tenant_name: row.tenant_name.clone(),
            project_id: row.project_id.clone(),
            project_name: row.project_name.clone(),
            vm_id: row.vm_id.clone(),
            vm_name: row.vm_name.clone(),
            policy_name: row.policy_name.clone(),
            policy_cadence: row.policy_cadence.clone(),
            retention_count: row.retention_count,
            snapshot_count: row.snapshot_count,
            last_snapshot_at: rfc3339(row.last_snapshot_at.as_ref()),
            last_good_snapshot_at: rfc3339(row.last_good_snapshot_at.as_ref()),
            judged_slot: rfc3339(row.judged_slot.as_ref()),
            next_due_at: rfc3339(row.next_due_at.as_ref()),
            reason: row.reason.clone(),
            region: row.region.clone(),
            enrolled_at: rfc3339(row.enrolled_at.as_ref()),
        }
    }

    /// The fields in [`CSV_HEADER`] order.
    pub fn csv_fields(&self) -> [String; 22] {
        [
            self.status.clone(),
            self.compliant.to_string(),
            self.volume_id.clone(),
            self.volume_name.clone(),
            self.volume_type.clone(),
            self.tenant_id.clone(),
            self.tenant_name.clone(),
            self.project_id.clone(),
            self.project_name.clone(),
            self.vm_id.clone(),
            self.vm_name.clone(),
            self.policy_name.clone(),
            self.policy_cadence.clone(),
            self.retention_count.to_string(),
            self.snapshot_count.to_string(),
            self.last_snapshot_at.clone(),
            self.last_good_snapshot_at.clone(),
            self.judged_slot.clone(),
            self.next_due_at.clone(),
            self.reason.clone(),
            self.region.clone(),
            self.enrolled_at.clone(),
        ]
    }
}

/// Everything fetched: the rows of every page, and the first page's summary and extras (the
/// contract computes them over every matching row).
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Rows in the requested order.
    pub rows: Vec<pb::ComplianceRow>,
    /// The first page (summary, roll-ups, manual snapshots; its rows moved to `rows`).
    pub first: pb::GetComplianceResponse,
}

/// Runs `snapkeeper compliance`.
pub async fn report(args: &ComplianceArgs) -> anyhow::Result<()> {
    check_args(args)?;
    let fetched = fetch(args).await?;
    if args.csv {
        print!("{}", csv(&fetched.rows));
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&as_json(&fetched))?);
    } else {
        print!("{}", render(&fetched));
    }
    Ok(())
}

async fn fetch(args: &ComplianceArgs) -> anyhow::Result<Fetched> {
    let mut audit = args.services.audit()?;
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut fetched = Fetched::default();
    let mut page_token = String::new();
    let mut first = true;
    while fetched.rows.len() < limit {
        let request = args.request(limit - fetched.rows.len(), page_token);
        let mut page = audit
            .client
            .get_compliance(request)
            .await
            .map_err(|status| audit.target.failed("GetCompliance", &status))?
            .into_inner();
        fetched.rows.append(&mut page.rows);
        page_token = std::mem::take(&mut page.next_page_token);
        if first {
            fetched.first = page;
            first = false;
        }
        if page_token.is_empty() {
            break;
        }
    }
    fetched.rows.truncate(limit);
    Ok(fetched)
}

/// The rows as CSV with a header line.
pub fn csv(rows: &[pb::ComplianceRow]) -> String {
    let mut out = csv_record(&CSV_HEADER);
    for row in rows {
        out.push_str(&csv_record(&Row::from_wire(row).csv_fields()));
    }
    out
}

fn summary_json(summary: &pb::ComplianceSummary) -> serde_json::Value {
    json!({
        "compliant": summary.compliant,
        "noncompliant": summary.noncompliant,
        "pending": summary.pending,
        "quota_blocked": summary.quota_blocked,
        "excluded": summary.excluded,
        "total": summary.total,
        "compliance_pct": summary.compliance_pct,
        "days": summary.days,
        "policies": summary.policies,
    })
}

fn as_json(fetched: &Fetched) -> serde_json::Value {
    let first = &fetched.first;
    let rollups = |groups: &[pb::ComplianceRollup]| {
        groups
            .iter()
            .map(|group| {
                json!({
                    "key": group.key,
                    "name": group.name,
                    "summary": group.summary.as_ref().map(summary_json),
                })
            })
            .collect::<Vec<_>>()
    };
    let manual: Vec<serde_json::Value> = first
        .manual_snapshots
        .iter()
        .map(|snapshot| {
            json!({
                "snapshot_id": snapshot.snapshot_id,
                "snapshot_name": snapshot.snapshot_name,
                "volume_id": snapshot.volume_id,
                "volume_name": snapshot.volume_name,
                "project_id": snapshot.project_id,
                "project_name": snapshot.project_name,
                "tenant_id": snapshot.tenant_id,
                "tenant_name": snapshot.tenant_name,
                "size_gb": snapshot.size_gb,
                "status": snapshot.status,
                "created_at": rfc3339(snapshot.created_at.as_ref()),
            })
        })
        .collect();
    json!({
        "evaluated_at": rfc3339(first.evaluated_at.as_ref()),
        "inventory_synced_at": rfc3339(first.inventory_synced_at.as_ref()),
        "total_count": first.total_count,
        "summary": first.summary.as_ref().map(summary_json),
        "rows": fetched.rows.iter().map(Row::from_wire).collect::<Vec<_>>(),
        "by_domain": rollups(&first.by_domain),
        "by_project": rollups(&first.by_project),
        "by_policy": rollups(&first.by_policy),
        "manual_snapshots": manual,
        "manual_snapshots_total": first.manual_snapshots_total,
    })
}

fn summary_line(summary: &pb::ComplianceSummary) -> String {
    format!(
        "{:.1}% compliant: {} compliant, {} missing, {} quota-blocked, {} pending, {} excluded of {} rows \
         ({} policies; window {} days for policies without cadence)",
        summary.compliance_pct,
        summary.compliant,
        summary.noncompliant,
        summary.quota_blocked,
        summary.pending,
        summary.excluded,
        summary.total,
        summary.policies,
        summary.days
    )
}

/// Tables for people: the rows, the summary, and roll-ups and manual snapshots when fetched.
pub fn render(fetched: &Fetched) -> String {
    let first = &fetched.first;
    let mut out = String::new();
    if fetched.rows.is_empty() {
        out.push_str("no rows match\n");
    } else {
        let mut table = Table::new(&[
            "STATUS",
            "VOLUME",
            "VOLUME ID",
            "PROJECT",
            "DOMAIN",
            "POLICY",
            "SNAPSHOTS",
            "LAST GOOD (UTC)",
            "NEXT DUE (UTC)",
            "REASON",
        ]);
        for row in &fetched.rows {
            table.row(vec![
                enum_label(row.status().as_str_name(), "COMPLIANCE_STATUS_"),
                row.volume_name.clone(),
                row.volume_id.clone(),
                row.project_name.clone(),
                row.tenant_name.clone(),
                row.policy_name.clone(),
                format!("{}/{}", row.snapshot_count, row.retention_count),
                short_time(row.last_good_snapshot_at.as_ref()),
                short_time(row.next_due_at.as_ref()),
                row.reason.clone(),
            ]);
        }
        out.push_str(&table.render());
    }
    if let Some(summary) = &first.summary {
        out.push('\n');
        out.push_str(&summary_line(summary));
        out.push('\n');
    }
    let shown = fetched.rows.len();
    if i64::from(first.total_count) > i64::try_from(shown).unwrap_or(i64::MAX) {
        let _ = writeln!(out, "showing {shown} of {} rows (--limit)", first.total_count);
    }
    let synced = rfc3339(first.inventory_synced_at.as_ref());
    let _ = writeln!(
        out,
        "evaluated {}; inventory synced {}",
        rfc3339(first.evaluated_at.as_ref()),
        if synced.is_empty() { "never" } else { synced.as_str() }
    );
    for (title, groups) in
        [("domain", &first.by_domain), ("project", &first.by_project), ("policy", &first.by_policy)]
    {
        if groups.is_empty() {
            continue;
        }
        let mut table = Table::new(&[
            &title.to_ascii_uppercase(),
            "COMPLIANT %",
            "COMPLIANT",
            "MISSING",
            "QUOTA",
            "PENDING",
            "EXCLUDED",
            "TOTAL",
        ]);
        for group in groups {
            let s = group.summary.unwrap_or_default();
            table.row(vec![
                group.name.clone(),
                format!("{:.1}", s.compliance_pct),
                s.compliant.to_string(),
                s.noncompliant.to_string(),
                s.quota_blocked.to_string(),
                s.pending.to_string(),
                s.excluded.to_string(),
                s.total.to_string(),
            ]);
        }
        let _ = writeln!(out, "\nby {title}");
        out.push_str(&table.render());
    }
    if !first.manual_snapshots.is_empty() {
        let mut table =
            Table::new(&["SNAPSHOT", "NAME", "VOLUME", "PROJECT", "GiB", "STATUS", "CREATED (UTC)"]);
        for snapshot in &first.manual_snapshots {
            table.row(vec![
                snapshot.snapshot_id.clone(),
                snapshot.snapshot_name.clone(),
                snapshot.volume_name.clone(),
                snapshot.project_name.clone(),
                snapshot.size_gb.to_string(),
                snapshot.status.clone(),
                short_time(snapshot.created_at.as_ref()),
            ]);
        }
        let _ = writeln!(
            out,
            "\nmanual snapshots (not made by Snapkeeper): {} of {}",
            first.manual_snapshots.len(),
            first.manual_snapshots_total
        );
        out.push_str(&table.render());
    }
    out
}

/// Checks `--days` before calling (the service would refuse it naming the field anyway).
pub fn check_args(args: &ComplianceArgs) -> anyhow::Result<()> {
    if let Some(days) = args.days {
        anyhow::ensure!((1..=365).contains(&days), "--days must be from 1 to 365, not {days}");
    }
    if let (Some(after), Some(before)) = (args.last_good_after, args.last_good_before) {
        anyhow::ensure!(after < before, "--last-good-after must be before --last-good-before");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use snapkeeper_proto::prost_types::Timestamp;

    use super::*;

    fn row() -> pb::ComplianceRow {
        pb::ComplianceRow {
            volume_id: "v1".into(),
            volume_name: "db, primary".into(),
            project_name: "web".into(),
            tenant_name: "acme".into(),
            policy_name: "daily_5".into(),
            retention_count: 5,
            snapshot_count: 0,
            status: pb::ComplianceStatus::Missing.into(),
            reason: "no snapshot for slot 2026-02-15T00:00Z".into(),
            next_due_at: Some(Timestamp { seconds: 1_771_200_000, nanos: 0 }),
            ..pb::ComplianceRow::default()
        }
    }

    #[test]
    fn csv_has_the_header_and_quotes_names_with_commas() {
        let text = csv(&[row()]);
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
        let line = lines.next().unwrap();
        assert!(line.starts_with("missing,false,v1,\"db, primary\","), "{line}");
        assert!(line.contains(",2026-02-16T00:00:00Z,no snapshot for slot 2026-02-15T00:00Z,"), "{line}");
    }

    #[test]
    fn table_ends_with_the_summary() {
        let fetched = Fetched {
            rows: vec![row()],
            first: pb::GetComplianceResponse {
                total_count: 1,
                summary: Some(pb::ComplianceSummary {
                    noncompliant: 1,
                    total: 1,
                    days: 2,
                    policies: 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        let text = render(&fetched);
        assert!(text.contains("missing  db, primary  v1"), "{text}");
        assert!(text.contains("0.0% compliant: 0 compliant, 1 missing"), "{text}");
        assert!(text.contains("inventory synced never"), "{text}");
    }

    #[test]
    fn filters_reach_the_request() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ComplianceArgs,
        }
        let args = Wrapper::parse_from([
            "test",
            "--status",
            "quota-blocked",
            "--status",
            "missing",
            "--policy",
            "daily_5",
            "--last-good-after",
            "2026-02-01T00:00:00Z",
            "--order-by",
            "project-name",
        ])
        .args;
        check_args(&args).unwrap();
        let request = args.request(5000, String::new());
        assert_eq!(request.statuses, [3, 4]);
        assert_eq!(request.policy.as_deref(), Some("daily_5"));
        assert_eq!(request.page_size, 1000);
        assert_eq!(request.order_by(), pb::ComplianceOrder::ProjectName);
        assert!(request.last_good_snapshot.unwrap().end.is_none());
    }
}
