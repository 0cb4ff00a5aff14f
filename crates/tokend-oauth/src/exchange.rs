//! Grants that trade one signed token for another, with no user and no
//! stored secret: the JWT-bearer grant (RFC 7523 §2.1) and token exchange
//! (RFC 8693).

use crate::error::{loggable_url, Error};
use crate::http::{FormRequest, Http};
use crate::secret::Assertion;
use crate::site::OAuthSite;
use crate::token::TokenResponse;

/// RFC 7523 §2.1.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 §2.1.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The short names a config may use for the RFC 8693 token types.
pub fn token_type_uri(name: &str) -> String {
    match name {
        "access_token" | "refresh_token" | "id_token" | "saml1" | "saml2" | "jwt" => {
            format!("urn:ietf:params:oauth:token-type:{name}")
        }
        other => other.to_owned(),
    }
}

/// One RFC 8693 exchange: the subject (and actor) with their types, what to
/// ask for.
#[derive(Clone, Debug)]
pub struct TokenExchange {
    pub subject_token: Assertion,
    /// A full URI (`urn:ietf:params:oauth:token-type:…`).
    pub subject_token_type: String,
    pub actor: Option<(Assertion, String)>,
    pub audience: Option<String>,
    pub resources: Vec<String>,
    pub requested_token_type: Option<String>,
    pub scopes: Vec<String>,
}

impl OAuthSite {
    /// The JWT-bearer grant: `assertion` is the grant.
    pub fn jwt_bearer_request(
        &self,
        assertion: &Assertion,
        scopes: &[String],
    ) -> Result<FormRequest, Error> {
        let mut request = FormRequest::post(self.provider.token_url.clone());
        request.param("grant_type", JWT_BEARER_GRANT);
        request.param("assertion", assertion.expose());
        if !scopes.is_empty() {
            request.param("scope", &self.join_scopes(scopes));
        }
        self.finish(request)
    }

    pub async fn jwt_bearer(
        &self,
        http: &Http,
        assertion: &Assertion,
        scopes: &[String],
    ) -> Result<TokenResponse, Error> {
        let request = self.jwt_bearer_request(assertion, scopes)?;
        self.token_call(http, &request).await
    }

    pub fn token_exchange_request(&self, exchange: &TokenExchange) -> Result<FormRequest, Error> {
        let mut request = FormRequest::post(self.provider.token_url.clone());
        request.param("grant_type", TOKEN_EXCHANGE_GRANT);
        request.param("subject_token", exchange.subject_token.expose());
        request.param("subject_token_type", &exchange.subject_token_type);
        if let Some((token, kind)) = &exchange.actor {
            request.param("actor_token", token.expose());
            request.param("actor_token_type", kind);
        }
        if let Some(audience) = &exchange.audience {
            request.param("audience", audience);
        }
        for resource in &exchange.resources {
            request.param("resource", resource);
        }
        if let Some(kind) = &exchange.requested_token_type {
            request.param("requested_token_type", kind);
        }
        if !exchange.scopes.is_empty() {
            request.param("scope", &self.join_scopes(&exchange.scopes));
        }
        self.finish(request)
    }

    /// An exchange. The answer must say what it issued
    /// (`issued_token_type`, RFC 8693 §2.2.1), and that it issued what was
    /// asked for when `requested_token_type` was set.
    pub async fn token_exchange(
        &self,
        http: &Http,
        exchange: &TokenExchange,
    ) -> Result<TokenResponse, Error> {
        let request = self.token_exchange_request(exchange)?;
        let token = self.token_call(http, &request).await?;
        let endpoint = format!("token endpoint {}", loggable_url(&request.url));
        match (&token.issued_token_type, &exchange.requested_token_type) {
            (None, _) => Err(Error::BadResponse {
                status: 200,
                what: "a token exchange answer without issued_token_type (RFC 8693 §2.2.1)".into(),
                endpoint,
            }),
            (Some(issued), Some(asked)) if issued != asked => Err(Error::BadResponse {
                status: 200,
                what: format!(
                    "issued_token_type {} where requested_token_type {asked} was asked for",
                    crate::response::clip(issued)
                ),
                endpoint,
            }),
            _ => Ok(token),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::provider::Provider;
    use url::Url;

    fn site() -> OAuthSite {
        let provider = Provider::new(Url::parse("https://idp.example/token").unwrap());
        OAuthSite::new(provider, Client::public("svc"))
    }

    #[test]
    fn jwt_bearer_sends_the_assertion_as_the_grant() {
        let req = site()
            .jwt_bearer_request(&Assertion::new("a.b.c".into()), &["read".into()])
            .unwrap();
        assert_eq!(req.form_value("grant_type"), Some(JWT_BEARER_GRANT));
        assert_eq!(req.form_value("assertion"), Some("a.b.c"));
        assert_eq!(req.form_value("scope"), Some("read"));
        assert_eq!(req.form_value("client_id"), Some("svc"));
    }

    #[test]
    fn an_exchange_names_subject_actor_audience_and_resources() {
        let exchange = TokenExchange {
            subject_token: Assertion::new("subj".into()),
            subject_token_type: token_type_uri("id_token"),
            actor: Some((Assertion::new("act".into()), token_type_uri("jwt"))),
            audience: Some("api://b".into()),
            resources: vec!["https://r1/".into(), "https://r2/".into()],
            requested_token_type: Some(token_type_uri("access_token")),
            scopes: vec![],
        };
        let req = site().token_exchange_request(&exchange).unwrap();
        assert_eq!(req.form_value("grant_type"), Some(TOKEN_EXCHANGE_GRANT));
        assert_eq!(req.form_value("subject_token"), Some("subj"));
        assert_eq!(req.form_value("subject_token_type"), Some(ID_TOKEN_TYPE));
        assert_eq!(req.form_value("actor_token_type"), Some(JWT_TOKEN_TYPE));
        assert_eq!(req.form_value("audience"), Some("api://b"));
        assert_eq!(
            req.form
                .iter()
                .filter(|(k, _)| k == "resource")
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>(),
            ["https://r1/", "https://r2/"]
        );
        assert_eq!(
            req.form_value("requested_token_type"),
            Some(ACCESS_TOKEN_TYPE)
        );
        assert_eq!(req.form_value("scope"), None);
        assert_eq!(token_type_uri("urn:x:y"), "urn:x:y");
    }
}
