//! The actor's logins: one at a time, joined by every caller who needs
//! one, its code exchanged as one of the site's token calls, its outcome
//! published to every caller still waiting.

use std::sync::Arc;

use token_proto::{LoginMode, TokenReply};
use tokend_oauth::{AuthCode, PkceVerifier, TokenResponse};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::flight::Need;
use super::save::Then;
use super::Actor;
use crate::login::{self, Got, Login, LoginTicket, OpenerSlot, Progress};
use crate::loopback::Page;
use crate::refresh::Expiring;
use crate::site::idtoken::IdCheck;
use crate::site::SiteError;

/// A code a login got, waiting for its exchange.
pub(super) struct Exchange {
    pub(super) code: AuthCode,
    pub(super) redirect: String,
    pub(super) verifier: PkceVerifier,
    /// The OIDC nonce the login sent, for the exchange's ID token.
    pub(super) nonce: Option<String>,
    pub(super) page: Option<oneshot::Sender<Page>>,
}

/// The login in progress.
pub(super) struct Pending {
    pub(super) progress: Arc<watch::Sender<Progress>>,
    /// Which caller's client opens the browser.
    pub(super) opener: OpenerSlot,
    pub(super) paste: Option<mpsc::Sender<String>>,
    /// The flow, until it hands back what it got: its join result comes
    /// to the actor's own loop.
    pub(super) task: Option<JoinHandle<Result<Got, SiteError>>>,
    /// Where the browser's page goes once the exchange is done.
    pub(super) page: Option<oneshot::Sender<Page>>,
}

impl Actor {
    /// A caller wants a login: it joins the one under way, or starts one.
    /// One that is not `interactive` (no person at it: an IDE's git or
    /// kubectl) starts none during the cooldown after a login that went
    /// unanswered, nor replaces one left open in the browser; an
    /// interactive one ends the cooldown.
    pub(super) fn join_login(
        &mut self,
        mode: LoginMode,
        interactive: bool,
    ) -> Result<LoginTicket, SiteError> {
        let now = self.now();
        if interactive {
            self.st.cooldown_until = None;
        } else if let Some(until) = self.st.cooldown_until.filter(|&u| u > now) {
            return Err(SiteError::LoginHeld {
                site: self.name.clone(),
                why: format!(
                    "the last login went unanswered, so callers without a terminal start none \
                     for another {} (login_cooldown)",
                    crate::site::state::roughly(until - now)
                ),
            });
        }
        match &self.login {
            Some(p)
                if p.progress.receiver_count() == 0 && self.exchange.is_none() && !interactive =>
            {
                return Err(SiteError::LoginHeld {
                    site: self.name.clone(),
                    why: "a login is open in the browser that its caller gave up on: finish it \
                          there, or start one from a terminal"
                        .to_owned(),
                });
            }
            // Nobody waits for it any more (its end may be on its way):
            // this caller starts afresh and opens the browser.
            Some(p) if p.progress.receiver_count() == 0 && self.exchange.is_none() => {
                if let Some(task) = &p.task {
                    task.abort();
                }
                self.login = None;
            }
            Some(p) => return Ok(LoginTicket::joiner(&p.opener, p.progress.subscribe())),
            None => {}
        }
        let (how, paste) = login::How::new(&self.cfg, mode)?;
        let (progress, rx) = watch::channel(Progress::Starting);
        let progress = Arc::new(progress);
        let task = tokio::spawn(
            Login {
                how,
                ctx: login::Ctx {
                    cfg: self.cfg.clone(),
                    deps: self.deps.clone(),
                    dpop: self.dpop.clone(),
                },
                progress: progress.clone(),
            }
            .run(),
        );
        let ticket = LoginTicket::opener(rx);
        self.login = Some(Pending {
            progress,
            opener: ticket.slot().clone(),
            paste,
            task: Some(task),
            page: None,
        });
        Ok(ticket)
    }

    /// A login flow ended: a code to exchange, a token to keep, or a failure.
    pub(super) fn login_got(&mut self, got: Result<Got, SiteError>) {
        if self.login.is_none() {
            return;
        }
        match got {
            Ok(Got::Code {
                code,
                redirect,
                verifier,
                nonce,
                page,
            }) => {
                self.exchange = Some(Box::new(Exchange {
                    code,
                    redirect,
                    verifier,
                    nonce,
                    page,
                }));
            }
            Ok(Got::Token(resp, checked, sent_at)) => self.exchanged(Ok(resp), checked, sent_at),
            Err(e) => self.end_login(Err(e)),
        }
    }

