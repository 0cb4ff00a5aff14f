//! The daemon's one clock: Unix time in seconds with sub-second precision,
//! so a 2-second token's renewal is planned at 1.3 s, not "now".
//!
//! The daemon reads the wall clock (a laptop that slept must see its tokens
//! as expired); tests read tokio's clock, which they can pause and advance.

/// Where "now" comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    /// The system's wall clock.
    System,
    /// Tokio's clock (paused in tests), counted from `unix` at `start`.
    #[cfg(test)]
    Tokio {
        unix: f64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's time, starting at Unix second `unix`.
    #[cfg(test)]
    pub(crate) fn tokio_at(unix: f64) -> Clock {
        Clock::Tokio {
            unix,
            start: tokio::time::Instant::now(),
        }
    }

    /// Unix seconds, fractional.
    pub(crate) fn now(&self) -> f64 {
        match self {
            Clock::System => wall_clock(),
            #[cfg(test)]
            Clock::Tokio { unix, start } => unix + start.elapsed().as_secs_f64(),
        }
    }

    /// The tokio instant at which this clock reads `unix`.
    pub(crate) fn instant_at(&self, unix: f64) -> tokio::time::Instant {
        let wait = (unix - self.now()).max(0.0);
        tokio::time::Instant::now() + std::time::Duration::from_secs_f64(wait.min(1e9))
    }
}

/// How often the daemon compares the wall clock with the monotonic one
/// while a parked site's refresh-ahead is planned. Timers run on the
/// monotonic clock, which does not count a suspend: a laptop that slept
/// past its tokens' expiry finds out within this much of waking.
pub(crate) const WALL_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// A forward jump of the wall clock against the monotonic one larger than
/// this is a suspend (or a clock set ahead): the timers planned before it
/// are late by that much.
const JUMP: f64 = 1.0;

/// Finds jumps of the wall clock against the monotonic clock.
#[derive(Debug)]
pub(crate) struct JumpWatch {
    /// Wall clock minus monotonic clock, when last looked at.
    offset: f64,
    base: tokio::time::Instant,
}

impl JumpWatch {
    pub(crate) fn new(clock: &Clock) -> JumpWatch {
        let base = tokio::time::Instant::now();
        JumpWatch {
            offset: clock.now(),
            base,
        }
    }

    /// Whether the wall clock went ahead of the monotonic one since the
    /// last look (by more than [`JUMP`]).
    pub(crate) fn jumped(&mut self, clock: &Clock) -> bool {
        let offset = clock.now() - self.base.elapsed().as_secs_f64();
        let jumped = offset - self.offset > JUMP;
        self.offset = offset;
        jumped
    }
}

/// The one place the daemon reads the wall clock (clippy.toml forbids it
/// elsewhere): everything else asks a [`Clock`].
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Whole Unix seconds for the wire and the store (rounded down).
pub(crate) fn whole(unix: f64) -> u64 {
    unix.max(0.0) as u64
}
