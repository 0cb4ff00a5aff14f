//! The actor's token calls: what a `get` needs, serving it from the tokens
//! in hand or from the one call under way, starting that call, and taking
//! its result in (store first, then memory) for every caller waiting on it.

use std::sync::Arc;

use token_proto::TokenReply;
use tokend_oauth::{OAuthSite, TokenResponse};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::call::Call;
use super::save::Then;
use super::Actor;
use crate::clock::whole;
use crate::config::grant::Renewal;
use crate::refresh::Expiring;
use crate::site::idtoken::IdCheck;
use crate::site::state::Current;
use crate::site::{Served, SiteError, TtlFrom};

/// What a token call fetches: the site's own token, or a down-scoped one
/// for a sorted scope set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Need {
    Own,
    Narrow(Vec<String>),
}

/// A token-endpoint call under way.
pub(super) struct Flight {
    pub(super) seq: u64,
    /// `None`: a login's code exchange.
    pub(super) need: Option<Need>,
    pub(super) task: JoinHandle<Landed>,
}

/// A flight's result, and the OAuth client it built (kept for the next).
pub(super) struct Landed {
    pub(super) oauth: Option<Arc<OAuthSite>>,
    pub(super) result: Result<TokenResponse, SiteError>,
    /// What became of the response's ID token.
    pub(super) id: IdCheck,
    /// When the request was sent (Unix s): the token's expiry counts from then.
    pub(super) sent_at: f64,
}

/// A caller waiting for a flight.
pub(super) struct Waiter {
    pub(super) need: Need,
    /// Wants the site's ID token rather than the access token.
    pub(super) id_token: bool,
    pub(super) min_ttl: Option<u64>,
    pub(super) from: TtlFrom,
    /// Answered by a flight numbered at least this.
    pub(super) from_seq: u64,
    pub(super) reply: oneshot::Sender<Result<Served, SiteError>>,
}

impl Actor {
    /// The scopes a request asks for, as a need. Asking for a scope the
    /// site was not granted is an error, not a new login.
    pub(super) fn need_for(&self, scopes: Vec<String>) -> Result<Need, SiteError> {
        if scopes.is_empty() {
            return Ok(Need::Own);
        }
        let mut wanted = scopes;
        wanted.sort();
        wanted.dedup();
        let mut all = self.cfg.scopes.clone();
        all.sort();
        all.dedup();
        if wanted == all {
            return Ok(Need::Own);
        }
        let grantable = if self.st.scopes.is_empty() {
            &self.cfg.scopes
        } else {
            &self.st.scopes
        };
        if let Some(extra) = wanted.iter().find(|s| !grantable.contains(s)) {
            let name = &self.name;
            return Err(SiteError::BadRequest(if self.cfg.scopes.contains(extra) {
                // Configured, asked for at the login, and left out by the provider.
                format!(
                    "site {name}: the provider did not grant scope `{extra}` at the login (it granted {}); \
                     it may not know the scope or not allow it for this client: check the client's \
                     settings at the provider, then `token login {name}` to ask again",
                    grantable.join(" ")
                )
            } else {
                format!(
                    "site {name}: scope `{extra}` is not among the site's scopes ({}); add it to `scopes` in the config (then `token login {name}`) to ask for it",
                    grantable.join(" ")
                )
            }));
        }
        let renewable = self.cfg.grant.renews_alone(self.st.refresh.is_some());
        if !renewable && self.st.access.is_some() {
            return Err(SiteError::BadRequest(format!(
                "site {}: the provider gave no refresh token, so tokend cannot ask for a narrower token; use `token get {}` without --scope",
                self.name, self.name
            )));
        }
        Ok(Need::Narrow(wanted))
    }

    pub(super) fn get(
        &mut self,
        need: Need,
        min_ttl: Option<u64>,
        from: TtlFrom,
        fresh: bool,
        reply: oneshot::Sender<Result<Served, SiteError>>,
    ) {
        if !fresh {
            if let Some(token) = self.serve(&need, min_ttl, from) {
                let _ = reply.send(Ok(Served::Token(token)));
                return;
            }
            // The provider failed a moment ago: it is not asked again
            // before the planned retry, whoever asks.
            if let Some(e) = self.st.retrying(self.now()).filter(|_| need == Need::Own) {
                let _ = reply.send(Err(e));
                return;
            }
        }
        // A flight for this need already under way answers it, unless the
        // caller wants a token fetched after it asked.
        let running = self
            .flight
            .as_ref()
            .filter(|f| f.need.as_ref() == Some(&need) && !fresh)
            .map(|f| f.seq)
            .or_else(|| {
                // As does one landed and waiting for its save.
                let w = self
                    .withheld
                    .as_ref()
                    .filter(|w| w.need == need && !fresh)?;
                match w.then {
                    Then::Answer(seq) => Some(seq),
                    Then::Login => Some(u64::MAX),
                }
            });
        self.waiters.push(Waiter {
            need,
            id_token: false,
            min_ttl,
            from,
            from_seq: running.unwrap_or(self.seq + 1),
            reply,
        });
    }

