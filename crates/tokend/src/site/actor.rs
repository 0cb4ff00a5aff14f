//! The site's actor: one task that owns the site's tokens, its refresh
//! timer, its pending login and its store record.
//!
//! It never waits on the network itself: a token-endpoint call (a flight)
//! runs in a child task while the actor keeps answering; a `get` that the
//! tokens in hand do not serve waits for that flight (or starts one) and
//! is answered from its result: one call per need, never one per caller.
//! Store reads and writes are awaited in the actor, in order, so a rotated
//! refresh token reaches the store before any caller sees the new access
//! token, and a logout's delete cannot be overtaken by an older save.

use std::sync::Arc;

use token_proto::{ErrorCode, LoginMode, SiteStatus, TokenReply};
use tokend_oauth::{AuthCode, OAuthSite, PkceVerifier, RefreshToken, TokenResponse};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::state::{Current, StatusView, TokenState};
use super::{client, Deps, LoggedOut, Msg, Served, SiteError};
use crate::clock::whole;
use crate::config::{Grant, SiteConfig};
use crate::error::ApiError;
use crate::login::{self, Got, Login, LoginTicket, OpenerSlot, Progress};
use crate::loopback::Page;
use crate::store::Record;

/// What a token call fetches: the site's own token, or a down-scoped one
/// for a sorted scope set.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    Own,
    Narrow(Vec<String>),
}

/// A token-endpoint call under way.
struct Flight {
    seq: u64,
    /// `None`: a login's code exchange.
    need: Option<Need>,
    task: JoinHandle<Landed>,
}

/// A flight's result, and the OAuth client it built (kept for the next).
struct Landed {
    oauth: Option<Arc<OAuthSite>>,
    result: Result<TokenResponse, SiteError>,
}

/// A caller waiting for a flight.
struct Waiter {
    need: Need,
    min_ttl: Option<u64>,
    /// Answered by a flight numbered at least this.
    from_seq: u64,
    reply: oneshot::Sender<Result<Served, SiteError>>,
}

/// A code a login got, waiting for its exchange.
struct Exchange {
    login: u64,
    code: AuthCode,
    redirect: String,
    verifier: PkceVerifier,
    page: Option<oneshot::Sender<Page>>,
}

/// The login in progress.
struct Pending {
    id: u64,
    progress: Arc<watch::Sender<Progress>>,
    /// Which caller's client opens the browser.
    opener: OpenerSlot,
    paste: Option<mpsc::Sender<String>>,
    task: JoinHandle<()>,
    /// Where the browser's page goes once the exchange is done.
    page: Option<oneshot::Sender<Page>>,
}

pub(super) struct Actor {
    name: String,
    cfg: Arc<SiteConfig>,
    deps: Deps,
    rx: mpsc::Receiver<Msg>,
    me: mpsc::WeakSender<Msg>,
    /// The actor this one replaces: it must end before this one touches the store.
    predecessor: Option<watch::Receiver<()>>,
    st: TokenState,
    loaded: bool,
    oauth: Option<Arc<OAuthSite>>,
    flight: Option<Flight>,
    /// Flights started so far.
    seq: u64,
    waiters: Vec<Waiter>,
    exchange: Option<Exchange>,
    login: Option<Pending>,
    logins: u64,
    /// Logouts waiting for the flight under way to land.
    logouts: Vec<oneshot::Sender<LoggedOut>>,
    stopping: bool,
    /// Dropped when the actor ends: what [`super::SiteHandle::finished`] waits for.
    _finished: watch::Sender<()>,
}

/// What woke the actor.
enum Wake {
    Msg(Option<Msg>),
    Landed(Result<Landed, tokio::task::JoinError>),
    Timer,
}

