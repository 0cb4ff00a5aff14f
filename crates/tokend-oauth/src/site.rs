//! One provider as seen by one client, with its quirks: the authorization
//! code flow (RFC 6749 §4.1 with PKCE), refresh, client credentials and
//! revocation (RFC 7009). The device flow lives in [`crate::device`].
//!
//! Each flow is a pure `*_request` builder plus an async method that sends
//! it, so the exact wire form is unit-tested without a network.

use url::Url;

use crate::client::Client;
use crate::dpop::DpopKey;
use crate::error::{loggable_url, Error};
use crate::http::{FormRequest, Http, RawResponse};
use crate::pkce::Pkce;
use crate::provider::Provider;
use crate::response;
use crate::secret::{AuthCode, PkceVerifier, RefreshToken};
use crate::token::{parse_token_response, TokenResponse};

#[derive(Clone, Debug)]
pub struct OAuthSite {
    /// Shared by every site of one issuer, unless a site sets endpoints of
    /// its own (then it has its copy).
    pub provider: std::sync::Arc<Provider>,
    pub client: Client,
    /// Joins requested scopes: `" "` by default, `","` for Stack Exchange.
    pub scope_separator: String,
    /// Added to authorization and token requests (e.g. `audience`). They
    /// never replace a parameter tokend sets itself, such as `state`.
    pub extra_params: Vec<(String, String)>,
    /// Sender-constrained tokens (RFC 9449): token requests carry a proof.
    pub dpop: Option<std::sync::Arc<Dpop>>,
    /// `prompt` on the authorization request (`consent`, so that an OIDC
    /// provider grants `offline_access`, OIDC Core §11).
    pub prompt: Option<String>,
    /// `login_hint` on the authorization request (OIDC Core §3.1.2.1):
    /// which account, so two sites at one provider each land on their own.
    pub login_hint: Option<String>,
}

/// A site's DPoP key and the last nonce its servers asked for.
/// A site's DPoP key, the last nonce its servers asked for, and the clock
/// its proofs are dated by (the caller's: this crate reads no clock).
pub struct Dpop {
    pub key: DpopKey,
    nonce: std::sync::Mutex<Option<String>>,
    now_unix: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("key", &self.key)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Dpop {
    /// `now_unix`: Unix seconds, for each proof's `iat`.
    pub fn new(key: DpopKey, now_unix: impl Fn() -> u64 + Send + Sync + 'static) -> Dpop {
        Dpop {
            key,
            nonce: std::sync::Mutex::new(None),
            now_unix: Box::new(now_unix),
        }
    }

    /// The last `DPoP-Nonce` a server sent, for the next proof.
    pub fn nonce(&self) -> Option<String> {
        self.nonce.lock().ok().and_then(|n| n.clone())
    }

    fn remember(&self, nonce: Option<&str>) {
        if let (Some(n), Ok(mut slot)) = (nonce, self.nonce.lock()) {
            *slot = Some(n.to_owned());
        }
    }
}

impl OAuthSite {
    /// A site with the default scope separator and no extra parameters.
    pub fn new(provider: impl Into<std::sync::Arc<Provider>>, client: Client) -> OAuthSite {
        let provider = provider.into();
        OAuthSite {
            provider,
            client,
            scope_separator: " ".into(),
            extra_params: Vec::new(),
            dpop: None,
            prompt: None,
            login_hint: None,
        }
    }

