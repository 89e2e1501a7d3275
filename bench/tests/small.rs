//! The benchmark cannot rot: at a small size (10 projects x 10 volumes, 5 ms per call) on SQLite
//! it completes with every due snapshot created. Timings are printed, never asserted. Needs the
//! service binaries next to this one (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_small_run_completes_with_every_due_snapshot_created() {
    let bench = env!("CARGO_BIN_EXE_snapkeeper-bench");
    let bin_dir = std::path::Path::new(bench).parent().unwrap();
    let output = Command::new(bench)
        .args(["--projects", "10", "--volumes", "10", "--latency-ms", "5", "--concurrency", "4"])
        .args(["--backends", "sqlite", "--timeout-secs", "120", "--check", "--bin-dir"])
        .arg(bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the bench failed:\n{stdout}\n{stderr}");
    let counts = stdout.lines().find(|l| l.starts_with("due ")).unwrap();
    let number = |label: &str| -> i64 {
        let after = counts.split(label).nth(1).unwrap().trim_start();
        after.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    // 10 x 10 volumes in 3 policies, all due; the bench's own check agrees with Cinder's count.
    assert_eq!(number("due "), 300, "{counts}");
    assert_eq!(number("created "), number("due "), "{counts}");
    let creates = stdout.lines().find(|l| l.trim_start().starts_with("cinder.snapshots.create")).unwrap();
    assert!(creates.ends_with(" 300"), "{creates}");
}
