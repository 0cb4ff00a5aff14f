//! Finding a provider's endpoints from its issuer: OpenID Connect Discovery
//! first, then RFC 8414 authorization server metadata.

use serde::Deserialize;
use url::Url;

use crate::error::{loggable_url, Error};
use crate::http::{FormRequest, Http};
use crate::provider::Provider;

/// Where to look for metadata, in order.
///
/// OIDC appends `/.well-known/openid-configuration` to the whole issuer;
/// RFC 8414 §3.1 inserts `/.well-known/oauth-authorization-server` between
/// the host and the issuer's path. For an issuer without a path both forms
/// are the same place in each scheme.
pub fn discovery_urls(issuer: &str) -> Result<Vec<Url>, Error> {
    let discovery = |message: String| Error::Discovery {
        issuer: issuer.to_owned(),
        message,
    };
    let parsed =
        Url::parse(issuer).map_err(|e| discovery(format!("the issuer is not a URL: {e}")))?;
    if !crate::tls_or_loopback(&parsed) {
        return Err(discovery(
            "the issuer must be an https URL (plain http only for a loopback host)".into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(discovery(
            "the issuer must not have a query or fragment".into(),
        ));
    }
    let base = issuer.trim_end_matches('/');
    let oidc = format!("{base}/.well-known/openid-configuration");
    let path = parsed.path().trim_end_matches('/');
    let mut rfc8414 = parsed.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let oidc = Url::parse(&oidc).map_err(|e| discovery(e.to_string()))?;
    Ok(vec![oidc, rfc8414])
}

#[derive(Deserialize)]
struct Metadata {
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    jwks_uri: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// Validate a metadata document fetched for `issuer` and resolve it.
pub fn parse_metadata(issuer: &str, body: &[u8]) -> Result<Provider, Error> {
    let discovery = |message: String| Error::Discovery {
        issuer: issuer.to_owned(),
        message,
    };
    let meta: Metadata = serde_json::from_slice(body)
        // serde's message can quote the whole document: clipped.
        .map_err(|e| {
            let e = crate::response::clip(&e.to_string());
            discovery(format!("the metadata is not valid JSON metadata: {e}"))
        })?;
    // RFC 8414 §3.3 / OIDC Discovery §4.3: exact match, or a mix-up attack
    // could hand us another server's endpoints.
    match meta.issuer.as_deref() {
        Some(got) if got == issuer => {}
        Some(got) => {
            // The provider's text: shown only cleaned and clipped.
            let got = crate::response::clip(got);
            return Err(discovery(format!(
                "the metadata names issuer {got}, which is not exactly the configured {issuer}; set issuer to the value the provider uses"
            )));
        }
        None => return Err(discovery("the metadata names no issuer".into())),
    }
    // Tokens and codes go to these endpoints: TLS, as for the issuer.
    let url = |field: &str, value: Option<String>| -> Result<Option<Url>, Error> {
        value
            .map(|v| {
                let u = Url::parse(&v)
                    .map_err(|e| discovery(format!("{field} {v:?} is not a URL: {e}")))?;
                if crate::tls_or_loopback(&u) {
                    Ok(u)
                } else {
                    Err(discovery(format!(
                        "{field} {v:?} is not https: tokend sends tokens only over TLS \
                         (plain http only to a loopback host)"
                    )))
                }
            })
            .transpose()
    };
    let token_url = url("token_endpoint", meta.token_endpoint)?
        .ok_or_else(|| discovery("the metadata has no token_endpoint".into()))?;
    let pkce_methods = meta.code_challenge_methods_supported.unwrap_or_default();
    if !pkce_methods.is_empty() && !pkce_methods.iter().any(|m| m == "S256") {
        return Err(discovery(format!(
            "the provider supports PKCE methods {pkce_methods:?} but not S256, and tokend never downgrades to plain"
        )));
    }
    Ok(Provider {
        issuer: Some(issuer.to_owned()),
        authorize_url: url("authorization_endpoint", meta.authorization_endpoint)?,
        token_url,
        revoke_url: url("revocation_endpoint", meta.revocation_endpoint)?,
        device_url: url(
            "device_authorization_endpoint",
            meta.device_authorization_endpoint,
        )?,
        jwks_url: url("jwks_uri", meta.jwks_uri)?,
        iss_required: meta.authorization_response_iss_parameter_supported,
        pkce_methods,
    })
}

/// Discover `issuer`'s endpoints. Network trouble and 5xx come back as the
/// transient errors they are, so the daemon retries; a provider that has no
/// metadata anywhere is an [`Error::Discovery`].
pub async fn discover(http: &Http, issuer: &str) -> Result<Provider, Error> {
    let mut tried = Vec::new();
    let mut server_error = None;
    for url in discovery_urls(issuer)? {
        let shown = loggable_url(&url);
        let raw = http.send(&FormRequest::get(url)).await?;
        if (200..300).contains(&raw.status) {
            return parse_metadata(issuer, &raw.body);
        }
        tracing::debug!(url = %shown, status = raw.status, "no metadata here");
        if raw.status >= 500 {
            server_error = Some(Error::BadResponse {
                status: raw.status,
                what: "an error instead of metadata".into(),
                endpoint: format!("discovery endpoint {shown}"),
            });
        }
        tried.push(format!("{shown} (HTTP {})", raw.status));
    }
    Err(server_error.unwrap_or_else(|| Error::Discovery {
        issuer: issuer.to_owned(),
        message: format!(
            "no metadata at {}; check the issuer or configure the endpoints",
            tried.join(" or ")
        ),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testserver::{json_ok, serve, serve_with};

    fn urls(issuer: &str) -> Vec<String> {
        discovery_urls(issuer)
            .unwrap()
            .iter()
            .map(Url::to_string)
            .collect()
    }

    #[test]
    fn urls_without_path() {
        assert_eq!(
            urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/openid-configuration",
                "https://auth.example.com/.well-known/oauth-authorization-server",
            ]
        );
        assert_eq!(
            urls("https://auth.example.com/")[1],
            "https://auth.example.com/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn urls_with_path() {
        assert_eq!(
            urls("https://login.example.com/tenant/v2.0"),
            [
                "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
                "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2.0",
            ]
        );
        assert_eq!(
            urls("http://127.0.0.1:8080/realms/dev/")[1],
            "http://127.0.0.1:8080/.well-known/oauth-authorization-server/realms/dev"
        );
    }

    #[test]
    fn bad_issuers() {
        for issuer in ["not a url", "ftp://x", "https://x/?a=b", "https://x/#f"] {
            assert!(
                matches!(discovery_urls(issuer), Err(Error::Discovery { .. })),
                "{issuer}"
            );
        }
    }

    const META: &str = r#"{
        "issuer": "https://auth.example.com",
        "authorization_endpoint": "https://auth.example.com/authorize",
        "token_endpoint": "https://auth.example.com/token",
        "revocation_endpoint": "https://auth.example.com/revoke",
        "device_authorization_endpoint": "https://auth.example.com/device",
        "userinfo_endpoint": "https://auth.example.com/userinfo",
        "authorization_response_iss_parameter_supported": true,
        "code_challenge_methods_supported": ["plain", "S256"]
    }"#;

    #[test]
    fn parses_metadata() {
        let p = parse_metadata("https://auth.example.com", META.as_bytes()).unwrap();
        assert_eq!(p.issuer.as_deref(), Some("https://auth.example.com"));
        assert_eq!(p.token_url.as_str(), "https://auth.example.com/token");
        assert_eq!(
            p.authorize_url.unwrap().as_str(),
            "https://auth.example.com/authorize"
        );
        assert_eq!(
            p.revoke_url.unwrap().as_str(),
            "https://auth.example.com/revoke"
        );
        assert_eq!(
            p.device_url.unwrap().as_str(),
            "https://auth.example.com/device"
        );
        assert!(p.iss_required);
        assert_eq!(p.pkce_methods, ["plain", "S256"]);
    }

    #[test]
    fn issuer_must_match_exactly() {
        let err = parse_metadata("https://auth.example.com/", META.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Discovery { .. }));
        assert!(
            text.contains("names issuer https://auth.example.com,"),
            "{text}"
        );
        assert!(
            text.contains("configured https://auth.example.com/"),
            "{text}"
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/discovery_metadata.rs): the
    /// document's issuer reached the message with its control characters.
    #[test]
    fn a_wrong_issuer_is_shown_without_control_characters() {
        let meta = format!(
            r#"{{"issuer":"https:ttruu\r.s\u001b[2J{}","token_endpoint":"https://a/t"}}"#,
            "x".repeat(5000)
        );
        let text = parse_metadata("https://a", meta.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.len() < 1000, "{text}");
    }

    /// Found by fuzzing: a document that is one long JSON string came back
    /// whole in the message.
    #[test]
    fn a_document_that_is_not_metadata_is_not_quoted_whole() {
        let meta = format!("\"{}\"", "s%".repeat(3000));
        let text = parse_metadata("https://a", meta.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(text.contains("not valid JSON metadata"), "{text}");
        assert!(text.len() < 1000, "{text}");
    }

    #[test]
    fn refuses_provider_without_s256() {
        let meta = r#"{"issuer":"https://a","token_endpoint":"https://a/t","code_challenge_methods_supported":["plain"]}"#;
        let err = parse_metadata("https://a", meta.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not S256"), "{err}");
        let meta = r#"{"issuer":"https://a","token_endpoint":"https://a/t"}"#;
        let p = parse_metadata("https://a", meta.as_bytes()).unwrap();
        assert!(p.pkce_methods.is_empty() && !p.iss_required && p.authorize_url.is_none());
    }

    #[test]
    fn needs_token_endpoint() {
        let err = parse_metadata("https://a", br#"{"issuer":"https://a"}"#).unwrap_err();
        assert!(err.to_string().contains("no token_endpoint"), "{err}");
    }

    #[tokio::test]
    async fn falls_back_to_rfc8414() {
        let not_found = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned();
        // The canned metadata must name the server's own address.
        let server = serve_with(|base| {
            let issuer = format!("{base}realm");
            vec![
                Some(not_found),
                json_ok(&format!(
                    r#"{{"issuer":"{issuer}","token_endpoint":"{issuer}/token"}}"#
                )),
            ]
        })
        .await;
        let issuer = server.url("/realm").to_string();
        let provider = discover(&Http::new(), &issuer).await.unwrap();
        assert_eq!(provider.token_url.as_str(), format!("{issuer}/token"));
        let seen = server.requests().await;
        assert!(
            seen[0].starts_with("GET /realm/.well-known/openid-configuration "),
            "{}",
            seen[0]
        );
        assert!(
            seen[1].starts_with("GET /.well-known/oauth-authorization-server/realm "),
            "{}",
            seen[1]
        );
    }

    #[tokio::test]
    async fn no_metadata_anywhere() {
        let not_found = || Some("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned());
        let server = serve(vec![not_found(), not_found()]).await;
        let issuer = server.url("/").to_string();
        let err = discover(&Http::new(), &issuer).await.unwrap_err();
        assert!(matches!(err, Error::Discovery { .. }), "{err:?}");
        assert!(err.to_string().contains("(HTTP 404)"), "{err}");
    }
}