    /// The login's token (or why there is none) is in, from a request sent
    /// at `sent_at`. Its callers are answered once it is saved.
    pub(super) fn exchanged(
        &mut self,
        result: Result<TokenResponse, SiteError>,
        id: IdCheck,
        sent_at: f64,
    ) {
        let now = self.now();
        match result {
            Ok(resp) => {
                let before = self.st.access.clone();
                let scopes = self.cfg.scopes.clone();
                self.st.narrowed.clear();
                // A new login's ID token, or none: never the last login's.
                // A new login may be another user's: its ID token sets the subject.
                self.st.id_token = None;
                self.st.subject = None;
                let save = self.take_own(resp, &scopes, id, sent_at, now);
                self.st.no_refresh = self.no_refresh_token(now);
                if let Some(note) = &self.st.no_refresh {
                    tracing::warn!(site = %self.name, "{note}");
                }
                self.withhold(Need::Own, before, save, Then::Login);
            }
            Err(e) => self.end_login(Err(e)),
        }
    }

    /// A login's token is saved (or the save failed): it goes to every
    /// caller waiting for the login, and to those waiting for the site's
    /// own token.
    pub(super) fn login_done(&mut self) {
        self.answer(&Need::Own, u64::MAX, None);
        let now = self.now();
        let reply = self
            .st
            .access
            .as_ref()
            .filter(|c| c.unexpired(now))
            .map(|c| c.reply(self.cfg.rare.api_key.clone(), self.st.no_refresh.clone()))
            .map(|r| self.noted(r));
        match reply {
            Some(t) => self.end_login(Ok(t)),
            None => self.end_login(Err(SiteError::Internal(format!(
                "site {}: login finished without a token",
                self.name
            )))),
        }
    }

    /// What to tell the user when a login that asked for a refresh token
    /// (`offline_access`) brought none: the next login comes when the
    /// token expires.
    fn no_refresh_token(&self, now: f64) -> Option<String> {
        if self.st.refresh.is_some() || !self.cfg.expects_refresh_token() {
            return None;
        }
        let at = self.st.access.as_ref()?.expires_at?;
        let why = match self.cfg.effective_prompt() {
            Some("consent") => "the provider did not grant offline_access, although the login asked with prompt=consent",
            _ => "the provider did not grant offline_access; OpenID Connect providers grant it only with prompt = \"consent\" (the default for such sites)",
        };
        Some(format!(
            "site {}: no refresh token: you will be asked to log in again when this token expires in {}; {why}; see `prompt` under Configuration in tokend's README",
            self.name,
            crate::site::state::roughly(at as f64 - now),
        ))
    }

    /// Publishes a login's outcome to every caller waiting for it, and
    /// tells the browser how it went.
    pub(super) fn end_login(&mut self, outcome: Result<TokenReply, SiteError>) {
        let Some(p) = self.login.take() else { return };
        // Unanswered (timed out, or every caller gave up): background
        // callers start no new one for a while; any other end clears it.
        let unanswered = match &outcome {
            Err(SiteError::LoginTimedOut { .. }) => true,
            Err(_) => p.progress.receiver_count() == 0,
            Ok(_) => false,
        };
        self.st.cooldown_until = unanswered.then(|| {
            let cooldown = self.deps.login_cooldown.get().as_secs_f64();
            self.now() + cooldown
        });
        if let Some(until) = self.st.cooldown_until {
            tracing::info!(
                site = %self.name,
                "the login went unanswered: callers without a terminal start none for {} (login_cooldown)",
                crate::site::state::roughly(until - self.now())
            );
        }
        match &outcome {
            Ok(_) => tracing::info!(site = %self.name, "login completed"),
            Err(_) if p.progress.receiver_count() == 0 => {
                // Every caller went away: the next one starts afresh.
                tracing::info!(site = %self.name, "login cancelled: nobody waits for it any more");
            }
            Err(e) => {
                let shown = e.shown();
                tracing::warn!(site = %self.name, "login failed: {shown}");
                self.st.last_error = Some(shown);
            }
        }
        if let Some(page) = p.page {
            let _ = page.send(match &outcome {
                Ok(_) => Page::Done(self.name.clone()),
                Err(e) => Page::Failed(e.shown()),
            });
        }
        p.progress.send_replace(Progress::Done(outcome));
    }

    /// Ends the login under way (logout, reload, stop) with `why`.
    pub(super) fn cancel_login(&mut self, why: SiteError) {
        if let Some(task) = self.login.as_mut().and_then(|p| p.task.take()) {
            // Aborted: its join result is not waited for.
            task.abort();
        }
        if self.exchange.is_none() {
            // Ended by the user's own command, not unanswered: the cooldown
            // stays as it was.
            let cooldown = self.st.cooldown_until;
            self.end_login(Err(why));
            self.st.cooldown_until = cooldown;
        }
    }
}
