//! `get`: a valid token from memory, a refresh, or (when the caller allows
//! it) a login that the caller waits for.

use std::sync::Arc;

use token_proto::{ErrorCode, GetRequest, LoginMode, LoginPolicy, TokenReply};

use super::Events;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::Site;

pub async fn get(
    d: &Arc<Daemon>,
    req: GetRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    let site = d.site(&req.site)?;
    // The warm path (no --scope) allocates nothing here.
    if !req.scopes.is_empty() {
        let mut wanted = req.scopes.clone();
        wanted.sort();
        wanted.dedup();
        let mut all = site.config().scopes.clone();
        all.sort();
        all.dedup();
        if wanted != all {
            return narrowed(d, &site, &req, &wanted, events).await;
        }
    }
    if let Some(token) = site.get_without_login(d, req.min_ttl).await? {
        return Ok(token);
    }
    if req.login == LoginPolicy::Never {
        return Err(ApiError::login_required(&req.site, ""));
    }
    site.login(d, LoginMode::Browser, events).await
}

/// `--scope`: a down-scoped token. Asking for a scope the site was not
/// granted is an error, not a new login.
async fn narrowed(
    d: &Arc<Daemon>,
    site: &Arc<Site>,
    req: &GetRequest,
    wanted: &[String],
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    site.ensure_loaded(d).await?;
    let grantable = site.grantable_scopes();
    if let Some(extra) = wanted.iter().find(|s| !grantable.contains(s)) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "site {}: scope `{extra}` is not among the site's scopes ({}); add it to `scopes` in the config (then `token login {}`) to ask for it",
                req.site,
                grantable.join(" "),
                req.site
            ),
        ));
    }
    if let Some(token) = site.get_narrowed(d, wanted, req.min_ttl).await? {
        return Ok(token);
    }
    if req.login == LoginPolicy::Never {
        return Err(ApiError::login_required(&req.site, ""));
    }
    site.login(d, LoginMode::Browser, events).await?;
    site.get_narrowed(d, wanted, req.min_ttl)
        .await?
        .ok_or_else(|| ApiError::internal(format!("site {}: no token after the login", req.site)))
}
