//! Expiring caches with hit figures for `Status`, the renewal time of a token, and the hash that
//! keys validated user tokens (the token itself is never a key, never stored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// How long before expiry a cached token is renewed (the contract's 5 minutes); short-lived
/// tokens renew after three quarters of their life instead.
pub const RENEWAL_MARGIN: Duration = Duration::minutes(5);

/// Entries a cache may hold before expired ones are swept on insert.
const SWEEP_ABOVE: usize = 1024;

/// Figures of one cache (`CacheStats` of the contract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Entries held now and not expired.
    pub entries: i64,
    /// Lookups answered from the cache.
    pub hits: i64,
    /// Lookups that needed Keystone.
    pub misses: i64,
}

impl CacheFigures {
    /// hits / (hits + misses); 0 without lookups.
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 { 0.0 } else { self.hits as f64 / lookups as f64 }
    }
}

/// Hit and miss counters for caches whose entries live elsewhere.
#[derive(Debug, Default)]
pub struct HitCounter {
    hits: AtomicI64,
    misses: AtomicI64,
}

impl HitCounter {
    /// Counts one lookup.
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures, with `entries` supplied by the owner.
    pub fn figures(&self, entries: i64) -> CacheFigures {
        CacheFigures {
            entries,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// A map whose entries expire at their own time. Time is a parameter so tests need not sleep.
#[derive(Debug)]
pub struct TtlCache<V> {
    entries: HashMap<String, (V, DateTime<Utc>)>,
    counter: HitCounter,
}

impl<V> Default for TtlCache<V> {
    fn default() -> Self {
        Self { entries: HashMap::new(), counter: HitCounter::default() }
    }
}

impl<V: Clone> TtlCache<V> {
    /// The live value for `key`, counting a hit or a miss.
    pub fn get(&mut self, key: &str, now: DateTime<Utc>) -> Option<V> {
        let found = match self.entries.get(key) {
            Some((value, expires_at)) if now < *expires_at => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        };
        self.counter.record(found.is_some());
        found
    }

    /// Stores `value` until `expires_at`; sweeps expired entries when the map has grown.
    pub fn insert(&mut self, key: String, value: V, expires_at: DateTime<Utc>, now: DateTime<Utc>) {
        if self.entries.len() >= SWEEP_ABOVE {
            self.entries.retain(|_, (_, expires)| now < *expires);
        }
        self.entries.insert(key, (value, expires_at));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Live entries and lookup counts.
    pub fn figures(&self, now: DateTime<Utc>) -> CacheFigures {
        let live = self.entries.values().filter(|(_, expires)| now < *expires).count();
        self.counter.figures(live as i64)
    }
}

/// When a token issued at `issued_at` and expiring at `expires_at` should be replaced.
pub fn renew_at(issued_at: Option<DateTime<Utc>>, expires_at: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = issued_at.map_or(Duration::hours(1), |issued| expires_at - issued);
    expires_at - RENEWAL_MARGIN.min(lifetime / 4)
}

/// The cache key of a user's token: SHA-256 in hex.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    #[test]
    fn entries_expire_and_lookups_are_counted() {
        let mut cache = TtlCache::default();
        cache.insert("p1".into(), "name".to_owned(), at(60), at(0));
        assert_eq!(cache.get("p1", at(59)).as_deref(), Some("name"));
        assert_eq!(cache.get("p1", at(60)), None);
        assert_eq!(cache.get("p2", at(0)), None);
        let figures = cache.figures(at(0));
        assert_eq!((figures.entries, figures.hits, figures.misses), (0, 1, 2));
        assert!((figures.hit_rate() - 1.0 / 3.0).abs() < 1e-9);
        assert!(CacheFigures::default().hit_rate().abs() < f64::EPSILON);
    }

    #[test]
    fn renewal_is_five_minutes_early_or_a_quarter_of_a_short_life() {
        assert_eq!(renew_at(Some(at(0)), at(4 * 3600)), at(4 * 3600 - 300));
        assert_eq!(renew_at(Some(at(0)), at(400)), at(300));
        assert_eq!(renew_at(None, at(3600)), at(3300));
    }

    #[test]
    fn token_keys_are_sha256_hex_not_the_token() {
        let key = token_hash("gAAAAA-user-token");
        assert_eq!(key.len(), 64);
        assert!(!key.contains("user-token"));
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
