//! How the CLI prints: aligned text tables for people, CSV and JSON for scripts, and the
//! conversions of contract values (enum names, timestamps, durations) into short readable text.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use snapkeeper_proto::prost_types::{Duration as ProtoDuration, Timestamp};

/// Rows of text under a header, printed with columns padded to the widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Appends one row (missing cells print empty, extra cells are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, columns separated by two spaces, no trailing blanks.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                let _ = write!(text, "{cell:<width$}  ");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One CSV record (RFC 4180): fields with a comma, quote or line break are quoted, quotes doubled.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let field = field.as_ref();
        if field.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line.push_str("\r\n");
    line
}

/// The readable part of a contract enum value: `RUN_STATUS_QUOTA_BLOCKED` with prefix
/// `RUN_STATUS_` gives `quota_blocked`.
pub fn enum_label(full_name: &str, prefix: &str) -> String {
    full_name.strip_prefix(prefix).unwrap_or(full_name).to_ascii_lowercase()
}

/// A contract timestamp as a UTC instant; `None` when absent or out of range.
pub fn instant(timestamp: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}

/// A UTC instant as a contract timestamp.
pub fn timestamp(instant: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: instant.timestamp(), nanos: instant.timestamp_subsec_nanos() as i32 }
}

/// RFC 3339 in UTC to the second (`2026-02-15T10:00:00Z`); empty when absent.
pub fn rfc3339(timestamp: Option<&Timestamp>) -> String {
    instant(timestamp).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

/// A short UTC time for tables (`2026-02-15 10:00`); `-` when absent.
pub fn short_time(timestamp: Option<&Timestamp>) -> String {
    instant(timestamp).map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

/// Seconds as `1h02m`, `3m05s` or `42s`.
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (hours, minutes, secs) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// A contract duration in whole seconds (negative parts count as zero).
pub fn duration_seconds(duration: Option<&ProtoDuration>) -> i64 {
    duration.map_or(0, |d| d.seconds.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_trims_line_ends() {
        let mut table = Table::new(&["ID", "STATUS"]);
        table.row(vec!["1".into(), "completed".into()]);
        table.row(vec!["12345".into(), "-".into()]);
        assert_eq!(table.render(), "ID     STATUS\n1      completed\n12345  -\n");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_record(&["a", "b,c", "say \"hi\"", ""]), "a,\"b,c\",\"say \"\"hi\"\"\",\r\n");
    }

    #[test]
    fn enum_labels_and_times_read_well() {
        assert_eq!(enum_label("RUN_STATUS_QUOTA_BLOCKED", "RUN_STATUS_"), "quota_blocked");
        let at = Timestamp { seconds: 1_771_149_600, nanos: 0 };
        assert_eq!(rfc3339(Some(&at)), "2026-02-15T10:00:00Z");
        assert_eq!(short_time(Some(&at)), "2026-02-15 10:00");
        assert_eq!(short_time(None), "-");
        assert_eq!(human_duration(3725), "1h02m");
        assert_eq!(human_duration(185), "3m05s");
        assert_eq!(human_duration(-3), "0s");
    }
}
