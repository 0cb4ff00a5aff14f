//! One token-endpoint call, run in its flight's task (off the actor): the
//! OAuth client built if there is none yet, the call, and the ID token it
//! brought checked before anyone sees the response.

use std::sync::Arc;

use tokend_oauth::{AuthCode, Dpop, OAuthSite, PkceVerifier, RefreshToken};

use super::flight::Landed;
use crate::config::{client_auth, SiteConfig};
use crate::site::idtoken::{self, IdCheck};
use crate::site::{client, secret, Deps, SiteError};

/// One token-endpoint call.
pub(super) enum Call {
    Refresh {
        refresh: RefreshToken,
        scopes: Option<Vec<String>>,
    },
    ClientCredentials {
        scopes: Vec<String>,
    },
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
            Call::ClientCredentials { scopes } => oauth.client_credentials(http, scopes).await,
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
            Call::Refresh { .. } | Call::ClientCredentials { .. } => None,
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
            _ if source.is_invalid_client() => SiteError::ClientRefused {
                site,
                client: client_settings(&cfg),
                source: Box::new(source),
            },
            // The refresh token is refused: only a login helps.
            Call::Refresh { .. } if source.is_invalid_grant() => {
                SiteError::Refused { site, source }
            }
            Call::Refresh { .. } | Call::ClientCredentials { .. } | Call::Code { .. } => {
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
    let secret = cfg
        .secret
        .as_ref()
        .map_or("no client secret".to_owned(), |s| {
            format!("the secret from {}", secret::described(s))
        });
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
