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

mod call;
mod dpop;
mod flight;
mod id;
mod logins;

use std::sync::{Arc, Weak};
use std::time::Duration;

use token_proto::SiteStatus;
use tokend_oauth::{Dpop, OAuthSite};
use tokio::sync::{mpsc, oneshot, Semaphore};

use self::flight::{Flight, Landed, Waiter};
use self::logins::{Exchange, Pending};
use super::idtoken::HeldId;
use super::state::{Current, StatusView, TokenState};
use super::{Deps, LoggedOut, Msg, SiteError};
use crate::clock::whole;
use crate::config::SiteConfig;
use crate::login;
use crate::refresh::Expiring;
use crate::sites::Sites;
use crate::store::{Record, StoreError};

/// How long an actor with nothing under way waits for another message
/// before it parks. Short: starting again from parked state costs a task
/// and a mailbox (microseconds), while actors that overlap, as when
/// scripts ask a thousand sites one after another, leave holes among the
/// sites' long-lived memory when they end (at 1 s, 0.3 MiB more resident).
/// A burst of callers still shares one actor.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// Closes the actor's "finished" semaphore when the actor ends, however it ends.
pub(super) struct Ended(pub(super) Arc<Semaphore>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Where an actor's messages come from.
pub(super) struct Mailbox {
    pub(super) rx: mpsc::Receiver<Box<Msg>>,
    /// For the actor's own login and flight tasks to write back.
    pub(super) me: mpsc::WeakSender<Box<Msg>>,
    /// Where it parks (none: it never does).
    pub(super) home: Weak<Sites>,
}

/// A site's state while it has no actor: what its next actor starts from
/// instead of the store. Nothing is under way when a site parks (no token
/// call, no login, nobody waiting), so this is all there is: the flight
/// and login counters start again (a late login result from one of the
/// old actor's tasks never reaches the next actor).
#[derive(Debug)]
pub(crate) struct Parked {
    st: TokenState,
    dpop: Option<Arc<Dpop>>,
    /// When its refresh-ahead is due.
    pub(crate) wake: Option<tokio::time::Instant>,
}

impl Parked {
    /// New settings with the same identity (as [`Msg::Config`] for a running site).
    pub(crate) fn reconfigured(&mut self, site: &str) {
        tracing::info!(site = %site, "site settings changed; its login is kept");
        self.st.stalled = false;
    }

    /// The site's line in `status`, at `now` (Unix s).
    pub(crate) fn status(&self, cfg: &SiteConfig, now: f64) -> SiteStatus {
        self.st.status(StatusView {
            cfg,
            now,
            loaded: true,
            login_pending: false,
            refreshing: false,
        })
    }
}

pub(super) struct Actor {
    name: String,
    cfg: Arc<SiteConfig>,
    deps: Arc<Deps>,
    rx: mpsc::Receiver<Box<Msg>>,
    me: mpsc::WeakSender<Box<Msg>>,
    home: Weak<Sites>,
    /// The actor this one replaces: it must end before this one touches the store.
    predecessor: Option<Arc<Semaphore>>,
    st: TokenState,
    loaded: bool,
    oauth: Option<Arc<OAuthSite>>,
    /// `dpop = true` sites: the key (loaded or made at the first load).
    dpop: Option<Arc<Dpop>>,
    flight: Option<Flight>,
    /// Flights started so far.
    seq: u64,
    waiters: Vec<Waiter>,
    /// Boxed: rare, and an idle site should not carry its space.
    exchange: Option<Box<Exchange>>,
    login: Option<Pending>,
    logins: u64,
    /// Logouts waiting for the flight under way to land.
    logouts: Vec<oneshot::Sender<LoggedOut>>,
    stopping: bool,
    /// Dropped when the actor ends: what [`super::SiteHandle::finished`] waits for.
    finished: Ended,
}

/// What woke the actor. Small: it is kept in the actor's future, which an
/// idle site carries all the time.
enum Wake {
    Msg(Option<Box<Msg>>),
    Landed(Box<Result<Landed, tokio::task::JoinError>>),
    Timer,
    /// Nothing happened for [`PARK_AFTER`].
    Quiet,
}

/// The actor's life. It is given boxed: the future of an `async fn` keeps
/// its argument beside its locals, and an idle site (most of a thousand)
/// should carry one copy of its state, not two.
pub(super) async fn run(mut a: Box<Actor>) {
    loop {
        if a.stopping && a.flight.is_none() && a.exchange.is_none() {
            break;
        }
        let due = a.due();
        let park_at = a
            .can_park()
            .then(|| tokio::time::Instant::now() + PARK_AFTER);
        let wake = tokio::select! {
            m = a.rx.recv(), if !a.stopping => Wake::Msg(m),
            r = async { match a.flight.as_mut() {
                Some(f) => (&mut f.task).await,
                None => std::future::pending().await,
            } } => Wake::Landed(Box::new(r)),
            () = async { match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Wake::Timer,
            () = async { match park_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Wake::Quiet,
        };
        match wake {
            // Boxed: the work for one message is large and brief, and an
            // idle site (most of a thousand) should not carry its space.
            Wake::Msg(Some(msg)) => Box::pin(a.handle(*msg)).await,
            Wake::Msg(None) => a.begin_stop(),
            Wake::Landed(r) => {
                let Some(flight) = a.flight.take() else {
                    continue;
                };
                let landed = (*r).unwrap_or_else(|e| Landed {
                    oauth: None,
                    result: Err(SiteError::TaskFailed {
                        site: a.name.clone(),
                        what: "the token request",
                        source: Arc::new(e),
                    }),
                    id: crate::site::idtoken::IdCheck::Absent,
                    sent_at: a.now(),
                });
                Box::pin(a.landed(flight, landed)).await;
            }
            Wake::Timer => a.refresh_ahead(),
            Wake::Quiet => {
                if a.park() {
                    return;
                }
            }
        }
        crate::files::sync(&a.name, &a.cfg, &a.st);
        a.fly();
    }
    (*a).finish();
}

impl Actor {
    pub(super) fn new(
        cfg: Arc<SiteConfig>,
        deps: Arc<Deps>,
        mailbox: Mailbox,
        predecessor: Option<Arc<Semaphore>>,
        parked: Option<Box<Parked>>,
        finished: Ended,
    ) -> Actor {
        let mut a = Actor {
            name: cfg.name.clone(),
            cfg,
            deps,
            rx: mailbox.rx,
            me: mailbox.me,
            home: mailbox.home,
            predecessor,
            st: TokenState::default(),
            loaded: false,
            oauth: None,
            dpop: None,
            flight: None,
            seq: 0,
            waiters: Vec::new(),
            exchange: None,
            login: None,
            logins: 0,
            logouts: Vec::new(),
            stopping: false,
            finished,
        };
        if let Some(p) = parked {
            let Parked { st, dpop, wake: _ } = *p;
            a.st = st;
            a.dpop = dpop;
            a.loaded = true;
        }
        a
    }

    /// When refresh-ahead is next due. No timer while a flight is under
    /// way: its landing re-plans.
    fn due(&self) -> Option<tokio::time::Instant> {
        if self.stopping || self.flight.is_some() || !self.loaded {
            return None;
        }
        self.st
            .next_refresh(&self.cfg, self.now())
            .map(|at| self.deps.clock.instant_at(at))
    }

    /// Nothing is under way that the actor's task must see through.
    fn can_park(&self) -> bool {
        self.loaded
            && !self.stopping
            && self.flight.is_none()
            && self.exchange.is_none()
            && self.login.is_none()
            && self.waiters.is_empty()
            && self.logouts.is_empty()
            && self.home.strong_count() > 0
    }

    /// Hands the site's state to its slot and lets the task end, if the
    /// site is still this actor's and no message came in meanwhile.
    fn park(&mut self) -> bool {
        let Some(home) = self.home.upgrade().filter(|_| self.can_park()) else {
            return false;
        };
        let wake = self.due();
        let parked = home.park(&self.name, &self.finished.0, &mut self.rx, || {
            Box::new(Parked {
                st: std::mem::take(&mut self.st),
                dpop: self.dpop.take(),
                wake,
            })
        });
        if !parked {
            return false;
        }
        tracing::trace!(site = %self.name, "parked");
        // Sent between the check for an empty mailbox and its close: for
        // the site's next actor. Not a login's result: no login was
        // pending, so it is stale, and its number means nothing to the
        // next actor, whose logins count from one again.
        while let Ok(msg) = self.rx.try_recv() {
            if matches!(*msg, Msg::LoginGot { .. }) {
                continue;
            }
            if let Some(next) = home.get(&self.name) {
                next.forward(msg);
            }
        }
        true
    }

    fn now(&self) -> f64 {
        self.deps.clock.now()
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Get {
                scopes,
                min_ttl,
                from,
                fresh,
                reply,
            } => {
                self.load().await;
                match self.need_for(scopes) {
                    Ok(need) => self.get(need, min_ttl, from, fresh, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::GetId { min_ttl, reply } => {
                self.load().await;
                self.get_id(min_ttl, reply);
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
            Msg::Proof {
                method,
                url,
                token,
                nonce,
                reply,
            } => {
                self.load().await;
                let _ = reply.send(self.proof(&method, &url, &token, nonce));
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
        if self.st.refresh.is_some() || self.st.access.is_some() {
            // A login made since a keyring that did not answer: it is newer
            // than whatever the keyring holds.
            self.loaded = true;
            return;
        }
        if let Some(before) = self.predecessor.take() {
            // Closed when that actor has ended.
            let _ = before.acquire().await;
        }
        let record = {
            let _slot = self.deps.load_slots.acquire().await;
            self.deps.store.load(&self.name).await
        };
        self.loaded = true;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                // A keyring past its deadline may hold a login: asked again
                // with the next message.
                self.loaded = !matches!(e, StoreError::TimedOut(_));
                let msg = format!(
                    "cannot read the {} store ({e}); logins will not survive a restart: fix it or set TOKEND_STORE=file",
                    self.deps.store.name()
                );
                tracing::error!(site = %self.name, "{msg}");
                self.st.last_error = Some(msg);
                None
            }
        };
        let record = record.filter(|r| {
            let ours = r.identity == self.cfg.identity();
            if !ours {
                tracing::info!(site = %self.name, "stored login is for another provider, client, scope set or dpop setting; ignoring it");
            }
            ours
        });
        self.dpop = self.load_dpop_key(record.as_ref().and_then(|r| r.dpop_key.as_ref()));
        if let Some(r) = record {
            let saved_at = r.saved_at as f64;
            self.st.refresh = r.refresh_token;
            self.st.scopes = r.scopes;
            self.st.last_refresh = Some(saved_at);
            if let Some(token) = r.access_token {
                self.st.access = Some(Current {
                    token,
                    token_type: r.token_type.unwrap_or_else(|| self.token_type().to_owned()),
                    expires_at: r.expires_at,
                    obtained_at: saved_at,
                    scopes: self.st.scopes.clone(),
                    jitter: crate::refresh::jitter(),
                    fell_short: false,
                });
            }
            self.st.id_token = r
                .id_token
                .zip(r.id_token_expires_at)
                .map(|(token, expires_at)| HeldId {
                    // Checked when it was taken; only its `sub` is read here.
                    subject: tokend_oauth::unverified_subject(token.expose()).unwrap_or_default(),
                    token,
                    expires_at,
                    obtained_at: saved_at,
                });
            self.st.subject = self
                .st
                .id_token
                .as_ref()
                .map(|t| t.subject.clone())
                .filter(|s| !s.is_empty());
            self.st.id_token = self
                .st
                .id_token
                .take()
                .filter(|t| t.unexpired(self.deps.clock.now()));
            tracing::debug!(site = %self.name, "login loaded from the store");
        }
    }

    /// Writes the login to the store. A failure is logged and kept as the
    /// site's error: memory still has the login, a restart would lose it.
    async fn persist(&mut self, now: f64) {
        let refresh = self.st.refresh.clone();
        // The access token too, so a restart serves it without a provider call.
        let access = self.st.access.as_ref();
        let record = Record {
            identity: self.cfg.identity(),
            access_token: access.map(|c| c.token.clone()),
            token_type: access.map(|c| c.token_type.clone()),
            expires_at: access.and_then(|c| c.expires_at),
            refresh_token: refresh,
            scopes: self.st.scopes.clone(),
            saved_at: whole(now),
            dpop_key: self.dpop.as_ref().map(|d| d.key.to_stored()),
            id_token: self.st.id_token.as_ref().map(|t| t.token.clone()),
            id_token_expires_at: self.st.id_token.as_ref().map(|t| t.expires_at),
        };
        match self.deps.store.save(&self.name, &record).await {
            Ok(()) => self.st.unsaved = None,
            Err(e) => {
                let msg = format!(
                    "cannot persist the login to the {} store: {e}",
                    self.deps.store.name()
                );
                tracing::error!(site = %self.name, "{msg}");
                self.st.last_error = Some(msg.clone());
                self.st.unsaved = Some(msg);
            }
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
        // A new login gets a new key: nothing bound to the old one (a token
        // copied elsewhere, a proof kept) outlives the logout.
        if self.dpop.is_some() {
            self.dpop = self.load_dpop_key(None);
        }
        out
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
        self.cancel_login(SiteError::LoginInterrupted {
            site: self.name.clone(),
        });
        self.rx.close();
    }

    /// Answers whatever is still waiting, then the actor ends.
    fn finish(mut self) {
        let name = self.name.clone();
        let gone = || {
            SiteError::Internal(format!(
                "site {name} was reloaded or the daemon is stopping; run the command again"
            ))
        };
        for w in std::mem::take(&mut self.waiters) {
            let _ = w.reply.send(Err(gone()));
        }
        self.end_login(Err(SiteError::Internal("the site stopped".to_owned())));
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Get { reply, .. } | Msg::GetId { reply, .. } = *msg {
                let _ = reply.send(Err(gone()));
            }
        }
    }
}
