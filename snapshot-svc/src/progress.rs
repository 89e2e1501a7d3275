//! Progress figures: per batch and overall percent, and the rate and ETA observed so far (the
//! seed extrapolated from finished batches; we use processed volumes, which moves more smoothly).

use chrono::{DateTime, Duration, Utc};

/// Weight of each step in the overall percent, in step order; the snapshots step dominates.
pub const STEP_WEIGHTS: [f64; 4] = [5.0, 10.0, 75.0, 10.0];

/// Percent of `done` out of `total`, 0 to 100 (100 when there is nothing to do).
pub fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        return 100.0;
    }
    (done.min(total) as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
}

/// Overall percent when steps `0..step` are finished and step `step` is `fraction` (0..=1) done.
pub fn overall_percent(step: usize, fraction: f64) -> f64 {
    let total: f64 = STEP_WEIGHTS.iter().sum();
    let finished: f64 = STEP_WEIGHTS.iter().take(step).sum();
    let current = STEP_WEIGHTS.get(step).copied().unwrap_or(0.0) * fraction.clamp(0.0, 1.0);
    ((finished + current) / total * 100.0).clamp(0.0, 100.0)
}

/// The observed rate and the finish it predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Volumes per minute; 0 until measurable.
    pub volumes_per_minute: f64,
    /// When the remaining volumes will be done at that rate; `None` until measurable.
    pub finish_at: Option<DateTime<Utc>>,
}

/// Rate and ETA of a step that started at `started`, has processed `processed` of `total` volumes.
pub fn estimate(started: DateTime<Utc>, now: DateTime<Utc>, processed: u64, total: u64) -> Estimate {
    let elapsed_ms = (now - started).num_milliseconds();
    if processed == 0 || elapsed_ms <= 0 {
        return Estimate { volumes_per_minute: 0.0, finish_at: None };
    }
    let per_minute = processed as f64 / (elapsed_ms as f64 / 60_000.0);
    let remaining = total.saturating_sub(processed) as f64;
    let remaining_ms = (remaining / per_minute * 60_000.0).round() as i64;
    Estimate {
        volumes_per_minute: per_minute,
        finish_at: now.checked_add_signed(Duration::milliseconds(remaining_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn percent_is_bounded_and_done_when_empty() {
        assert!((percent(1, 4) - 25.0).abs() < 1e-9);
        assert!((percent(9, 4) - 100.0).abs() < 1e-9);
        assert!((percent(0, 0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn overall_percent_weights_the_steps() {
        assert!(overall_percent(0, 0.0).abs() < 1e-9);
        assert!((overall_percent(2, 0.0) - 15.0).abs() < 1e-9);
        assert!((overall_percent(2, 0.5) - 52.5).abs() < 1e-9);
        assert!((overall_percent(4, 0.0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn eta_follows_the_observed_rate() {
        let start = at("2026-03-01T00:00:00Z");
        let now = at("2026-03-01T00:02:00Z");
        let estimate = estimate(start, now, 100, 400);
        assert!((estimate.volumes_per_minute - 50.0).abs() < 1e-9);
        assert_eq!(estimate.finish_at, Some(at("2026-03-01T00:08:00Z")));
        let nothing_yet = super::estimate(start, now, 0, 400);
        assert_eq!(nothing_yet, Estimate { volumes_per_minute: 0.0, finish_at: None });
    }
}
