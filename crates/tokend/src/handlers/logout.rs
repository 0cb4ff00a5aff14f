//! `logout`: revoke at the provider (RFC 7009: refresh token first, then the
//! access token) where possible, and forget the login locally in any case.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::error::ApiError;

pub async fn logout(d: &Arc<Daemon>, name: &str) -> Result<Value, ApiError> {
    let site = d.site(name)?;
    // A store we cannot read still gets its entry deleted below.
    let _ = site.ensure_loaded(d).await;
    let _flight = site.flight.lock().await;
    let (refresh, access) = site.tokens();
    let message = if refresh.is_none() && access.is_none() {
        format!("site {name} was not logged in; nothing to revoke")
    } else {
        match site.oauth(d).await {
            Ok(oauth) if oauth.provider.revoke_url.is_some() => {
                let mut failures = Vec::new();
                if let Some(rt) = &refresh {
                    if let Err(e) = oauth.revoke(&d.http, rt.expose(), "refresh_token").await {
                        failures.push(e.to_string());
                    }
                }
                if let Some(at) = &access {
                    if let Err(e) = oauth.revoke(&d.http, at.expose(), "access_token").await {
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
    site.forget(d, None).await;
    tracing::info!(site = %name, "{message}");
    Ok(json!({ "message": message }))
}
