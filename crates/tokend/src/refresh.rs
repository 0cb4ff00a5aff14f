//! Refresh ahead: every site that can renew its token without the user (a
//! refresh token, or client credentials in use) gets a fresh one before the
//! current one expires, with nobody asking. One sleeping task per site, woken
//! by its deadline or by a change of its tokens: timers, not polling, so an
//! idle daemon with many sites uses no CPU.
//!
//! Policy (pure functions below, unit-tested): by default refresh when
//! 60–63 % of the lifetime has passed (a third of the lifetime before
//! expiry, moved 10–20 % earlier at random so sites configured together do
//! not refresh together); `refresh_before` replaces the third, but no
//! refresh is planned before half the lifetime has passed. A failure
//! that may pass (5xx, timeout, garbage) is retried with exponential
//! backoff and jitter, 10 s doubling to 5 min, never scheduled past expiry.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// Smallest and largest wait between retries after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A uniform random fraction in [0, 1) for jitter.
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// Seconds from `now` until a token obtained at `obtained_at` and expiring
/// at `expires_at` should be refreshed. `jitter` in [0, 1).
pub fn refresh_delay(
    obtained_at: u64,
    expires_at: u64,
    now: u64,
    refresh_before: Option<u64>,
    jitter: f64,
) -> u64 {
    let lifetime = expires_at.saturating_sub(obtained_at);
    let margin = refresh_before.map_or(lifetime as f64 / 3.0, |b| b as f64);
    // Never earlier than half-way: a `refresh_before` longer than the
    // provider's lifetime must not turn into a refresh loop.
    let margin = ((margin * (1.1 + 0.1 * jitter)).ceil() as u64).min(lifetime / 2);
    let at = expires_at.saturating_sub(margin);
    at.saturating_sub(now)
}

/// Exponential backoff with ±20 % jitter.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt, given the seconds the current token
    /// still has (`None`: no token or already expired, nothing to protect).
    pub fn next(&mut self, remaining: Option<u64>, jitter: f64) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        let wait = base.mul_f64(0.8 + 0.4 * jitter).max(Duration::from_secs(1));
        match remaining {
            // Try once more just before expiry rather than after it.
            Some(r) if r > 1 => wait.min(Duration::from_secs(r - 1)),
            _ => wait,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What one scheduled refresh did.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// A new token, or none was needed after all.
    Done,
    /// Failed in a way worth retrying: try again after `wait` (the site's backoff).
    Retry { wait: Duration },
    /// Only a login helps now: stop until the tokens change.
    Stop,
}

/// A site as the scheduler sees it.
pub trait Target: Send + Sync + 'static {
    /// Time until the next refresh is due, `None` if nothing is to be renewed.
    fn plan(&self) -> Option<Duration>;
    /// Tells `status` when the next attempt is.
    fn planned(&self, wait: Option<Duration>);
    fn wake(&self) -> Arc<Notify>;
    fn retired(&self) -> bool;
    fn refresh(&self) -> impl Future<Output = Attempt> + Send;
}

