//! Per-object exponential backoff for failed reconciles.
//!
//! kube-runtime's error policy is a plain function of (object, error), so the
//! failure count lives here: it doubles the retry delay per consecutive
//! failure of the same store and is reset by the next successful reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const INITIAL_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Records one more failure of `key` and returns how long to wait:
    /// 1 s, 2 s, 4 s, ... capped at 5 minutes.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        let delay = INITIAL_DELAY
            .checked_mul(1u32.checked_shl(*count).unwrap_or(u32::MAX))
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        *count = count.saturating_add(1);
        delay
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &str) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(key).copied().unwrap_or(0)
    }

    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_caps_and_resets() {
        let backoff = ErrorBackoff::default();
        let delays: Vec<u64> = (0..12)
            .map(|_| backoff.next_delay("ns/a").as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff.failures("ns/a"), 12);
        assert_eq!(
            backoff.next_delay("ns/b"),
            Duration::from_secs(1),
            "per object"
        );
        backoff.reset("ns/a");
        assert_eq!(backoff.failures("ns/a"), 0);
        assert_eq!(backoff.next_delay("ns/a"), Duration::from_secs(1));
    }

    #[test]
    fn stays_at_five_minutes_however_many_failures() {
        let backoff = ErrorBackoff::default();
        // Past 32 failures the doubling would overflow a u32 shift.
        let delays: Vec<Duration> = (0..100).map(|_| backoff.next_delay("ns/a")).collect();
        assert!(delays[9..].iter().all(|d| *d == Duration::from_secs(300)));
        assert_eq!(backoff.failures("ns/a"), 100);
    }
}
