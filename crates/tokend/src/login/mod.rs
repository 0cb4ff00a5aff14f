//! Logins: exactly one per site at a time. The first caller starts it (a
//! browser login through a loopback listener, a device code, or a
//! paste-back login: one file each below); every other
//! caller that needs the site joins it, sees the same URL, and gets the token
//! when it completes. The login runs in its own task, so a caller that gives
//! up (Ctrl-C) cancels only itself.

use std::sync::Arc;

use token_proto::{ErrorCode, Event, LoginMode, TokenReply};
use tokio::sync::{mpsc, watch};

use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::handlers::Events;
use crate::loopback::is_loopback;
use crate::site::Site;

mod browser;
mod device;
mod paste;

type Outcome = Option<Result<(), ApiError>>;

/// A login in progress, shared by every caller waiting for it.
#[derive(Debug)]
pub struct PendingLogin {
    /// What a caller that joins is shown.
    joined_event: Event,
    done: watch::Receiver<Outcome>,
    /// For a paste-back login: where the `paste` request delivers the input.
    paste: Option<mpsc::Sender<String>>,
}

impl PendingLogin {
    pub fn paste_sender(&self) -> Option<mpsc::Sender<String>> {
        self.paste.clone()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Site {
    /// Runs (or joins) a login and returns the token it yields.
    pub async fn login(
        self: &Arc<Self>,
        d: &Arc<Daemon>,
        mode: LoginMode,
        events: &mut Events<'_>,
    ) -> Result<TokenReply, ApiError> {
        self.ensure_loaded(d).await?;
        if self.config().grant == Grant::ClientCredentials {
            // Nobody to ask: a "login" is a fresh token from the token endpoint.
            return self
                .get_without_login(d, Some(u64::MAX))
                .await?
                .ok_or_else(|| ApiError::internal(format!("site {}: no token", self.name)));
        }
        let (pending, first_event) = {
            let _gate = self.login_gate.lock().await;
            let existing = lock(&self.login).clone();
            match existing {
                Some(p) => (p, None),
                None => {
                    let (p, ev) = self.start_login(d, mode).await?;
                    *lock(&self.login) = Some(p.clone());
                    (p, Some(ev))
                }
            }
        };
        events
            .send(first_event.as_ref().unwrap_or(&pending.joined_event))
            .await;
        let mut done = pending.done.clone();
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ApiError::internal(format!("site {}: the login task ended", self.name)))?
            .clone();
        match outcome {
            Some(Ok(())) => self.current().ok_or_else(|| {
                ApiError::internal(format!(
                    "site {}: login finished without a token",
                    self.name
                ))
            }),
            Some(Err(e)) => Err(e),
            None => Err(ApiError::internal("login outcome missing")),
        }
    }

    async fn start_login(
        self: &Arc<Self>,
        d: &Arc<Daemon>,
        mode: LoginMode,
    ) -> Result<(Arc<PendingLogin>, Event), ApiError> {
        let cfg = self.config();
        let oauth = self.oauth(d).await?;
        let (tx_done, rx) = watch::channel(None);
        let mode = match (mode, cfg.grant) {
            (LoginMode::Browser, Grant::DeviceCode) => LoginMode::Device,
            (m, _) => m,
        };
        // A redirect tokend cannot listen on, or the implicit grant: paste-back.
        let paste_only = cfg.grant == Grant::Implicit
            || cfg
                .redirect_uri
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .is_some_and(|u| !is_loopback(&u));
        let mode = if mode == LoginMode::Browser && paste_only {
            LoginMode::Paste
        } else {
            mode
        };
        let started = match mode {
            LoginMode::Device => device::start(self, d, oauth).await?,
            LoginMode::Paste => paste::start(self, d, oauth).await?,
            LoginMode::Browser => browser::start(self, d, oauth).await?,
        };
        self.spawn_login(started.task, tx_done);
        tracing::info!(site = %self.name, ?mode, "login started");
        Ok((
            Arc::new(PendingLogin {
                joined_event: started.joined,
                done: rx,
                paste: started.paste,
            }),
            started.first,
        ))
    }

    /// Runs a login's task, publishes its outcome to every waiting caller and
    /// clears the pending slot (which releases the loopback listener).
    fn spawn_login(self: &Arc<Self>, task: Task, tx: watch::Sender<Outcome>) {
        let site = self.clone();
        tokio::spawn(async move {
            // Each task enforces its own deadline (the login timeout, or the
            // device code's expiry if sooner).
            let outcome = task.await;
            match &outcome {
                Ok(()) => tracing::info!(site = %site.name, "login completed"),
                Err(e) => {
                    tracing::warn!(site = %site.name, "login failed: {e}");
                    site.note_error(&e.message);
                }
            }
            *lock(&site.login) = None;
            tx.send_replace(Some(outcome));
        });
    }
}

/// A PKCE pair for a login; a failing OS random source fails the login.
fn fresh_pkce() -> Result<tokend_oauth::Pkce, ApiError> {
    tokend_oauth::Pkce::try_new().map_err(|e| ApiError::internal(e.to_string()))
}

/// A `state` for a login; a failing OS random source fails the login.
fn fresh_state() -> Result<String, ApiError> {
    tokend_oauth::try_random_state().map_err(|e| ApiError::internal(e.to_string()))
}

fn timed_out(site: &str) -> ApiError {
    ApiError::new(
        ErrorCode::LoginFailed,
        format!("site {site}: the login timed out waiting for the browser; run `token login {site}` to try again"),
    )
}

/// The work of one login after it started: waits for the user, exchanges,
/// stores. Each flow enforces its own deadline.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ApiError>> + Send>>;

/// What starting a login yields: its task, the event for the caller that
/// started it, the one for callers that join, and (paste-back) where the
/// paste goes.
struct Started {
    task: Task,
    first: Event,
    joined: Event,
    paste: Option<mpsc::Sender<String>>,
}
