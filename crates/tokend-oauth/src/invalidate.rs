//! Stack Exchange's stand-in for revocation: `GET
//! {api_base}/access-tokens/{token}/invalidate[?key=…]`. Its sites issue no
//! refresh tokens, so the access token is the login, and this is how a
//! logout ends it at the provider.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::error::Error;
use crate::http::{FormRequest, Http};
use crate::secret::AccessToken;
use crate::site::parse_revoke_response;

/// What stays unencoded in the token's path segment: RFC 3986 unreserved
/// characters and `()*!`. Everything else is encoded, `;` in particular,
/// which Stack Exchange reads as a separator between two tokens (the `url`
/// crate's path encoding leaves it alone).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'!');

/// Invalidates `token` at `api_base` (`key`: the app's API key). The token
/// sits in the path, so errors name the endpoint with `…` in its place.
pub async fn invalidate(
    http: &Http,
    api_base: &Url,
    token: &AccessToken,
    key: Option<&str>,
) -> Result<(), Error> {
    let shown = format!(
        "{}/access-tokens/…/invalidate",
        api_base.as_str().trim_end_matches('/')
    );
    let url = invalidate_url(api_base, token.expose(), key)?;
    let raw = http
        .send(&FormRequest::get(url))
        .await
        .map_err(|e| hide_path(e, &shown))?;
    parse_revoke_response(&raw).map_err(|e| hide_path(e, &shown))
}

fn invalidate_url(api_base: &Url, token: &str, key: Option<&str>) -> Result<Url, Error> {
    if api_base.cannot_be_a_base() {
        return Err(Error::Invalid(format!(
            "api_base {api_base} is not an http(s) URL"
        )));
    }
    let mut url = api_base.clone();
    let path = format!(
        "{}/access-tokens/{}/invalidate",
        url.path().trim_end_matches('/'),
        utf8_percent_encode(token, SEGMENT)
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
        Error::Network {
            message, source, ..
        } => Error::Network {
            url: shown.to_owned(),
            message,
            source,
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
        let base = |s: &str| Url::parse(s).unwrap();
        let url = invalidate_url(
            &base("https://api.stackexchange.com/2.3/"),
            "a(b)*c;d/e",
            Some("k y"),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.stackexchange.com/2.3/access-tokens/a(b)*c%3Bd%2Fe/invalidate?key=k+y"
        );
        let url =
            invalidate_url(&base("https://acme.stackenterprise.co/api/2.3"), "t", None).unwrap();
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
                source: None,
            },
            "https://x/2.3/access-tokens/…/invalidate",
        );
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
}
