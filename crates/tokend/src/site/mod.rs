//! A site's whole life: one task (its actor, `site::actor`) owns its token
//! state, refresh schedule, pending login and store record, and is the only
//! code that calls its token endpoint or writes its record. Everything else
//! (handlers, the config reload, login flows) holds a [`SiteHandle`] and
//! sends it messages with a reply channel.
//!
//! Single flight is the mailbox: a `get` that the tokens in hand cannot
//! serve waits for the one token call under way (or starts it) and is
//! answered from its result.

use std::sync::{Arc, Weak};
use std::time::Duration;

use token_proto::{LoginMode, SiteStatus, TokenReply};
use tokend_oauth::{AccessToken, Http, OAuthSite, RefreshToken};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::clock::Clock;
use crate::config::SiteConfig;
use crate::discovery::Discovery;
use crate::login::{Got, LoginTicket};
use crate::sites::Sites;
use crate::store::Store;

mod actor;
pub(crate) mod client;
pub(crate) mod error;
pub(crate) mod idtoken;
pub(crate) mod proof;
pub(crate) mod secret;
pub(crate) mod state;
#[cfg(test)]
mod tests;

pub(crate) use actor::Parked;
#[cfg(test)]
pub(crate) use actor::PARK_AFTER;
pub(crate) use error::SiteError;

/// What a site's actor is given at spawn: everything it talks to.
#[derive(Clone, Debug)]
pub(crate) struct Deps {
    pub store: Store,
    pub http: Http,
    pub discovery: Arc<Discovery>,
    pub clock: Clock,
    pub login_timeout: LoginTimeout,
    /// Store loads at once across sites (keyring reads cost milliseconds).
    pub load_slots: Arc<Semaphore>,
    /// The store fallback, told to the first caller (and always in `status`).
    pub store_notice: Option<Arc<crate::store::Notice>>,
    /// The providers' signing keys, for ID tokens: one cache for the daemon.
    pub keys: Arc<tokend_oauth::KeyCache>,
}

/// Who set a `get`'s `min_ttl`: the words of the warning when the
/// provider's tokens are shorter, and how often it is said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TtlFrom {
    /// The user (`--min-ttl`): told with every token that falls short.
    Caller,
    /// The git helper's built-in margin: told once per site, and only when
    /// the provider's tokens are shorter than the margin.
    GitHelper,
}

/// How long a login waits for the user: the daemon's one setting, which a
/// config reload may change while sites hold it.
#[derive(Clone, Debug)]
pub(crate) struct LoginTimeout(Arc<std::sync::atomic::AtomicU64>);