    /// The token in hand if it serves this caller.
    pub(super) fn serve(
        &mut self,
        need: &Need,
        min_ttl: Option<u64>,
        from: TtlFrom,
    ) -> Option<TokenReply> {
        let now = self.now();
        let before = self.cfg.refresh_before;
        let cur = self.held(need)?;
        let warning = if cur.serves(now, min_ttl, before) {
            None
        } else if cur.best_there_is(now, min_ttl, before, from) {
            min_ttl.and_then(|m| cur.short_warning(&self.name, now, m, from))
        } else if *need == Need::Own && self.st.backing_off(now) && cur.serves_through_outage(now) {
            // The provider failed a moment ago and a retry is planned: serve
            // the token in hand while it has the outage floor left, rather
            // than hammer the provider.
            None
        } else {
            return None;
        };
        // Served before: a site asked again and again (published for that).
        let again = self.st.last_used >= cur.obtained_at;
        let mut reply = cur.reply(self.cfg.rare.api_key.clone(), None);
        reply.warning = warning.filter(|_| self.st.say_short(from));
        self.st.last_used = now;
        let reply = self.noted(reply);
        if again {
            self.publish(need, &reply);
        }
        Some(reply)
    }

    /// A reply with what the caller should hear besides: the login is not
    /// persisted, the store is not the one asked for (once per daemon), the
    /// provider granted fewer scopes (once per login).
    pub(super) fn noted(&mut self, mut reply: TokenReply) -> TokenReply {
        let mut notes: Vec<String> = reply.warning.take().into_iter().collect();
        if let Some(why) = &self.st.unsaved {
            notes.push(format!("this login will not survive a restart: {why}"));
        }
        if let Some(note) = self.deps.store_notice.as_ref().and_then(|n| n.take()) {
            notes.push(note);
        }
        if std::mem::take(&mut self.st.tell_narrower) {
            notes.extend(self.st.narrower.clone());
        }
        // One line each on the caller's stderr.
        reply.warning = (!notes.is_empty()).then(|| notes.join("\n"));
        // When refresh-ahead plans to replace it (never after its expiry):
        // what a cache of it (cargo's) may last until.
        let now = self.now();
        reply.renew_at = self
            .st
            .next_refresh(&self.cfg, now)
            .map(|at| crate::clock::whole(at.max(now)))
            .map(|at| reply.expires_at.map_or(at, |exp| at.min(exp)));
        reply
    }

    /// Starts the next token call if none is under way and one is needed:
    /// a login's code first, then the oldest waiter's need.
    pub(super) fn fly(&mut self) {
        // A result waiting for its save is handed out first: the refresh
        // token it brought is not used before it is stored.
        if self.flight.is_some() || self.withheld.is_some() {
            return;
        }
        if let Some(x) = self.exchange.take() {
            let call = Call::Code {
                code: x.code,
                redirect: x.redirect,
                verifier: x.verifier,
                nonce: x.nonce,
            };
            if let Some(p) = self.login.as_mut() {
                p.page = x.page;
            }
            self.launch(None, call);
            return;
        }
        if self.stopping {
            return;
        }
        let Some(need) = self.waiters.first().map(|w| w.need.clone()) else {
            return;
        };
        match self.call_for(&need) {
            Some(call) => self.launch(Some(need), call),
            None => {
                // Only a login helps.
                let (now, rest): (Vec<_>, Vec<_>) =
                    self.waiters.drain(..).partition(|w| w.need == need);
                self.waiters = rest;
                for w in now {
                    let _ = w.reply.send(Ok(Served::NeedLogin));
                }
                self.fly();
            }
        }
    }

