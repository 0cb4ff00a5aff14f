//! The site's actor: one task that owns the site's tokens, its refresh
//! timer, its pending login and its store record.
//!
//! It never waits on the network itself: a token-endpoint call (a flight)
//! runs in a child task while the actor keeps answering; a `get` that the
//! tokens in hand do not serve waits for that flight (or starts one) and
//! is answered from its result: one call per need, never one per caller.
//! Saves run off the actor too (`save`), one at a time and in order: a
//! result that brought a rotated refresh token is handed out only once its
//! save has answered (or missed the store's deadline), while `status` and
//! the tokens in hand keep being served; a logout's delete waits for the
//! save under way, and runs off the actor as saves do. The one store read,
//! the first load, runs off the actor too (`load`): the messages that need
//! the login wait for it, `status` does not.

mod call;
mod dpop;
mod flight;
mod id;
mod load;
mod logins;
mod publish;
mod save;

use std::sync::Arc;
use std::time::Duration;

use token_proto::SiteStatus;
use tokend_oauth::{Dpop, OAuthSite};
use tokio::sync::{oneshot, Semaphore};

use self::flight::{Flight, Landed, Waiter};
use self::logins::{Exchange, Pending};
use super::state::{StatusView, TokenState};
use super::{Deps, LoggedOut, Mailbox, Msg, SiteError};
use crate::config::SiteConfig;
use crate::login;
use crate::store::StoreError;

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

/// How an actor's task ends.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Nothing under way: its state (with its OAuth client) and its mailbox,
    /// for the registry to keep until the next message.
    Parked(Box<Parked>, Mailbox),
    /// Stopped (or retired): nothing to keep.
    Ended,
}

/// A site's state while it has no actor: what its next actor starts from
/// instead of the store. Nothing is under way when a site parks (no token
/// call, no login, nobody waiting), so this is all there is: the flight
/// counter starts again.
#[derive(Debug)]
pub(crate) struct Parked {
    st: TokenState,
    dpop: Option<Arc<Dpop>>,
    /// The OAuth client, kept: a wake does not run discovery or the
    /// `client_secret_cmd` again.
    oauth: Option<Arc<OAuthSite>>,
    /// The settings it parked with (and its client was built with).
    cfg: Arc<SiteConfig>,
    /// When its refresh-ahead is due.
    pub(crate) wake: Option<tokio::time::Instant>,
}