/// The per-site loop. Holds the site weakly, so a site removed from the
/// config (and retired) lets its task end.
pub async fn run<T: Target>(site: Weak<T>) {
    let mut retry: Option<Duration> = None;
    loop {
        let wait = {
            let Some(s) = site.upgrade() else { return };
            if s.retired() {
                return;
            }
            let wait = retry.take().or_else(|| s.plan());
            s.planned(wait);
            let wake = s.wake();
            let notified = wake.notified();
            tokio::pin!(notified);
            // Register interest before releasing the site, so no wake is lost.
            notified.as_mut().enable();
            drop(s);
            let woke = match wait {
                Some(w) => tokio::select! {
                    () = tokio::time::sleep(w) => false,
                    () = &mut notified => true,
                },
                None => {
                    notified.await;
                    true
                }
            };
            if woke {
                // The tokens changed (a get refreshed, a login finished, the
                // config changed): plan afresh.
                continue;
            }
            wait
        };
        let Some(s) = site.upgrade() else { return };
        if wait.is_none() || s.retired() {
            continue;
        }
        if let Attempt::Retry { wait } = s.refresh().await {
            retry = Some(wait);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[test]
    fn default_refresh_is_near_two_thirds_with_jitter() {
        // 3600 s lifetime: margin 1200 s moved 10–20 % earlier.
        assert_eq!(refresh_delay(0, 3600, 0, None, 0.0), 3600 - 1320);
        assert_eq!(refresh_delay(0, 3600, 0, None, 0.999_999), 3600 - 1440);
        // Already past the point: due now.
        assert_eq!(refresh_delay(0, 3600, 3000, None, 0.5), 0);
    }

    #[test]
    fn refresh_before_overrides_the_fraction() {
        assert_eq!(refresh_delay(0, 3600, 0, Some(300), 0.0), 3600 - 330);
        // Longer than the lifetime: half-way, never a refresh loop.
        assert_eq!(refresh_delay(100, 160, 100, Some(3600), 0.0), 30);
        assert_eq!(refresh_delay(0, 2, 0, None, 0.5), 1);
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

    /// A fake site on tokio's paused clock: a token that lives `lifetime`,
    /// a provider that fails the first `fail_first` refreshes.
    struct Fake {
        start: Instant,
        expires: Mutex<Duration>,
        lifetime: Duration,
        fail_first: u32,
        calls: AtomicU32,
        backoff: Mutex<Backoff>,
        at: Mutex<Vec<u64>>,
        wake: Arc<Notify>,
    }

    impl Target for Fake {
        fn plan(&self) -> Option<Duration> {
            let expires = *self.expires.lock().unwrap();
            let due = expires.saturating_sub(self.lifetime / 3);
            Some(due.saturating_sub(self.start.elapsed()))
        }
        fn planned(&self, _: Option<Duration>) {}
        fn wake(&self) -> Arc<Notify> {
            self.wake.clone()
        }
        fn retired(&self) -> bool {
            false
        }
        async fn refresh(&self) -> Attempt {
            let now = self.start.elapsed();
            self.at.lock().unwrap().push(now.as_secs());
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let expires = *self.expires.lock().unwrap();
            if n < self.fail_first {
                let remaining = Some(expires.saturating_sub(now).as_secs());
                return Attempt::Retry {
                    wait: self.backoff.lock().unwrap().next(remaining, 0.5),
                };
            }
            *self.expires.lock().unwrap() = now + self.lifetime;
            Attempt::Done
        }
    }

    fn fake(lifetime: u64, fail_first: u32) -> Arc<Fake> {
        Arc::new(Fake {
            start: Instant::now(),
            expires: Mutex::new(Duration::from_secs(lifetime)),
            lifetime: Duration::from_secs(lifetime),
            fail_first,
            calls: AtomicU32::new(0),
            backoff: Mutex::default(),
            at: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_ahead_with_nobody_asking() {
        let site = fake(300, 0);
        let task = tokio::spawn(run(Arc::downgrade(&site)));
        tokio::time::sleep(Duration::from_secs(1000)).await;
        task.abort();
        // Due two thirds into each 300 s lifetime: 200 s, then every 200 s.
        assert_eq!(*site.at.lock().unwrap(), [200, 400, 600, 800]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_recover_before_expiry() {
        let site = fake(300, 3);
        let task = tokio::spawn(run(Arc::downgrade(&site)));
        tokio::time::sleep(Duration::from_secs(299)).await;
        task.abort();
        let at = site.at.lock().unwrap().clone();
        // First attempt at 200 s, then backoff (10 s, 20 s, 40 s) well
        // before the token's expiry at 300 s; the fourth attempt succeeds.
        assert_eq!(at, [200, 210, 230, 270]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_replans_at_once() {
        let site = fake(300, 0);
        let task = tokio::spawn(run(Arc::downgrade(&site)));
        tokio::time::sleep(Duration::from_secs(100)).await;
        // Someone else refreshed at 100 s: the next refresh moves to 300 s.
        *site.expires.lock().unwrap() = Duration::from_secs(400);
        site.wake.notify_one();
        tokio::time::sleep(Duration::from_secs(250)).await;
        task.abort();
        assert_eq!(*site.at.lock().unwrap(), [300]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_site_ends_its_task() {
        let site = fake(300, 0);
        let task = tokio::spawn(run(Arc::downgrade(&site)));
        tokio::task::yield_now().await;
        drop(site);
        // The task holds no strong reference: it ends at its next wake-up.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(task.is_finished());
    }
}
