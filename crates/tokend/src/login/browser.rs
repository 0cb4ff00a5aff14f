//! Browser logins: authorization code + PKCE S256 through a loopback
//! redirect listener that takes one callback.

use std::sync::Arc;
use std::time::Duration;

use token_proto::{ErrorCode, Event};
use tokend_oauth::{check_callback, OAuthSite, Pkce};

use super::{fresh_nonce, fresh_pkce, fresh_state, timed_out, Ctx, Got, Started};
use crate::config::WrittenUrl;
use crate::error::ApiError;
use crate::loopback::{Loopback, Page};

pub(super) async fn start(ctx: &Ctx, oauth: Arc<OAuthSite>) -> Result<Started, ApiError> {
    let cfg = &ctx.cfg;
    let timeout = ctx.deps.login_timeout;
    let state = fresh_state()?;
    let lb = Loopback::bind(cfg.redirect_uri.as_ref().map(WrittenUrl::url), &state)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "site {}: cannot open the loopback listener for the login: {e}",
                cfg.name
            ))
        })?;
    let pkce = fresh_pkce()?;
    let nonce = fresh_nonce(cfg)?;
    let url = match &nonce {
        Some(n) => {
            oauth.authorize_url_with_nonce(&lb.redirect_uri, &cfg.scopes, &state, Some(&pkce), n)
        }
        None => oauth.authorize_url(&lb.redirect_uri, &cfg.scopes, &state, Some(&pkce)),
    }
    .map_err(|e| ApiError::provider(&cfg.name, &e))?;
    let ev = |open_browser| Event::LoginUrl {
        site: cfg.name.clone(),
        url: url.to_string(),
        open_browser,
        timeout: timeout.as_secs(),
    };
    let (first, joined) = (ev(true), ev(false));
    let task = browser_login(cfg.name.clone(), timeout, oauth, lb, pkce, state, nonce);
    Ok(Started {
        task: Box::pin(task),
        first,
        joined,
    })
}

async fn browser_login(
    name: String,
    timeout: Duration,
    oauth: Arc<OAuthSite>,
    mut lb: Loopback,
    pkce: Pkce,
    state: String,
    nonce: Option<String>,
) -> Result<Got, ApiError> {
    let cb = match tokio::time::timeout(timeout, lb.next()).await {
        Ok(Some(cb)) => cb,
        _ => return Err(timed_out(&name)),
    };
    match check_callback(&cb.query, &state, &oauth.provider) {
        Ok(code) => Ok(Got::Code {
            code,
            redirect: lb.redirect_uri.clone(),
            verifier: pkce.verifier.clone(),
            nonce,
            page: Some(cb.reply),
        }),
        Err(e) => {
            let msg = format!("site {name}: login failed: {e}");
            let _ = cb.reply.send(Page::Failed(msg.clone()));
            Err(ApiError::new(
                ErrorCode::LoginFailed,
                format!("{msg}; run `token login {name}` to try again"),
            ))
        }
    }
}