impl Parked {
    /// New settings with the same identity (as [`Msg::Config`] for a
    /// running site): the client is built again with them, and the
    /// refresh-ahead planned again.
    pub(crate) fn reconfigured(&mut self, cfg: &Arc<SiteConfig>, clock: &crate::clock::Clock) {
        tracing::info!(site = %cfg.name, "site settings changed; its login is kept");
        self.st.stalled = false;
        self.oauth = None;
        self.cfg = cfg.clone();
        self.wake = planned(&self.st, cfg, clock);
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

/// When refresh-ahead of `st` is due, as the actor plans it.
fn planned(
    st: &TokenState,
    cfg: &SiteConfig,
    clock: &crate::clock::Clock,
) -> Option<tokio::time::Instant> {
    st.next_refresh(cfg, clock.now())
        .map(|at| clock.instant_at(at))
}

pub(super) struct Actor {
    name: String,
    cfg: Arc<SiteConfig>,
    deps: Arc<Deps>,
    rx: Mailbox,
    /// Whether it parks when idle (a site in a registry), or runs until
    /// stopped (a site on its own, in tests).
    parks: bool,
    /// The actor this one replaces: it must end before this one touches the store.
    predecessor: Option<Arc<Semaphore>>,
    st: TokenState,
    loaded: bool,
    /// The first load under way, and the messages waiting for it.
    loading: Option<Box<load::Loading>>,
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
    /// Logouts waiting for the flight under way to land (and its save).
    logouts: Vec<oneshot::Sender<LoggedOut>>,
    /// The save under way, off the actor.
    saving: Option<save::Saving>,
    /// Saves started so far.
    saves: u64,
    /// The login changed during the write under way: written again after it.
    save_again: bool,
    /// What the next write (or the retry of a failed one) does.
    want: save::Write,
    /// When a failed save is tried again.
    save_retry: Option<tokio::time::Instant>,
    /// A token call's result waiting for its save before it is handed out.
    withheld: Option<Box<save::Withheld>>,
    stopping: bool,
    /// Its published answer to a plain `get` (`site::held`).
    cell: Arc<super::held::Held>,
    /// Dropped when the actor ends (kept for that): what a successor waits for.
    _ended: Ended,
}

/// What woke the actor. Small: it is kept in the actor's future, which an
/// idle site carries all the time.
enum Wake {
    Msg(Option<Box<Msg>>),
    Landed(Box<Result<Landed, tokio::task::JoinError>>),
    /// The login's task ended.
    Login(Box<Result<Result<login::Got, SiteError>, tokio::task::JoinError>>),
    /// The first load answered.
    Loaded(Box<Result<Result<Option<crate::store::Record>, StoreError>, tokio::task::JoinError>>),
    /// The first load is slow: `status` stops waiting for it.
    LoadSlow,
    /// The save under way answered.
    Saved(Box<Result<Result<(), StoreError>, tokio::task::JoinError>>),
    /// A failed save is to be tried again.
    SaveRetry,
    Timer,
    /// Nothing happened for [`PARK_AFTER`].
    Quiet,
}

/// The actor's life. It is given boxed: the future of an `async fn` keeps
/// its argument beside its locals, and an idle site (most of a thousand)
/// should carry one copy of its state, not two.
pub(super) async fn run(mut a: Box<Actor>, first: Option<Box<Msg>>) -> Exit {
    if let Some(msg) = first {
        Box::pin(a.handle(*msg)).await;
        a.fly();
    }
    loop {
        if a.stopping && a.flight.is_none() && a.exchange.is_none() && a.saving.is_none() {
            break;
        }
        let retry = a.save_retry.filter(|_| !a.stopping);
        let due = a.due();
        let park_at = a
            .can_park()
            .then(|| tokio::time::Instant::now() + PARK_AFTER);
        let slow = a
            .loading
            .as_ref()
            .filter(|l| l.statuses_wait())
            .map(|l| l.slow_at);
        let wake = tokio::select! {
            m = a.rx.recv(), if !a.stopping => Wake::Msg(m),
            r = async { match a.loading.as_mut() {
                Some(l) => (&mut l.task).await,
                None => std::future::pending().await,
            } } => Wake::Loaded(Box::new(r)),
            () = async { match slow {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Wake::LoadSlow,
            r = async { match a.flight.as_mut() {
                Some(f) => (&mut f.task).await,
                None => std::future::pending().await,
            } } => Wake::Landed(Box::new(r)),
            r = async { match a.login.as_mut().and_then(|p| p.task.as_mut()) {
                Some(task) => task.await,
                None => std::future::pending().await,
            } } => Wake::Login(Box::new(r)),
            r = async { match a.saving.as_mut() {
                Some(s) => (&mut s.task).await,
                None => std::future::pending().await,
            } } => Wake::Saved(Box::new(r)),
            () = async { match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Wake::Timer,
            () = async { match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => Wake::SaveRetry,
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
            Wake::Login(r) => {
                if let Some(p) = a.login.as_mut() {
                    p.task = None;
                }
                let got = (*r).unwrap_or_else(|e| {
                    Err(SiteError::TaskFailed {
                        site: a.name.clone(),
                        what: "the login",
                        source: Arc::new(e),
                    })
                });
                a.login_got(got);
            }
            Wake::Loaded(r) => Box::pin(a.load_landed(*r)).await,
            Wake::LoadSlow => a.load_slow(),
            Wake::Saved(r) => a.saved(*r),
            Wake::SaveRetry => a.save_retry_due(),
            Wake::Timer => a.refresh_ahead(),
            Wake::Quiet => {
                if a.can_park() && a.rx.is_empty() {
                    let wake = a.due();
                    let a = *a;
                    let parked = Parked {
                        st: a.st,
                        dpop: a.dpop,
                        oauth: a.oauth,
                        cfg: a.cfg,
                        wake,
                    };
                    return Exit::Parked(Box::new(parked), a.rx);
                }
            }
        }
        crate::files::sync(&a.name, &a.cfg, &a.st);
        a.recheck();
        a.fly();
    }
    (*a).finish();
    Exit::Ended
}

impl Actor {
    pub(super) fn new(
        cfg: Arc<SiteConfig>,
        deps: Arc<Deps>,
        rx: Mailbox,
        predecessor: Option<Arc<Semaphore>>,
        parked: Option<Box<Parked>>,
        finished: Ended,
        parks: bool,
    ) -> Actor {
        let mut a = Actor {
            name: cfg.name.clone(),
            cfg,
            deps,
            rx,
            parks,
            predecessor,
            st: TokenState::default(),
            loaded: false,
            loading: None,
            oauth: None,
            dpop: None,
            flight: None,
            seq: 0,
            waiters: Vec::new(),
            exchange: None,
            login: None,
            logouts: Vec::new(),
            saving: None,
            saves: 0,
            save_again: false,
            want: save::Write::Save,
            save_retry: None,
            withheld: None,
            stopping: false,
            cell: Arc::default(),
            _ended: finished,
        };
        if let Some(p) = parked {
            let Parked {
                st,
                dpop,
                oauth,
                cfg,
                wake: _,
            } = *p;
            a.st = st;
            a.dpop = dpop;
            if Arc::ptr_eq(&cfg, &a.cfg) || cfg == a.cfg {
                a.oauth = oauth;
            } else {
                // Settings changed while it was parking (as a reload sends
                // a running site): its client is built again with them.
                a.st.stalled = false;
            }
            a.loaded = true;
        }
        a
    }

    /// When refresh-ahead is next due. No timer while a flight is under
    /// way: its landing re-plans.
    fn due(&self) -> Option<tokio::time::Instant> {
        if self.stopping || self.flight.is_some() || self.withheld.is_some() || !self.loaded {
            return None;
        }
        planned(&self.st, &self.cfg, &self.deps.clock)
    }

    /// It parks when idle, and nothing is under way that the actor's task
    /// must see through.
    fn can_park(&self) -> bool {
        self.parks
            && self.loaded
            && self.loading.is_none()
            && !self.stopping
            && self.flight.is_none()
            && self.exchange.is_none()
            && self.login.is_none()
            && self.waiters.is_empty()
            && self.logouts.is_empty()
            && self.saving.is_none()
            && self.save_retry.is_none()
            && self.withheld.is_none()
    }

    fn now(&self) -> f64 {
        self.deps.clock.now()
    }

    /// Takes a message: one that needs the login waits for its first load.
    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Status { reply } if !self.ready() => self.status_loading(reply),
            Msg::Wake => {
                // A parked site's, loaded; or a site with token files to
                // keep fresh: its login is read.
                self.ready();
            }
            Msg::Get { .. }
            | Msg::GetId { .. }
            | Msg::Login { .. }
            | Msg::Logout { .. }
            | Msg::Proof { .. }
                if !self.ready() =>
            {
                self.hold(msg)
            }
            msg => self.handle_ready(msg).await,
        }
    }

    /// Handles a message whose login is loaded (or whose load has failed).
    async fn handle_ready(&mut self, msg: Msg) {
        match msg {
            Msg::Get {
                scopes,
                min_ttl,
                from,
                fresh,
                reply,
            } => match self.need_for(scopes) {
                Ok(need) => self.get(need, min_ttl, from, fresh, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::GetId { min_ttl, reply } => {
                self.get_id(min_ttl, reply);
            }
            Msg::Login {
                mode,
                interactive,
                reply,
            } => {
                let _ = reply.send(self.join_login(mode, interactive));
            }
            Msg::Paste { reply } => {
                let _ = reply.send(self.login.as_ref().and_then(|p| p.paste.clone()));
            }
            Msg::Logout { reply } => {
                self.cell.clear();
                // A store we cannot read still gets its entry deleted.
                self.cancel_login(login::cancelled(&self.name));
                // Revoke what a call under way brings, not what it
                // replaces; delete after the save under way.
                self.logouts.push(reply);
                self.settle_logouts();
            }
            Msg::Status { reply } => {
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
                let _ = reply.send(self.proof(&method, &url, &token, nonce));
            }
            Msg::Stop => self.begin_stop(),
            Msg::Wake => {}
        }
    }

    /// Drops the login: from memory at once, from the store after the
    /// save under way (off the actor, retried until it is done).
    fn forget(&mut self, why: Option<String>) {
        self.cell.clear();
        self.st.clear(why);
        self.erase();
    }

    /// Answers the logouts waiting, once nothing under way would bring a
    /// login after them (the store's delete is queued after its saves).
    fn settle_logouts(&mut self) {
        if self.flight.is_some() || self.exchange.is_some() || self.withheld.is_some() {
            return;
        }
        for reply in std::mem::take(&mut self.logouts) {
            let out = self.logout();
            let _ = reply.send(out);
        }
    }

    fn logout(&mut self) -> LoggedOut {
        let out = LoggedOut {
            refresh: self.st.refresh.clone(),
            access: self.st.access.as_ref().map(|c| c.token.clone()),
            config: self.cfg.clone(),
            oauth: self.oauth.clone(),
        };
        self.forget(None);
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
        self.cell.clear();
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
        while let Some(msg) = self.rx.try_recv() {
            if let Msg::Get { reply, .. } | Msg::GetId { reply, .. } = *msg {
                let _ = reply.send(Err(gone()));
            }
        }
    }
}
