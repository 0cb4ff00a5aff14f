//! ID tokens as a site holds them: every ID token a token response brings
//! is validated here ([`check`]) before the site keeps it, and only a
//! validated one is ever served (`token get --id-token`, `token kube`).

use std::sync::Arc;

use token_proto::{TokenKind, TokenReply};
use tokend_oauth::idtoken::Expected;
use tokend_oauth::{IdToken, IdTokenError, OAuthSite};

use crate::clock::whole;
use crate::config::SiteConfig;
use crate::deps::Deps;
use crate::refresh::Expiring;

/// A validated ID token.
#[derive(Clone, Debug)]
pub(crate) struct HeldId {
    pub token: IdToken,
    /// Its `exp`, Unix seconds.
    pub expires_at: u64,
    /// When the site received it (Unix s, fractional).
    pub obtained_at: f64,
    /// Its `sub`: the user it names.
    pub subject: String,
}

impl Expiring for HeldId {
    fn remaining(&self, now: f64) -> f64 {
        self.expires_at as f64 - now
    }

    fn lifetime(&self) -> f64 {
        (self.expires_at as f64 - self.obtained_at).max(0.0)
    }
}

impl HeldId {
    /// What a caller receives: the ID token in `access_token`, marked as
    /// such, `token_type` `N_A` (RFC 8693's word for "not an access token").
    pub(crate) fn reply(&self, scopes: &[String], api_key: Option<String>) -> TokenReply {
        TokenReply {
            access_token: self.token.expose().to_owned(),
            token_type: "N_A".to_owned(),
            expires_at: Some(self.expires_at),
            scopes: scopes.to_vec(),
            api_key,
            warning: None,
            dpop_proof: None,
            token: Some(TokenKind::IdToken),
            renew_at: None,
        }
    }
}

/// Why a site's ID token was refused, shared by every caller the refusal
/// answers.
#[derive(Clone, Debug, thiserror::Error)]
#[error("site {site}: {source}")]
pub(crate) struct IdRefusal {
    pub site: String,
    #[source]
    pub source: Arc<IdTokenError>,
}

/// What became of a token response's ID token.
#[derive(Clone, Debug)]
pub(crate) enum IdCheck {
    /// None came (or the site does not ask for one: no `openid` scope).
    Absent,
    Valid(HeldId),
    /// It failed a check: never kept. The message names the check.
    Refused(IdRefusal),
    /// It could not be checked (no issuer configured, the provider's keys
    /// unreachable): not kept either, but no sign of foul play.
    Unchecked(String),
}

/// Validates the ID token of a response for `cfg`: the signature against
/// the provider's JWKS (through the daemon's one key cache), `iss` equal
/// to the configured issuer, `aud`/`azp` the client id, `exp`/`iat`, and
/// `nonce` when the login sent one.
pub(crate) async fn check(
    deps: &Deps,
    cfg: &SiteConfig,
    oauth: &OAuthSite,
    raw: Option<&str>,
    nonce: Option<&str>,
) -> IdCheck {
    let Some(raw) = raw.filter(|_| cfg.wants_id_token()) else {
        return IdCheck::Absent;
    };
    let name = &cfg.name;
    let (Some(issuer), Some(jwks)) = (cfg.issuer.as_deref(), oauth.provider.jwks_url.as_ref())
    else {
        return IdCheck::Unchecked(format!(
            "site {name}: the provider sent an ID token, but tokend cannot check it without `issuer` in the config (discovery gives the provider's keys), so it is not kept"
        ));
    };
    let now = deps.clock.now();
    let expected = Expected {
        issuer,
        client_id: &cfg.client_id,
        nonce,
        now: whole(now),
    };
    match deps.keys.validate(&deps.http, jwks, raw, &expected).await {
        Ok(claims) => IdCheck::Valid(HeldId {
            token: IdToken::new(raw.to_owned()),
            expires_at: claims.expires_at,
            obtained_at: now,
            subject: claims.subject,
        }),
        Err(e @ IdTokenError::Keys(_)) => {
            IdCheck::Unchecked(format!("site {name}: the ID token is not kept: {e}"))
        }
        Err(e) => IdCheck::Refused(IdRefusal {
            site: name.clone(),
            source: Arc::new(e),
        }),
    }
}

#[cfg(test)]
#[path = "idtoken_tests.rs"]
mod tests;
