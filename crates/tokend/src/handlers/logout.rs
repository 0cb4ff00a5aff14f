//! `logout`: revoke at the provider where possible, and forget the login
//! locally in any case. Revocation is RFC 7009 (refresh token first, then
//! the access token), or for Stack Exchange sites (those with an `api_base`)
//! `GET {api_base}/access-tokens/{token}/invalidate`.

use std::sync::Arc;

use token_proto::MessageReply;
use tokend_oauth::site::parse_revoke_response;
use tokend_oauth::{AccessToken, Error, FormRequest};
use url::Url;

use crate::config::SiteConfig;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::client;

pub async fn logout(d: &Arc<Daemon>, name: &str) -> Result<MessageReply, ApiError> {
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
            Some(at) => match invalidate(d, &cfg, api_base, at).await {
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

/// `GET {api_base}/access-tokens/{token}/invalidate[?key=…]`. The token sits
/// in the path, so errors name the endpoint with `…` in its place.
async fn invalidate(
    d: &Daemon,
    cfg: &SiteConfig,
    api_base: &str,
    token: &AccessToken,
) -> Result<(), Error> {
    let shown = format!(
        "{}/access-tokens/…/invalidate",
        api_base.trim_end_matches('/')
    );
    let url = invalidate_url(api_base, token.expose(), cfg.api_key.as_deref())?;
    let raw = d
        .http()
        .send(&FormRequest::get(url))
        .await
        .map_err(|e| hide_path(e, &shown))?;
    parse_revoke_response(&raw).map_err(|e| hide_path(e, &shown))
}

fn invalidate_url(api_base: &str, token: &str, key: Option<&str>) -> Result<Url, Error> {
    let mut url = Url::parse(api_base)
        .ok()
        .filter(|u| !u.cannot_be_a_base())
        .ok_or_else(|| Error::Invalid(format!("api_base {api_base} is not an http(s) URL")))?;
    // One segment, percent-encoded by hand: the `url` crate leaves `;` alone,
    // which SE reads as a separator between two tokens.
    let segment: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'('
            | b')'
            | b'*'
            | b'!' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!(
        "{}/access-tokens/{segment}/invalidate",
        url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    if let Some(key) = key {
        url.query_pairs_mut().append_pair("key", key);
    }
    Ok(url)
}

/// Puts `shown` in place of the URL an error names (the URL holds the token).
fn hide_path(e: Error, shown: &str) -> Error {
    match e {
        Error::Timeout { .. } => Error::Timeout {
            url: shown.to_owned(),
        },
        Error::Network { message, .. } => Error::Network {
            url: shown.to_owned(),
            message,
        },
        Error::BadResponse { status, what, .. } => Error::BadResponse {
            status,
            what,
            endpoint: format!("the invalidate endpoint {shown}"),
        },
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_one_path_segment() {
        let url = invalidate_url(
            "https://api.stackexchange.com/2.3/",
            "a(b)*c;d/e",
            Some("k y"),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.stackexchange.com/2.3/access-tokens/a(b)*c%3Bd%2Fe/invalidate?key=k+y"
        );
        let url = invalidate_url("https://acme.stackenterprise.co/api/2.3", "t", None).unwrap();
        assert_eq!(
            url.as_str(),
            "https://acme.stackenterprise.co/api/2.3/access-tokens/t/invalidate"
        );
    }

    #[test]
    fn errors_do_not_show_the_token() {
        let e = hide_path(
            Error::Network {
                url: "https://x/2.3/access-tokens/SECRET/invalidate".into(),
                message: "connection failed".into(),
            },
            "https://x/2.3/access-tokens/…/invalidate",
        );
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
}
