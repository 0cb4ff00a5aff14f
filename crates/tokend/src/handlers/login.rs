//! `login`: consent now, even if the site has a valid token.

use std::sync::Arc;

use token_proto::{LoginRequest, TokenReply};

use super::Events;
use crate::config::Grant;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::Served;

pub(super) async fn login(
    d: &Arc<Daemon>,
    req: LoginRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    let site = d.site(&req.site)?;
    let grant = d.config().sites.get(&req.site).map(|c| c.grant);
    if grant.is_some_and(Grant::is_machine) {
        // Nobody to ask: a "login" is a fresh token from the token endpoint.
        return match site.renew().await? {
            Served::Token(t) => Ok(t),
            Served::NeedLogin => Err(ApiError::internal(format!("site {}: no token", req.site))),
        };
    }
    Ok(site.login(req.mode).await?.wait(&req.site, events).await?)
}
