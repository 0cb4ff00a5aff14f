//! A site's whole life: one task (its actor, `site::actor`) owns its token
//! state, refresh schedule, pending login and store record, and is the only
//! code that calls its token endpoint or writes its record. Everything else
//! (handlers, the config reload, login flows) holds a [`SiteHandle`] and
//! sends it messages with a reply channel.
//!
//! Single flight is the mailbox: a `get` that the tokens in hand cannot
//! serve waits for the one token call under way (or starts it) and is
//! answered from its result.

use std::sync::Arc;

use token_proto::{LoginMode, SiteStatus, TokenReply};
use tokend_oauth::{AccessToken, OAuthSite, RefreshToken};
use tokio::sync::{mpsc, oneshot, Semaphore};

use self::mailbox::TrySendError;

use crate::config::SiteConfig;
use crate::login::LoginTicket;

mod actor;
pub(crate) mod held;
pub(crate) mod mailbox;
pub(crate) mod proof;
pub(crate) mod state;
pub(crate) mod subject;
#[cfg(test)]
mod tests;

pub(crate) use crate::deps::{Deps, LoginTimeout};
pub(crate) use crate::error::SiteError;
pub(crate) use crate::provider::{client, idtoken, secret};
#[cfg(test)]
pub(crate) use actor::PARK_AFTER;
pub(crate) use actor::{Exit, Parked};

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
        /// A person is at the caller: it may start a login during the
        /// cooldown (and ends it).
        interactive: bool,
        reply: oneshot::Sender<Result<LoginTicket, SiteError>>,
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
    /// Nothing to answer: the registry starts a parked site whose
    /// refresh-ahead is due with it.
    Wake,
}

/// A site's mailbox, on the receiving end: its actor's while one runs, the
/// registry's while none does.
pub(crate) type Mailbox = mailbox::Receiver<Box<Msg>>;

/// How many messages a site's mailbox holds before senders wait.
const MAILBOX: usize = 64;

/// A new mailbox for the site `name`, and its handle.
pub(crate) fn mailbox(name: &str) -> (SiteHandle, Mailbox) {
    let (tx, rx) = mailbox::channel(MAILBOX);
    (
        SiteHandle {
            name: Arc::from(name),
            tx,
        },
        rx,
    )
}

/// What the registry starts a site's actor with.
#[derive(Debug)]
pub(crate) struct Start {
    pub config: Arc<SiteConfig>,
    pub deps: Arc<Deps>,
    pub mailbox: Mailbox,
    /// The message that arrived on the mailbox while no actor ran.
    pub first: Box<Msg>,
    /// Where the last actor left off; `None`: the login is in the store.
    pub parked: Option<Box<Parked>>,
    /// Closed when the actor this one replaces (a reload retired it) has
    /// ended: this one touches the store only after that.
    pub after: Option<Arc<Semaphore>>,
    /// Closed when this actor has ended.
    pub ended: Arc<Semaphore>,
    /// Where it publishes its answer to a plain `get` (the fast path).
    pub held: Arc<held::Held>,
}

/// A site's actor, from its first message until it parks or ends.
pub(crate) fn run(start: Start) -> impl std::future::Future<Output = Exit> + Send {
    let Start {
        config,
        deps,
        mailbox,
        first,
        parked,
        after,
        ended,
        held,
    } = start;
    actor::run(
        Box::new(
            actor::Actor::new(
                config,
                deps,
                mailbox,
                after,
                parked,
                actor::Ended(ended),
                true,
            )
            .publishing_to(held),
        ),
        Some(first),
    )
}

/// How the rest of the daemon reaches a site: its mailbox's sender, and
/// nothing else. The mailbox lives as long as the site's configuration,
/// whether an actor runs or the site is parked.
#[derive(Clone, Debug)]
pub(crate) struct SiteHandle {
    name: Arc<str>,
    tx: mailbox::Sender<Box<Msg>>,
}

/// A site's actor run on its own, outside a registry: it never parks
/// (tests).
#[cfg(test)]
#[derive(Clone, Debug)]
pub(crate) struct Standalone {
    site: SiteHandle,
    ended: Arc<Semaphore>,
}

#[cfg(test)]
impl std::ops::Deref for Standalone {
    type Target = SiteHandle;
    fn deref(&self) -> &SiteHandle {
        &self.site
    }
}

#[cfg(test)]
impl Standalone {
    /// The handle alone (the actor runs on).
    pub(crate) fn clone_handle(&self) -> SiteHandle {
        self.site.clone()
    }

    /// Whether the actor has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.ended.is_closed()
    }

    /// Resolves when the actor has ended.
    pub(crate) async fn finished(&self) {
        // No permit is ever added: this returns when the actor closes it.
        let _ = self.ended.acquire().await;
    }
}

impl SiteHandle {
    /// Starts the actor of `config` on its own (it never parks). With
    /// `after`, the site it replaces: the new one touches the store only
    /// once that one has ended.
    #[cfg(test)]
    pub(crate) fn spawn(
        config: Arc<SiteConfig>,
        deps: Arc<Deps>,
        after: Option<&Standalone>,
    ) -> Standalone {
        let (site, rx) = mailbox(&config.name);
        let ended = Arc::new(Semaphore::new(0));
        tokio::spawn(actor::run(
            Box::new(actor::Actor::new(
                config,
                deps,
                rx,
                after.map(|a| a.ended.clone()),
                None,
                actor::Ended(ended.clone()),
                false,
            )),
            None,
        ));
        Standalone { site, ended }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The site's name, shared (no copy).
    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    fn gone(&self) -> SiteError {
        SiteError::Internal(format!(
            "site {} was reloaded or the daemon is stopping; run the command again",
            self.name
        ))
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, SiteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Box::new(make(reply)))
            .await
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
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
        self.login_as(mode, true).await
    }

    /// Starts or joins a login for a caller that is `interactive` or not:
    /// after a login that went unanswered, one that is not starts none for
    /// the `login_cooldown` ([`SiteError::LoginHeld`]).
    pub(crate) async fn login_as(
        &self,
        mode: LoginMode,
        interactive: bool,
    ) -> Result<LoginTicket, SiteError> {
        self.ask(|reply| Msg::Login {
            mode,
            interactive,
            reply,
        })
        .await?
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

    /// Asks the actor to end (it finishes a token call under way first).
    #[cfg(test)]
    pub(crate) fn stop(&self) -> Result<(), SiteError> {
        self.post(Msg::Stop)
    }

    /// Sends without waiting (from the registry, which does not wait on a
    /// site): a full mailbox gets it as soon as there is room. An error when
    /// the mailbox is closed: the actor has ended or is ending.
    pub(crate) fn post(&self, msg: Msg) -> Result<(), SiteError> {
        match self.tx.try_send(Box::new(msg)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move { tx.send(msg).await });
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(self.gone()),
        }
    }

    /// Sends if the mailbox has room, else says why not.
    pub(crate) fn try_post(&self, msg: Msg) -> Result<(), TrySendError<Box<Msg>>> {
        self.tx.try_send(Box::new(msg))
    }
}
