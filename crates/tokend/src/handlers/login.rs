//! `login`: consent now, even if the site has a valid token; and the wait
//! of a caller on a login (its `get` or `login`): the login's URL or code
//! shown, the caller's absence noticed.

use std::sync::Arc;

use token_proto::{Event, LoginRequest, TokenReply};

use super::Events;
use crate::config::grant::LoginBy;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::login::{self, LoginTicket, Progress};
use crate::loopback::StartLinks;
use crate::site::{Served, SiteError};

/// How often a caller waiting on a login is checked for having gone away.
const CALLER_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn login(
    d: &Arc<Daemon>,
    req: LoginRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    let (site, settings) = d.site_with_settings(&req.site)?;
    match settings.grant.login() {
        // Nobody to ask: a "login" is a fresh token from the token endpoint.
        LoginBy::TokenCall => match site.renew().await? {
            Served::Token(t) => Ok(t),
            Served::NeedLogin => Err(ApiError::internal(format!("site {}: no token", req.site))),
        },
        LoginBy::Code | LoginBy::Device | LoginBy::Fragment => {
            Ok(wait(site.login(req.mode).await?, &req.site, events).await?)
        }
    }
}

/// Shows the caller the login's URL or code, then waits for its end.
/// A caller that goes away meanwhile gives up its place: the login is
/// cancelled when nobody else waits for it, and another waiting caller
/// opens the browser when the one that did has gone.
pub(super) async fn wait(
    mut ticket: LoginTicket,
    site: &str,
    events: &mut Events<'_>,
) -> Result<TokenReply, SiteError> {
    let mut shown = false;
    let mut probe = tokio::time::interval(CALLER_PROBE);
    loop {
        let now = ticket.progress.borrow_and_update().clone();
        match now {
            Progress::Starting => {}
            Progress::Waiting {
                first,
                joined,
                links,
            } => {
                if !shown {
                    let event = if ticket.opener.is_some() {
                        &first
                    } else {
                        &joined
                    };
                    events.send(&with_link(event, links.as_deref())).await;
                    shown = true;
                } else if ticket.take_over() {
                    events.send(&with_link(&first, links.as_deref())).await;
                }
            }
            Progress::Done(result) => return result,
        }
        let changed = tokio::select! {
            changed = ticket.progress.changed() => changed,
            _ = probe.tick() => {
                if events.caller_gone().await {
                    return Err(login::cancelled(site));
                }
                continue;
            }
        };
        if changed.is_err() {
            return Err(SiteError::Internal(format!(
                "site {site}: the login ended without an answer; run `token login {site}`"
            )));
        }
    }
}

/// `event` as one caller is shown it: a browser login's URL is a start link
/// of its own, good once.
fn with_link(event: &Event, links: Option<&StartLinks>) -> Event {
    match (event, links) {
        (
            Event::LoginUrl {
                site,
                open_browser,
                timeout,
                ..
            },
            Some(links),
        ) => match links.mint() {
            Some(url) => Event::LoginUrl {
                site: site.clone(),
                url,
                open_browser: *open_browser,
                timeout: *timeout,
            },
            // Nothing to open: the link could not be made (too many callers,
            // or no OS randomness).
            None => Event::LoginUrl {
                site: site.clone(),
                url: "(no login link left: run `token login` again)".into(),
                open_browser: false,
                timeout: *timeout,
            },
        },
        _ => event.clone(),
    }
}