impl LoginTimeout {
    pub(crate) fn new(t: Duration) -> LoginTimeout {
        LoginTimeout(Arc::new(t.as_secs().into()))
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_secs(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets it for the logins that start from now on; whether it changed.
    pub(crate) fn set(&self, t: Duration) -> bool {
        self.0
            .swap(t.as_secs(), std::sync::atomic::Ordering::Relaxed)
            != t.as_secs()
    }
}

/// What a `get` came to.
#[derive(Debug)]
pub(crate) enum Served {
    Token(TokenReply),
    /// No token can be had without the user.
    NeedLogin,
}

/// What `logout` leaves for revocation at the provider: the tokens the site
/// held (already forgotten locally) and its OAuth client if one was built.
#[derive(Debug)]
pub(crate) struct LoggedOut {
    pub refresh: Option<RefreshToken>,
    pub access: Option<AccessToken>,
    pub config: Arc<SiteConfig>,
    pub oauth: Option<Arc<OAuthSite>>,
}

/// Messages a site's actor takes.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A token for `scopes` (empty: the site's own) valid for `min_ttl`;
    /// `fresh`: from a token call made after this request arrived.
    Get {
        scopes: Vec<String>,
        min_ttl: Option<u64>,
        from: TtlFrom,
        fresh: bool,
        reply: oneshot::Sender<Result<Served, SiteError>>,
    },
    /// The site's validated ID token, valid for `min_ttl`.
    GetId {
        min_ttl: Option<u64>,
        reply: oneshot::Sender<Result<Served, SiteError>>,
    },
    /// Start or join a login.
    Login {
        mode: LoginMode,
        reply: oneshot::Sender<Result<LoginTicket, SiteError>>,
    },
    /// A login flow's result (from its task).
    LoginGot {
        id: u64,
        got: Result<Got, SiteError>,
    },
    /// Where a pending paste-back login takes its input.
    Paste {
        reply: oneshot::Sender<Option<mpsc::Sender<String>>>,
    },
    Logout {
        reply: oneshot::Sender<LoggedOut>,
    },
    Status {
        reply: oneshot::Sender<SiteStatus>,
    },
    /// A DPoP proof for `method` on `url`, bound to `token` (`token get --dpop`).
    Proof {
        method: String,
        url: url::Url,
        token: AccessToken,
        /// The resource server's `DPoP-Nonce`, when the caller has one.
        nonce: Option<String>,
        reply: oneshot::Sender<Result<String, SiteError>>,
    },
    /// New settings with the same identity.
    Config(Arc<SiteConfig>),
    /// Finish the token call under way, cancel the login, end.
    Stop,
}

/// How the rest of the daemon reaches a site.
#[derive(Clone, Debug)]
pub(crate) struct SiteHandle {
    name: Arc<str>,
    tx: mpsc::Sender<Box<Msg>>,
    /// Closed when the actor has ended (a semaphore with no permits: the
    /// lightest thing tokio has that many can wait on to close).
    finished: Arc<Semaphore>,
    /// Where the site's next actor is found once this one has parked (none:
    /// a site on its own, which never parks).
    home: Weak<Sites>,
}

impl SiteHandle {
    /// Starts the actor of `config`, on its own (it never parks). With
    /// `after`, the handle of the site it replaces: the new one touches the
    /// store only once that one has ended.
    #[cfg(test)]
    pub(crate) fn spawn(
        config: Arc<SiteConfig>,
        deps: Arc<Deps>,
        after: Option<&SiteHandle>,
    ) -> SiteHandle {
        SiteHandle::start(config, deps, after, None, Weak::new())
    }

    /// Starts the actor of `config`: from `parked` state if it has some,
    /// else from the store (after `after` has ended). It parks into `home`.
    pub(crate) fn start(
        config: Arc<SiteConfig>,
        deps: Arc<Deps>,
        after: Option<&SiteHandle>,
        parked: Option<Box<Parked>>,
        home: Weak<Sites>,
    ) -> SiteHandle {
        let (tx, rx) = mpsc::channel(64);
        let finished = Arc::new(Semaphore::new(0));
        let handle = SiteHandle {
            name: Arc::from(config.name.as_str()),
            tx: tx.clone(),
            finished: finished.clone(),
            home: home.clone(),
        };
        let predecessor = after.map(|h| h.finished.clone());
        tokio::spawn(actor::run(Box::new(actor::Actor::new(
            config,
            deps,
            actor::Mailbox {
                rx,
                me: tx.downgrade(),
                home,
            },
            predecessor,
            parked,
            actor::Ended(finished),
        ))));
        handle
    }

    /// Whether this is the handle of the actor that `finished` belongs to.
    pub(crate) fn is(&self, finished: &Arc<Semaphore>) -> bool {
        Arc::ptr_eq(&self.finished, finished)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn gone(&self) -> SiteError {
        SiteError::Internal(format!(
            "site {} was reloaded or the daemon is stopping; run the command again",
            self.name
        ))
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, SiteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(make(reply))).await?;
        answer.await.map_err(|_| self.gone())
    }

    /// Sends to the site's actor: this handle's, or the one started since
    /// it parked.
    async fn send(&self, msg: Box<Msg>) -> Result<(), SiteError> {
        let Err(mpsc::error::SendError(mut msg)) = self.tx.send(msg).await else {
            return Ok(());
        };
        let mut tried = self.tx.clone();
        // Each turn finds a newer actor; one that parks again lives
        // PARK_AFTER first, so this ends at once in practice.
        loop {
            let next = self
                .home
                .upgrade()
                .and_then(|home| home.get(&self.name))
                .filter(|next| !next.tx.same_channel(&tried))
                .ok_or_else(|| self.gone())?;
            match next.tx.send(msg).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => msg = back,
            }
            tried = next.tx;
        }
    }

