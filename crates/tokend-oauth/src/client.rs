//! Who tokend is to the provider, and how it proves it (RFC 6749 §2.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::Error;
use crate::http::FormRequest;
use crate::secret::ClientSecret;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: `client_id` in the body, no secret.
    None,
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    Post,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    pub secret: Option<ClientSecret>,
    pub auth: ClientAuth,
}

impl Client {
    /// A public client (no secret).
    pub fn public(id: impl Into<String>) -> Client {
        Client {
            id: id.into(),
            secret: None,
            auth: ClientAuth::None,
        }
    }

    /// Add this client's credentials to a request to the token, revocation
    /// or device endpoint.
    pub fn authenticate(&self, request: &mut FormRequest) -> Result<(), Error> {
        match self.auth {
            ClientAuth::None => request.param("client_id", &self.id),
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

    #[test]
    fn debug_redacts_secret() {
        let shown = format!("{:?}", client(ClientAuth::Basic, Some("TOPSECRET")));
        assert!(!shown.contains("TOPSECRET"), "{shown}");
    }
}
