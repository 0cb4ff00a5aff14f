//! Logins: exactly one per site at a time. The first caller starts it (a
//! loopback listener and an authorization URL, or a device code); every other
//! caller that needs the site joins it, sees the same URL, and gets the token
//! when it completes. The login runs in its own task, so a caller that gives
//! up (Ctrl-C) cancels only itself.

use std::sync::Arc;

use token_proto::{ErrorCode, Event, LoginMode, TokenReply};
use tokend_oauth::{
    check_callback, parse_implicit_fragment, AuthCode, DevicePoll, OAuthSite, Pkce,
};
use tokio::sync::{mpsc, watch};

use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::handlers::Events;
use crate::loopback::{is_loopback, Loopback, Page};
use crate::site::Site;

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

/// Where a paste-back login without a configured redirect_uri sends the
/// browser: nothing listens there, the user copies the URL from the address bar.
const PASTE_REDIRECT: &str = "http://127.0.0.1/callback";

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
        let timeout = d.login_timeout;
        let (tx_done, rx) = watch::channel(None);
        let mode = match (mode, cfg.grant) {
            (LoginMode::Browser, Grant::DeviceCode) => LoginMode::Device,
            (m, _) => m,
        };
        let configured_redirect = cfg
            .redirect_uri
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok());
        let paste_only = cfg.grant == Grant::Implicit
            || configured_redirect
                .as_ref()
                .is_some_and(|u| !is_loopback(u));
        let mode = if mode == LoginMode::Browser && paste_only {
            LoginMode::Paste
        } else {
            mode
        };
        let mut paste = None;
        let (first, joined) = match mode {
            LoginMode::Device => {
                let dev = oauth
                    .device_start(&d.http, &cfg.scopes)
                    .await
                    .map_err(|e| ApiError::provider(&self.name, &e))?;
                let ev = Event::DeviceCode {
                    site: self.name.clone(),
                    user_code: dev.user_code.clone(),
                    verification_uri: dev.verification_uri.clone(),
                    verification_uri_complete: dev.verification_uri_complete.clone(),
                    timeout: timeout.as_secs().min(dev.expires_in),
                    qr: dev.verification_uri_complete.as_deref().and_then(qr_text),
                };
                let task = device_login(self.clone(), d.clone(), oauth, dev);
                self.spawn_login(task, tx_done);
                (ev.clone(), ev)
            }
            LoginMode::Paste => {
                let implicit = cfg.grant == Grant::Implicit;
                let redirect = cfg
                    .redirect_uri
                    .clone()
                    .unwrap_or_else(|| PASTE_REDIRECT.to_owned());
                let pkce = if implicit {
                    None
                } else {
                    Some(Pkce::try_new().map_err(|e| ApiError::internal(e.to_string()))?)
                };
                let state = tokend_oauth::pkce::try_random_state()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let mut url = oauth
                    .authorize_url(&redirect, &cfg.scopes, &state, pkce.as_ref())
                    .map_err(|e| ApiError::provider(&self.name, &e))?;
                if implicit {
                    // The legacy implicit flow: the token comes back in the fragment.
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k == "response_type" {
                                "token".into()
                            } else {
                                v
                            };
                            (k.into_owned(), v.into_owned())
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                let ev = |paste| Event::PasteUrl {
                    site: self.name.clone(),
                    url: url.to_string(),
                    paste,
                    timeout: timeout.as_secs(),
                };
                let (tx, rx) = mpsc::channel(1);
                paste = Some(tx);
                let task = paste_login(PasteLogin {
                    site: self.clone(),
                    d: d.clone(),
                    oauth,
                    redirect,
                    pkce,
                    state,
                    input: rx,
                    implicit,
                });
                self.spawn_login(task, tx_done);
                (ev(true), ev(false))
            }
            LoginMode::Browser => {
                let lb = Loopback::bind(configured_redirect.as_ref())
                    .await
                    .map_err(|e| {
                        ApiError::internal(format!(
                            "site {}: cannot open the loopback listener for the login: {e}",
                            self.name
                        ))
                    })?;
                let pkce = Pkce::try_new().map_err(|e| ApiError::internal(e.to_string()))?;
                let state = tokend_oauth::pkce::try_random_state()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let url = oauth
                    .authorize_url(&lb.redirect_uri, &cfg.scopes, &state, Some(&pkce))
                    .map_err(|e| ApiError::provider(&self.name, &e))?;
                let ev = |open_browser| Event::LoginUrl {
                    site: self.name.clone(),
                    url: url.to_string(),
                    open_browser,
                    timeout: timeout.as_secs(),
                };
                let (first, joined) = (ev(true), ev(false));
                let task = browser_login(self.clone(), d.clone(), oauth, lb, pkce, state);
                self.spawn_login(task, tx_done);
                (first, joined)
            }
        };
        tracing::info!(site = %self.name, ?mode, "login started");
        Ok((
            Arc::new(PendingLogin {
                joined_event: joined,
                done: rx,
                paste,
            }),
            first,
        ))
    }

    /// Runs a login task with the login timeout, publishes its outcome and
    /// clears the pending slot (which releases the loopback listener).
    fn spawn_login(
        self: &Arc<Self>,
        task: impl std::future::Future<Output = Result<(), ApiError>> + Send + 'static,
        tx: watch::Sender<Outcome>,
    ) {
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

fn timed_out(site: &str) -> ApiError {
    ApiError::new(
        ErrorCode::LoginFailed,
        format!("site {site}: the login timed out waiting for the browser; run `token login {site}` to try again"),
    )
}

async fn browser_login(
    site: Arc<Site>,
    d: Arc<Daemon>,
    oauth: Arc<OAuthSite>,
    mut lb: Loopback,
    pkce: Pkce,
    state: String,
) -> Result<(), ApiError> {
    let name = site.name.clone();
    let cb = match tokio::time::timeout(d.login_timeout, lb.next()).await {
        Ok(Some(cb)) => cb,
        _ => return Err(timed_out(&name)),
    };
    let code = match check_callback(&cb.query, &state, &oauth.provider) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("site {name}: login failed: {e}");
            let _ = cb.reply.send(Page::Failed(msg.clone()));
            return Err(ApiError::new(
                ErrorCode::LoginFailed,
                format!("{msg}; run `token login {name}` to try again"),
            ));
        }
    };
    let scopes = site.config().scopes.clone();
    let _flight = site.flight.lock().await;
    match oauth
        .exchange_code(&d.http, &code, &lb.redirect_uri, &pkce.verifier)
        .await
    {
        Ok(resp) => {
            site.apply(&d, resp, &scopes).await?;
            let _ = cb.reply.send(Page::Done(name));
            Ok(())
        }
        Err(e) => {
            let err = ApiError::provider(&name, &e);
            let _ = cb.reply.send(Page::Failed(err.message.clone()));
            Err(err)
        }
    }
}

