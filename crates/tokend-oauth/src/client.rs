//! Who tokend is to the provider, and how it proves it (RFC 6749 §2.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use std::sync::Arc;

use url::Url;

use crate::assertion::AssertionSource;
use crate::client_key::{ClientKey, JWT_BEARER_ASSERTION};
use crate::error::Error;
use crate::http::{FormRequest, Http};
use crate::secret::ClientSecret;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: `client_id` in the body, no secret.
    None,
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    Post,
    /// `private_key_jwt` (RFC 7523 §2.2): a fresh assertion signed with the
    /// client's own key ([`Client::key`]) on every call.
    PrivateKeyJwt,
    /// A federated client assertion (RFC 7521 §4.2): a token someone else
    /// issued for this client (a projected service-account token, a CI
    /// job's OIDC token), fetched afresh from [`Client::assertion`] for
    /// every call.
    Assertion,
}

impl ClientAuth {
    /// The `client_auth` config value that names it.
    pub fn name(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Basic => "basic",
            ClientAuth::Post => "post",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::Assertion => "client_assertion",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    pub secret: Option<ClientSecret>,
    pub auth: ClientAuth,
    /// The signing key of a `private_key_jwt` client.
    pub key: Option<Arc<ClientKey>>,
    /// Where a federated client assertion comes from.
    pub assertion: Option<Arc<AssertionSource>>,
}

impl Client {
    /// A public client (no secret).
    pub fn public(id: impl Into<String>) -> Client {
        Client {
            id: id.into(),
            secret: None,
            auth: ClientAuth::None,
            key: None,
            assertion: None,
        }
    }

    /// Add this client's credentials to a request to the token, revocation
    /// or device endpoint.
    pub fn authenticate(&self, request: &mut FormRequest) -> Result<(), Error> {
        match &self.auth {
            // The assertion is added by [`Client::sign`] just before each
            // send: a retried request must not repeat its `jti`.
            ClientAuth::None | ClientAuth::PrivateKeyJwt | ClientAuth::Assertion => {
                request.param("client_id", &self.id)
            }
            ClientAuth::Basic => {
                let header = basic_header(&self.id, self.secret_for("basic")?);
                request.header("Authorization", &header);
            }
            ClientAuth::Post => {
                let secret = self.secret_for("post")?;
                request.param("client_id", &self.id);
                request.param("client_secret", secret.expose());
            }
        }
        Ok(())
    }

    /// Adds a fresh client assertion to `request` (for `private_key_jwt`
    /// and federated assertions; nothing for the other methods), just before
    /// it is sent. `audience`: the token endpoint.
    pub async fn sign(
        &self,
        http: &Http,
        request: &mut FormRequest,
        audience: &Url,
    ) -> Result<(), Error> {
        let assertion = match self.auth {
            ClientAuth::PrivateKeyJwt => {
                let key = self.key.as_ref().ok_or_else(|| {
                    Error::Invalid(
                        "client_auth = \"private_key_jwt\" needs a key: set client_key_file".into(),
                    )
                })?;
                Zeroizing::new(key.assertion(&self.id, audience)?)
            }
            ClientAuth::Assertion => {
                let source = self.assertion.as_ref().ok_or_else(|| {
                    Error::Invalid(
                        "a client assertion needs client_assertion_file, _cmd or _source".into(),
                    )
                })?;
                Zeroizing::new(source.fetch(http).await?.expose().to_owned())
            }
            ClientAuth::None | ClientAuth::Basic | ClientAuth::Post => return Ok(()),
        };
        request
            .form
            .retain(|(k, _)| k != "client_assertion" && k != "client_assertion_type");
        request.param("client_assertion_type", JWT_BEARER_ASSERTION);
        request.param("client_assertion", &assertion);
        Ok(())
    }

    fn secret_for(&self, method: &str) -> Result<&ClientSecret, Error> {
        self.secret.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "client_auth = \"{method}\" needs a client secret: set client_secret_env or client_secret_cmd, or use client_auth = \"none\""
            ))
        })
    }
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded *before* being joined
/// with `:` and base64-encoded, so a secret holding `:` or `%` survives.
fn basic_header(id: &str, secret: &ClientSecret) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret.expose()));
    format!("Basic {}", STANDARD.encode(pair))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use url::Url;

    fn request() -> FormRequest {
        FormRequest::post(Url::parse("https://x/token").unwrap())
    }

    fn client(auth: ClientAuth, secret: Option<&str>) -> Client {
        Client {
            id: "my client".into(),
            secret: secret.map(|s| ClientSecret::new(s.into())),
            auth,
            key: None,
            assertion: None,
        }
    }

    #[test]
    fn basic_survives_awkward_secret() {
        let mut req = request();
        client(ClientAuth::Basic, Some("p@ss:w+rd/=%&?"))
            .authenticate(&mut req)
            .unwrap();
        let header = req.header_value("authorization").unwrap();
        let encoded = header.strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        let (id, secret) = decoded.split_once(':').unwrap();
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned()
        };
        assert_eq!(decode(id), "my client");
        assert_eq!(decode(secret), "p@ss:w+rd/=%&?");
        assert!(!secret.contains(':'));
        assert!(req.form.is_empty(), "basic puts nothing in the body");
    }

    #[test]
    fn post_and_none_bodies() {
        let mut req = request();
        client(ClientAuth::Post, Some("s3"))
            .authenticate(&mut req)
            .unwrap();
        assert_eq!(req.form_value("client_id"), Some("my client"));
        assert_eq!(req.form_value("client_secret"), Some("s3"));
        assert!(req.header_value("authorization").is_none());

        let mut req = request();
        client(ClientAuth::None, Some("ignored"))
            .authenticate(&mut req)
            .unwrap();
        assert_eq!(req.form_value("client_id"), Some("my client"));
        assert_eq!(req.form_value("client_secret"), None);
        assert_eq!(req.body(), "client_id=my+client");
    }

    #[test]
    fn secret_required_for_basic_and_post() {
        for auth in [ClientAuth::Basic, ClientAuth::Post] {
            let err = client(auth, None).authenticate(&mut request()).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        }
    }

    #[tokio::test]
    async fn private_key_jwt_signs_each_send_afresh() {
        let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(doc.as_ref())
        );
        let mut c = client(ClientAuth::PrivateKeyJwt, None);
        c.key = Some(Arc::new(ClientKey::from_pem(&pem, None, || 100).unwrap()));
        let aud = Url::parse("https://x/token").unwrap();
        let http = Http::new();
        let mut req = request();
        c.authenticate(&mut req).unwrap();
        c.sign(&http, &mut req, &aud).await.unwrap();
        let first = req.form_value("client_assertion").unwrap().to_owned();
        assert_eq!(
            req.form_value("client_assertion_type"),
            Some(JWT_BEARER_ASSERTION)
        );
        assert_eq!(req.form_value("client_id"), Some("my client"));
        c.sign(&http, &mut req, &aud).await.unwrap();
        assert_ne!(req.form_value("client_assertion").unwrap(), first);
        assert_eq!(
            req.form
                .iter()
                .filter(|(k, _)| k == "client_assertion")
                .count(),
            1
        );
        let err = client(ClientAuth::PrivateKeyJwt, None)
            .sign(&http, &mut request(), &aud)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("client_key_file"), "{err}");
    }

    #[test]
    fn debug_redacts_secret() {
        let shown = format!("{:?}", client(ClientAuth::Basic, Some("TOPSECRET")));
        assert!(!shown.contains("TOPSECRET"), "{shown}");
    }
}
