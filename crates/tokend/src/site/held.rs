//! A site's published answer to a plain `get`: the fast path.
//!
//! A `get` for the site's own token, with no scopes, no DPoP proof and no
//! ID token, is answered the same way every time until the token changes:
//! the token in hand, its expiry, its scopes and the planned renewal. The
//! site's actor publishes that answer here once it has served it (so the
//! token counts as used: refresh-ahead of a client-credentials site keeps
//! it fresh), with the lifetime a caller needs left on it; the `get`
//! handler then answers from here, without a round trip to the actor,
//! while the token has that lifetime left at the caller's `now`.
//!
//! The actor takes the answer back (`clear`) before anything that would
//! change it reaches a caller: a logout, a stop, a token that replaces
//! it, a note the caller must hear, new settings (the answer also names
//! the settings it was made with, and a handler with others does not use
//! it). Anything else goes the actor's way, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use token_proto::{wipe, TokenReply};

use crate::config::SiteConfig;

/// One site's cell: empty, or the answer a plain `get` gets, and a count
/// of its changes: a connection thread keeps the answer it read (see
/// `handlers::get::Kept`) while the count stays, reading one counter a
/// `get` instead of taking the lock and a reference (each a write to a
/// line every core's callers share).
#[derive(Debug, Default)]
pub(crate) struct Held {
    ready: Mutex<Option<Arc<Ready>>>,
    version: AtomicU64,
}

/// The answer to a plain `get`, and what bounds its use.
pub(crate) struct Ready {
    reply: TokenReply,
    /// `reply` as the line that answers it (wiped when dropped).
    line: Vec<u8>,
    /// The settings it was made with: a handler with other settings (a
    /// reload under way) asks the actor.
    cfg: Arc<SiteConfig>,
    /// Seconds left on the token that a caller with no `min_ttl` needs:
    /// the actor's serve margin for it.
    margin: f64,
    /// When refresh-ahead plans to renew it (Unix s), as the actor planned
    /// it when it published (the reply's `renew_at`): past that time the
    /// actor answers (its reply says "now").
    plan: Option<f64>,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("reply", &self.reply)
            .field("margin", &self.margin)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Drop for Ready {
    /// The line holds the token: wiped (the reply wipes itself).
    fn drop(&mut self) {
        wipe(&mut self.line);
    }
}

impl Ready {
    /// The answer as the site's actor gave it.
    pub(crate) fn reply(&self) -> &TokenReply {
        &self.reply
    }

    /// The answer's line, as the server writes it.
    pub(crate) fn line(&self) -> &[u8] {
        &self.line
    }

    /// The settings it was made with.
    pub(crate) fn cfg(&self) -> &Arc<SiteConfig> {
        &self.cfg
    }

    /// The renewal plan it was published with.
    pub(crate) fn plan(&self) -> Option<f64> {
        self.plan
    }

    /// Whether it answers a caller with `min_ttl` at `now` (Unix s) with
    /// the settings `cfg`: the actor would give the same answer.
    pub(crate) fn serves(&self, cfg: &Arc<SiteConfig>, now: f64, min_ttl: Option<u64>) -> bool {
        let need = min_ttl.map_or(self.margin, |m| m as f64);
        let left = self
            .reply
            .expires_at
            .map_or(f64::INFINITY, |at| at as f64 - now);
        Arc::ptr_eq(&self.cfg, cfg) && left > need && self.plan.is_none_or(|at| at >= now)
    }
}

impl Held {
    /// The published answer, if it serves a caller with `min_ttl` at `now`
    /// with the settings `cfg`.
    pub(crate) fn serve(
        &self,
        cfg: &Arc<SiteConfig>,
        now: f64,
        min_ttl: Option<u64>,
    ) -> Option<Arc<Ready>> {
        let ready = self.lock().clone()?;
        ready.serves(cfg, now, min_ttl).then_some(ready)
    }

    /// Publishes `reply` (a plain `get`'s answer, with no warning) made
    /// with `cfg`; `margin` and `plan` as [`Ready`] has them.
    pub(crate) fn publish(
        &self,
        reply: &TokenReply,
        cfg: &Arc<SiteConfig>,
        margin: f64,
        plan: Option<f64>,
    ) {
        let ready = Arc::new(Ready {
            line: token_proto::ok_line(reply),
            reply: reply.clone(),
            cfg: cfg.clone(),
            margin,
            plan,
        });
        // The answer it replaces is wiped when its last reader drops it.
        let mut cell = self.lock();
        *cell = Some(ready);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// What is published now.
    pub(crate) fn current(&self) -> Option<Arc<Ready>> {
        self.lock().clone()
    }

    /// [`Held::current`] and the count of changes it is from.
    #[cfg(unix)]
    pub(crate) fn current_and_version(&self) -> (Option<Arc<Ready>>, u64) {
        let cell = self.lock();
        (cell.clone(), self.version.load(Ordering::Acquire))
    }

    /// The count of changes: the same while what is published is.
    #[cfg(unix)]
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Nothing published from now on, until the actor publishes again.
    pub(crate) fn clear(&self) {
        let mut cell = self.lock();
        if cell.take().is_some() {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Ready>>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