    /// The token call for a need: a refresh, or a client-credentials grant;
    /// `None` when only a login helps.
    pub(super) fn call_for(&self, need: &Need) -> Option<Call> {
        let scopes = match need {
            Need::Own => None,
            Need::Narrow(key) => Some(key.clone()),
        };
        match self.cfg.grant.renewal() {
            Renewal::ClientCredentials | Renewal::JwtBearer | Renewal::TokenExchange => {
                Some(Call::Machine {
                    scopes: scopes.unwrap_or_else(|| self.cfg.scopes.clone()),
                })
            }
            Renewal::RefreshToken => {
                let refresh = self.st.refresh.clone()?;
                Some(Call::Refresh { refresh, scopes })
            }
        }
    }

    pub(super) fn launch(&mut self, need: Option<Need>, call: Call) {
        self.seq += 1;
        let task = tokio::spawn(call.run(
            self.deps.clone(),
            self.cfg.clone(),
            self.oauth.clone(),
            self.dpop.clone(),
        ));
        self.flight = Some(Flight {
            seq: self.seq,
            need,
            task,
        });
    }

    /// Refresh-ahead is due: renew the site's own token with nobody waiting.
    pub(super) fn refresh_ahead(&mut self) {
        if self.flight.is_some() {
            return;
        }
        self.st.retry_after = None;
        tracing::debug!(site = %self.name, "refreshing ahead of expiry");
        if let Some(call) = self.call_for(&Need::Own) {
            self.launch(Some(Need::Own), call);
        }
    }

    /// A flight landed: keep its token (store first, then memory) and answer
    /// every caller waiting for it.
    pub(super) async fn landed(&mut self, flight: Flight, landed: Landed) {
        if landed.oauth.is_some() {
            self.oauth = landed.oauth;
        }
        let now = self.now();
        match (flight.need, landed.result) {
            (None, result) => self.exchanged(result, landed.id, landed.sent_at),
            (Some(need), Ok(resp)) => {
                let before = self.held(&need).cloned();
                match self.take(&need, resp, landed.id, landed.sent_at, now) {
                    Some(save) => self.withhold(need, before, save, Then::Answer(flight.seq)),
                    None => self.answer(&need, flight.seq, None),
                }
            }
            (Some(Need::Own), Err(SiteError::Refused { site, source })) => {
                tracing::warn!(site = %self.name, "the provider refused the refresh token ({source}); a login is needed");
                let why = format!("site {site}: {source}; run `token login {site}`");
                self.forget(Some(why));
                self.answer(&Need::Own, flight.seq, None);
            }
            (Some(need), Err(e)) => {
                if e.needs_config_edit() {
                    self.st.last_error = Some(e.to_string());
                    self.st.stalled = true;
                } else {
                    tracing::warn!(site = %self.name, "token request failed: {e}");
                    if need == Need::Own {
                        self.st.failed(&e, now);
                    }
                }
                // With when the next try is, when one is planned.
                let e = match need {
                    Need::Own => self.st.retrying(now).unwrap_or(e),
                    Need::Narrow(_) => e,
                };
                self.answer(&need, flight.seq, Some(e));
            }
        }
        self.settle_logouts();
    }

    /// Answers the waiters a flight of `need` numbered `seq` covers: from the
    /// tokens in hand, the freshest with a warning when it falls short of
    /// what they asked, or `error`.
    pub(super) fn answer(&mut self, need: &Need, seq: u64, error: Option<SiteError>) {
        let (covered, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.need == *need && w.from_seq <= seq);
        self.waiters = rest;
        let now = self.now();
        for w in covered {
            if w.id_token {
                let _ = w.reply.send(self.answer_id(w.min_ttl, error.as_ref()));
                continue;
            }
            let answer = if let Some(t) = self.serve(need, w.min_ttl, w.from) {
                Ok(Served::Token(t))
            } else if let Some(e) = &error {
                // A token with the outage floor left beats an error.
                self.lasting(need, now)
                    .map(Served::Token)
                    .ok_or_else(|| e.clone())
            } else if let Some(t) = self.short(need, now, w.min_ttl, w.from) {
                Ok(Served::Token(t))
            } else if self.held(need).is_some() {
                // The call brought a token, but it had expired by the time
                // it arrived, as tokend counts it: no login helps.
                Err(self.expired_on_arrival())
            } else {
                Ok(Served::NeedLogin)
            };
            let _ = w.reply.send(answer);
        }
    }

    /// The token held for a need.
    pub(super) fn held(&self, need: &Need) -> Option<&Current> {
        if let Some(w) = self.withheld.as_ref().filter(|w| w.need == *need) {
            // The token from before the call that waits for its save.
            return w.before.as_ref();
        }
        match need {
            Need::Own => self.st.access.as_ref(),
            Need::Narrow(key) => self.st.narrowed.get(key),
        }
    }

