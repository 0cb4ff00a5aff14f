//! `get`: a valid token from memory, a refresh, or (when the caller allows
//! it) a login that the caller waits for.

use std::sync::Arc;

use token_proto::{ErrorCode, GetRequest, LoginMode, LoginPolicy, TokenReply};

use super::Events;
use crate::daemon::Daemon;
use crate::error::ApiError;

pub async fn get(
    d: &Arc<Daemon>,
    req: GetRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    let site = d.site(&req.site)?;
    let cfg = site.config();
    if let Some(extra) = req.scopes.iter().find(|s| !cfg.scopes.contains(s)) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "site {}: scope `{extra}` is not among the site's scopes ({}); add it to `scopes` in the config to ask for it",
                req.site,
                cfg.scopes.join(" ")
            ),
        ));
    }
    if let Some(token) = site.get_without_login(d, req.min_ttl).await? {
        return Ok(token);
    }
    if req.login == LoginPolicy::Never {
        return Err(ApiError::login_required(&req.site, ""));
    }
    site.login(d, LoginMode::Browser, events).await
}
