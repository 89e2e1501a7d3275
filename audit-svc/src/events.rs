//! Events as AppendEvents receives them: validation (every problem names its field) and the
//! text names enums are stored under. Pure: no I/O.

use chrono::{DateTime, Utc};
use snapkeeper_proto::audit::v1::{self as pb, EventKind, event::RunDetail};
use snapkeeper_proto::prost_types::Timestamp;

use crate::AuditError;

/// Most events one AppendEvents call may carry.
pub const MAX_BATCH: usize = 1000;

/// An event that passed validation, with its times parsed.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    /// The event as sent.
    pub event: pb::Event,
    /// What happened.
    pub kind: EventKind,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The schedule slot, when set.
    pub slot: Option<DateTime<Utc>>,
    /// Cinder's created_at of the snapshot, when set.
    pub snapshot_created_at: Option<DateTime<Utc>>,
}

/// The stored name of a proto enum value: its proto name without the type prefix, lowercased
/// (`EVENT_KIND_SNAPSHOT_CREATED` -> `snapshot_created`); empty for the unspecified value.
pub fn stored_name(proto_name: &str, prefix: &str) -> String {
    let name = proto_name.strip_prefix(prefix).unwrap_or(proto_name);
    if name == "UNSPECIFIED" { String::new() } else { name.to_ascii_lowercase() }
}

/// The proto name for a stored name (inverse of [`stored_name`]).
pub fn proto_name(stored: &str, prefix: &str) -> String {
    if stored.is_empty() {
        format!("{prefix}UNSPECIFIED")
    } else {
        format!("{prefix}{}", stored.to_ascii_uppercase())
    }
}

/// Stored name of an event kind.
pub fn kind_name(kind: EventKind) -> String {
    stored_name(kind.as_str_name(), "EVENT_KIND_")
}

/// Event kind of a stored name; unspecified for an unknown name.
pub fn kind_of(stored: &str) -> EventKind {
    EventKind::from_str_name(&proto_name(stored, "EVENT_KIND_")).unwrap_or(EventKind::Unspecified)
}

/// Whether the kind is run-level (run started, step, batch, finished).
pub fn is_run_kind(kind: EventKind) -> bool {
    matches!(kind, EventKind::RunStarted | EventKind::RunStep | EventKind::RunBatch | EventKind::RunFinished)
}

/// Parses a protobuf timestamp.
pub fn time_of(field: &str, t: &Timestamp) -> Result<DateTime<Utc>, AuditError> {
    let nanos =
        u32::try_from(t.nanos).map_err(|_| AuditError::invalid(field, "nanos must not be negative"))?;
    DateTime::from_timestamp(t.seconds, nanos)
        .ok_or_else(|| AuditError::invalid(field, "timestamp out of range"))
}

/// Checks that `id` is a lowercase hyphenated UUID of the given version (any version when `None`).
pub fn check_uuid(field: &str, id: &str, version: Option<usize>) -> Result<(), AuditError> {
    if id.is_empty() {
        return Err(AuditError::invalid(field, "required"));
    }
    let parsed = uuid::Uuid::parse_str(id).map_err(|_| AuditError::invalid(field, "not a UUID"))?;
    if parsed.hyphenated().to_string() != id {
        return Err(AuditError::invalid(field, "must be a lowercase hyphenated UUID"));
    }
    if let Some(version) = version
        && parsed.get_version_num() != version
    {
        return Err(AuditError::invalid(field, format!("not a UUID v{version}")));
    }
    Ok(())
}

