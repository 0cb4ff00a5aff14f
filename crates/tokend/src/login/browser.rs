//! Browser logins: authorization code + PKCE S256 through a loopback
//! redirect listener that takes one callback.

use std::sync::Arc;
use std::time::Duration;

use token_proto::Event;
use tokend_oauth::{check_callback, OAuthSite, Pkce};

use super::{fresh_nonce, fresh_pkce, fresh_state, timed_out, Ctx, Got, Started, Way};
use crate::config::WrittenUrl;
use crate::error::SiteError;
use crate::loopback::{Arrival, Loopback, Page};

pub(super) async fn start(ctx: &Ctx, oauth: Arc<OAuthSite>) -> Result<Started, SiteError> {
    let cfg = &ctx.cfg;
    let timeout = ctx.deps.login_timeout.get();
    let state = fresh_state()?;
    let lb = Loopback::bind(cfg.redirect_uri.as_ref().map(WrittenUrl::url), &state)
        .await
        .map_err(|e| SiteError::Listener {
            site: cfg.name.clone(),
            source: Arc::new(e),
        })?;
    let pkce = fresh_pkce()?;
    let nonce = fresh_nonce(cfg)?;
    let url = match &nonce {
        Some(n) => {
            oauth.authorize_url_with_nonce(&lb.redirect_uri, &cfg.scopes, &state, Some(&pkce), n)
        }
        None => oauth.authorize_url(&lb.redirect_uri, &cfg.scopes, &state, Some(&pkce)),
    }
    .map_err(|source| SiteError::Provider {
        site: cfg.name.clone(),
        source,
    })?;
    // Callers are shown one-time start links (minted as each is shown), not
    // the URL with the login's state in it.
    let links = lb.start_links(&url);
    let ev = |open_browser| Event::LoginUrl {
        site: cfg.name.clone(),
        url: String::new(),
        open_browser,
        timeout: timeout.as_secs(),
    };
    let (first, joined) = (ev(true), ev(false));
    let task = browser_login(cfg.name.clone(), timeout, oauth, lb, pkce, state, nonce);
    Ok(Started {
        task: Box::pin(task),
        first,
        joined,
        links: Some(links),
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
) -> Result<Got, SiteError> {
    let cb = match tokio::time::timeout(timeout, lb.next()).await {
        Ok(Some(Arrival::Callback(cb))) => cb,
        Ok(Some(Arrival::StartReused)) => return Err(SiteError::StartReused { site: name }),
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
        Err(source) => {
            let _ = cb
                .reply
                .send(Page::Failed(format!("site {name}: login failed: {source}")));
            Err(SiteError::CallbackRefused {
                site: name,
                way: Way::Browser,
                source,
            })
        }
    }
}
