//! What one benchmark run measured, the latency bound it is compared with, readings of
//! `/proc/<pid>` and the text and Markdown tables the figures are printed as.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The simulator's binary name.
pub(crate) const SIMULATOR: &str = "openstack-sim";

/// Memory and CPU of one service process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// Peak resident set (`VmHWM`), KiB.
    pub(crate) peak_rss_kib: u64,
    /// User plus system CPU seconds.
    pub(crate) cpu_secs: f64,
}

/// `VmHWM` of a `/proc/<pid>/status` text, KiB.
pub(crate) fn peak_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a `/proc/<pid>/stat` text, in clock ticks. The command name (field 2) may
/// hold spaces, so fields are counted after its closing parenthesis.
pub(crate) fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Listings made once per project (identity-svc checks the service user's roles in each
/// project it issues credentials for): they run concurrently like any other per-project call.
const PER_PROJECT_LISTINGS: [&str; 1] = ["keystone.role_assignments.list"];

/// Whether an operation is a cloud-wide listing: its pages follow each other, so it is serial
/// in a run.
fn is_listing(operation: &str) -> bool {
    operation.rsplit('.').next() == Some("list") && !PER_PROJECT_LISTINGS.contains(&operation)
}

/// The latency bound of a run: listings are serial, every other call shares the concurrency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    /// Listing calls.
    pub(crate) serial_calls: u64,
    /// Every other call.
    pub(crate) parallel_calls: u64,
    /// Calls on the critical path: serial + parallel / concurrency.
    pub(crate) critical_calls: f64,
    /// critical_calls x latency.
    pub(crate) time: Duration,
}

/// The bound of the calls `by_operation` at `latency` with `concurrency` projects at once.
pub(crate) fn bound(by_operation: &BTreeMap<String, u64>, latency: Duration, concurrency: u32) -> Bound {
    let serial_calls: u64 = by_operation.iter().filter(|(op, _)| is_listing(op)).map(|(_, n)| n).sum();
    let parallel_calls: u64 = by_operation.iter().filter(|(op, _)| !is_listing(op)).map(|(_, n)| n).sum();
    let critical_calls = serial_calls as f64 + parallel_calls as f64 / f64::from(concurrency.max(1));
    Bound { serial_calls, parallel_calls, critical_calls, time: latency.mul_f64(critical_calls) }
}

/// One measured run.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// `sqlite` or `postgres`.
    pub(crate) backend: String,
    /// Tenant projects.
    pub(crate) projects: usize,
    /// Volumes.
    pub(crate) volumes: usize,
    /// Added latency per OpenStack call.
    pub(crate) latency: Duration,
    /// AUTO_SNAPSHOT_CONCURRENCY.
    pub(crate) concurrency: u32,
    /// SNAPSHOT_OPENSTACK_RPS (0 = no limit).
    pub(crate) openstack_rps: u32,
    /// Final run status.
    pub(crate) status: String,
    /// StartRun until the run was seen finished.
    pub(crate) wall: Duration,
    /// Seconds of each step, by step name.
    pub(crate) steps: Vec<(String, f64)>,
    /// OpenStack calls by operation during the run.
    pub(crate) calls: BTreeMap<String, u64>,
    /// Due pairs.
    pub(crate) due: i64,
    /// Snapshots created.
    pub(crate) created: i64,
    /// Snapshots deleted by retention.
    pub(crate) deleted: i64,
    /// Failed creates and deletes.
    pub(crate) failed: i64,
    /// Snapshot records audit-svc holds once the outbox is drained.
    pub(crate) audit_records: i64,
    /// From the run's end until audit-svc held every record.
    pub(crate) audit_drain: Duration,
    /// Usage by service name.
    pub(crate) usage: BTreeMap<String, Usage>,
}

impl Measurement {
    /// The run's latency bound.
    pub(crate) fn bound(&self) -> Bound {
        bound(&self.calls, self.latency, self.concurrency)
    }

    /// bound / wall.
    pub(crate) fn efficiency(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall == 0.0 { 0.0 } else { self.bound().time.as_secs_f64() / wall }
    }