/// Validates one event of an AppendEvents batch; `field` is its position, e.g. `events[3]`.
pub fn validate(field: &str, event: &pb::Event) -> Result<ValidEvent, AuditError> {
    let at = |name: &str| format!("{field}.{name}");
    check_uuid(&at("event_id"), &event.event_id, Some(7))?;
    let occurred_at = match &event.occurred_at {
        Some(t) => time_of(&at("occurred_at"), t)?,
        None => return Err(AuditError::invalid(at("occurred_at"), "required")),
    };
    let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
    if kind == EventKind::Unspecified {
        return Err(AuditError::invalid(at("kind"), "unspecified or unknown"));
    }
    check_uuid(&at("run_id"), &event.run_id, None)?;
    if event.actor.trim().is_empty() {
        return Err(AuditError::invalid(at("actor"), "required (a user name, or \"scheduler\")"));
    }
    if event.size_gb < 0 {
        return Err(AuditError::invalid(at("size_gb"), "must not be negative"));
    }
    if event.retention_count < 0 {
        return Err(AuditError::invalid(at("retention_count"), "must not be negative"));
    }
    let slot = event.slot.as_ref().map(|t| time_of(&at("slot"), t)).transpose()?;
    let snapshot_created_at =
        event.snapshot_created_at.as_ref().map(|t| time_of(&at("snapshot_created_at"), t)).transpose()?;
    check_payload(field, kind, event)?;
    Ok(ValidEvent { event: event.clone(), kind, occurred_at, slot, snapshot_created_at })
}

