//! Fault injection per operation: latency, 5xx, 429 with Retry-After, and timeouts (the work is
//! done, the answer comes too late). Random draws come from a seeded generator, so a test run
//! with the same seed and the same request order sees the same faults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fault settings of one operation (or of all, as the default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpFaults {
    /// Added latency per request, milliseconds.
    pub latency_ms: u64,
    /// Share of requests answered 503 before doing anything (0..1).
    pub error_rate: f64,
    /// Share of requests answered 429 with `Retry-After` (0..1).
    pub rate_limit_rate: f64,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Share of requests that do their work and then answer only after `timeout_ms`.
    pub timeout_rate: f64,
    /// Delay of a timed-out answer, milliseconds (default 30 s).
    pub timeout_ms: u64,
    /// The next N requests get a 503 (counts down).
    pub fail_next: u32,
    /// The next N requests time out after doing their work (counts down).
    pub timeout_next: u32,
}

/// All fault settings: a default for every operation plus overrides by operation name
/// (`cinder.snapshots.create`) or prefix (`cinder.*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed of the random draws.
    pub seed: u64,
    /// Applies to operations without their own entry.
    pub default: OpFaults,
    /// Per operation name or `prefix.*`.
    pub operations: BTreeMap<String, OpFaults>,
    /// Lifetime of new tokens in seconds (overrides the start-up setting when set).
    pub token_ttl_secs: Option<f64>,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Proceed,
    ServerError,
    RateLimited { retry_after_secs: u64 },
    LateAnswer(Duration),
}

pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    rng: fastrand::Rng,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        let rng = fastrand::Rng::with_seed(faults.seed);
        Self { faults, rng }
    }

    pub(crate) fn replace(&mut self, faults: Faults) {
        *self = Self::new(faults);
    }

    fn settings_mut(&mut self, operation: &str) -> &mut OpFaults {
        let key = if self.faults.operations.contains_key(operation) {
            Some(operation.to_owned())
        } else {
            self.faults
                .operations
                .keys()
                .filter(|k| k.strip_suffix('*').is_some_and(|prefix| operation.starts_with(prefix)))
                .max_by_key(|k| k.len())
                .cloned()
        };
        match key {
            Some(key) => self.faults.operations.entry(key).or_default(),
            None => &mut self.faults.default,
        }
    }

    /// Latency to add and what to answer.
    pub(crate) fn decide(&mut self, operation: &str) -> (Duration, Decision) {
        let draw_error = self.rng.f64();
        let draw_limit = self.rng.f64();
        let draw_timeout = self.rng.f64();
        let settings = self.settings_mut(operation);
        let latency = Duration::from_millis(settings.latency_ms);
        let late = Duration::from_millis(if settings.timeout_ms == 0 { 30_000 } else { settings.timeout_ms });
        let decision = if settings.fail_next > 0 {
            settings.fail_next -= 1;
            Decision::ServerError
        } else if settings.timeout_next > 0 {
            settings.timeout_next -= 1;
            Decision::LateAnswer(late)
        } else if draw_error < settings.error_rate {
            Decision::ServerError
        } else if draw_limit < settings.rate_limit_rate {
            Decision::RateLimited { retry_after_secs: settings.retry_after_secs }
        } else if draw_timeout < settings.timeout_rate {
            Decision::LateAnswer(late)
        } else {
            Decision::Proceed
        };
        (latency, decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_name_beats_prefix_and_counters_count_down() {
        let mut faults = Faults::default();
        faults.operations.insert("cinder.*".into(), OpFaults { error_rate: 1.0, ..OpFaults::default() });
        faults.operations.insert(
            "cinder.snapshots.create".into(),
            OpFaults { timeout_next: 1, timeout_ms: 5, ..OpFaults::default() },
        );
        let mut state = FaultState::new(faults);
        assert_eq!(state.decide("cinder.volumes.list").1, Decision::ServerError);
        assert_eq!(state.decide("cinder.snapshots.create").1, Decision::LateAnswer(Duration::from_millis(5)));
        assert_eq!(state.decide("cinder.snapshots.create").1, Decision::Proceed);
        assert_eq!(state.decide("keystone.projects.list").1, Decision::Proceed);
    }

    #[test]
    fn rates_are_roughly_honoured_and_seeded() {
        let faults = Faults {
            seed: 42,
            default: OpFaults { error_rate: 0.1, ..OpFaults::default() },
            ..Faults::default()
        };
        let run = || {
            let mut state = FaultState::new(faults.clone());
            (0..10_000).filter(|_| state.decide("x").1 == Decision::ServerError).count()
        };
        let errors = run();
        assert!((800..1200).contains(&errors), "{errors}");
        assert_eq!(errors, run(), "same seed, same faults");
    }
}
