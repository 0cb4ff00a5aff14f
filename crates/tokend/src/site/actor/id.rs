//! The actor's ID token: kept from a token response once validated, served
//! to callers of `token get --id-token` (and `token kube` with
//! `kube_token = "id_token"`), or waited for with the site's own token call.

use tokio::sync::oneshot;

use super::flight::{Need, Waiter};
use super::Actor;
use crate::refresh::Expiring;
use crate::site::idtoken::IdCheck;
use crate::site::{Served, SiteError, TtlFrom};
use token_proto::TokenReply;

impl Actor {
    /// Keeps a response's ID token if it validated (its `exp` is its
    /// expiry). A response without one keeps the one in hand while it is
    /// valid; one that failed leaves the site without an ID token, and
    /// `status` says why.
    pub(super) fn take_id(&mut self, id: IdCheck, sent_at: f64, now: f64) {
        match id {
            IdCheck::Valid(held)
                if self.st.subject.as_ref().is_some_and(|s| *s != held.subject) =>
            {
                // `iss` is the configured issuer's in every one already.
                self.take_id(
                    IdCheck::Refused(crate::site::idtoken::IdRefusal {
                        site: self.name.clone(),
                        source: std::sync::Arc::new(tokend_oauth::IdTokenError::SubjectChanged),
                    }),
                    sent_at,
                    now,
                );
            }
            IdCheck::Valid(mut held) => {
                // Obtained with the access token just taken (refresh-ahead
                // compares the two), by the request sent at `sent_at`.
                held.obtained_at = sent_at;
                self.st.subject = Some(held.subject.clone());
                self.st.id_token = Some(Box::new(held));
            }
            IdCheck::Absent => {
                self.st.id_token = self.st.id_token.take().filter(|t| t.unexpired(now));
            }
            IdCheck::Refused(refused) => self.lose_id(&refused.to_string()),
            IdCheck::Unchecked(why) => self.lose_id(&why),
        }
    }

    /// The response's ID token is not kept, nor the one held before.
    fn lose_id(&mut self, why: &str) {
        tracing::warn!(site = %self.name, "{why}");
        self.st.id_token = None;
        self.st.last_error = Some(format!(
            "{why}; the access token is served, the ID token is not: `token login {}` gets a new one",
            self.name
        ));
    }

    /// A caller wants the ID token: served from hand, or it waits for the
    /// site's own token call (a refresh brings a new one when the provider
    /// renews ID tokens), or a login.
    pub(super) fn get_id(
        &mut self,
        min_ttl: Option<u64>,
        reply: oneshot::Sender<Result<Served, SiteError>>,
    ) {
        if !self.cfg.wants_id_token() {
            let _ = reply.send(Err(SiteError::BadRequest(format!(
                "site {}: has no ID token: its `scopes` must include `openid` (then `token login {}`)",
                self.name, self.name
            ))));
            return;
        }
        self.st.id_asked = true;
        if let Some(t) = self.serve_id(min_ttl) {
            let _ = reply.send(Ok(Served::Token(t)));
            return;
        }
        // The provider failed a moment ago: the ID token in hand while it
        // has the outage floor left, else the failure and the next try.
        let now = self.now();
        if let Some(e) = self.st.retrying(now) {
            let _ = reply.send(self.lasting_id().ok_or(e));
            return;
        }
        let running = self
            .flight
            .as_ref()
            .filter(|f| f.need == Some(Need::Own))
            .map(|f| f.seq);
        self.waiters.push(Waiter {
            need: Need::Own,
            id_token: true,
            min_ttl,
            from: TtlFrom::Caller,
            from_seq: running.unwrap_or(self.seq + 1),
            reply,
        });
    }

    /// The ID token in hand if it serves this caller.
    fn serve_id(&mut self, min_ttl: Option<u64>) -> Option<TokenReply> {
        let now = self.now();
        let id = self.st.id_token.as_ref()?;
        if !id.serves(now, min_ttl, self.cfg.refresh_before) {
            return None;
        }
        self.st.last_used = now;
        Some(id.reply(&self.st.scopes, self.cfg.rare.api_key.clone()))
    }

    /// The ID token in hand if it has the outage floor left.
    fn lasting_id(&mut self) -> Option<Served> {
        let now = self.now();
        let id = self
            .st
            .id_token
            .as_ref()
            .filter(|t| t.serves_through_outage(now))?;
        self.st.last_used = now;
        Some(Served::Token(
            id.reply(&self.st.scopes, self.cfg.rare.api_key.clone()),
        ))
    }

    /// The answer to an ID-token waiter once the site's token call landed:
    /// the ID token if it serves (or, after a failure, has the outage floor
    /// left), else a login is needed.
    pub(super) fn answer_id(
        &mut self,
        min_ttl: Option<u64>,
        error: Option<&SiteError>,
    ) -> Result<Served, SiteError> {
        if let Some(t) = self.serve_id(min_ttl) {
            return Ok(Served::Token(t));
        }
        if let Some(e) = error {
            return self.lasting_id().ok_or_else(|| e.clone());
        }
        let now = self.now();
        let valid = self
            .st
            .id_token
            .as_ref()
            .filter(|t| t.unexpired(now))
            .map(|t| t.reply(&self.st.scopes, self.cfg.rare.api_key.clone()));
        Ok(valid.map_or(Served::NeedLogin, Served::Token))
    }
}