    /// The URL to open in the browser. PKCE is always S256.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        pkce: Option<&Pkce>,
    ) -> Result<Url, Error> {
        let mut url = self.provider.authorize_url.clone().ok_or_else(|| {
            Error::Invalid("the site has no authorize_url: set issuer or authorize_url".into())
        })?;
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.client.id),
            ("redirect_uri", redirect_uri),
        ];
        let scope = self.join_scopes(scopes);
        if !scope.is_empty() {
            params.push(("scope", &scope));
        }
        params.push(("state", state));
        if let Some(prompt) = &self.prompt {
            params.push(("prompt", prompt));
        }
        if let Some(hint) = &self.login_hint {
            params.push(("login_hint", hint));
        }
        if let Some(pkce) = pkce {
            params.push(("code_challenge", &pkce.challenge));
            params.push(("code_challenge_method", "S256"));
        }
        let existing: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let extras: Vec<(&str, &str)> = self
            .extra_params
            .iter()
            .filter(|(k, _)| !params.iter().any(|(p, _)| p == k) && !existing.contains(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        url.query_pairs_mut()
            .extend_pairs(params)
            .extend_pairs(extras);
        Ok(url)
    }

    /// [`OAuthSite::authorize_url`] with an OpenID Connect `nonce`, which
    /// the ID token of the exchange must carry back (OIDC Core §3.1.2.1).
    /// It replaces a `nonce` from `extra_params`: the login's own is checked.
    pub fn authorize_url_with_nonce(
        &self,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        pkce: Option<&Pkce>,
        nonce: &str,
    ) -> Result<Url, Error> {
        let url = self.authorize_url(redirect_uri, scopes, state, pkce)?;
        let mut out = url.clone();
        out.query_pairs_mut()
            .clear()
            .extend_pairs(url.query_pairs().filter(|(k, _)| k != "nonce"))
            .append_pair("nonce", nonce);
        Ok(out)
    }

    /// The legacy implicit flow's URL (`response_type=token`, no PKCE): the
    /// token comes back in the redirect's fragment. A last resort for
    /// providers that offer nothing else to non-web apps.
    pub fn implicit_authorize_url(
        &self,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
    ) -> Result<Url, Error> {
        let mut url = self.authorize_url(redirect_uri, scopes, state, None)?;
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "response_type" {
                    "token".into()
                } else {
                    v
                };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        Ok(url)
    }

    /// The authorization code exchange (grant `authorization_code`).
    pub fn code_request(
        &self,
        code: &AuthCode,
        redirect_uri: &str,
        verifier: &PkceVerifier,
    ) -> Result<FormRequest, Error> {
        let mut request = FormRequest::post(self.provider.token_url.clone());
        request.param("grant_type", "authorization_code");
        request.param("code", code.expose());
        request.param("redirect_uri", redirect_uri);
        request.param("code_verifier", verifier.expose());
        self.finish(request)
    }

    /// A refresh, optionally down-scoped to `scopes`.
    pub fn refresh_request(
        &self,
        refresh_token: &RefreshToken,
        scopes: Option<&[String]>,
    ) -> Result<FormRequest, Error> {
        let mut request = FormRequest::post(self.provider.token_url.clone());
        request.param("grant_type", "refresh_token");
        request.param("refresh_token", refresh_token.expose());
        if let Some(scopes) = scopes.filter(|s| !s.is_empty()) {
            request.param("scope", &self.join_scopes(scopes));
        }
        self.finish(request)
    }

    pub fn client_credentials_request(&self, scopes: &[String]) -> Result<FormRequest, Error> {
        let mut request = FormRequest::post(self.provider.token_url.clone());
        request.param("grant_type", "client_credentials");
        if !scopes.is_empty() {
            request.param("scope", &self.join_scopes(scopes));
        }
        self.finish(request)
    }

    /// An RFC 7009 revocation. Extra parameters are not sent: they belong to
    /// the authorization and token requests.
    pub fn revoke_request(&self, token: &str, token_type_hint: &str) -> Result<FormRequest, Error> {
        let url = self.provider.revoke_url.clone().ok_or_else(|| {
            Error::Invalid("the site has no revoke_url, so its tokens cannot be revoked".into())
        })?;
        let mut request = FormRequest::post(url);
        request.param("token", token);
        if !token_type_hint.is_empty() {
            request.param("token_type_hint", token_type_hint);
        }
        self.client.authenticate(&mut request)?;
        Ok(request)
    }

    pub async fn exchange_code(
        &self,
        http: &Http,
        code: &AuthCode,
        redirect_uri: &str,
        verifier: &PkceVerifier,
    ) -> Result<TokenResponse, Error> {
        let request = self.code_request(code, redirect_uri, verifier)?;
        self.token_call(http, &request).await
    }

    /// A response without `refresh_token` means the old one stays valid;
    /// the caller keeps it.
    pub async fn refresh(
        &self,
        http: &Http,
        refresh_token: &RefreshToken,
        scopes: Option<&[String]>,
    ) -> Result<TokenResponse, Error> {
        let request = self.refresh_request(refresh_token, scopes)?;
        self.token_call(http, &request).await
    }

    pub async fn client_credentials(
        &self,
        http: &Http,
        scopes: &[String],
    ) -> Result<TokenResponse, Error> {
        let request = self.client_credentials_request(scopes)?;
        self.token_call(http, &request).await
    }

    pub async fn revoke(
        &self,
        http: &Http,
        token: &str,
        token_type_hint: &str,
    ) -> Result<(), Error> {
        let mut request = self.revoke_request(token, token_type_hint)?;
        self.client
            .sign(http, &mut request, &self.provider.token_url)
            .await?;
        let raw = http.send(&request).await?;
        parse_revoke_response(&raw).map_err(|e| {
            e.at(format!(
                "revocation endpoint {}",
                loggable_url(&request.url)
            ))
        })
    }

    pub(crate) fn join_scopes(&self, scopes: &[String]) -> String {
        scopes.join(&self.scope_separator)
    }

    /// Client authentication and extra parameters, common to every request
    /// to the token and device endpoints.
    pub(crate) fn finish(&self, mut request: FormRequest) -> Result<FormRequest, Error> {
        self.client.authenticate(&mut request)?;
        for (name, value) in &self.extra_params {
            if request.form_value(name).is_none() {
                request.param(name, value);
            }
        }
        Ok(request)
    }

    /// A call to the token endpoint (every grant, device polls included) that
    /// yields a token: sent with a DPoP proof when the site has a key, and its
    /// answer held to [`OAuthSite::require_bound`].
    pub(crate) async fn token_call(
        &self,
        http: &Http,
        request: &FormRequest,
    ) -> Result<TokenResponse, Error> {
        let at = || format!("token endpoint {}", loggable_url(&request.url));
        let raw = self.token_send(http, request).await?;
        parse_token_response(raw.status, raw.content_type.as_deref(), &raw.body)
            .and_then(|token| self.require_bound(token))
            .map_err(|e| e.at(at()))
    }

    /// Sends a request to the token endpoint. With DPoP: a proof on each try;
    /// a server that wants a nonce says `use_dpop_nonce` and sends one, and
    /// gets one retry with it. The answer is left to the caller to read.
    pub(crate) async fn token_send(
        &self,
        http: &Http,
        request: &FormRequest,
    ) -> Result<RawResponse, Error> {
        let Some(dpop) = &self.dpop else {
            let mut signed = request.clone();
            self.client
                .sign(http, &mut signed, &self.provider.token_url)
                .await?;
            return http.send(&signed).await;
        };
        let mut retried = false;
        loop {
            let mut signed = request.clone();
            // A fresh client assertion on each try: its `jti` is single-use.
            self.client
                .sign(http, &mut signed, &self.provider.token_url)
                .await?;
            let proof = dpop.key.proof(
                "POST",
                &request.url,
                None,
                dpop.nonce().as_deref(),
                (dpop.now_unix)(),
            )?;
            signed.header("DPoP", &proof);
            let raw = http.send(&signed).await?;
            dpop.remember(raw.dpop_nonce.as_deref());
            if !retried && raw.dpop_nonce.is_some() && asks_for_nonce(&raw) {
                retried = true;
                continue;
            }
            return Ok(raw);
        }
    }

    /// The invariant of a `dpop` site: every token it takes is DPoP-bound,
    /// whatever the grant or login. A Bearer answer (a provider without
    /// DPoP, or a flow that could send no proof) is refused, never stored.
    pub fn require_bound(&self, token: TokenResponse) -> Result<TokenResponse, Error> {
        if self.dpop.is_none() || token.token_type.eq_ignore_ascii_case("dpop") {
            return Ok(token);
        }
        Err(Error::NotBound {
            token_type: crate::response::clip(&token.token_type),
            endpoint: "the token endpoint".into(),
        })
    }
}

/// The answer is `use_dpop_nonce` (RFC 9449 §8): try again with its nonce.
fn asks_for_nonce(raw: &RawResponse) -> bool {
    matches!(
        response::fields(raw.status, raw.content_type.as_deref(), &raw.body, "the token endpoint"),
        Err(Error::Provider { ref error, .. }) if error == "use_dpop_nonce"
    )
}

/// RFC 7009 §2.2: any 2xx is success, whatever the body, unless the body is
/// an OAuth error (some providers answer 200 with one).
pub fn parse_revoke_response(raw: &RawResponse) -> Result<(), Error> {
    let fields = response::fields(
        raw.status,
        raw.content_type.as_deref(),
        &raw.body,
        "the revocation endpoint",
    );
    match fields {
        Err(error @ Error::Provider { .. }) => Err(error),
        _ if (200..300).contains(&raw.status) => Ok(()),
        Err(error) => Err(error),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
#[path = "site_tests.rs"]
mod tests;
