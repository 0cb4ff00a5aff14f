//! `logout`: revoke at the provider where possible, and forget the login
//! locally in any case. Revocation is RFC 7009 (refresh token first, then
//! the access token), or for Stack Exchange sites (those with an `api_base`)
//! `GET {api_base}/access-tokens/{token}/invalidate`.

use std::sync::Arc;

use token_proto::MessageReply;

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::client;

pub(super) async fn logout(d: &Arc<Daemon>, name: &str) -> Result<MessageReply, ApiError> {
    // The site forgets the login (and cancels a pending one) first; the
    // tokens it held are revoked here, off the site's task.
    let out = d.site(name)?.logout().await?;
    let (refresh, access, cfg) = (out.refresh, out.access, out.config);
    let message = if refresh.is_none() && access.is_none() {
        format!("site {name} was not logged in; nothing to revoke")
    } else if let Some(api_base) = &cfg.api_base {
        // Stack Exchange issues no refresh tokens; its access token is the login.
        match &access {
            None => format!("logged out of site {name}; it held no access token to invalidate"),
            Some(at) => match tokend_oauth::invalidate(d.http(), api_base, at, cfg.api_key.as_deref()).await {
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
    };
    tracing::info!(site = %name, "{message}");
    Ok(MessageReply { message })
}
