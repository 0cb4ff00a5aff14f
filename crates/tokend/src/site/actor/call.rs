//! One token-endpoint call, run in its flight's task (off the actor): the
//! OAuth client built if there is none yet, the call, and the ID token it
//! brought checked before anyone sees the response.

use std::sync::Arc;

use tokend_oauth::{
    AuthCode, Dpop, OAuthSite, PkceVerifier, RefreshToken, TokenExchange, TokenResponse,
};

use super::flight::Landed;
use crate::config::grant::Renewal;
use crate::config::{client_auth, SiteConfig, Subject};
use crate::site::idtoken::{self, IdCheck};
use crate::site::{client, secret, subject, Deps, SiteError};

/// One token-endpoint call.
pub(super) enum Call {
    Refresh {
        refresh: RefreshToken,
        scopes: Option<Vec<String>>,
    },
    /// A grant with no user (client credentials, jwt-bearer, token
    /// exchange): the site's grant says which.
    Machine { scopes: Vec<String> },
    Code {
        code: AuthCode,
        redirect: String,
        verifier: PkceVerifier,
        /// The login's OIDC nonce, which the ID token must carry.
        nonce: Option<String>,
    },
}

impl Call {
    /// Runs in the flight's task: builds the OAuth client if there is none
    /// (discovery, the client secret), then calls the token endpoint.
    pub(super) async fn run(
        self,
        deps: Arc<Deps>,
        cfg: Arc<SiteConfig>,
        oauth: Option<Arc<OAuthSite>>,
        dpop: Option<Arc<Dpop>>,
    ) -> Landed {
        let oauth = match oauth_client(&deps, &cfg, oauth, dpop.as_ref()).await {
            Ok(o) => o,
            Err(e) => {
                return Landed {
                    oauth: None,
                    result: Err(e),
                    id: IdCheck::Absent,
                    sent_at: deps.clock.now(),
                }
            }
        };
        let http = &deps.http;
        // The token's expiry counts from here: the provider issues it later.
        let sent_at = deps.clock.now();
        let result = match &self {
            Call::Refresh { refresh, scopes } => {
                oauth.refresh(http, refresh, scopes.as_deref()).await
            }
            Call::Machine { scopes } => match machine_grant(&deps, &cfg, &oauth, scopes).await {
                Ok(result) => result,
                Err(e) => {
                    return Landed {
                        oauth: Some(oauth),
                        result: Err(e),
                        id: IdCheck::Absent,
                        sent_at,
                    }
                }
            },
            Call::Code {
                code,
                redirect,
                verifier,
                ..
            } => oauth.exchange_code(http, code, redirect, verifier).await,
        };
        let site = cfg.name.clone();
        // The ID token is checked before anyone sees the response: a login's
        // against its nonce (and refused, the login fails), a refresh's
        // without one (refused, only the ID token is dropped).
        let nonce = match &self {
            Call::Code { nonce, .. } => nonce.as_deref(),
            Call::Refresh { .. } | Call::Machine { .. } => None,
        };
        let id = match &result {
            Ok(resp) => idtoken::check(&deps, &cfg, &oauth, resp.id_token.as_deref(), nonce).await,
            Err(_) => IdCheck::Absent,
        };
        if let (Call::Code { .. }, IdCheck::Refused(source)) = (&self, &id) {
            return Landed {
                oauth: Some(oauth),
                result: Err(SiteError::IdTokenRefused {
                    again: format!("token login {site}"),
                    source: source.clone(),
                }),
                id: IdCheck::Absent,
                sent_at,
            };
        }
        let result = result.map_err(|source| match self {
            _ if matches!(source, tokend_oauth::Error::Assertion(_)) => SiteError::NoSubject {
                site,
                message: source.to_string(),
            },
            _ if source.is_invalid_client() => SiteError::ClientRefused {
                site,
                client: client_settings(&cfg),
                source: Box::new(source),
            },
            // The refresh token is refused: only a login helps.
            Call::Refresh { .. } if source.is_invalid_grant() => {
                SiteError::Refused { site, source }
            }
            Call::Refresh { .. } | Call::Machine { .. } | Call::Code { .. } => {
                SiteError::Provider { site, source }
            }
        });
        Landed {
            oauth: Some(oauth),
            result,
            id,
            sent_at,
        }
    }
}

