//! Logins: the flows (a browser login through a loopback listener, a device
//! code, a paste-back login: one file each below) and the task that runs
//! one. The site's actor decides when a login starts and who joins it (one
//! per site at a time); the flow waits for the user and hands the actor
//! what it got (a code to exchange, or a token), and the actor, the only
//! code that calls the token endpoint, finishes it. A login whose callers
//! have all gone away is cancelled, so the next caller starts a fresh one.

use std::sync::Arc;

use token_proto::{Event, TokenReply};
use tokend_oauth::{AuthCode, OAuthSite, PkceVerifier, TokenResponse};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::SiteConfig;
use crate::handlers::Events;
use crate::loopback::{Page, StartLinks};
use crate::site::idtoken::{self, IdCheck};
use crate::site::{client, Deps, Msg, SiteError};

mod browser;
mod device;
mod paste;
mod way;

pub(crate) use way::{How, Way};

/// How often a caller waiting on a login is checked for having gone away.
const CALLER_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a login flow got from the user.
#[derive(Debug)]
pub(crate) enum Got {
    /// An authorization code for the site to exchange; `page` (a browser
    /// waiting on the loopback listener) is told how that went.
    Code {
        code: AuthCode,
        redirect: String,
        verifier: PkceVerifier,
        /// The OIDC nonce sent with the authorization request.
        nonce: Option<String>,
        page: Option<oneshot::Sender<Page>>,
    },
    /// A token the flow received itself (device polling, the implicit
    /// grant), its ID token already checked (see [`checked`]), and when
    /// the request that brought it was sent (its expiry counts from then).
    Token(TokenResponse, IdCheck, f64),
}

/// Where a login is, as every caller waiting for it sees it.
#[derive(Clone, Debug)]
pub(crate) enum Progress {
    /// Building the client, binding the listener, asking for a device code.
    Starting,
    /// Waiting for the user: the opener is shown `first`, the others `joined`.
    Waiting {
        first: Event,
        joined: Event,
        /// A browser login's one-time start links: each event shown gets a
        /// fresh one as its URL.
        links: Option<Arc<StartLinks>>,
    },
    Done(Result<TokenReply, SiteError>),
}

/// Who opens the browser for a login: the caller holding the strong end.
/// When that caller goes away, a caller still waiting takes the role over
/// and its client opens the browser (the same login, the same URL).
pub(crate) type OpenerSlot = Arc<std::sync::Mutex<std::sync::Weak<()>>>;

/// A caller's place in a login. Dropping every ticket of a login cancels it.
#[derive(Debug)]
pub(crate) struct LoginTicket {
    /// Held by the caller whose client opens the browser.
    pub(crate) opener: Option<Arc<()>>,
    pub(crate) slot: OpenerSlot,
    pub(crate) progress: watch::Receiver<Progress>,
}

impl LoginTicket {
    /// The ticket of the caller that starts a login.
    pub(crate) fn opener(progress: watch::Receiver<Progress>) -> LoginTicket {
        let me = Arc::new(());
        LoginTicket {
            slot: Arc::new(std::sync::Mutex::new(Arc::downgrade(&me))),
            opener: Some(me),
            progress,
        }
    }

    /// The ticket of a caller that joins the login `opener` started.
    pub(crate) fn joiner(slot: &OpenerSlot, progress: watch::Receiver<Progress>) -> LoginTicket {
        LoginTicket {
            opener: None,
            slot: slot.clone(),
            progress,
        }
    }

    pub(crate) fn slot(&self) -> &OpenerSlot {
        &self.slot
    }

    /// Becomes the opener if the one there was has gone away.
    fn take_over(&mut self) -> bool {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.opener.is_some() || slot.upgrade().is_some() {
            return false;
        }
        let me = Arc::new(());
        *slot = Arc::downgrade(&me);
        self.opener = Some(me);
        true
    }

    /// Shows the caller the login's URL or code, then waits for its end.
    /// A caller that goes away meanwhile gives up its place: the login is
    /// cancelled when nobody else waits for it, and another waiting caller
    /// opens the browser when the one that did has gone.
    pub(crate) async fn wait(
        mut self,
        site: &str,
        events: &mut Events<'_>,
    ) -> Result<TokenReply, SiteError> {
        let mut shown = false;
        let mut probe = tokio::time::interval(CALLER_PROBE);
        loop {
            let now = self.progress.borrow_and_update().clone();
            match now {
                Progress::Starting => {}
                Progress::Waiting {
                    first,
                    joined,
                    links,
                } => {
                    if !shown {
                        let event = if self.opener.is_some() {
                            &first
                        } else {
                            &joined
                        };
                        events.send(&with_link(event, links.as_deref())).await;
                        shown = true;
                    } else if self.take_over() {
                        events.send(&with_link(&first, links.as_deref())).await;
                    }
                }
                Progress::Done(result) => return result,
            }
            let changed = tokio::select! {
                changed = self.progress.changed() => changed,
                _ = probe.tick() => {
                    if events.caller_gone().await {
                        return Err(cancelled(site));
                    }
                    continue;
                }
            };
            if changed.is_err() {
                return Err(SiteError::Internal(format!(
                    "site {site}: the login ended without an answer; run `token login {site}`"
                )));
            }
        }
    }
}

