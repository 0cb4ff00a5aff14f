//! Paste-back logins: for redirect URIs tokend cannot listen on (Stack
//! Overflow for Teams' fixed `/oauth/login_success`) and `token login
//! --paste`. The user pastes the final URL (or the bare code); `state` is
//! checked. Also the legacy implicit flow, whose token is in the fragment.

use std::sync::Arc;

use token_proto::{ErrorCode, Event};
use tokend_oauth::{check_callback, parse_implicit_fragment, AuthCode, OAuthSite, Pkce};
use tokio::sync::mpsc;

use super::{fresh_pkce, fresh_state, timed_out, Started};
use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::Site;

/// Where a paste-back login without a configured redirect_uri sends the
/// browser: nothing listens there, the user copies the URL from the address bar.
const PASTE_REDIRECT: &str = "http://127.0.0.1/callback";

pub(super) async fn start(
    site: &Arc<Site>,
    d: &Arc<Daemon>,
    oauth: Arc<OAuthSite>,
) -> Result<Started, ApiError> {
    let cfg = site.config();
    let timeout = d.login_timeout;
    let implicit = cfg.grant == Grant::Implicit;
    let redirect = cfg
        .redirect_uri
        .clone()
        .unwrap_or_else(|| PASTE_REDIRECT.to_owned());
    let pkce = if implicit { None } else { Some(fresh_pkce()?) };
    let state = fresh_state()?;
    let url = if implicit {
        oauth.implicit_authorize_url(&redirect, &cfg.scopes, &state)
    } else {
        oauth.authorize_url(&redirect, &cfg.scopes, &state, pkce.as_ref())
    }
    .map_err(|e| ApiError::provider(&site.name, &e))?;
    let ev = |paste| Event::PasteUrl {
        site: site.name.clone(),
        url: url.to_string(),
        paste,
        timeout: timeout.as_secs(),
    };
    let (tx, rx) = mpsc::channel(1);
    let task = paste_login(PasteLogin {
        site: site.clone(),
        d: d.clone(),
        oauth,
        redirect,
        pkce,
        state,
        input: rx,
        implicit,
    });
    Ok(Started {
        task: Box::pin(task),
        first: ev(true),
        joined: ev(false),
        paste: Some(tx),
    })
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