/// A QR code of `url` as Unicode half blocks (two modules a character row),
/// dark on light, with the quiet zone a phone camera needs.
fn qr_text(url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// What a paste-back login needs once the user pastes.
struct PasteLogin {
    site: Arc<Site>,
    d: Arc<Daemon>,
    oauth: Arc<OAuthSite>,
    redirect: String,
    pkce: Option<Pkce>,
    state: String,
    input: mpsc::Receiver<String>,
    implicit: bool,
}

async fn paste_login(mut p: PasteLogin) -> Result<(), ApiError> {
    let name = p.site.name.clone();
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::new(
            ErrorCode::LoginFailed,
            format!(
                "site {name}: login failed: {e}; run `token login {name} --paste` to try again"
            ),
        )
    };
    let input = match tokio::time::timeout(p.d.login_timeout, p.input.recv()).await {
        Ok(Some(input)) => input,
        _ => return Err(timed_out(&name)),
    };
    let input = input.trim();
    if input.is_empty() {
        return Err(failed(&"nothing was pasted"));
    }
    let scopes = p.site.config().scopes.clone();
    if p.implicit {
        let resp = parse_implicit_fragment(input, &p.state).map_err(|e| failed(&e))?;
        let _flight = p.site.flight.lock().await;
        return p.site.apply(&p.d, resp, &scopes).await;
    }
    // A URL or its parameters: check state (and iss). A bare code: nothing to check.
    let code = if input.contains('=') {
        check_callback(input, &p.state, &p.oauth.provider).map_err(|e| failed(&e))?
    } else {
        AuthCode::new(input.to_owned())
    };
    let Some(pkce) = p.pkce.as_ref() else {
        return Err(ApiError::internal("paste login without PKCE"));
    };
    let _flight = p.site.flight.lock().await;
    let resp = p
        .oauth
        .exchange_code(&p.d.http, &code, &p.redirect, &pkce.verifier)
        .await
        .map_err(|e| ApiError::provider(&name, &e))?;
    p.site.apply(&p.d, resp, &scopes).await
}

async fn device_login(
    site: Arc<Site>,
    d: Arc<Daemon>,
    oauth: Arc<OAuthSite>,
    dev: tokend_oauth::DeviceAuthorization,
) -> Result<(), ApiError> {
    let name = site.name.clone();
    let limit = d
        .login_timeout
        .min(std::time::Duration::from_secs(dev.expires_in.max(1)));
    let deadline = tokio::time::Instant::now() + limit;
    let mut interval = dev.interval.max(1);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(&name));
        }
        match oauth.device_poll(&d.http, &dev).await {
            Ok(DevicePoll::Pending) => {}
            Ok(DevicePoll::SlowDown) => interval += 5,
            Ok(DevicePoll::Done(resp)) => {
                let scopes = site.config().scopes.clone();
                let _flight = site.flight.lock().await;
                return site.apply(&d, resp, &scopes).await;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(site = %name, "device poll failed, retrying: {e}");
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::LoginFailed,
                    format!("site {name}: device login failed: {e}; run `token login {name} --device` to try again"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_code_is_square_text() {
        let qr = qr_text("https://auth.example.com/device?user_code=WDJB-MJHT").unwrap_or_default();
        let lines: Vec<&str> = qr.lines().collect();
        // Two modules a character row: about half as many rows as columns.
        let width = lines[0].chars().count();
        assert!(width >= 29, "{width}");
        assert!(
            lines.len() * 2 >= width && lines.len() * 2 <= width + 2,
            "{}x{}",
            width,
            lines.len()
        );
        assert!(lines.iter().all(|l| l.chars().count() == width));
    }
}