/// `event` as one caller is shown it: a browser login's URL is a start link
/// of its own, good once.
fn with_link(event: &Event, links: Option<&StartLinks>) -> Event {
    match (event, links) {
        (
            Event::LoginUrl {
                site,
                open_browser,
                timeout,
                ..
            },
            Some(links),
        ) => match links.mint() {
            Some(url) => Event::LoginUrl {
                site: site.clone(),
                url,
                open_browser: *open_browser,
                timeout: *timeout,
            },
            // Nothing to open: the link could not be made (too many callers,
            // or no OS randomness).
            None => Event::LoginUrl {
                site: site.clone(),
                url: "(no login link left: run `token login` again)".into(),
                open_browser: false,
                timeout: *timeout,
            },
        },
        _ => event.clone(),
    }
}

/// What a flow needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub cfg: Arc<SiteConfig>,
    pub deps: Arc<Deps>,
    /// The site's DPoP key, for flows that call the token endpoint (device).
    pub dpop: Option<Arc<tokend_oauth::Dpop>>,
}

/// One login, run by the site's actor in a task of its own.
#[derive(Debug)]
pub(crate) struct Login {
    pub id: u64,
    pub how: How,
    pub ctx: Ctx,
    pub progress: Arc<watch::Sender<Progress>>,
    /// The site's mailbox, for the result.
    pub site: mpsc::Sender<Box<Msg>>,
}

impl Login {
    /// Runs the flow; hands its result to the site. When every caller has
    /// gone away first, the flow is cancelled. A flow that panics fails the
    /// login instead of leaving it pending.
    pub(crate) async fn run(self) {
        let name = self.ctx.cfg.name.clone();
        let mut flow = tokio::spawn(flow(self.ctx, self.how, self.progress.clone()));
        // Aborting this task (logout, reload, stop) aborts the flow too.
        let _guard = AbortOnDrop(flow.abort_handle());
        let got = tokio::select! {
            r = &mut flow => r.unwrap_or_else(|e| Err(SiteError::TaskFailed { site: name.clone(), what: "the login", source: Arc::new(e) })),
            () = self.progress.closed() => Err(cancelled(&name)),
        };
        let _ = self
            .site
            .send(Box::new(Msg::LoginGot { id: self.id, got }))
            .await;
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn flow(
    ctx: Ctx,
    how: How,
    progress: Arc<watch::Sender<Progress>>,
) -> Result<Got, SiteError> {
    let oauth: Arc<OAuthSite> = client::build(&ctx.deps, &ctx.cfg)
        .await
        .and_then(|o| client::with_dpop(o, &ctx.cfg, ctx.dpop.as_ref()))?;
    // Without a browser: the device flow where the provider offers one.
    let way = how.plan.way(oauth.provider.device_url.is_some());
    let started = match way {
        Way::Device => device::start(&ctx, oauth).await?,
        Way::Paste => paste::start(&ctx, oauth, how.input)?,
        Way::Browser => browser::start(&ctx, oauth).await?,
    };
    tracing::info!(site = %ctx.cfg.name, mode = way.name(), "login started");
    progress.send_replace(Progress::Waiting {
        first: started.first,
        joined: started.joined,
        links: started.links,
    });
    started.task.await
}

/// The error of a login nobody waits for any more.
pub(crate) fn cancelled(site: &str) -> SiteError {
    SiteError::LoginCancelled {
        site: site.to_owned(),
    }
}

/// A PKCE pair for a login; a failing OS random source fails the login.
fn fresh_pkce() -> Result<tokend_oauth::Pkce, SiteError> {
    tokend_oauth::Pkce::try_new().map_err(|source| SiteError::Random { source })
}

/// A nonce for a login whose site asks for an ID token (`openid` among its
/// scopes); `None` for the others.
fn fresh_nonce(cfg: &SiteConfig) -> Result<Option<String>, SiteError> {
    if !cfg.wants_id_token() {
        return Ok(None);
    }
    fresh_state().map(Some)
}

/// A token a flow received itself (no nonce could be sent: device, implicit),
/// with its ID token checked; one that fails a check fails the login.
async fn checked(
    ctx: &Ctx,
    oauth: &OAuthSite,
    resp: TokenResponse,
    way: Way,
    sent_at: f64,
) -> Result<Got, SiteError> {
    // The invariant of a `dpop` site, whatever the flow: an unbound token is
    // refused here too, not only where the token endpoint answered.
    let resp = oauth
        .require_bound(resp)
        .map_err(|source| SiteError::Provider {
            site: ctx.cfg.name.clone(),
            source,
        })?;
    match idtoken::check(&ctx.deps, &ctx.cfg, oauth, resp.id_token.as_deref(), None).await {
        IdCheck::Refused(source) => Err(SiteError::IdTokenRefused {
            again: way.again(&ctx.cfg.name),
            source,
        }),
        id => Ok(Got::Token(resp, id, sent_at)),
    }
}

/// A `state` for a login; a failing OS random source fails the login.
fn fresh_state() -> Result<String, SiteError> {
    tokend_oauth::try_random_state().map_err(|source| SiteError::Random { source })
}

/// Nobody completed the login in time.
fn timed_out(site: &str) -> SiteError {
    SiteError::LoginTimedOut {
        site: site.to_owned(),
    }
}

/// The work of one login after it started: waits for the user. Each flow
/// enforces its own deadline.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Got, SiteError>> + Send>>;

/// What starting a login yields: its task, the event for the caller that
/// started it and the one for callers that join.
struct Started {
    task: Task,
    first: Event,
    joined: Event,
    links: Option<Arc<StartLinks>>,
}