pub(super) async fn run(mut a: Actor) {
    loop {
        if a.stopping && a.flight.is_none() && a.exchange.is_none() {
            break;
        }
        // No timer while a flight is under way: its landing re-plans.
        let due = if a.stopping || a.flight.is_some() {
            None
        } else {
            a.st.next_refresh(&a.cfg, a.deps.clock.now())
                .filter(|_| a.loaded)
                .map(|at| a.deps.clock.instant_at(at))
        };
        let wake = tokio::select! {
            m = a.rx.recv(), if !a.stopping => Wake::Msg(m),
            r = async { match a.flight.as_mut() {
                Some(f) => (&mut f.task).await,
                None => std::future::pending().await,
            } } => Wake::Landed(r),
            () = async { match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Wake::Timer,
        };
        match wake {
            Wake::Msg(Some(msg)) => a.handle(msg).await,
            Wake::Msg(None) => a.begin_stop(),
            Wake::Landed(r) => {
                let Some(flight) = a.flight.take() else {
                    continue;
                };
                let landed = r.unwrap_or_else(|e| Landed {
                    oauth: None,
                    result: Err(SiteError::Api(ApiError::internal(format!(
                        "site {}: the token request failed: {e}",
                        a.name
                    )))),
                });
                a.landed(flight, landed).await;
            }
            Wake::Timer => a.refresh_ahead(),
        }
        a.fly();
    }
    a.finish();
}

impl Actor {
    pub(super) fn new(
        cfg: Arc<SiteConfig>,
        deps: Deps,
        rx: mpsc::Receiver<Msg>,
        me: mpsc::WeakSender<Msg>,
        predecessor: Option<watch::Receiver<()>>,
        finished: watch::Sender<()>,
    ) -> Actor {
        Actor {
            name: cfg.name.clone(),
            cfg,
            deps,
            rx,
            me,
            predecessor,
            st: TokenState::default(),
            loaded: false,
            oauth: None,
            flight: None,
            seq: 0,
            waiters: Vec::new(),
            exchange: None,
            login: None,
            logins: 0,
            logouts: Vec::new(),
            stopping: false,
            _finished: finished,
        }
    }

    fn now(&self) -> f64 {
        self.deps.clock.now()
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Get {
                scopes,
                min_ttl,
                fresh,
                reply,
            } => {
                self.load().await;
                match self.need_for(scopes) {
                    Ok(need) => self.get(need, min_ttl, fresh, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::Login { mode, reply } => {
                self.load().await;
                let _ = reply.send(Ok(self.join_login(mode)));
            }
            Msg::LoginGot { id, got } => self.login_got(id, got).await,
            Msg::Paste { reply } => {
                let _ = reply.send(self.login.as_ref().and_then(|p| p.paste.clone()));
            }
            Msg::Logout { reply } => {
                // A store we cannot read still gets its entry deleted.
                self.load().await;
                self.cancel_login(login::cancelled(&self.name));
                if self.flight.is_some() || self.exchange.is_some() {
                    // Revoke what that call brings, not what it replaces.
                    self.logouts.push(reply);
                } else {
                    let out = self.logout().await;
                    let _ = reply.send(out);
                }
            }
            Msg::Status { reply } => {
                self.load().await;
                let _ = reply.send(self.status());
            }
            Msg::Config(cfg) => {
                if *cfg != *self.cfg {
                    tracing::info!(site = %self.name, "site settings changed; its login is kept");
                    self.cfg = cfg;
                    self.oauth = None;
                    self.st.stalled = false;
                }
            }
            Msg::Stop => self.begin_stop(),
        }
    }

    /// Loads the persisted login once. A store that cannot be read (no
    /// Secret Service on a headless machine, a locked keyring) does not
    /// stop the site from working: it starts empty, and `status` says why.
    async fn load(&mut self) {
        if self.loaded {
            return;
        }
        if let Some(mut before) = self.predecessor.take() {
            while before.changed().await.is_ok() {}
        }
        let record = {
            let _slot = self.deps.load_slots.acquire().await;
            self.deps.store.load(&self.name).await
        };
        self.loaded = true;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let msg = format!(
                    "cannot read the {} store ({e}); logins will not survive a restart: fix it or set TOKEND_STORE=file",
                    self.deps.store.name()
                );
                tracing::error!(site = %self.name, "{msg}");
                self.st.last_error = Some(msg);
                None
            }
        };
        match record {
            Some(r) if r.identity == self.cfg.identity() => {
                let saved_at = r.saved_at as f64;
                self.st.refresh = r.refresh_token;
                self.st.scopes = r.scopes;
                self.st.last_refresh = Some(saved_at);
                if let Some(token) = r.access_token {
                    self.st.access = Some(Current {
                        token,
                        token_type: "Bearer".to_owned(),
                        expires_at: r.expires_at.map(|at| at as f64),
                        obtained_at: saved_at,
                        scopes: self.st.scopes.clone(),
                        jitter: crate::refresh::jitter(),
                        fell_short: false,
                    });
                }
                tracing::debug!(site = %self.name, "login loaded from the store");
            }
            Some(_) => {
                tracing::info!(site = %self.name, "stored login is for another provider, client or scope set; ignoring it");
            }
            None => {}
        }
    }

    /// The scopes a request asks for, as a need. Asking for a scope the
    /// site was not granted is an error, not a new login.
    fn need_for(&self, scopes: Vec<String>) -> Result<Need, SiteError> {
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
            return Err(bad_request(format!(
                "site {}: scope `{extra}` is not among the site's scopes ({}); add it to `scopes` in the config (then `token login {}`) to ask for it",
                self.name,
                grantable.join(" "),
                self.name
            )));
        }
        let renewable = self.cfg.grant.renews_alone(self.st.refresh.is_some());
        if !renewable && self.st.access.is_some() {
            return Err(bad_request(format!(
                "site {}: the provider gave no refresh token, so tokend cannot ask for a narrower token; use `token get {}` without --scope",
                self.name, self.name
            )));
        }
        Ok(Need::Narrow(wanted))
    }

    fn get(
        &mut self,
        need: Need,
        min_ttl: Option<u64>,
        fresh: bool,
        reply: oneshot::Sender<Result<Served, SiteError>>,
    ) {
        if !fresh {
            if let Some(token) = self.serve(&need, min_ttl) {
                let _ = reply.send(Ok(Served::Token(token)));
                return;
            }
        }
        // A flight for this need already under way answers it, unless the
        // caller wants a token fetched after it asked.
        let running = self
            .flight
            .as_ref()
            .filter(|f| f.need.as_ref() == Some(&need) && !fresh)
            .map(|f| f.seq);
        self.waiters.push(Waiter {
            need,
            min_ttl,
            from_seq: running.unwrap_or(self.seq + 1),
            reply,
        });
    }

    /// The token in hand if it serves this caller.
    fn serve(&mut self, need: &Need, min_ttl: Option<u64>) -> Option<TokenReply> {
        let now = self.now();
        let before = self.cfg.refresh_before;
        let cur = match need {
            Need::Own => self.st.access.as_ref()?,
            Need::Narrow(key) => self.st.narrowed.get(key)?,
        };
        let warning = if cur.serves(now, min_ttl, before) {
            None
        } else if cur.best_there_is(now, min_ttl, before) {
            min_ttl.map(|m| cur.short_warning(&self.name, now, m))
        } else if *need == Need::Own && self.st.backing_off(now) && cur.remaining(now) > 0.0 {
            // The provider failed a moment ago and a retry is planned: serve
            // the still-valid token rather than hammer it.
            None
        } else {
            return None;
        };
        let reply = cur.reply(self.cfg.api_key.clone(), warning);
        self.st.last_used = now;
        Some(reply)
    }

    /// Starts the next token call if none is under way and one is needed:
    /// a login's code first, then the oldest waiter's need.
    fn fly(&mut self) {
        if self.flight.is_some() {
            return;
        }
        if let Some(x) = self.exchange.take() {
            let call = Call::Code {
                code: x.code,
                redirect: x.redirect,
                verifier: x.verifier,
            };
            if let Some(p) = self.login.as_mut().filter(|p| p.id == x.login) {
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
    fn call_for(&self, need: &Need) -> Option<Call> {
        let scopes = match need {
            Need::Own => None,
            Need::Narrow(key) => Some(key.clone()),
        };
        if self.cfg.grant == Grant::ClientCredentials {
            return Some(Call::ClientCredentials {
                scopes: scopes.unwrap_or_else(|| self.cfg.scopes.clone()),
            });
        }
        let refresh = self.st.refresh.clone()?;
        Some(Call::Refresh { refresh, scopes })
    }

    fn launch(&mut self, need: Option<Need>, call: Call) {
        self.seq += 1;
        let task = tokio::spawn(call.run(self.deps.clone(), self.cfg.clone(), self.oauth.clone()));
        self.flight = Some(Flight {
            seq: self.seq,
            need,
            task,
        });
    }

    /// Refresh-ahead is due: renew the site's own token with nobody waiting.
    fn refresh_ahead(&mut self) {
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
    async fn landed(&mut self, flight: Flight, landed: Landed) {
        if landed.oauth.is_some() {
            self.oauth = landed.oauth;
        }
        let now = self.now();
        match (flight.need, landed.result) {
            (None, result) => self.exchanged(result).await,
            (Some(need), Ok(resp)) => {
                self.take(&need, resp, now).await;
                self.answer(&need, flight.seq, None);
            }
            (Some(Need::Own), Err(SiteError::Refused { site, source })) => {
                tracing::warn!(site = %self.name, "the provider refused the refresh token ({source}); a login is needed");
                let why = format!("site {site}: {source}; run `token login {site}`");
                self.forget(Some(why)).await;
                self.answer(&Need::Own, flight.seq, None);
            }
            (Some(need), Err(e)) => {
                match &e {
                    SiteError::Config(m) => {
                        // Retrying will not help until the config changes.
                        self.st.last_error = Some(m.clone());
                        self.st.stalled = true;
                    }
                    _ => {
                        tracing::warn!(site = %self.name, "token request failed: {e}");
                        if need == Need::Own {
                            self.st.failed(e.to_string(), now);
                        }
                    }
                }
                self.answer(&need, flight.seq, Some(e));
            }
        }
        for reply in std::mem::take(&mut self.logouts) {
            let out = self.logout().await;
            let _ = reply.send(out);
        }
    }

    /// Answers the waiters a flight of `need` numbered `seq` covers: from the
    /// tokens in hand, the freshest with a warning when it falls short of
    /// what they asked, or `error`.
    fn answer(&mut self, need: &Need, seq: u64, error: Option<SiteError>) {
        let (covered, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.need == *need && w.from_seq <= seq);
        self.waiters = rest;
        let now = self.now();
        for w in covered {
            let answer = if let Some(t) = self.serve(need, w.min_ttl) {
                Ok(Served::Token(t))
            } else if let Some(e) = &error {
                // A still-valid token beats an error.
                self.still_valid(need, now)
                    .map(Served::Token)
                    .ok_or_else(|| e.clone())
            } else {
                Ok(self
                    .short(need, now, w.min_ttl)
                    .map_or(Served::NeedLogin, Served::Token))
            };
            let _ = w.reply.send(answer);
        }
    }

    /// The token in hand if it has not expired at all.
    fn still_valid(&mut self, need: &Need, now: f64) -> Option<TokenReply> {
        let cur = match need {
            Need::Own => self.st.access.as_ref()?,
            Need::Narrow(key) => self.st.narrowed.get(key)?,
        };
        let reply =
            (cur.remaining(now) > 0.0).then(|| cur.reply(self.cfg.api_key.clone(), None))?;
        self.st.last_used = now;
        Some(reply)
    }

    /// The token in hand for a caller it does not fully serve (a `min_ttl`
    /// the provider cannot meet), marked so the next such caller is served
    /// without a call, with a warning naming the provider's lifetime.
    fn short(&mut self, need: &Need, now: f64, min_ttl: Option<u64>) -> Option<TokenReply> {
        let api_key = self.cfg.api_key.clone();
        let name = self.name.clone();
        let cur = match need {
            Need::Own => self.st.access.as_mut()?,
            Need::Narrow(key) => self.st.narrowed.get_mut(key)?,
        };
        if cur.remaining(now) <= 0.0 {
            return None;
        }
        let warning = min_ttl.map(|m| {
            cur.fell_short = true;
            cur.short_warning(&name, now, m)
        });
        self.st.last_used = now;
        Some(cur.reply(api_key, warning))
    }

    /// Takes a token response in: persists first (a rotated refresh token
    /// must reach the store before the new access token is handed out),
    /// then memory.
    async fn take(&mut self, need: &Need, resp: TokenResponse, now: f64) {
        match need {
            Need::Own => {
                let scopes = self.cfg.scopes.clone();
                self.take_own(resp, &scopes, now).await;
            }
            Need::Narrow(key) => {
                let cur = Current::obtained(&resp, key, now);
                if let Some(rt) = resp.refresh_token {
                    // The refresh rotated the site's refresh token.
                    self.st.refresh = Some(rt);
                    self.persist(now).await;
                }
                self.st.narrowed.insert(key.clone(), cur);
            }
        }
    }

    async fn take_own(&mut self, resp: TokenResponse, requested: &[String], now: f64) {
        let cur = Current::obtained(&resp, requested, now);
        if let Some(rt) = resp.refresh_token {
            self.st.refresh = Some(rt);
        }
        self.st.scopes = cur.scopes.clone();
        match cur.expires_at {
            Some(at) => {
                tracing::info!(site = %self.name, expires_in = whole(at - now), "new access token")
            }
            None => tracing::info!(site = %self.name, "new access token (does not expire)"),
        }
        self.st.access = Some(cur);
        self.st.last_refresh = Some(now);
        self.st.last_error = None;
        self.st.retry_after = None;
        self.st.stalled = false;
        self.st.backoff.reset();
        self.persist(now).await;
    }

    /// Writes the login to the store. A failure is logged and kept as the
    /// site's error: memory still has the login, a restart would lose it.
    async fn persist(&mut self, now: f64) {
        let refresh = self.st.refresh.clone();
        let access = self.st.access.as_ref().filter(|_| refresh.is_none());
        let record = Record {
            identity: self.cfg.identity(),
            access_token: access.map(|c| c.token.clone()),
            expires_at: access.and_then(|c| c.expires_at).map(whole),
            refresh_token: refresh,
            scopes: self.st.scopes.clone(),
            saved_at: whole(now),
        };
        if let Err(e) = self.deps.store.save(&self.name, &record).await {
            let msg = format!(
                "cannot persist the login to the {} store: {e}",
                self.deps.store.name()
            );
            tracing::error!(site = %self.name, "{msg}");
            self.st.last_error = Some(msg);
        }
    }

    /// Drops the login, memory and store.
    async fn forget(&mut self, why: Option<String>) {
        self.st.clear(why);
        if let Err(e) = self.deps.store.delete(&self.name).await {
            tracing::error!(site = %self.name, "cannot remove the login from the store: {e}");
        }
    }

    async fn logout(&mut self) -> LoggedOut {
        let out = LoggedOut {
            refresh: self.st.refresh.clone(),
            access: self.st.access.as_ref().map(|c| c.token.clone()),
            config: self.cfg.clone(),
            oauth: self.oauth.clone(),
        };
        self.forget(None).await;
        out
    }

    /// A caller wants a login: it joins the one under way, or starts one.
    fn join_login(&mut self, mode: LoginMode) -> LoginTicket {
        match &self.login {
            // Nobody waits for it any more (its end may be on its way):
            // this caller starts afresh and opens the browser.
            Some(p) if p.progress.receiver_count() == 0 && self.exchange.is_none() => {
                p.task.abort();
                self.login = None;
            }
            Some(p) => return LoginTicket::joiner(&p.opener, p.progress.subscribe()),
            None => {}
        }
        self.logins += 1;
        let id = self.logins;
        let (how, paste) = login::How::plan(&self.cfg, mode);
        let (progress, rx) = watch::channel(Progress::Starting);
        let progress = Arc::new(progress);
        let task = match self.me.upgrade() {
            Some(site) => tokio::spawn(
                Login {
                    id,
                    how,
                    ctx: login::Ctx {
                        cfg: self.cfg.clone(),
                        deps: self.deps.clone(),
                    },
                    progress: progress.clone(),
                    site,
                }
                .run(),
            ),
            // The site is going away; the login would have nowhere to report.
            None => tokio::spawn(async {}),
        };
        let ticket = LoginTicket::opener(rx);
        self.login = Some(Pending {
            id,
            progress,
            opener: ticket.slot().clone(),
            paste,
            task,
            page: None,
        });
        ticket
    }

    /// A login flow ended: a code to exchange, a token to keep, or a failure.
    async fn login_got(&mut self, id: u64, got: Result<Got, ApiError>) {
        if self.login.as_ref().is_none_or(|p| p.id != id) {
            return;
        }
        match got {
            Ok(Got::Code {
                code,
                redirect,
                verifier,
                page,
            }) => {
                self.exchange = Some(Exchange {
                    login: id,
                    code,
                    redirect,
                    verifier,
                    page,
                });
            }
            Ok(Got::Token(resp)) => self.exchanged(Ok(resp)).await,
            Err(e) => self.end_login(Err(e)),
        }
    }

    /// The login's token (or why there is none) is in.
    async fn exchanged(&mut self, result: Result<TokenResponse, SiteError>) {
        let now = self.now();
        match result {
            Ok(resp) => {
                let scopes = self.cfg.scopes.clone();
                self.st.narrowed.clear();
                self.take_own(resp, &scopes, now).await;
                // Whoever waits for the site's own token is served by this one.
                self.answer(&Need::Own, u64::MAX, None);
                let reply = self
                    .st
                    .access
                    .as_ref()
                    .map(|c| c.reply(self.cfg.api_key.clone(), None));
                match reply {
                    Some(t) => self.end_login(Ok(t)),
                    None => self.end_login(Err(ApiError::internal(format!(
                        "site {}: login finished without a token",
                        self.name
                    )))),
                }
            }
            Err(e) => self.end_login(Err(ApiError::from(e))),
        }
    }

    /// Publishes a login's outcome to every caller waiting for it, and
    /// tells the browser how it went.
    fn end_login(&mut self, outcome: Result<TokenReply, ApiError>) {
        let Some(p) = self.login.take() else { return };
        match &outcome {
            Ok(_) => tracing::info!(site = %self.name, "login completed"),
            Err(_) if p.progress.receiver_count() == 0 => {
                // Every caller went away: the next one starts afresh.
                tracing::info!(site = %self.name, "login cancelled: nobody waits for it any more");
            }
            Err(e) => {
                tracing::warn!(site = %self.name, "login failed: {e}");
                self.st.last_error = Some(e.message.clone());
            }
        }
        if let Some(page) = p.page {
            let _ = page.send(match &outcome {
                Ok(_) => Page::Done(self.name.clone()),
                Err(e) => Page::Failed(e.message.clone()),
            });
        }
        p.progress.send_replace(Progress::Done(outcome));
    }

    /// Ends the login under way (logout, reload, stop) with `why`.
    fn cancel_login(&mut self, why: ApiError) {
        if let Some(p) = &self.login {
            p.task.abort();
        }
        if self.exchange.is_none() {
            self.end_login(Err(why));
        }
    }

    fn status(&self) -> SiteStatus {
        self.st.status(StatusView {
            cfg: &self.cfg,
            now: self.now(),
            loaded: self.loaded,
            login_pending: self.login.is_some(),
            refreshing: self.flight.as_ref().is_some_and(|f| f.need.is_some()),
        })
    }

    /// Stops taking messages; the flight under way still lands and persists.
    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.cancel_login(ApiError::new(
            ErrorCode::LoginFailed,
            format!(
                "site {}: the daemon stopped or the site's settings changed during the login; run `token login {}` again",
                self.name, self.name
            ),
        ));
        self.rx.close();
    }

    /// Answers whatever is still waiting, then the actor ends.
    fn finish(mut self) {
        let name = self.name.clone();
        let gone = || {
            SiteError::Api(ApiError::internal(format!(
                "site {name} was reloaded or the daemon is stopping; run the command again"
            )))
        };
        for w in std::mem::take(&mut self.waiters) {
            let _ = w.reply.send(Err(gone()));
        }
        self.end_login(Err(ApiError::internal("the site stopped")));
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Get { reply, .. } = msg {
                let _ = reply.send(Err(gone()));
            }
        }
    }
}

fn bad_request(message: String) -> SiteError {
    SiteError::Api(ApiError::new(ErrorCode::BadRequest, message))
}

/// One token-endpoint call.
enum Call {
    Refresh {
        refresh: RefreshToken,
        scopes: Option<Vec<String>>,
    },
    ClientCredentials {
        scopes: Vec<String>,
    },
    Code {
        code: AuthCode,
        redirect: String,
        verifier: PkceVerifier,
    },
}

impl Call {
    /// Runs in the flight's task: builds the OAuth client if there is none
    /// (discovery, the client secret), then calls the token endpoint.
    async fn run(self, deps: Deps, cfg: Arc<SiteConfig>, oauth: Option<Arc<OAuthSite>>) -> Landed {
        let oauth = match oauth {
            Some(o) => o,
            None => match client::build(&deps, &cfg).await {
                Ok(o) => o,
                Err(e) => {
                    return Landed {
                        oauth: None,
                        result: Err(e),
                    }
                }
            },
        };
        let http = &deps.http;
        let result = match &self {
            Call::Refresh { refresh, scopes } => {
                oauth.refresh(http, refresh, scopes.as_deref()).await
            }
            Call::ClientCredentials { scopes } => oauth.client_credentials(http, scopes).await,
            Call::Code {
                code,
                redirect,
                verifier,
            } => oauth.exchange_code(http, code, redirect, verifier).await,
        };
        let site = cfg.name.clone();
        let result = result.map_err(|source| match self {
            Call::Refresh { .. } if source.is_invalid_grant() => {
                SiteError::Refused { site, source }
            }
            _ => SiteError::Provider { site, source },
        });
        Landed {
            oauth: Some(oauth),
            result,
        }
    }
}
