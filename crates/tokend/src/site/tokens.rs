//! A site's token-endpoint calls: serving a `get` without a login (the
//! single flight), refresh or client-credentials grants, and taking a token
//! response in (persist first, then memory).

use token_proto::{ErrorCode, TokenReply};
use tokend_oauth::TokenResponse;

use super::{lock, Current, Site};
use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::store::Record;
use token_proto::now_unix;

/// What one token-endpoint call came to.
pub(super) enum Call<T = ()> {
    /// A token (a response, or `()` once it has been taken in).
    Got(T),
    /// No refresh token, or the provider refused it: only a login helps.
    NeedLogin,
    /// A failure that may pass; the backoff is set.
    Failed(tokend_oauth::Error),
}

impl Site {
    /// Serves a `get` that needs no login: the token in memory, else one
    /// token-endpoint call (refresh, or client credentials) shared by every
    /// concurrent caller. `Ok(None)`: only a login helps.
    pub async fn get_without_login(
        &self,
        d: &Daemon,
        min_ttl: Option<u64>,
    ) -> Result<Option<TokenReply>, ApiError> {
        let served = self.serve_without_login(d, min_ttl).await?;
        if served.is_some() {
            // After the token call, so a token fetched for this caller counts
            // as used (client-credentials sites are renewed ahead while in use).
            self.mark_used();
        }
        Ok(served)
    }

    async fn serve_without_login(
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
            Call::Got(()) => Ok(self.current()),
            Call::NeedLogin => Ok(None),
            Call::Failed(e) => match self.still_valid() {
                // A still-valid token beats an error.
                Some(t) => Ok(Some(t)),
                None => Err(ApiError::provider(&self.name, &e)),
            },
        }
    }

    /// The site's own token from the token endpoint, taken in (persisted,
    /// then in memory). Call with `flight` held.
    pub(super) async fn token_call(&self, d: &Daemon) -> Result<Call, ApiError> {
        Ok(match self.token_request(d, None).await? {
            Call::Got(resp) => {
                self.apply(d, resp, &self.config().scopes).await?;
                Call::Got(())
            }
            Call::NeedLogin => Call::NeedLogin,
            Call::Failed(e) => Call::Failed(e),
        })
    }

    /// One token-endpoint call for `scopes` (the site's own when `None`): a
    /// refresh, or a client-credentials grant. A refused refresh token drops
    /// the login; other failures set the backoff. Call with `flight` held.
    pub(super) async fn token_request(
        &self,
        d: &Daemon,
        scopes: Option<&[String]>,
    ) -> Result<Call<TokenResponse>, ApiError> {
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
                oauth.refresh(&d.http, &rt, scopes).await
            }
            _ => {
                oauth
                    .client_credentials(&d.http, scopes.unwrap_or(&cfg.scopes))
                    .await
            }
        };
        self.set_refreshing(false);
        match result {
            Ok(resp) => Ok(Call::Got(resp)),
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

    /// Writes the login to the store. A failure is logged and returned as the
    /// site's error: memory still has the login, a restart would lose it.
    pub(super) async fn persist(&self, d: &Daemon, record: &Record) -> Option<String> {
        let e = d.store.save(&self.name, record).await.err()?;
        let msg = format!(
            "cannot persist the login to the {} store: {e}",
            d.store.name()
        );
        tracing::error!(site = %self.name, "{msg}");
        Some(msg)
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
        let persist_error = self.persist(d, &record).await;
        let mut st = lock(&self.state);
        st.access = Some(Current::obtained(
            resp.access_token,
            resp.token_type,
            expires_at,
            now,
        ));
        st.refresh = refresh;
        st.scopes = scopes;
        st.last_refresh = Some(now);
        st.last_error = None;
        st.retry_after = None;
        st.backoff.reset();
        if persist_error.is_some() {
            st.last_error = persist_error;
        }
        drop(st);
        match expires_at {
            Some(at) => {
                tracing::info!(site = %self.name, expires_in = at.saturating_sub(now), "new access token")
            }
            None => tracing::info!(site = %self.name, "new access token (does not expire)"),
        }
        self.wake.notify_one();
        Ok(())
    }
}
