//! Browser logins: authorization code + PKCE S256 through a loopback
//! redirect listener that takes one callback.

use std::sync::Arc;

use token_proto::{ErrorCode, Event};
use tokend_oauth::{check_callback, OAuthSite, Pkce};

use super::{fresh_pkce, fresh_state, timed_out, Started};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::loopback::{Loopback, Page};
use crate::site::Site;

pub(super) async fn start(
    site: &Arc<Site>,
    d: &Arc<Daemon>,
    oauth: Arc<OAuthSite>,
) -> Result<Started, ApiError> {
    let cfg = site.config();
    let configured_redirect = cfg
        .redirect_uri
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok());
    let timeout = d.login_timeout;
    let state = fresh_state()?;
    let lb = Loopback::bind(configured_redirect.as_ref(), &state)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "site {}: cannot open the loopback listener for the login: {e}",
                site.name
            ))
        })?;
    let pkce = fresh_pkce()?;
    let url = oauth
        .authorize_url(&lb.redirect_uri, &cfg.scopes, &state, Some(&pkce))
        .map_err(|e| ApiError::provider(&site.name, &e))?;
    let ev = |open_browser| Event::LoginUrl {
        site: site.name.clone(),
        url: url.to_string(),
        open_browser,
        timeout: timeout.as_secs(),
    };
    let (first, joined) = (ev(true), ev(false));
    let task = browser_login(site.clone(), d.clone(), oauth, lb, pkce, state);
    Ok(Started {
        task: Box::pin(task),
        first,
        joined,
        paste: None,
    })
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
