#![allow(clippy::unwrap_used)]
//! The configuration reference in `docs/operations.md` is generated from the same clap
//! definitions that print each binary's `--help`, so it cannot drift: this test fails when the
//! generated section differs, and
//! `SNAPKEEPER_UPDATE_DOCS=1 cargo nextest run -p snapkeeper -E 'binary(operations_doc)'`
//! rewrites it.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args as _, Command, CommandFactory as _};

const BEGIN: &str = "<!-- BEGIN configuration reference: generated from the binaries' clap definitions by snapkeeper/tests/operations_doc.rs -->";
const END: &str = "<!-- END configuration reference -->";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md")
}

/// One table row per option: environment variable, flag, default, and the first line of help.
fn table(command: &Command) -> String {
    let mut out = String::from("| variable | flag | default | meaning |\n| --- | --- | --- | --- |\n");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || arg.is_hide_set() {
            continue;
        }
        let env = arg.get_env().map_or_else(|| "-".to_owned(), |env| format!("`{}`", env.to_string_lossy()));
        let flag = match arg.get_long() {
            Some(long) => format!("`--{long}`"),
            None => format!("`{}` (argument)", id.to_ascii_uppercase()),
        };
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|value| value.to_string_lossy().into_owned()).collect();
        let default = if defaults.is_empty() { "-".to_owned() } else { format!("`{}`", defaults.join(",")) };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let first_line = help.lines().next().unwrap_or_default().replace('|', "\\|");
        let _ = writeln!(out, "| {env} | {flag} | {default} | {first_line} |");
    }
    out
}

fn generated() -> String {
    let binaries: [(&str, &str, Command); 7] = [
        ("policy-svc", "rules, catalog, assignments, exclusions", policy_svc::Config::command()),
        ("identity-svc", "service user, project-scoped credentials", identity_svc::Config::command()),
        ("snapshot-svc", "runs, scheduler, retention, quota", snapshot_svc::Config::command()),
        ("audit-svc", "records, inventory, compliance", audit_svc::Config::command()),
        ("gateway", "REST API, UI, auth", gateway::Config::command()),
        (
            "snapkeeper up",
            "the whole suite in one process",
            snapkeeper::up::UpArgs::augment_args(Command::new("up")),
        ),
        (
            "snapkeeper run, runs, compliance, policy, forecast",
            "how the CLI reaches the services",
            snapkeeper::clients::ServiceArgs::augment_args(Command::new("cli")),
        ),
    ];
    let mut out = format!("{BEGIN}\n");
    for (name, what, command) in binaries {
        let _ = write!(out, "\n#### `{name}` ({what})\n\n{}", table(&command));
    }
    out.push('\n');
    out.push_str(END);
    out
}

#[test]
fn configuration_reference_matches_the_binaries() {
    let path = doc_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find(BEGIN).expect("docs/operations.md has the BEGIN marker");
    let end = text.find(END).expect("docs/operations.md has the END marker") + END.len();
    let current = &text[start..end];
    let wanted = generated();
    if current == wanted {
        return;
    }
    if std::env::var("SNAPKEEPER_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{wanted}{}", &text[..start], &text[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "docs/operations.md's configuration reference is out of date with the binaries' options; \
         regenerate it with: SNAPKEEPER_UPDATE_DOCS=1 cargo nextest run -p snapkeeper -E 'binary(operations_doc)'"
    );
}
