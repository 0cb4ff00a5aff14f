//! One site's tokens: what is held in memory, the single flight that
//! serializes token-endpoint calls, loading from and saving to the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use tokio::sync::Notify;

use token_proto::{SiteStatus, TokenReply};
use tokend_oauth::{AccessToken, OAuthSite, RefreshToken};

use crate::config::{Grant, SiteConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::login::PendingLogin;
use crate::refresh::{self, Backoff};
use token_proto::now_unix;

mod client;
mod narrow;
mod schedule;
mod secret;
mod tokens;

use tokens::Call;

/// The access token in hand.
#[derive(Clone, Debug)]
pub struct Current {
    pub token: AccessToken,
    pub token_type: String,
    /// `None`: never expires.
    pub expires_at: Option<u64>,
    pub obtained_at: u64,
    /// Fixed per token, so re-planning its refresh gives the same time.
    pub jitter: f64,
}

impl Current {
    /// A token just obtained; `token_type` is compared case-insensitively
    /// and handed out as `Bearer` when it is one.
    fn obtained(
        token: AccessToken,
        token_type: String,
        expires_at: Option<u64>,
        now: u64,
    ) -> Current {
        Current {
            token,
            token_type: if token_type.eq_ignore_ascii_case("bearer") {
                "Bearer".to_owned()
            } else {
                token_type
            },
            expires_at,
            obtained_at: now,
            jitter: refresh::jitter(),
        }
    }

    /// Seconds left, `u64::MAX` for a token that never expires.
    fn remaining(&self, now: u64) -> u64 {
        self.expires_at
            .map_or(u64::MAX, |at| at.saturating_sub(now))
    }

    /// Good enough for a caller that asked for `min_ttl` (default: half the
    /// lifetime, at most 30 s, so a short-lived token is not refreshed on
    /// every call).
    fn serves(&self, now: u64, min_ttl: Option<u64>) -> bool {
        let Some(at) = self.expires_at else {
            return true;
        };
        let lifetime = at.saturating_sub(self.obtained_at);
        let need = min_ttl.unwrap_or_else(|| (lifetime / 2).min(30));
        self.remaining(now) > need
    }
}

#[derive(Debug, Default)]
struct TokenState {
    access: Option<Current>,
    refresh: Option<RefreshToken>,
    scopes: Vec<String>,
    /// Down-scoped access tokens by their sorted scope set, with the scopes granted.
    narrowed: std::collections::HashMap<Vec<String>, (Current, Vec<String>)>,
    last_refresh: Option<u64>,
    last_error: Option<String>,
    refreshing: bool,
    /// Unix seconds of the next refresh the scheduler has planned.
    next_refresh: Option<u64>,
    /// After a failure that may pass: no token-endpoint call before this
    /// (Unix s) while the current token is still valid.
    retry_after: Option<u64>,
    backoff: Backoff,
}

#[derive(Debug)]
pub struct Site {
    pub name: String,
    config: RwLock<Arc<SiteConfig>>,
    state: Mutex<TokenState>,
    /// Held across every token-endpoint call of this site, so concurrent
    /// callers cause one call and all see its result.
    pub(crate) flight: tokio::sync::Mutex<()>,
    loaded: tokio::sync::OnceCell<()>,
    /// The OAuth client and the settings it was built from.
    oauth: tokio::sync::Mutex<Option<(Arc<SiteConfig>, Arc<OAuthSite>)>>,
    pub(crate) login: Mutex<Option<Arc<PendingLogin>>>,
    /// Serializes starting a login, which awaits (binding, device start).
    pub(crate) login_gate: tokio::sync::Mutex<()>,
    /// Wakes the refresh-ahead task when the tokens or settings change.
    wake: Arc<Notify>,
    retired: AtomicBool,
    /// Unix seconds of the last `get` (client-credentials sites are renewed
    /// ahead only while in use).
    last_used: AtomicU64,
    daemon: OnceLock<Weak<Daemon>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Site {
    pub fn new(config: Arc<SiteConfig>) -> Site {
        Site {
            name: config.name.clone(),
            config: RwLock::new(config),
            state: Mutex::default(),
            flight: tokio::sync::Mutex::new(()),
            loaded: tokio::sync::OnceCell::new(),
            oauth: tokio::sync::Mutex::new(None),
            login: Mutex::new(None),
            login_gate: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            retired: AtomicBool::new(false),
            last_used: AtomicU64::new(0),
            daemon: OnceLock::new(),
        }
    }

    pub fn config(&self) -> Arc<SiteConfig> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A config edit that kept the identity: new endpoints or secrets apply
    /// from the next token call on.
    pub fn set_config(&self, cfg: Arc<SiteConfig>) {
        let mut slot = self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if **slot != *cfg {
            tracing::info!(site = %self.name, "site settings changed; its login is kept");
            *slot = cfg;
            self.wake.notify_one();
        }
    }

    /// Starts this site's refresh-ahead task (once).
    pub fn start_refresh_task(self: &Arc<Self>, d: &Arc<Daemon>) {
        if self.daemon.set(Arc::downgrade(d)).is_ok() {
            tokio::spawn(refresh::run(Arc::downgrade(self)));
        }
    }

    /// The site left the config: its task ends.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Loads the persisted login once. A store that cannot be read (no
    /// Secret Service on a headless machine, a locked keyring) does not stop
    /// the site from working: it starts empty, and `status` says why.
    pub async fn ensure_loaded(&self, d: &Daemon) -> Result<(), ApiError> {
        self.loaded
            .get_or_try_init(|| async {
                let record = match d.store.load(&self.name).await {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = format!(
                            "cannot read the {} store ({e}); logins will not survive a restart: fix it or set TOKEND_STORE=file",
                            d.store.name()
                        );
                        tracing::error!(site = %self.name, "{msg}");
                        lock(&self.state).last_error = Some(msg);
                        None
                    }
                };
                let cfg = self.config();
                match record {
                    Some(r) if r.identity == cfg.identity() => {
                        let mut st = lock(&self.state);
                        st.refresh = r.refresh_token;
                        st.scopes = r.scopes;
                        st.last_refresh = Some(r.saved_at);
                        if let Some(token) = r.access_token {
                            st.access = Some(Current {
                                token,
                                token_type: "Bearer".to_owned(),
                                expires_at: r.expires_at,
                                obtained_at: r.saved_at,
                                jitter: refresh::jitter(),
                            });
                        }
                        tracing::debug!(site = %self.name, "login loaded from the store");
                    }
                    Some(_) => {
                        tracing::info!(site = %self.name, "stored login is for another provider, client or scope set; ignoring it");
                    }
                    None => {}
                }
                self.wake.notify_one();
                Ok(())
            })
            .await
            .map(|_: &()| ())
    }

    /// Whether the persisted login has been read yet.
    pub fn is_loaded(&self) -> bool {
        self.loaded.initialized()
    }

    /// The token in memory if it serves this caller.
    pub fn fresh(&self, min_ttl: Option<u64>) -> Option<TokenReply> {
        let st = lock(&self.state);
        let cur = st.access.as_ref()?;
        cur.serves(now_unix(), min_ttl)
            .then(|| self.reply(&st, cur))
    }

    /// The token in memory if it has not expired at all.
    fn still_valid(&self) -> Option<TokenReply> {
        let st = lock(&self.state);
        let cur = st.access.as_ref()?;
        (cur.remaining(now_unix()) > 0).then(|| self.reply(&st, cur))
    }

    fn reply(&self, st: &TokenState, cur: &Current) -> TokenReply {
        self.reply_with(cur, st.scopes.clone())
    }

    /// What a caller receives for `cur`, granted `scopes`.
    fn reply_with(&self, cur: &Current, scopes: Vec<String>) -> TokenReply {
        TokenReply {
            access_token: cur.token.expose().to_owned(),
            token_type: cur.token_type.clone(),
            expires_at: cur.expires_at,
            scopes,
            api_key: self.config().api_key.clone(),
        }
    }

    pub fn has_refresh_token(&self) -> bool {
        lock(&self.state).refresh.is_some()
    }

    /// Records a failure that may pass, and when to try again.
    fn failed(&self, message: String) {
        let now = now_unix();
        let mut st = lock(&self.state);
        let remaining = st
            .access
            .as_ref()
            .map(|c| c.remaining(now))
            .filter(|r| *r > 0);
        let wait = st.backoff.next(remaining, refresh::jitter());
        st.retry_after = Some(now + wait.as_secs());
        st.last_error = Some(message);
    }

    /// Records a use. A client-credentials token first used now (fetched
    /// ahead, or never used before) gets its renewal planned.
    fn mark_used(&self) {
        let before = self.last_used.swap(now_unix(), Ordering::Relaxed);
        if self.config().grant != Grant::ClientCredentials {
            return;
        }
        let first_use = lock(&self.state)
            .access
            .as_ref()
            .is_some_and(|c| before < c.obtained_at);
        if first_use {
            self.wake.notify_one();
        }
    }

    pub(crate) fn pending_login(&self) -> Option<Arc<PendingLogin>> {
        lock(&self.login).clone()
    }

    pub(crate) fn note_error(&self, message: &str) {
        lock(&self.state).last_error = Some(message.to_owned());
    }

    fn set_refreshing(&self, on: bool) {
        lock(&self.state).refreshing = on;
    }

    /// The token in memory, whatever its remaining lifetime.
    pub fn current(&self) -> Option<TokenReply> {
        let st = lock(&self.state);
        st.access.as_ref().map(|cur| self.reply(&st, cur))
    }

    /// Drops the login (memory and store), e.g. after `invalid_grant` or logout.
    pub async fn forget(&self, d: &Daemon, why: Option<String>) {
        {
            let mut st = lock(&self.state);
            st.access = None;
            st.refresh = None;
            st.narrowed.clear();
            st.last_error = why;
            st.retry_after = None;
        }
        self.wake.notify_one();
        if let Err(e) = d.store.delete(&self.name).await {
            tracing::error!(site = %self.name, "cannot remove the login from the store: {e}");
        }
    }

    /// Both tokens, for revocation at logout.
    pub fn tokens(&self) -> (Option<RefreshToken>, Option<AccessToken>) {
        let st = lock(&self.state);
        (
            st.refresh.clone(),
            st.access.as_ref().map(|c| c.token.clone()),
        )
    }

    pub fn status(&self) -> SiteStatus {
        let st = lock(&self.state);
        let now = now_unix();
        let pending = lock(&self.login).is_some();
        let valid = st.access.as_ref().is_some_and(|c| c.remaining(now) > 0);
        let state = if pending {
            "login_pending"
        } else if st.refreshing {
            "refreshing"
        } else if !self.loaded.initialized() {
            "not_loaded"
        } else if valid {
            "ready"
        } else if st.last_error.is_some() {
            "error"
        } else if st.refresh.is_some() || self.config().grant == Grant::ClientCredentials {
            // Expired, but renewable without the user.
            "ready"
        } else {
            "login_required"
        };
        SiteStatus {
            site: self.name.clone(),
            state: state.to_owned(),
            expires_at: st.access.as_ref().and_then(|c| c.expires_at),
            scopes: st.scopes.clone(),
            has_access_token: st.access.is_some(),
            has_refresh_token: st.refresh.is_some(),
            last_refresh: st.last_refresh,
            next_refresh: st.next_refresh,
            last_error: st.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(expires_in: Option<u64>, age: u64) -> (Current, u64) {
        let now = 1_000_000;
        (
            Current {
                token: AccessToken::new("t".into()),
                token_type: "Bearer".into(),
                expires_at: expires_in.map(|e| now - age + e),
                obtained_at: now - age,
                jitter: 0.5,
            },
            now,
        )
    }

    #[test]
    fn a_token_serves_until_the_margin() {
        let (c, now) = current(Some(3600), 0);
        assert!(c.serves(now, None));
        assert!(c.serves(now, Some(3000)));
        assert!(!c.serves(now, Some(3600)));
        let (c, now) = current(Some(3600), 3575);
        assert!(!c.serves(now, None), "less than 30 s left");
        // A 4 s token is served for 2 s, not refreshed on every call.
        let (c, now) = current(Some(4), 1);
        assert!(c.serves(now, None));
        let (c, now) = current(None, 99999);
        assert!(c.serves(now, Some(1 << 40)));
    }
}
