//! `get`: a valid token from the site (in hand, or from the one token call
//! under way), or (when the caller allows it) a login that the caller
//! waits for.

use std::sync::Arc;

use token_proto::{GetRequest, LoginMode, LoginPolicy, TokenReply};

use super::Events;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::Served;

pub async fn get(
    d: &Arc<Daemon>,
    req: GetRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    let site = d.site(&req.site)?;
    if let Served::Token(t) = site.get(req.scopes.clone(), req.min_ttl).await? {
        return Ok(t);
    }
    if req.login == LoginPolicy::Never {
        return Err(ApiError::login_required(&req.site, ""));
    }
    let token = site
        .login(if req.no_browser {
            LoginMode::NoBrowser
        } else {
            LoginMode::Browser
        })
        .await?
        .wait(&req.site, events)
        .await?;
    if req.scopes.is_empty() {
        return Ok(token);
    }
    // A down-scoped token, now that there is a login to narrow.
    match site.get(req.scopes, req.min_ttl).await? {
        Served::Token(t) => Ok(t),
        Served::NeedLogin => Err(ApiError::internal(format!(
            "site {}: no token after the login",
            req.site
        ))),
    }
}
