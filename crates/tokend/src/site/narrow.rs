//! Down-scoping: `token get SITE --scope S` is served by a refresh (or a
//! client-credentials grant) with the narrower `scope`, cached per scope set.

use token_proto::{ErrorCode, TokenReply};

use super::{lock, Current, Site, TokenState};
use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::refresh;
use crate::store::Record;
use token_proto::now_unix;

impl Site {
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
}
