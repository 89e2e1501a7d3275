//! `snapkeeper forecast`: whether the snapshots due within a horizon fit each project's Cinder
//! quota with a safety margin (snapshot-svc's ForecastQuota; reads only).

use std::fmt::Write as _;

use serde_json::{Value, json};
use snapkeeper_proto::prost_types::Duration as ProtoDuration;
use snapkeeper_proto::snapshot::v1 as pb;

use crate::clients::ServiceArgs;
use crate::output::{Table, duration_seconds, enum_label, human_duration, rfc3339};

/// Settings of `snapkeeper forecast`.
#[derive(clap::Args, Debug, Clone)]
pub struct ForecastArgs {
    /// Extra room required on top of what is needed, percent 0 to 100 [service default: 10].
    #[arg(long)]
    pub safety_margin_pct: Option<f64>,
    /// How far ahead to count slots, e.g. `24h`, `7d`, `1d12h` (1 hour to 31 days) [service default: 24h].
    #[arg(long, value_parser = parse_horizon)]
    pub horizon: Option<ProtoDuration>,
    /// Only this Keystone project id (repeatable); every project with enrolled volumes when absent.
    #[arg(long = "project", value_name = "ID")]
    pub projects: Vec<String>,
    /// Region; the service's default region when absent.
    #[arg(long)]
    pub region: Option<String>,
    /// Also list the projects whose quota suffices (by default only a count).
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How to reach snapshot-svc.
    #[command(flatten)]
    pub services: ServiceArgs,
}

fn parse_horizon(text: &str) -> Result<ProtoDuration, String> {
    let parsed = policy_svc::schedule::parse_duration(text).map_err(|err| err.to_string())?;
    let seconds = parsed.num_seconds();
    if !(3600..=31 * 86_400).contains(&seconds) {
        return Err("must be from 1h to 31d".to_owned());
    }
    Ok(ProtoDuration { seconds, nanos: 0 })
}

/// Runs `snapkeeper forecast`.
pub async fn forecast(args: &ForecastArgs) -> anyhow::Result<()> {
    if let Some(margin) = args.safety_margin_pct {
        anyhow::ensure!((0.0..=100.0).contains(&margin), "--safety-margin-pct must be from 0 to 100");
    }
    let mut snapshot = args.services.snapshot()?;
    let request = pb::ForecastQuotaRequest {
        safety_margin_pct: args.safety_margin_pct,
        horizon: args.horizon,
        project_ids: args.projects.clone(),
        region: args.region.clone().unwrap_or_default(),
    };
    let response = snapshot
        .client
        .forecast_quota(request)
        .await
        .map_err(|status| snapshot.target.failed("ForecastQuota", &status))?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&as_json(&response))?);
    } else {
        print!("{}", render(&response, args.all));
    }
    Ok(())
}

fn severity(value: pb::ForecastSeverity) -> String {
    enum_label(value.as_str_name(), "FORECAST_SEVERITY_")
}

fn resource_name(resource: &pb::ResourceForecast) -> String {
    let base = match resource.resource() {
        pb::QuotaResource::Gigabytes | pb::QuotaResource::VolumeTypeGigabytes => "gigabytes",
        pb::QuotaResource::Snapshots | pb::QuotaResource::VolumeTypeSnapshots => "snapshots",
        pb::QuotaResource::Unspecified => "unknown",
    };
    if resource.volume_type.is_empty() { base.to_owned() } else { format!("{base}_{}", resource.volume_type) }
}

fn limit_text(limit: i64) -> String {
    if limit < 0 { "unlimited".to_owned() } else { limit.to_string() }
}

/// Tables for people: one row per quota resource of each project at risk (and of the others with
/// `all`), then the totals.
pub fn render(response: &pb::ForecastQuotaResponse, all: bool) -> String {
    let mut table = Table::new(&[
        "SEVERITY",
        "PROJECT",
        "DOMAIN",
        "VOLUMES",
        "RESOURCE",
        "USED/LIMIT",
        "NEEDED",
        "WITH MARGIN",
        "AFTER %",
        "SHORTFALL",
        "NOTE",
    ]);
    let listed = response.alerts.iter().chain(if all { response.ok_projects.as_slice() } else { &[] });
    for project in listed {
        if project.resources.is_empty() {
            table.row(vec![
                severity(project.severity()),
                project.project_name.clone(),
                project.domain_name.clone(),
                project.enrolled_volumes.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                project.error.clone(),
            ]);
        }
        for resource in &project.resources {
            table.row(vec![
                severity(resource.severity()),
                project.project_name.clone(),
                project.domain_name.clone(),
                project.enrolled_volumes.to_string(),
                resource_name(resource),
                format!("{}/{}", resource.used, limit_text(resource.limit)),
                resource.needed.to_string(),
                resource.needed_with_margin.to_string(),
                if resource.limit < 0 {
                    "-".to_owned()
                } else {
                    format!("{:.1}", resource.pct_after_snapshots)
                },
                resource.shortfall.to_string(),
                project.error.clone(),
            ]);
        }
    }
    let mut out = String::new();
    if table.is_empty() {
        out.push_str("no project at risk\n");
    } else {
        out.push_str(&table.render());
    }
    if let Some(summary) = &response.summary {
        let _ = writeln!(
            out,
            "\n{} projects scanned, {} at risk ({} critical, {} warning), {} ok, {} quota reads failed; \
             {} enrolled volumes; horizon {}, safety margin {}%",
            summary.total_projects_scanned,
            summary.projects_at_risk,
            summary.critical_count,
            summary.warning_count,
            summary.projects_ok,
            summary.quota_fetch_failures,
            summary.total_snapshot_volumes,
            human_duration(duration_seconds(summary.horizon.as_ref())),
            summary.safety_margin_pct,
        );
    }
    let _ = writeln!(out, "computed {}", rfc3339(response.generated_at.as_ref()));
    out
}