    /// Hands a message that reached a parked actor's mailbox to the site's
    /// next actor.
    pub(crate) fn forward(self, msg: Box<Msg>) {
        tokio::spawn(async move { self.send(msg).await });
    }

    /// A token for `scopes` (empty or all: the site's own) valid for at
    /// least `min_ttl`, without a login.
    #[cfg(test)]
    pub(crate) async fn get(
        &self,
        scopes: Vec<String>,
        min_ttl: Option<u64>,
    ) -> Result<Served, SiteError> {
        self.get_for(scopes, min_ttl, TtlFrom::Caller).await
    }

    /// A token as `get` gives it, with `min_ttl` set by `from`.
    pub(crate) async fn get_for(
        &self,
        scopes: Vec<String>,
        min_ttl: Option<u64>,
        from: TtlFrom,
    ) -> Result<Served, SiteError> {
        self.ask(|reply| Msg::Get {
            scopes,
            min_ttl,
            from,
            fresh: false,
            reply,
        })
        .await?
    }

    /// The site's validated ID token, valid for at least `min_ttl`, without
    /// a login (`NeedLogin` when only a login brings one).
    pub(crate) async fn get_id_token(&self, min_ttl: Option<u64>) -> Result<Served, SiteError> {
        self.ask(|reply| Msg::GetId { min_ttl, reply }).await?
    }

    /// A token from a token call made now (client credentials' "login").
    pub(crate) async fn renew(&self) -> Result<Served, SiteError> {
        self.ask(|reply| Msg::Get {
            scopes: Vec::new(),
            min_ttl: None,
            from: TtlFrom::Caller,
            fresh: true,
            reply,
        })
        .await?
    }

    /// A DPoP proof for one request with `token`, signed by the site's key.
    pub(crate) async fn proof(
        &self,
        method: String,
        url: url::Url,
        token: AccessToken,
        nonce: Option<String>,
    ) -> Result<String, SiteError> {
        self.ask(|reply| Msg::Proof {
            method,
            url,
            token,
            nonce,
            reply,
        })
        .await?
    }

    /// Starts (or joins) a login.
    pub(crate) async fn login(&self, mode: LoginMode) -> Result<LoginTicket, SiteError> {
        self.ask(|reply| Msg::Login { mode, reply }).await?
    }

    pub(crate) async fn paste_sender(&self) -> Result<Option<mpsc::Sender<String>>, SiteError> {
        self.ask(|reply| Msg::Paste { reply }).await
    }

    /// Forgets the login (memory and store), cancelling a pending login.
    pub(crate) async fn logout(&self) -> Result<LoggedOut, SiteError> {
        self.ask(|reply| Msg::Logout { reply }).await
    }

    /// The site's line in `status` (its login loaded from the store first).
    pub(crate) async fn status(&self) -> Result<SiteStatus, SiteError> {
        self.ask(|reply| Msg::Status { reply }).await
    }

    /// New settings that keep the site's identity (endpoints, secrets):
    /// they apply from the next token call on.
    pub(crate) fn set_config(&self, config: Arc<SiteConfig>) {
        self.post(Msg::Config(config));
    }

    /// Asks the actor to end (it finishes a token call under way first).
    pub(crate) fn stop(&self) {
        self.post(Msg::Stop);
    }

    /// Sends without waiting (from the reload, which is not async).
    fn post(&self, msg: Msg) {
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.tx.try_send(Box::new(msg)) {
            // A full mailbox: deliver it as soon as there is room.
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(msg).await });
        }
    }

    /// Whether the actor has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.is_closed()
    }

    /// Resolves when the actor has ended.
    pub(crate) async fn finished(&self) {
        // No permit is ever added: this returns when the actor closes it.
        let _ = self.finished.acquire().await;
    }
}