    fn expired_on_arrival(&self) -> SiteError {
        SiteError::Provider {
            site: self.name.clone(),
            source: tokend_oauth::Error::BadResponse {
                status: 200,
                what: "a token that expired before it arrived (its lifetime counts from the request, less a second)".to_owned(),
                endpoint: "the token endpoint".to_owned(),
            },
        }
    }

    /// The token in hand if it has the outage floor left.
    pub(super) fn lasting(&mut self, need: &Need, now: f64) -> Option<TokenReply> {
        let cur = self.held(need)?;
        let reply = cur
            .serves_through_outage(now)
            .then(|| cur.reply(self.cfg.rare.api_key.clone(), None))?;
        self.st.last_used = now;
        Some(self.noted(reply))
    }

    /// The token in hand for a caller it does not fully serve (a `min_ttl`
    /// the provider cannot meet), marked so the next such caller is served
    /// without a call, with a warning naming the provider's lifetime.
    pub(super) fn short(
        &mut self,
        need: &Need,
        now: f64,
        min_ttl: Option<u64>,
        from: TtlFrom,
    ) -> Option<TokenReply> {
        let api_key = self.cfg.rare.api_key.clone();
        let name = self.name.clone();
        let cur = match need {
            Need::Own => self.st.access.as_mut()?,
            Need::Narrow(key) => self.st.narrowed.get_mut(key)?,
        };
        if !cur.unexpired(now) {
            return None;
        }
        let warning = min_ttl.and_then(|m| {
            cur.fell_short = true;
            cur.short_warning(&name, now, m, from)
        });
        let mut reply = cur.reply(api_key, None);
        reply.warning = warning.filter(|_| self.st.say_short(from));
        self.st.last_used = now;
        Some(self.noted(reply))
    }

    /// Takes a token response to a request sent at `sent_at` in, and has
    /// it saved: the number of the save, when the result must wait for it
    /// before it is handed out (a rotated refresh token reaches the store
    /// before the new access token leaves the daemon).
    pub(super) fn take(
        &mut self,
        need: &Need,
        resp: TokenResponse,
        id: IdCheck,
        sent_at: f64,
        now: f64,
    ) -> Option<u64> {
        match need {
            Need::Own => {
                let scopes = self.cfg.scopes.clone();
                Some(self.take_own(resp, &scopes, id, sent_at, now))
            }
            Need::Narrow(key) => {
                let cur = Current::obtained(&resp, key, sent_at);
                self.st.narrowed.insert(key.clone(), cur);
                // The refresh rotated the site's refresh token.
                let rt = resp.refresh_token?;
                self.st.refresh = Some(rt);
                Some(self.persist())
            }
        }
    }

    /// The site's own token from a response, in memory; returns the number
    /// of the save that carries it.
    pub(super) fn take_own(
        &mut self,
        resp: TokenResponse,
        requested: &[String],
        id: IdCheck,
        sent_at: f64,
        now: f64,
    ) -> u64 {
        let cur = Current::obtained(&resp, requested, sent_at);
        if let Some(rt) = resp.refresh_token {
            self.st.refresh = Some(rt);
        }
        self.st.scopes = cur.scopes.clone();
        // A missing offline_access without a refresh token is said on its
        // own (what it means: a login each time the token expires).
        let said_alone = |s: &str| s == "offline_access" && self.st.refresh.is_none();
        let missing: Vec<&str> = requested
            .iter()
            .filter(|s| !cur.scopes.contains(s) && !said_alone(s))
            .map(String::as_str)
            .collect();
        let narrower = (!missing.is_empty()).then(|| {
            format!(
                "site {}: the provider granted {}, without {} (configured in `scopes`); calls that need {} will be refused",
                self.name,
                if cur.scopes.is_empty() { "no scopes".to_owned() } else { cur.scopes.join(" ") },
                missing.join(" "),
                if missing.len() == 1 { "it" } else { "them" }
            )
        });
        if narrower.is_some() && narrower != self.st.narrower {
            self.st.tell_narrower = true;
        }
        self.st.narrower = narrower;
        match cur.expires_at {
            Some(at) => {
                tracing::info!(site = %self.name, expires_in = whole(at as f64 - now), "new access token")
            }
            None => tracing::info!(site = %self.name, "new access token (does not expire)"),
        }
        self.st.access = Some(cur);
        self.st.last_refresh = Some(now);
        self.st.last_error = None;
        self.st.retry_after = None;
        self.st.stalled = false;
        self.st.backoff.reset();
        self.take_id(id, sent_at, now);
        self.persist()
    }
}