fn project_json(project: &pb::ProjectForecast) -> Value {
    json!({
        "project_id": project.project_id,
        "project_name": project.project_name,
        "domain_id": project.domain_id,
        "domain_name": project.domain_name,
        "severity": severity(project.severity()),
        "enrolled_volumes": project.enrolled_volumes,
        "error": project.error,
        "resources": project.resources.iter().map(|r| json!({
            "resource": resource_name(r),
            "limit": r.limit,
            "used": r.used,
            "available": r.available,
            "needed": r.needed,
            "needed_with_margin": r.needed_with_margin,
            "pct_used": r.pct_used,
            "pct_after_snapshots": r.pct_after_snapshots,
            "shortfall": r.shortfall,
            "severity": severity(r.severity()),
        })).collect::<Vec<_>>(),
        "policies": project.policies.iter().map(|p| json!({
            "policy_name": p.policy_name,
            "slots_in_horizon": p.slots_in_horizon,
            "volumes": p.volumes,
            "snapshots_needed": p.snapshots_needed,
            "gigabytes_needed": p.gigabytes_needed,
            "snapshots_freed": p.snapshots_freed,
            "gigabytes_freed": p.gigabytes_freed,
        })).collect::<Vec<_>>(),
    })
}

fn as_json(response: &pb::ForecastQuotaResponse) -> Value {
    let summary = response.summary.as_ref().map(|s| {
        json!({
            "total_projects_scanned": s.total_projects_scanned,
            "projects_at_risk": s.projects_at_risk,
            "projects_ok": s.projects_ok,
            "critical_count": s.critical_count,
            "warning_count": s.warning_count,
            "total_snapshot_volumes": s.total_snapshot_volumes,
            "safety_margin_pct": s.safety_margin_pct,
            "horizon_seconds": duration_seconds(s.horizon.as_ref()),
            "quota_fetch_failures": s.quota_fetch_failures,
        })
    });
    json!({
        "generated_at": rfc3339(response.generated_at.as_ref()),
        "alerts": response.alerts.iter().map(project_json).collect::<Vec<_>>(),
        "ok_projects": response.ok_projects.iter().map(project_json).collect::<Vec<_>>(),
        "summary": summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_takes_the_policy_duration_syntax_within_bounds() {
        assert_eq!(parse_horizon("1d12h").unwrap().seconds, 129_600);
        assert!(parse_horizon("30m").is_err());
        assert!(parse_horizon("32d").is_err());
        assert!(parse_horizon("soon").is_err());
    }

    #[test]
    fn at_risk_projects_show_one_row_per_resource() {
        let response = pb::ForecastQuotaResponse {
            alerts: vec![pb::ProjectForecast {
                project_name: "finance".into(),
                domain_name: "acme".into(),
                severity: pb::ForecastSeverity::Critical.into(),
                enrolled_volumes: 4,
                resources: vec![pb::ResourceForecast {
                    resource: pb::QuotaResource::Snapshots.into(),
                    limit: 10,
                    used: 9,
                    needed: 4,
                    needed_with_margin: 5,
                    pct_after_snapshots: 130.0,
                    shortfall: 4,
                    severity: pb::ForecastSeverity::Critical.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ok_projects: vec![pb::ProjectForecast { project_name: "web".into(), ..Default::default() }],
            ..Default::default()
        };
        let text = render(&response, false);
        let row = text.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["critical", "finance", "acme", "4", "snapshots", "9/10", "4", "5", "130.0", "4"]
        );
        assert!(!text.contains("web"), "{text}");
        assert!(render(&response, true).contains("web"));
        assert_eq!(as_json(&response)["alerts"][0]["resources"][0]["shortfall"], 4);
    }
}
