//! Paste-back logins: for redirect URIs tokend cannot listen on (Stack
//! Overflow for Teams' fixed `/oauth/login_success`) and `token login
//! --paste`. The user pastes the final URL (or the bare code); `state` is
//! checked. Also the legacy implicit flow, whose token is in the fragment.

use std::sync::Arc;

use token_proto::Event;
use tokend_oauth::{check_callback, parse_implicit_fragment, AuthCode, OAuthSite, Pkce};
use tokio::sync::mpsc;

use super::{fresh_nonce, fresh_pkce, fresh_state, timed_out, Ctx, Got, Started, Way};
use crate::site::SiteError;

/// Where a paste-back login without a configured redirect_uri sends the
/// browser: nothing listens there, the user copies the URL from the address bar.
const PASTE_REDIRECT: &str = "http://127.0.0.1/callback";

/// Starts a paste-back login; `input` receives what the user pastes.
pub(super) fn start(
    ctx: &Ctx,
    oauth: Arc<OAuthSite>,
    input: mpsc::Receiver<String>,
) -> Result<Started, SiteError> {
    let cfg = &ctx.cfg;
    let timeout = ctx.deps.login_timeout.get();
    let redirect = cfg
        .redirect_uri
        .as_deref()
        .unwrap_or(PASTE_REDIRECT)
        .to_owned();
    let flow = if cfg.grant.token_from_browser() {
        Flow::Implicit
    } else {
        Flow::Code(fresh_pkce()?)
    };
    let state = fresh_state()?;
    let nonce = match &flow {
        Flow::Implicit => None,
        Flow::Code(_) => fresh_nonce(cfg)?,
    };
    let url = match (&flow, &nonce) {
        (Flow::Implicit, _) => oauth.implicit_authorize_url(&redirect, &cfg.scopes, &state),
        (Flow::Code(pkce), Some(n)) => {
            oauth.authorize_url_with_nonce(&redirect, &cfg.scopes, &state, Some(pkce), n)
        }
        (Flow::Code(pkce), None) => oauth.authorize_url(&redirect, &cfg.scopes, &state, Some(pkce)),
    }
    .map_err(|source| SiteError::Provider {
        site: cfg.name.clone(),
        source,
    })?;
    let ev = |paste| Event::PasteUrl {
        site: cfg.name.clone(),
        url: url.to_string(),
        paste,
        timeout: timeout.as_secs(),
    };
    let task = paste_login(PasteLogin {
        ctx: Ctx {
            cfg: ctx.cfg.clone(),
            deps: ctx.deps.clone(),
            dpop: ctx.dpop.clone(),
        },
        nonce,
        name: cfg.name.clone(),
        timeout,
        oauth,
        redirect,
        flow,
        state,
        input,
    });
    Ok(Started {
        task: Box::pin(task),
        first: ev(true),
        joined: ev(false),
        links: None,
    })
}

/// What the pasted URL carries.
enum Flow {
    /// The legacy implicit grant: the token itself, in the fragment.
    Implicit,
    /// An authorization code, exchanged with this PKCE verifier.
    Code(Pkce),
}

/// What a paste-back login needs once the user pastes.
struct PasteLogin {
    ctx: Ctx,
    nonce: Option<String>,
    name: String,
    timeout: std::time::Duration,
    oauth: Arc<OAuthSite>,
    redirect: String,
    flow: Flow,
    state: String,
    input: mpsc::Receiver<String>,
}

async fn paste_login(mut p: PasteLogin) -> Result<Got, SiteError> {
    // An implicit grant's token was issued after the user was shown the
    // URL: its expiry counts from then.
    let shown_at = p.ctx.deps.clock.now();
    let name = p.name.clone();
    let failed = |source| SiteError::CallbackRefused {
        site: name.clone(),
        way: Way::Paste,
        source,
    };
    let input = match tokio::time::timeout(p.timeout, p.input.recv()).await {
        Ok(Some(input)) => input,
        _ => return Err(timed_out(&name)),
    };
    let input = input.trim();
    if input.is_empty() {
        return Err(SiteError::NothingPasted { site: name });
    }
    let pkce = match &p.flow {
        Flow::Implicit => {
            let resp = parse_implicit_fragment(input, &p.state).map_err(failed)?;
            return super::checked(&p.ctx, &p.oauth, resp, Way::Paste, shown_at).await;
        }
        Flow::Code(pkce) => pkce,
    };
    // A URL or its parameters: check state (and iss). A bare code: nothing to check.
    let code = if input.contains('=') {
        check_callback(input, &p.state, &p.oauth.provider).map_err(failed)?
    } else {
        AuthCode::new(input.to_owned())
    };
    Ok(Got::Code {
        code,
        redirect: p.redirect.clone(),
        verifier: pkce.verifier.clone(),
        nonce: p.nonce.clone(),
        page: None,
    })
}
