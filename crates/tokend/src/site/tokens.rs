//! A site's token-endpoint calls: serving a `get` without a login (the
//! single flight), refresh or client-credentials grants, and taking a token
//! response in (persist first, then memory).

use token_proto::{ErrorCode, TokenReply};
use tokend_oauth::TokenResponse;

use super::{lock, Current, Site};
use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::refresh;
use crate::store::Record;
use token_proto::now_unix;

/// What one token-endpoint call came to.
pub(super) enum Call {
    Done,
    NeedLogin,
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
    pub(super) async fn token_call(&self, d: &Daemon) -> Result<Call, ApiError> {
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