/// What identifies the site's client to the provider, for an
/// `invalid_client`: `client_id`, `client_auth` and where the secret comes
/// from (never the secret).
fn client_settings(cfg: &SiteConfig) -> String {
    let auth = client_auth::name(cfg.effective_client_auth());
    let secret = match (&cfg.secret, &cfg.workload.client_key, &cfg.workload.client_assertion) {
        (Some(s), _, _) => format!("the secret from {}", secret::described(s)),
        (None, Some((path, kid)), _) => format!(
            "the key in client_key_file {}{} (is its public key registered? `token jwk {}` prints it)",
            path.display(),
            kid.as_ref().map_or(String::new(), |k| format!(" (client_key_id {k})")),
            cfg.name
        ),
        (None, None, Some(src)) => format!("the assertion from {}", src.described()),
        (None, None, None) => "no client secret".to_owned(),
    };
    format!(
        "client_id `{}`, client_auth `{auth}`{} and {secret} in [site.{}]",
        cfg.client_id,
        if cfg.client_auth.is_none() {
            " (the default)"
        } else {
            ""
        },
        cfg.name
    )
}

/// The site's OAuth client: the one kept from the last call, or built now
/// (discovery, the client secret), with the site's DPoP key.
async fn oauth_client(
    deps: &Deps,
    cfg: &SiteConfig,
    kept: Option<Arc<OAuthSite>>,
    dpop: Option<&Arc<Dpop>>,
) -> Result<Arc<OAuthSite>, SiteError> {
    let oauth = match kept {
        Some(o) => o,
        None => client::build(deps, cfg).await?,
    };
    client::with_dpop(oauth, cfg, dpop)
}

/// A grant with no user, by the site's grant. The outer error: the
/// assertion or subject could not be had (no call was made); the inner,
/// the call's.
async fn machine_grant(
    deps: &Deps,
    cfg: &SiteConfig,
    oauth: &OAuthSite,
    scopes: &[String],
) -> Result<Result<TokenResponse, tokend_oauth::Error>, SiteError> {
    let http = &deps.http;
    let site = &cfg.name;
    let no_subject = |e: tokend_oauth::Error| SiteError::NoSubject {
        site: site.clone(),
        message: e.to_string(),
    };
    match cfg.grant.renewal() {
        Renewal::JwtBearer => {
            let Some(src) = &cfg.workload.assertion else {
                return Err(SiteError::config(
                    site,
                    "jwt_bearer without an assertion source",
                ));
            };
            let assertion = src.fetch(http).await.map_err(no_subject)?;
            Ok(oauth.jwt_bearer(http, &assertion, scopes).await)
        }
        Renewal::TokenExchange => {
            let Some(x) = &cfg.workload.exchange else {
                return Err(SiteError::config(site, "token_exchange without a subject"));
            };
            let subject_token = match &x.subject {
                Subject::Source(src) => src.fetch(http).await.map_err(no_subject)?,
                Subject::Site { name, kind } => subject::token(deps, site, name, *kind).await?,
            };
            let actor = match &x.actor {
                Some((src, kind)) => {
                    Some((src.fetch(http).await.map_err(no_subject)?, kind.clone()))
                }
                None => None,
            };
            let exchange = TokenExchange {
                subject_token,
                subject_token_type: x.subject_token_type.clone(),
                actor,
                audience: x.audience.clone(),
                resources: x.resources.clone(),
                requested_token_type: x.requested_token_type.clone(),
                scopes: scopes.to_vec(),
            };
            Ok(oauth.token_exchange(http, &exchange).await)
        }
        Renewal::ClientCredentials | Renewal::RefreshToken => {
            Ok(oauth.client_credentials(http, scopes).await)
        }
    }
}
