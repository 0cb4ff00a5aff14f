//! What `token get --dpop METHOD URL` may ask a proof for: checked once, at
//! the edge, before any token is fetched or login started.

use token_proto::DpopTarget;
use url::Url;

use super::SiteError;
use crate::config::SiteConfig;

/// A proof request for `cfg`'s site: its method (upper-cased), URL, and the
/// resource server's nonce when one was given.
pub(crate) fn check(
    cfg: &SiteConfig,
    target: &DpopTarget,
) -> Result<(String, Url, Option<String>), SiteError> {
    let site = &cfg.name;
    if !cfg.dpop {
        return Err(SiteError::Config(format!(
            "site {site}: --dpop needs `dpop = true` in [site.{site}]; add it to the config (then `token login {site}`)"
        )));
    }
    let method = target.method.to_ascii_uppercase();
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || method.len() > 32 || !method.chars().all(token_char) {
        return Err(SiteError::BadRequest(format!(
            "site {site}: --dpop `{}` is not an HTTP method; use e.g. `--dpop GET https://api.example.com/me`",
            token_text::clean(&target.method, 40)
        )));
    }
    let url = Url::parse(&target.url)
        .ok()
        .filter(|u| u.has_host() && matches!(u.scheme(), "https" | "http"))
        .ok_or_else(|| {
            SiteError::BadRequest(format!(
                "site {site}: --dpop `{}` is not an absolute https URL",
                token_text::clean(&target.url, 200)
            ))
        })?;
    if !tokend_oauth::tls_or_loopback(&url) {
        return Err(SiteError::BadRequest(format!(
            "site {site}: --dpop {url}: the token goes only over TLS; use https (plain http only to a loopback host)"
        )));
    }
    // RFC 9449 §8.1: a nonce is 1*NQCHAR (visible ASCII but `"` and `\`).
    let nonce_char = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\';
    if let Some(n) = &target.nonce {
        if n.is_empty() || n.len() > 512 || !n.bytes().all(nonce_char) {
            return Err(SiteError::BadRequest(format!(
                "site {site}: --dpop-nonce `{}` is not a DPoP nonce (visible ASCII, no quotes or backslashes)",
                token_text::clean(n, 80)
            )));
        }
    }
    Ok((method, url, target.nonce.clone()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn site(dpop: bool) -> SiteConfig {
        let text = format!(
            "[site.corp]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\ndpop = {dpop}\n"
        );
        let c = crate::config::Config::parse(std::path::Path::new("/c.toml"), &text);
        (*c.sites["corp"]).clone()
    }

    fn target(method: &str, url: &str) -> DpopTarget {
        DpopTarget {
            method: method.into(),
            url: url.into(),
            nonce: None,
        }
    }

    #[test]
    fn only_dpop_sites_get_proofs_for_http_methods_on_tls_urls() {
        let (m, u, _) = check(&site(true), &target("post", "https://api.example/v1?x=1")).unwrap();
        assert_eq!(m, "POST");
        assert_eq!(u.as_str(), "https://api.example/v1?x=1");
        assert!(check(&site(true), &target("GET", "http://127.0.0.1:8/me")).is_ok());
        let e = check(&site(false), &target("GET", "https://api.example/")).unwrap_err();
        assert!(
            matches!(&e, SiteError::Config(m) if m.contains("`dpop = true` in [site.corp]")),
            "{e}"
        );
        for (m, u) in [
            ("", "https://a.example/"),
            ("GE T", "https://a.example/"),
            ("GET", "/relative"),
            ("GET", "ftp://a.example/"),
            ("GET", "http://api.example/"),
        ] {
            let e = check(&site(true), &target(m, u)).unwrap_err();
            assert!(matches!(e, SiteError::BadRequest(_)), "{m} {u}: {e}");
        }
    }

    #[test]
    fn a_resource_servers_nonce_is_passed_when_it_is_one() {
        let with = |n: &str| DpopTarget {
            nonce: Some(n.into()),
            ..target("GET", "https://api.example/")
        };
        let (_, _, nonce) = check(&site(true), &with("eyJ7S_zG.9-~")).unwrap();
        assert_eq!(nonce.as_deref(), Some("eyJ7S_zG.9-~"));
        for bad in ["", "a b", "a\"b", "a\nb", "é"] {
            let e = check(&site(true), &with(bad)).unwrap_err();
            assert!(matches!(e, SiteError::BadRequest(_)), "{bad:?}: {e}");
        }
    }
}
