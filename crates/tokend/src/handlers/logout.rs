//! `logout`: revoke at the provider where possible, and forget the login
//! locally in any case. Revocation is RFC 7009 (refresh token first, then
//! the access token), or for Stack Exchange sites (those with an `api_base`)
//! `GET {api_base}/access-tokens/{token}/invalidate`.

use std::sync::Arc;

use token_proto::{names, ErrorCode, MessageReply};

use crate::config::SiteConfig;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::{client, LoggedOut};
use crate::store::StoreError;

pub(super) async fn logout(d: &Arc<Daemon>, name: &str) -> Result<MessageReply, ApiError> {
    // The site forgets the login (and cancels a pending one) first; the
    // tokens it held are revoked here, off the site's task.
    let site = match d.site(name) {
        Ok(site) => site,
        Err(e) if e.code == ErrorCode::UnknownSite && names::is_site_name(name) => {
            // A site no longer in the config may still have a stored login.
            let config = d.removed().config(name);
            return match forget_removed(d, name, config).await {
                Ok(Some(message)) => Ok(MessageReply { message }),
                Ok(None) => Err(e),
                Err(store) => Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("site {name} is no longer configured, and its stored login could not be read or deleted: {store}"),
                )),
            };
        }
        Err(e) => return Err(e),
    };
    let out = site.logout().await?;
    let message = revoke(d, name, out).await;
    tracing::info!(site = %name, "{message}");
    Ok(MessageReply { message })
}

/// Forgets the stored login of `name`, a site no longer configured:
/// revoked with `config` (its last settings) when this daemon knows them
/// and the login was made with them, deleted from the store in any case.
/// `None`: no login is stored under that name.
pub(crate) async fn forget_removed(
    d: &Arc<Daemon>,
    name: &str,
    config: Option<Arc<SiteConfig>>,
) -> Result<Option<String>, StoreError> {
    let Some(record) = d.store().load(name).await? else {
        d.removed().forgotten(name);
        return Ok(None);
    };
    d.store().delete(name).await?;
    d.removed().forgotten(name);
    let message = match config.filter(|c| c.identity() == record.identity) {
        Some(config) => {
            let out = LoggedOut {
                refresh: record.refresh_token,
                access: record.access_token,
                config,
                oauth: None,
            };
            format!(
                "site {name} is no longer configured; its stored login is deleted. {}",
                revoke(d, name, out).await
            )
        }
        None => format!(
            "site {name} is no longer configured; its stored login is deleted (its settings are gone, so its tokens could not be revoked: they stay valid at the provider until they expire)"
        ),
    };
    tracing::info!(site = %name, "{message}");
    Ok(Some(message))
}

/// Revokes what a logout left, and says how that went.
async fn revoke(d: &Arc<Daemon>, name: &str, out: LoggedOut) -> String {
    let (refresh, access, cfg) = (out.refresh, out.access, out.config);
    if refresh.is_none() && access.is_none() {
        format!("site {name} was not logged in; nothing to revoke")
    } else if let Some(api_base) = &cfg.rare.api_base {
        // Stack Exchange issues no refresh tokens; its access token is the login.
        match &access {
            None => format!("logged out of site {name}; it held no access token to invalidate"),
            Some(at) => match tokend_oauth::invalidate(d.http(), api_base, at, cfg.rare.api_key.as_deref()).await {
                Ok(()) => {
                    format!("logged out of site {name}: the provider invalidated its access token")
                }
                Err(e) => format!(
                    "logged out of site {name} locally, but invalidating the access token failed ({e}); it may stay valid at the provider until it expires"
                ),
            },
        }
    } else {
        let oauth = match out.oauth {
            Some(o) => Ok(o),
            None => client::build(d.deps(), &cfg).await.map_err(ApiError::from),
        };
        match oauth {
            Ok(oauth) if oauth.provider.revoke_url.is_some() => {
                let mut failures = Vec::new();
                if let Some(rt) = &refresh {
                    if let Err(e) = oauth.revoke(d.http(), rt.expose(), "refresh_token").await {
                        failures.push(e.to_string());
                    }
                }
                if let Some(at) = &access {
                    if let Err(e) = oauth.revoke(d.http(), at.expose(), "access_token").await {
                        failures.push(e.to_string());
                    }
                }
                if failures.is_empty() {
                    format!("logged out of site {name}: the provider revoked its tokens")
                } else {
                    format!(
                        "logged out of site {name} locally, but revocation failed ({}); the tokens may stay valid at the provider until they expire",
                        failures.join("; ")
                    )
                }
            }
            Ok(_) => format!(
                "logged out of site {name} locally; the provider has no revocation endpoint, so its tokens stay valid until they expire"
            ),
            Err(e) => format!(
                "logged out of site {name} locally; could not reach the provider to revoke ({e})"
            ),
        }
    }
}