    /// Every OpenStack call of the run.
    pub(crate) fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Largest peak RSS of the suite's services; the simulator stands in for the cloud, so it
    /// is reported but not held to the services' target.
    pub(crate) fn max_rss_mib(&self) -> f64 {
        let services = self.usage.iter().filter(|(name, _)| name.as_str() != SIMULATOR);
        services.map(|(_, u)| u.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
}

/// The snapshot-svc request rate limit in words.
fn rate(rps: u32) -> String {
    if rps == 0 { "no rate limit".to_owned() } else { format!("{rps} requests/s") }
}

/// The full report of one run, for a terminal.
pub(crate) fn describe(m: &Measurement) -> String {
    let b = m.bound();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "== {} projects x {} volumes on {} ({} ms per call, concurrency {}, {}): {}",
        m.projects,
        m.volumes,
        m.backend,
        m.latency.as_millis(),
        m.concurrency,
        rate(m.openstack_rps),
        m.status
    );
    let _ = writeln!(
        text,
        "wall {:.2} s; bound {:.2} s ({} listing + {} other calls / {} = {:.0} calls on the critical path); efficiency {:.2} (wall {:.2}x bound)",
        m.wall.as_secs_f64(),
        b.time.as_secs_f64(),
        b.serial_calls,
        b.parallel_calls,
        m.concurrency,
        b.critical_calls,
        m.efficiency(),
        1.0 / m.efficiency().max(f64::MIN_POSITIVE)
    );
    let steps: Vec<String> = m.steps.iter().map(|(name, secs)| format!("{name} {secs:.2} s")).collect();
    let _ = writeln!(text, "steps: {}", steps.join(", "));
    let _ = writeln!(
        text,
        "due {}, created {}, deleted {}, failed {}; audit records {} (drained {:.2} s after the run)",
        m.due,
        m.created,
        m.deleted,
        m.failed,
        m.audit_records,
        m.audit_drain.as_secs_f64()
    );
    let _ = writeln!(text, "OpenStack calls: {} in all", m.total_calls());
    for (operation, count) in &m.calls {
        let _ = writeln!(text, "  {operation:<34} {count:>8}");
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let _ = writeln!(
        text,
        "targets: wall within 1.25x of bound {} ({:.2}x); every service under 64 MiB RSS {} (largest {:.1} MiB; the simulator is the cloud, not held to it)",
        verdict(m.efficiency() >= 0.8),
        1.0 / m.efficiency().max(f64::MIN_POSITIVE),
        verdict(m.max_rss_mib() < 64.0),
        m.max_rss_mib()
    );
    let _ = writeln!(text, "service          peak RSS MiB   CPU s");
    for (name, usage) in &m.usage {
        let _ = writeln!(
            text,
            "  {name:<14} {:>12.1} {:>7.2}",
            usage.peak_rss_kib as f64 / 1024.0,
            usage.cpu_secs
        );
    }
    text
}

/// How wall time and calls grow from the first measurement of a backend to the others.
pub(crate) fn growth(all: &[Measurement]) -> String {
    let mut text = String::new();
    let mut firsts: BTreeMap<&str, &Measurement> = BTreeMap::new();
    for m in all {
        let first = *firsts.entry(m.backend.as_str()).or_insert(m);
        let ratio = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
        let _ = writeln!(
            text,
            "{:<8} {:>7} volumes: volumes x{:<6.1} wall x{:<6.2} calls x{:<6.2} calls/(projects+created) {:.2}",
            m.backend,
            m.volumes,
            ratio(m.volumes as f64, first.volumes as f64),
            ratio(m.wall.as_secs_f64(), first.wall.as_secs_f64()),
            ratio(m.total_calls() as f64, first.total_calls() as f64),
            ratio(m.total_calls() as f64, (m.projects as i64 + m.created) as f64),
        );
    }
    text
}

/// The Markdown table of all measurements.
pub(crate) fn markdown_table(all: &[Measurement]) -> String {
    let services: Vec<String> = {
        let mut names: Vec<String> = all.iter().flat_map(|m| m.usage.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    };
    let mut text = String::from(
        "| backend | projects | volumes | rate limit | status | wall s | bound s | efficiency | calls | calls / (projects + created) | due | created | deleted | audit records |",
    );
    for name in &services {
        let _ = write!(text, " {name} RSS MiB / CPU s |");
    }
    text.push('\n');
    text.push_str("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for _ in &services {
        text.push_str("---:|");
    }
    text.push('\n');
    for m in all {
        let _ = write!(
            text,
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {:.2} | {} | {} | {} | {} |",
            m.backend,
            m.projects,
            m.volumes,
            rate(m.openstack_rps),
            m.status,
            m.wall.as_secs_f64(),
            m.bound().time.as_secs_f64(),
            m.efficiency(),
            m.total_calls(),
            m.total_calls() as f64 / (m.projects as i64 + m.created).max(1) as f64,
            m.due,
            m.created,
            m.deleted,
            m.audit_records,
        );
        for name in &services {
            match m.usage.get(name) {
                Some(u) => {
                    let _ = write!(text, " {:.1} / {:.1} |", u.peak_rss_kib as f64 / 1024.0, u.cpu_secs);
                }
                None => text.push_str(" - |"),
            }
        }
        text.push('\n');
    }
    text
}

/// The Markdown list of calls by operation per measurement.
pub(crate) fn markdown_calls(all: &[Measurement]) -> String {
    let mut text = String::new();
    for m in all {
        let calls: Vec<String> = m.calls.iter().map(|(op, n)| format!("`{op}` {n}")).collect();
        let steps: Vec<String> = m.steps.iter().map(|(name, secs)| format!("{name} {secs:.1} s")).collect();
        let _ = writeln!(
            text,
            "- {} / {} volumes: {}; steps: {}",
            m.backend,
            m.volumes,
            calls.join(", "),
            steps.join(", ")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_parse() {
        let status = "Name:\tpolicy-svc\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(peak_rss_kib(status), Some(23_456));
        assert_eq!(peak_rss_kib("Name: x\n"), None);
        let stat = "4242 (snap shot) S 1 4242 4242 0 -1 4194560 300 0 0 0 150 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn listings_are_serial_and_the_rest_shares_the_concurrency() {
        let calls = BTreeMap::from([
            ("cinder.volumes.list".to_owned(), 4),
            ("cinder.snapshots.create".to_owned(), 80),
            ("cinder.snapshots.delete".to_owned(), 10),
            ("keystone.role_assignments.list".to_owned(), 10),
        ]);
        let b = bound(&calls, Duration::from_millis(20), 10);
        assert_eq!((b.serial_calls, b.parallel_calls), (4, 100));
        assert!((b.critical_calls - 14.0).abs() < 1e-9);
        assert_eq!(b.time, Duration::from_millis(280));
    }
}
