//! Down-scoping: `token get SITE --scope S` is served by a refresh (or a
//! client-credentials grant) with the narrower `scope`, cached per scope set.

use token_proto::{ErrorCode, TokenReply};

use super::{lock, Call, Current, Site, TokenState};
use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
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
                .map(|(cur, granted)| self.reply_with(cur, granted.clone()))
        };
        if let Some(t) = cached(&lock(&self.state)) {
            return Ok(Some(t));
        }
        let _flight = self.flight.lock().await;
        if let Some(t) = cached(&lock(&self.state)) {
            return Ok(Some(t));
        }
        let no_refresh_token = {
            let st = lock(&self.state);
            st.refresh.is_none() && st.access.is_some()
        };
        if no_refresh_token && self.config().grant != Grant::ClientCredentials {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "site {}: the provider gave no refresh token, so tokend cannot ask for a narrower token; use `token get {}` without --scope",
                    self.name, self.name
                ),
            ));
        }
        let resp = match self.token_request(d, Some(&key)).await? {
            Call::Got(resp) => resp,
            Call::NeedLogin => return Ok(None),
            Call::Failed(e) => return Err(ApiError::provider(&self.name, &e)),
        };
        let now = now_unix();
        let expires_at = resp.expires_at(now, &key);
        let granted = resp.scopes.clone().unwrap_or_else(|| key.clone());
        if let Some(new_rt) = resp.refresh_token.clone() {
            // The refresh rotated the site's refresh token: persist it before
            // handing anything out, exactly as for a full refresh.
            let record = Record {
                identity: self.config().identity(),
                refresh_token: Some(new_rt.clone()),
                access_token: None,
                expires_at: None,
                scopes: lock(&self.state).scopes.clone(),
                saved_at: now,
            };
            let persist_error = self.persist(d, &record).await;
            let mut st = lock(&self.state);
            st.refresh = Some(new_rt);
            if persist_error.is_some() {
                st.last_error = persist_error;
            }
        }
        let cur = Current::obtained(resp.access_token, resp.token_type, expires_at, now);
        let reply = self.reply_with(&cur, granted.clone());
        lock(&self.state).narrowed.insert(key, (cur, granted));
        Ok(Some(reply))
    }
}
