//! Refresh policy, as pure functions: when a token is renewed ahead, how
//! much lifetime a token must have left to be handed out, and the backoff
//! after a failure. Each site's actor ([`crate::site`]) applies them with one
//! timer, so an idle daemon with many sites uses no CPU.
//!
//! By default refresh when
//! 60–63 % of the lifetime has passed (a third of the lifetime before
//! expiry, moved 10–20 % earlier at random so sites configured together do
//! not refresh together); `refresh_before` replaces the third, but no
//! refresh is planned before half the lifetime has passed. A failure
//! that may pass (5xx, timeout, garbage) is retried with exponential
//! backoff and jitter, 10 s doubling to 5 min, never scheduled past expiry.

use std::time::Duration;

/// Smallest and largest wait between retries after a failure.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_secs(10);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A uniform random fraction in [0, 1) for jitter.
pub(crate) fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// How long before expiry refresh-ahead renews a token of `lifetime`
/// seconds: a third of the lifetime (or `refresh_before`), moved 10–20 %
/// earlier by `jitter` in [0, 1), never more than half the lifetime.
pub(crate) fn refresh_margin(lifetime: f64, refresh_before: Option<u64>, jitter: f64) -> f64 {
    let base = refresh_before.map_or(lifetime / 3.0, |b| b as f64);
    // Never earlier than half-way: a `refresh_before` longer than the
    // provider's lifetime must not turn into a refresh loop.
    (base * (1.1 + 0.1 * jitter)).min(lifetime / 2.0)
}

/// How much lifetime a token must have left to be handed to a caller that
/// asked for no `min_ttl`: half the smallest refresh-ahead margin, at most
/// 30 s. Below the refresh-ahead margin, so with refresh-ahead working no
/// caller waits on the provider for a renewal.
pub(crate) fn serve_margin(lifetime: f64, refresh_before: Option<u64>) -> f64 {
    (refresh_margin(lifetime, refresh_before, 0.0) / 2.0).min(30.0)
}

/// The least a held token must have left to be served while the provider
/// fails: the larger of 2 s and 5 % of its lifetime. A token closer to its
/// end than that would fail the request the caller starts with it.
fn outage_floor(lifetime: f64) -> f64 {
    (lifetime * 0.05).max(2.0)
}

/// A token held with its expiry: access and ID tokens serve callers by one
/// rule.
pub(crate) trait Expiring {
    /// Seconds left at `now` (Unix s); infinite for a token that never expires.
    fn remaining(&self, now: f64) -> f64;

    /// The lifetime the provider gave it.
    fn lifetime(&self) -> f64;

    /// Good enough for a caller that asked for `min_ttl` (default: the
    /// serve margin, below the refresh-ahead margin).
    fn serves(&self, now: f64, min_ttl: Option<u64>, refresh_before: Option<u64>) -> bool {
        let need = min_ttl.map_or_else(
            || serve_margin(self.lifetime(), refresh_before),
            |m| m as f64,
        );
        self.remaining(now) > need
    }

    /// How much longer it serves callers while the provider fails: until
    /// only the outage floor is left (negative: no longer).
    fn outage_left(&self, now: f64) -> f64 {
        self.remaining(now) - outage_floor(self.lifetime())
    }

    /// Good enough for a caller while the provider fails: at least the
    /// outage floor left.
    fn serves_through_outage(&self, now: f64) -> bool {
        self.outage_left(now) >= 0.0
    }

    /// Its expiry (whole seconds, as on the wire) is still ahead: nothing
    /// at all is served past it.
    fn unexpired(&self, now: f64) -> bool {
        self.remaining(now) > 0.0
    }
}

/// The Unix time (fractional) at which a token obtained at `obtained_at`
/// and expiring at `expires_at` is renewed ahead.
pub(crate) fn refresh_at(
    obtained_at: f64,
    expires_at: f64,
    refresh_before: Option<u64>,
    jitter: f64,
) -> f64 {
    let lifetime = (expires_at - obtained_at).max(0.0);
    expires_at - refresh_margin(lifetime, refresh_before, jitter)
}

/// Exponential backoff with ±20 % jitter.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt, given the seconds the current token
    /// is still to be protected for (`None`: no token, or it has expired:
    /// nothing to protect).
    pub(crate) fn next(&mut self, remaining: Option<u64>, jitter: f64) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        let wait = base.mul_f64(0.8 + 0.4 * jitter).max(Duration::from_secs(1));
        match remaining {
            // Try once more before that time rather than after it.
            Some(r) if r > 1 => wait.min(Duration::from_secs(r - 1)),
            _ => wait,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_refresh_is_near_two_thirds_with_jitter() {
        // 3600 s lifetime: margin 1200 s moved 10–20 % earlier.
        assert!((refresh_at(0.0, 3600.0, None, 0.0) - (3600.0 - 1320.0)).abs() < 1e-6);
        assert!((refresh_at(0.0, 3600.0, None, 0.999_999) - (3600.0 - 1440.0)).abs() < 1e-3);
    }

    #[test]
    fn short_lifetimes_are_planned_below_the_second() {
        // A 2 s token obtained at 100.9: renewed 0.73 s before expiry, not "now".
        let at = refresh_at(100.9, 102.9, None, 0.0);
        assert!(at > 101.9 && at < 102.3, "{at}");
    }

    #[test]
    fn refresh_before_overrides_the_fraction() {
        assert!((refresh_at(0.0, 3600.0, Some(300), 0.0) - (3600.0 - 330.0)).abs() < 1e-6);
        // Longer than the lifetime: half-way, never a refresh loop.
        assert!((refresh_at(100.0, 160.0, Some(3600), 0.0) - 130.0).abs() < 1e-6);
    }

    #[test]
    fn callers_are_served_below_the_refresh_ahead_margin() {
        for lifetime in [2.0, 9.0, 20.0, 80.0, 3600.0, 86400.0] {
            for before in [None, Some(1), Some(300), Some(100_000)] {
                let serve = serve_margin(lifetime, before);
                let ahead = refresh_margin(lifetime, before, 0.0);
                assert!(serve < ahead, "{lifetime} {before:?}: {serve} vs {ahead}");
                assert!(serve <= 30.0);
            }
        }
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_never_passes_expiry() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next(None, 0.5).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        let mut b = Backoff::default();
        assert_eq!(b.next(None, 0.0).as_secs(), 8);
        assert_eq!(b.next(None, 0.999).as_secs(), 23);
        let mut b = Backoff::default();
        for _ in 0..6 {
            b.next(None, 0.5);
        }
        assert_eq!(b.next(Some(42), 0.5).as_secs(), 41);
        b.reset();
        assert_eq!(b.next(None, 0.5).as_secs(), 10);
    }
}
