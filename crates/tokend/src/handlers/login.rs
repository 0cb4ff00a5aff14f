//! `login`: consent now, even if the site has a valid token.

use std::sync::Arc;

use token_proto::{LoginRequest, TokenReply};

use super::Events;
use crate::config::grant::LoginBy;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::Served;

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
            Ok(site.login(req.mode).await?.wait(&req.site, events).await?)
        }
    }
}
