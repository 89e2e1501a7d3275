//! Conversions between the services' protobuf values and the REST API's JSON values: timestamps
//! as RFC 3339 strings, enum values as the seed's lowercase words.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use prost_types::Timestamp;

use crate::error::ApiError;

/// A protobuf timestamp as RFC 3339 (UTC, seconds precision), `None` when absent or out of range.
pub(crate) fn time(timestamp: Option<&Timestamp>) -> Option<String> {
    to_datetime(timestamp).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// A protobuf timestamp as a chrono instant.
pub(crate) fn to_datetime(timestamp: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

/// A chrono instant as a protobuf timestamp.
pub(crate) fn timestamp(instant: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: instant.timestamp(), nanos: instant.timestamp_subsec_nanos() as i32 }
}

/// Parses a query or body time: RFC 3339, or a `YYYY-MM-DD` day (its midnight UTC, or the next
/// midnight when `end_of_day`, so a date range includes its last day).
pub(crate) fn parse_time(field: &str, text: &str, end_of_day: bool) -> Result<Timestamp, ApiError> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(timestamp(instant.with_timezone(&Utc)));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(field, "expected an RFC 3339 time or a YYYY-MM-DD date"))?;
    let day = if end_of_day { day.succ_opt().unwrap_or(day) } else { day };
    Ok(timestamp(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()))
}

/// The lowercase word of a proto enum name: `RUN_STATUS_PENDING` with prefix `RUN_STATUS_` is
/// `pending`.
pub(crate) fn word(proto_name: &str, prefix: &str) -> String {
    proto_name.strip_prefix(prefix).unwrap_or(proto_name).to_ascii_lowercase()
}

/// Seconds of a protobuf duration.
pub(crate) fn seconds(duration: Option<&prost_types::Duration>) -> f64 {
    duration.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// Splits a comma-separated query value into trimmed, non-empty words.
pub(crate) fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_parse_and_print_as_rfc3339() {
        let start = parse_time("from", "2026-11-25", false).unwrap();
        assert_eq!(time(Some(&start)).unwrap(), "2026-11-25T00:00:00Z");
        let end = parse_time("to", "2026-11-25", true).unwrap();
        assert_eq!(time(Some(&end)).unwrap(), "2026-11-26T00:00:00Z");
        let exact = parse_time("at", "2026-11-25T10:30:00+01:00", false).unwrap();
        assert_eq!(time(Some(&exact)).unwrap(), "2026-11-25T09:30:00Z");
        assert!(parse_time("from", "yesterday", false).is_err());
    }

    #[test]
    fn enum_names_become_seed_words() {
        assert_eq!(word("RUN_STATUS_PENDING", "RUN_STATUS_"), "pending");
        assert_eq!(list(Some("a, b,,c")), vec!["a", "b", "c"]);
    }
}
