//! The actor's one store read, off the actor: the first message that needs
//! the site's login starts the load in a task of its own (after the actor
//! this one replaces has ended, and within the daemon's load slots), and
//! the messages that need the login wait for it here, in order. A keyring
//! that is slow to answer (an unlock prompt) stalls neither `status`,
//! answered after [`STORE_SLOW`] with what the site knows and why it waits,
//! nor the site's other work; a `get` waits for the login (never "needs a
//! login" before the store has answered), up to the store's deadline.

use std::time::Duration;

use token_proto::SiteStatus;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Actor;
use crate::refresh::Expiring;
use crate::site::idtoken::HeldId;
use crate::site::state::Current;
use crate::site::Msg;
use crate::store::{Record, StoreError};

/// How long `status` waits for a first load before it answers without it:
/// well within the store's deadline, and long enough that a keyring merely
/// busy with a thousand sites' loads is not called slow.
pub(super) const STORE_SLOW: Duration = Duration::from_secs(1);

/// A first load under way.
pub(super) struct Loading {
    pub(super) task: JoinHandle<Result<Option<Record>, StoreError>>,
    /// When `status` stops waiting for it.
    pub(super) slow_at: tokio::time::Instant,
    /// The messages that need the login, in the order they came.
    held: Vec<Msg>,
    /// `status` callers waiting (until `slow_at`).
    statuses: Vec<oneshot::Sender<SiteStatus>>,
}

impl Loading {
    /// Whether `status` callers wait for its slow mark.
    pub(super) fn statuses_wait(&self) -> bool {
        !self.statuses.is_empty()
    }
}

impl Actor {
    /// Whether the login is in memory; if not, its load is started (once).
    pub(super) fn ready(&mut self) -> bool {
        if self.loaded {
            return true;
        }
        if self.st.refresh.is_some() || self.st.access.is_some() {
            // A login made since a keyring that did not answer: it is newer
            // than whatever the keyring holds.
            self.loaded = true;
            return true;
        }
        if self.loading.is_none() {
            let before = self.predecessor.take();
            let deps = self.deps.clone();
            let name = self.name.clone();
            let task = tokio::spawn(async move {
                if let Some(before) = before {
                    // Closed when that actor has ended.
                    let _ = before.acquire().await;
                }
                let _slot = deps.load_slots.acquire().await;
                deps.store.load(&name).await
            });
            self.loading = Some(Box::new(Loading {
                task,
                slow_at: tokio::time::Instant::now() + STORE_SLOW,
                held: Vec::new(),
                statuses: Vec::new(),
            }));
        }
        false
    }

    /// Keeps a message that needs the login until the load has answered.
    pub(super) fn hold(&mut self, msg: Msg) {
        if let Some(l) = self.loading.as_mut() {
            l.held.push(msg);
        }
    }

    /// `status` while the login loads: answered at once past the slow
    /// mark, else at the load's answer or the mark, whichever comes first.
    pub(super) fn status_loading(&mut self, reply: oneshot::Sender<SiteStatus>) {
        let slow = self
            .loading
            .as_ref()
            .is_some_and(|l| tokio::time::Instant::now() >= l.slow_at);
        match self.loading.as_mut() {
            Some(l) if !slow => l.statuses.push(reply),
            _ => {
                let _ = reply.send(self.status_while_loading());
            }
        }
    }

    /// The slow mark passed: the `status` callers waiting are answered.
    pub(super) fn load_slow(&mut self) {
        let waiting = self
            .loading
            .as_mut()
            .map(|l| std::mem::take(&mut l.statuses))
            .unwrap_or_default();
        for reply in waiting {
            let _ = reply.send(self.status_while_loading());
        }
    }

    fn status_while_loading(&self) -> SiteStatus {
        let mut s = self.status();
        if s.last_error.is_none() {
            s.last_error = Some(format!(
                "the {} store has not answered yet: the site's login is still being read \
                 (a keyring may be locked, waiting for a password)",
                self.deps.store.name()
            ));
        }
        s
    }

    /// The load answered: the login is taken, then the messages that waited
    /// for it are handled in order.
    pub(super) async fn load_landed(
        &mut self,
        result: Result<Result<Option<Record>, StoreError>, tokio::task::JoinError>,
    ) {
        let Some(loading) = self.loading.take() else {
            return;
        };
        let Loading { held, statuses, .. } = *loading;
        self.take_record(result.unwrap_or_else(|source| Err(StoreError::Task { source })));
        for reply in statuses {
            let _ = reply.send(self.status());
        }
        for msg in held {
            Box::pin(self.handle_ready(msg)).await;
        }
    }

    /// What the store answered. A store that cannot be read (no Secret
    /// Service on a headless machine, a locked keyring) does not stop the
    /// site from working: it starts empty, and `status` says why.
    fn take_record(&mut self, record: Result<Option<Record>, StoreError>) {
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
                .map(|(token, expires_at)| {
                    Box::new(HeldId {
                        // Checked when it was taken; only its `sub` is read here.
                        subject: tokend_oauth::unverified_subject(token.expose())
                            .unwrap_or_default(),
                        token,
                        expires_at,
                        obtained_at: saved_at,
                    })
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
}
