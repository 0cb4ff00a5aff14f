//! One site's tokens: what is held in memory, the single flight that
//! serializes token-endpoint calls, loading from and saving to the store.

use std::sync::{Arc, Mutex, RwLock};

use token_proto::{ErrorCode, SiteStatus, TokenReply};
use tokend_oauth::{
    AccessToken, Client, ClientAuth, ClientSecret, OAuthSite, Provider, RefreshToken, TokenResponse,
};

use crate::clock::now_unix;
use crate::config::{ClientAuthKind, Grant, SecretSource, SiteConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::login::PendingLogin;
use crate::store::Record;

/// The access token in hand.
#[derive(Clone, Debug)]
pub struct Current {
    pub token: AccessToken,
    pub token_type: String,
    /// `None`: never expires.
    pub expires_at: Option<u64>,
    pub obtained_at: u64,
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
    last_refresh: Option<u64>,
    last_error: Option<String>,
    refreshing: bool,
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
        }
    }

    /// Loads the persisted login once; a store failure is retried next time.
    pub async fn ensure_loaded(&self, d: &Daemon) -> Result<(), ApiError> {
        self.loaded
            .get_or_try_init(|| async {
                let record = d.store.load(&self.name).await.map_err(|e| {
                    ApiError::internal(format!(
                        "site {}: cannot read the {} store: {e}",
                        self.name,
                        d.store.name()
                    ))
                })?;
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
                            });
                        }
                        tracing::debug!(site = %self.name, "login loaded from the store");
                    }
                    Some(_) => {
                        tracing::info!(site = %self.name, "stored login is for another provider, client or scope set; ignoring it");
                    }
                    None => {}
                }
                Ok(())
            })
            .await
            .map(|_| ())
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
        if let Some(t) = self.fresh(min_ttl) {
            return Ok(Some(t));
        }
        let _flight = self.flight.lock().await;
        // Whoever held the flight before us may have refreshed already.
        if let Some(t) = self.fresh(min_ttl) {
            return Ok(Some(t));
        }
        let cfg = self.config();
        let refresh = lock(&self.state).refresh.clone();
        let result = match (cfg.grant, refresh) {
            (Grant::ClientCredentials, _) => {
                let oauth = self.oauth(d).await?;
                self.set_refreshing(true);
                let r = oauth.client_credentials(&d.http, &cfg.scopes).await;
                self.set_refreshing(false);
                r
            }
            (_, Some(rt)) => {
                let oauth = self.oauth(d).await?;
                self.set_refreshing(true);
                let r = oauth.refresh(&d.http, &rt, None).await;
                self.set_refreshing(false);
                if let Err(e) = &r {
                    if e.is_invalid_grant() {
                        tracing::warn!(site = %self.name, "the provider refused the refresh token ({e}); a login is needed");
                        self.forget(d, Some(e.to_string())).await;
                        return Ok(None);
                    }
                }
                r
            }
            (_, None) => return Ok(None),
        };
        match result {
            Ok(resp) => {
                self.apply(d, resp, &cfg.scopes).await?;
                Ok(self.current())
            }
            Err(e) => {
                tracing::warn!(site = %self.name, "token request failed: {e}");
                lock(&self.state).last_error = Some(e.to_string());
                // A still-valid token beats an error.
                if let Some(t) = self.still_valid() {
                    return Ok(Some(t));
                }
                Err(ApiError::provider(&self.name, &e))
            }
        }
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
        });
        st.refresh = refresh;
        st.scopes = scopes;
        st.last_refresh = Some(now);
        st.last_error = None;
        if let Err(e) = persisted {
            // Memory still has the login; say loudly that a restart would lose it.
            let msg = format!(
                "cannot persist the login to the {} store: {e}",
                d.store.name()
            );
            tracing::error!(site = %self.name, "{msg}");
            st.last_error = Some(msg);
        }
        Ok(())
    }

    /// Drops the login (memory and store), e.g. after `invalid_grant` or logout.
    pub async fn forget(&self, d: &Daemon, why: Option<String>) {
        {
            let mut st = lock(&self.state);
            st.access = None;
            st.refresh = None;
            st.last_error = why;
        }
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
        } else if valid || st.refresh.is_some() {
            "ready"
        } else if st.last_error.is_some() {
            "error"
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
            next_refresh: None,
            last_error: st.last_error.clone(),
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