/// The fields a kind requires.
fn check_payload(field: &str, kind: EventKind, event: &pb::Event) -> Result<(), AuditError> {
    let at = |name: &str| format!("{field}.{name}");
    let payload_matches = match (&event.run_detail, kind) {
        (Some(RunDetail::RunStarted(_)), EventKind::RunStarted)
        | (Some(RunDetail::RunStep(_)), EventKind::RunStep)
        | (Some(RunDetail::RunBatch(_)), EventKind::RunBatch)
        | (Some(RunDetail::RunFinished(_)), EventKind::RunFinished) => true,
        (None, k) => !is_run_kind(k),
        _ => false,
    };
    if !payload_matches {
        let expected = match kind {
            EventKind::RunStarted => "run_started",
            EventKind::RunStep => "run_step",
            EventKind::RunBatch => "run_batch",
            EventKind::RunFinished => "run_finished",
            _ => "no run payload",
        };
        return Err(AuditError::invalid(at("run_detail"), format!("{} needs {expected}", kind_name(kind))));
    }
    let needs_volume =
        !is_run_kind(kind) && !matches!(kind, EventKind::RoleGranted | EventKind::QuotaForecastRisk);
    if needs_volume && event.volume_id.is_empty() {
        return Err(AuditError::invalid(at("volume_id"), format!("required for {}", kind_name(kind))));
    }
    match kind {
        EventKind::SnapshotFailed | EventKind::SnapshotDeleteFailed if event.error.is_empty() => {
            Err(AuditError::invalid(at("error"), format!("required for {}", kind_name(kind))))
        }
        EventKind::SnapshotSkipped if event.skip_reason == 0 => {
            Err(AuditError::invalid(at("skip_reason"), "required for snapshot_skipped"))
        }
        EventKind::SnapshotQuotaBlocked => match &event.quota {
            Some(quota) if quota.reason != 0 => Ok(()),
            Some(_) => Err(AuditError::invalid(at("quota.reason"), "required for snapshot_quota_blocked")),
            None => Err(AuditError::invalid(at("quota"), "required for snapshot_quota_blocked")),
        },
        EventKind::QuotaForecastRisk if event.project_id.is_empty() => {
            Err(AuditError::invalid(at("project_id"), "required for quota_forecast_risk"))
        }
        EventKind::QuotaForecastRisk if event.quota.is_none() => {
            Err(AuditError::invalid(at("quota"), "required for quota_forecast_risk"))
        }
        EventKind::SnapshotDryRun if event.dry_run_action == 0 => {
            Err(AuditError::invalid(at("dry_run_action"), "required for snapshot_dry_run"))
        }
        EventKind::RoleGranted if event.project_id.is_empty() || event.role_name.is_empty() => {
            let missing = if event.project_id.is_empty() { "project_id" } else { "role_name" };
            Err(AuditError::invalid(at(missing), "required for role_granted"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> pb::Event {
        pb::Event {
            event_id: "01932c07-5a3e-7b4c-9d2e-1f0a2b3c4d5e".to_owned(),
            occurred_at: Some(snapkeeper_proto::prost_types::Timestamp { seconds: 1_790_000_000, nanos: 0 }),
            kind: kind.into(),
            run_id: "01932c07-0000-7000-8000-000000000001".to_owned(),
            actor: "scheduler".to_owned(),
            volume_id: "vol-1".to_owned(),
            ..pb::Event::default()
        }
    }

    fn field_of(result: Result<ValidEvent, AuditError>) -> String {
        match result {
            Err(AuditError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn enum_names_round_trip_through_their_stored_form() {
        assert_eq!(kind_name(EventKind::SnapshotQuotaBlocked), "snapshot_quota_blocked");
        assert_eq!(kind_of("snapshot_quota_blocked"), EventKind::SnapshotQuotaBlocked);
        assert_eq!(kind_of("nonsense"), EventKind::Unspecified);
        assert_eq!(
            stored_name("QUOTA_BLOCK_REASON_GIGABYTES_EXCEEDED", "QUOTA_BLOCK_REASON_"),
            "gigabytes_exceeded"
        );
        assert_eq!(stored_name("SKIP_REASON_UNSPECIFIED", "SKIP_REASON_"), "");
        assert_eq!(proto_name("", "SKIP_REASON_"), "SKIP_REASON_UNSPECIFIED");
    }

    #[test]
    fn a_valid_created_event_passes() {
        let valid = validate("events[0]", &event(EventKind::SnapshotCreated)).unwrap();
        assert_eq!(valid.kind, EventKind::SnapshotCreated);
        assert!(valid.slot.is_none());
    }

    #[test]
    fn each_problem_names_its_field() {
        let mut e = event(EventKind::SnapshotCreated);
        e.event_id = "01932c07-5a3e-4b4c-9d2e-1f0a2b3c4d5e".to_owned();
        assert_eq!(field_of(validate("events[3]", &e)), "events[3].event_id");
        let mut e = event(EventKind::SnapshotCreated);
        e.event_id = e.event_id.to_uppercase();
        assert_eq!(field_of(validate("events[0]", &e)), "events[0].event_id");
        assert_eq!(field_of(validate("events[0]", &event(EventKind::Unspecified))), "events[0].kind");
        let mut e = event(EventKind::SnapshotCreated);
        e.occurred_at = None;
        assert_eq!(field_of(validate("events[2]", &e)), "events[2].occurred_at");
        let mut e = event(EventKind::SnapshotCreated);
        e.actor.clear();
        assert_eq!(field_of(validate("events[0]", &e)), "events[0].actor");
        assert_eq!(field_of(validate("events[0]", &event(EventKind::SnapshotFailed))), "events[0].error");
        assert_eq!(
            field_of(validate("events[0]", &event(EventKind::SnapshotSkipped))),
            "events[0].skip_reason"
        );
        assert_eq!(
            field_of(validate("events[0]", &event(EventKind::SnapshotQuotaBlocked))),
            "events[0].quota"
        );
        assert_eq!(
            field_of(validate("events[0]", &event(EventKind::SnapshotDryRun))),
            "events[0].dry_run_action"
        );
        assert_eq!(field_of(validate("events[0]", &event(EventKind::RunStarted))), "events[0].run_detail");
        assert_eq!(field_of(validate("events[0]", &event(EventKind::RoleGranted))), "events[0].project_id");
        let mut risk = event(EventKind::QuotaForecastRisk);
        risk.volume_id.clear();
        assert_eq!(field_of(validate("events[0]", &risk)), "events[0].project_id");
        risk.project_id = "p-1".to_owned();
        assert_eq!(field_of(validate("events[0]", &risk)), "events[0].quota");
        risk.quota = Some(pb::QuotaFigures {
            quota_limit_gb: 100,
            quota_used_gb: 90,
            quota_needed_gb: 20,
            ..Default::default()
        });
        assert_eq!(validate("events[0]", &risk).unwrap().kind, EventKind::QuotaForecastRisk);
        let mut e = event(EventKind::SnapshotCreated);
        e.volume_id.clear();
        assert_eq!(field_of(validate("events[0]", &e)), "events[0].volume_id");
    }
}
