//! One site's tokens: what is held in memory, the single flight that
//! serializes token-endpoint calls, loading from and saving to the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use token_proto::{ErrorCode, SiteStatus, TokenReply};
use tokend_oauth::{
    AccessToken, Client, ClientAuth, ClientSecret, OAuthSite, Provider, RefreshToken, TokenResponse,
};

use crate::clock::now_unix;
use crate::config::{ClientAuthKind, Grant, SecretSource, SiteConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::login::PendingLogin;
use crate::refresh::{self, Attempt, Backoff};
use crate::store::Record;

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
    oauth: tokio::sync::Mutex<Option<Arc<OAuthSite>>>,
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
            if let Ok(mut o) = self.oauth.try_lock() {
                *o = None;
            }
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
        TokenReply {
            access_token: cur.token.expose().to_owned(),
            token_type: cur.token_type.clone(),
            expires_at: cur.expires_at,
            scopes: st.scopes.clone(),
            api_key: self.config().api_key.clone(),
        }
    }

    pub fn has_refresh_token(&self) -> bool {
        lock(&self.state).refresh.is_some()
    }

    /// Builds the OAuth client for this site: discovery (cached per issuer),
    /// explicit endpoints over discovered ones, the client secret resolved.
    pub async fn oauth(&self, d: &Daemon) -> Result<Arc<OAuthSite>, ApiError> {
        let mut slot = self.oauth.lock().await;
        if let Some(o) = &*slot {
            return Ok(o.clone());
        }
        let cfg = self.config();
        let site_err = |e: tokend_oauth::Error| ApiError::provider(&self.name, &e);
        let bad_url = |key: &str, e: url::ParseError| {
            ApiError::new(
                ErrorCode::ConfigError,
                format!(
                    "site {}: {key} is not a URL: {e}; fix the config",
                    self.name
                ),
            )
        };
        let parse = |key: &str, v: &Option<String>| -> Result<Option<url::Url>, ApiError> {
            v.as_deref()
                .map(|s| url::Url::parse(s).map_err(|e| bad_url(key, e)))
                .transpose()
        };
        let mut provider = match &cfg.issuer {
            Some(issuer) => d.discover(issuer).await.map_err(site_err)?,
            None => {
                let token_url = parse("token_url", &cfg.token_url)?.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::ConfigError,
                        format!(
                            "site {}: no token_url and no issuer; fix the config",
                            self.name
                        ),
                    )
                })?;
                Provider::new(token_url)
            }
        };
        if let Some(u) = parse("authorize_url", &cfg.authorize_url)? {
            provider.authorize_url = Some(u);
        }
        if let Some(u) = parse("token_url", &cfg.token_url)? {
            provider.token_url = u;
        }
        if let Some(u) = parse("revoke_url", &cfg.revoke_url)? {
            provider.revoke_url = Some(u);
        }
        if let Some(u) = parse("device_url", &cfg.device_url)? {
            provider.device_url = Some(u);
        }
        let secret = match &cfg.secret {
            None => None,
            Some(src) => Some(resolve_secret(&self.name, src).await?),
        };
        let client = Client {
            id: cfg.client_id.clone(),
            secret,
            auth: match cfg.effective_client_auth() {
                ClientAuthKind::None => ClientAuth::None,
                ClientAuthKind::Basic => ClientAuth::Basic,
                ClientAuthKind::Post => ClientAuth::Post,
            },
        };
        let mut site = OAuthSite::new(provider, client);
        site.scope_separator = cfg.scope_separator.clone();
        site.extra_params = cfg.extra_params.clone();
        let site = Arc::new(site);
        *slot = Some(site.clone());
        Ok(site)
    }

    /// Serves a `get` that needs no login: the token in memory, else one
    /// token-endpoint call (refresh, or client credentials) shared by every
    /// concurrent caller. `Ok(None)`: only a login helps.
    pub async fn get_without_login(
        &self,
        d: &Daemon,
        min_ttl: Option<u64>,
    ) -> Result<Option<TokenReply>, ApiError> {
        self.ensure_loaded(d).await?;
        self.mark_used();
        if let Some(t) = self.fresh(min_ttl) {
            return Ok(Some(t));
        }
        let _flight = self.flight.lock().await;
        // Whoever held the flight before us may have refreshed already.
        if let Some(t) = self.fresh(min_ttl) {
            return Ok(Some(t));
        }
        // The provider failed a moment ago and a retry is planned: serve the
        // still-valid token rather than hammer it.
        let backing_off = lock(&self.state)
            .retry_after
            .is_some_and(|t| t > now_unix());
        if backing_off {
            if let Some(t) = self.still_valid() {
                return Ok(Some(t));
            }
        }
        match self.token_call(d).await? {
            Call::Done => Ok(self.current()),
            Call::NeedLogin => Ok(None),
            Call::Failed(e) => match self.still_valid() {
                // A still-valid token beats an error.
                Some(t) => Ok(Some(t)),
                None => Err(ApiError::provider(&self.name, &e)),
            },
        }
    }

    /// One token-endpoint call: a refresh, or a client-credentials grant.
    /// Call with `flight` held.
    async fn token_call(&self, d: &Daemon) -> Result<Call, ApiError> {
        let cfg = self.config();
        let refresh = lock(&self.state).refresh.clone();
        if cfg.grant != Grant::ClientCredentials && refresh.is_none() {
            return Ok(Call::NeedLogin);
        }
        let oauth = match self.oauth(d).await {
            Ok(o) => o,
            Err(e) if e.code == ErrorCode::ProviderError => {
                // Discovery failed: worth retrying like any provider fault.
                self.failed(e.message.clone());
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.set_refreshing(true);
        let result = match refresh {
            Some(rt) if cfg.grant != Grant::ClientCredentials => {
                oauth.refresh(&d.http, &rt, None).await
            }
            _ => oauth.client_credentials(&d.http, &cfg.scopes).await,
        };
        self.set_refreshing(false);
        match result {
            Ok(resp) => {
                self.apply(d, resp, &cfg.scopes).await?;
                Ok(Call::Done)
            }
            Err(e) if e.is_invalid_grant() => {
                tracing::warn!(site = %self.name, "the provider refused the refresh token ({e}); a login is needed");
                self.forget(d, Some(format!("{e}; run `token login {}`", self.name)))
                    .await;
                Ok(Call::NeedLogin)
            }
            Err(e) => {
                tracing::warn!(site = %self.name, "token request failed: {e}");
                self.failed(e.to_string());
                Ok(Call::Failed(e))
            }
        }
    }

    /// The scopes a down-scoped request may ask for: those granted, else those configured.
    pub fn grantable_scopes(&self) -> Vec<String> {
        let st = lock(&self.state);
        if st.scopes.is_empty() {
            self.config().scopes.clone()
        } else {
            st.scopes.clone()
        }
    }

    /// A token for a subset of the site's scopes: a refresh (or client
    /// credentials grant) with the narrower `scope`, cached per scope set.
    /// `Ok(None)`: a login is needed first.
    pub async fn get_narrowed(
        &self,
        d: &Daemon,
        scopes: &[String],
        min_ttl: Option<u64>,
    ) -> Result<Option<TokenReply>, ApiError> {
        self.ensure_loaded(d).await?;
        self.mark_used();
        let mut key = scopes.to_vec();
        key.sort();
        key.dedup();
        let cached = |st: &TokenState| {
            st.narrowed
                .get(&key)
                .filter(|(cur, _)| cur.serves(now_unix(), min_ttl))
                .map(|(cur, granted)| TokenReply {
                    access_token: cur.token.expose().to_owned(),
                    token_type: cur.token_type.clone(),
                    expires_at: cur.expires_at,
                    scopes: granted.clone(),
                    api_key: self.config().api_key.clone(),
                })
        };
        if let Some(t) = cached(&lock(&self.state)) {
            return Ok(Some(t));
        }
        let _flight = self.flight.lock().await;
        if let Some(t) = cached(&lock(&self.state)) {
            return Ok(Some(t));
        }
        let cfg = self.config();
        let refresh = lock(&self.state).refresh.clone();
        let oauth = self.oauth(d).await?;
        let result = match (cfg.grant, refresh) {
            (Grant::ClientCredentials, _) => oauth.client_credentials(&d.http, &key).await,
            (_, Some(rt)) => oauth.refresh(&d.http, &rt, Some(&key)).await,
            (_, None) if lock(&self.state).access.is_some() => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "site {}: the provider gave no refresh token, so tokend cannot ask for a narrower token; use `token get {}` without --scope",
                        self.name, self.name
                    ),
                ))
            }
            (_, None) => return Ok(None),
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) if e.is_invalid_grant() => {
                self.forget(d, Some(format!("{e}; run `token login {}`", self.name)))
                    .await;
                return Ok(None);
            }
            Err(e) => return Err(ApiError::provider(&self.name, &e)),
        };
        let now = now_unix();
        let expires_at = resp.expires_at(now, &key);
        let granted = resp.scopes.clone().unwrap_or_else(|| key.clone());
        if let Some(new_rt) = resp.refresh_token.clone() {
            // The refresh rotated the site's refresh token: persist it before
            // handing anything out, exactly as for a full refresh.
            let full_scopes = lock(&self.state).scopes.clone();
            let record = Record {
                identity: cfg.identity(),
                refresh_token: Some(new_rt.clone()),
                access_token: None,
                expires_at: None,
                scopes: full_scopes,
                saved_at: now,
            };
            if let Err(e) = d.store.save(&self.name, &record).await {
                let msg = format!(
                    "cannot persist the login to the {} store: {e}",
                    d.store.name()
                );
                tracing::error!(site = %self.name, "{msg}");
                lock(&self.state).last_error = Some(msg);
            }
            lock(&self.state).refresh = Some(new_rt);
        }
        let cur = Current {
            token: resp.access_token,
            token_type: "Bearer".to_owned(),
            expires_at,
            obtained_at: now,
            jitter: refresh::jitter(),
        };
        let reply = TokenReply {
            access_token: cur.token.expose().to_owned(),
            token_type: cur.token_type.clone(),
            expires_at,
            scopes: granted.clone(),
            api_key: cfg.api_key.clone(),
        };
        lock(&self.state).narrowed.insert(key, (cur, granted));
        Ok(Some(reply))
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

    fn mark_used(&self) {
        let before = self.last_used.swap(now_unix(), Ordering::Relaxed);
        if before == 0 && self.config().grant == Grant::ClientCredentials {
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

    /// Takes a token response: persists first (a rotated refresh token must
    /// reach the store before the new access token is handed out), then
    /// updates memory. Call with `flight` held.
    pub async fn apply(
        &self,
        d: &Daemon,
        resp: TokenResponse,
        requested: &[String],
    ) -> Result<(), ApiError> {
        let now = now_unix();
        let cfg = self.config();
        let expires_at = resp.expires_at(now, requested);
        let old_refresh = lock(&self.state).refresh.clone();
        let refresh = resp.refresh_token.clone().or(old_refresh);
        let scopes = resp.scopes.clone().unwrap_or_else(|| requested.to_vec());
        let record = Record {
            identity: cfg.identity(),
            refresh_token: refresh.clone(),
            access_token: refresh.is_none().then(|| resp.access_token.clone()),
            expires_at: if refresh.is_none() { expires_at } else { None },
            scopes: scopes.clone(),
            saved_at: now,
        };
        let persisted = d.store.save(&self.name, &record).await;
        let mut st = lock(&self.state);
        st.access = Some(Current {
            token: resp.access_token,
            token_type: if resp.token_type.eq_ignore_ascii_case("bearer") {
                "Bearer".to_owned()
            } else {
                resp.token_type
            },
            expires_at,
            obtained_at: now,
            jitter: refresh::jitter(),
        });
        st.refresh = refresh;
        st.scopes = scopes;
        st.last_refresh = Some(now);
        st.last_error = None;
        st.retry_after = None;
        st.backoff.reset();
        if let Err(e) = persisted {
            // Memory still has the login; say loudly that a restart would lose it.
            let msg = format!(
                "cannot persist the login to the {} store: {e}",
                d.store.name()
            );
            tracing::error!(site = %self.name, "{msg}");
            st.last_error = Some(msg);
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
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
            has_refresh_token: st.refresh.is_some(),
            last_refresh: st.last_refresh,
            next_refresh: st.next_refresh,
            last_error: st.last_error.clone(),
        }
    }
}

/// What one token-endpoint call came to.
enum Call {
    Done,
    NeedLogin,
    Failed(tokend_oauth::Error),
}

impl refresh::Target for Site {
    fn plan(&self) -> Option<Duration> {
        if !self.loaded.initialized() {
            return None;
        }
        let cfg = self.config();
        let st = lock(&self.state);
        let renewable = st.refresh.is_some() || cfg.grant == Grant::ClientCredentials;
        if !renewable {
            return None;
        }
        let now = now_unix();
        let Some(cur) = st.access.as_ref() else {
            // A refresh token but no access token (just loaded after a
            // restart): renew now.
            return st.refresh.is_some().then_some(Duration::ZERO);
        };
        let expires_at = cur.expires_at?;
        if cfg.grant == Grant::ClientCredentials
            && self.last_used.load(Ordering::Relaxed) < cur.obtained_at
        {
            // Not used since it was fetched: let it lapse; the next get fetches.
            return None;
        }
        Some(Duration::from_secs(refresh::refresh_delay(
            cur.obtained_at,
            expires_at,
            now,
            cfg.refresh_before,
            cur.jitter,
        )))
    }

    fn planned(&self, wait: Option<Duration>) {
        lock(&self.state).next_refresh = wait.map(|w| now_unix() + w.as_secs());
    }

    fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    async fn refresh(&self) -> Attempt {
        let Some(d) = self.daemon.get().and_then(Weak::upgrade) else {
            return Attempt::Stop;
        };
        let _flight = self.flight.lock().await;
        // A caller may have refreshed while we waited for the flight.
        if self.plan().is_none_or(|w| w > Duration::from_secs(1)) {
            return Attempt::Done;
        }
        tracing::debug!(site = %self.name, "refreshing ahead of expiry");
        // `failed()` has set when to try again.
        let wait = || {
            let at = lock(&self.state).retry_after.unwrap_or(0);
            Duration::from_secs(at.saturating_sub(now_unix()).max(1))
        };
        match self.token_call(&d).await {
            Ok(Call::Done) => Attempt::Done,
            Ok(Call::NeedLogin) => Attempt::Stop,
            Ok(Call::Failed(_)) => Attempt::Retry { wait: wait() },
            Err(e) if e.code == ErrorCode::ProviderError => Attempt::Retry { wait: wait() },
            Err(e) => {
                // A config problem (a missing secret): retrying will not help
                // until the config changes, which wakes us.
                lock(&self.state).last_error = Some(e.message);
                Attempt::Stop
            }
        }
    }
}

/// Reads the client secret from the daemon's environment or a command.
async fn resolve_secret(site: &str, src: &SecretSource) -> Result<ClientSecret, ApiError> {
    let cfg_err = |m: String| ApiError::new(ErrorCode::ConfigError, format!("site {site}: {m}"));
    match src {
        SecretSource::Env(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(ClientSecret::new)
            .ok_or_else(|| {
                cfg_err(format!(
                    "client_secret_env names {var}, which is not set in tokend's environment; set it where tokend starts, or use client_secret_cmd"
                ))
            }),
        SecretSource::Cmd(cmd) => {
            let mut command = if cfg!(windows) {
                let mut c = tokio::process::Command::new("cmd");
                c.arg("/C").arg(cmd);
                c
            } else {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(cmd);
                c
            };
            command
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(std::time::Duration::from_secs(30), command.output())
                .await
                .map_err(|_| cfg_err("client_secret_cmd did not finish in 30 s".to_owned()))?
                .map_err(|e| cfg_err(format!("client_secret_cmd could not run: {e}")))?;
            if !out.status.success() {
                return Err(cfg_err(format!("client_secret_cmd failed ({})", out.status)));
            }
            let text = String::from_utf8(out.stdout)
                .map_err(|_| cfg_err("client_secret_cmd printed non-UTF-8".to_owned()))?;
            let secret = text.trim_end_matches(['\r', '\n']).to_owned();
            if secret.is_empty() {
                return Err(cfg_err("client_secret_cmd printed nothing".to_owned()));
            }
            Ok(ClientSecret::new(secret))
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
