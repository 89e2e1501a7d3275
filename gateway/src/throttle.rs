//! Login throttling: sliding windows of attempts per key (a user, a client address), in memory.
//! A gateway replica throttles what it sees; that is enough to make password guessing slow.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked before idle ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// Counts events per key within a window.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    events: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    /// At most `limit` events per key within `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, events: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds until a slot frees)` when `key` has used up its events, else `Ok`.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut events = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(times) = events.get_mut(key) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() < self.limit as usize {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = self.window.saturating_sub(now.duration_since(oldest));
        Err(wait.as_secs().max(1))
    }

    /// Records one event for `key`.
    pub fn record(&self, key: &str, now: Instant) {
        let mut events = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if events.len() > PRUNE_ABOVE {
            let window = self.window;
            events.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        events.entry(key.to_owned()).or_default().push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_within_the_window_and_frees_after_it() {
        let throttle = Throttle::new(2, Duration::from_mins(1));
        let start = Instant::now();
        throttle.record("alice", start);
        throttle.record("alice", start + Duration::from_secs(10));
        assert!(throttle.check("bob", start).is_ok());
        let wait = throttle.check("alice", start + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, 40);
        assert!(throttle.check("alice", start + Duration::from_secs(61)).is_ok());
    }
}
