//! Building a site's OAuth client: discovery (cached per issuer), explicit
//! endpoints over discovered ones, the client secret resolved.

use std::sync::Arc;

use tokend_oauth::{AssertionSource, Client, ClientKey, Dpop, OAuthSite, Provider};
use url::Url;

use super::secret::{load_client_key, resolve_secret};
use crate::config::SiteConfig;
use crate::deps::Deps;
use crate::error::SiteError;

/// Builds the OAuth client for `cfg`. Discovery that cannot succeed (an
/// issuer with a query, metadata for another issuer) is a config error;
/// one that may pass (a timeout, a 5xx) a provider fault.
pub(crate) async fn build(deps: &Deps, cfg: &SiteConfig) -> Result<Arc<OAuthSite>, SiteError> {
    let name = &cfg.name;
    let mut provider = match &cfg.issuer {
        Some(issuer) => deps
            .discovery
            .provider(&deps.http, issuer)
            .await
            .map_err(|source| {
                if source.is_transient() {
                    // It may pass, but a mistyped issuer looks just like this.
                    let source = match source {
                        tokend_oauth::Error::Network {
                            url,
                            message,
                            source,
                        } => {
                            tokend_oauth::Error::Network {
                                url,
                                source,
                                message: format!(
                                    "{message} (discovery at issuer {issuer}: if this persists, check `issuer` in the config)"
                                ),
                            }
                        }
                        other => other,
                    };
                    SiteError::Provider {
                        site: name.clone(),
                        source,
                    }
                } else {
                    SiteError::Discovery {
                        site: name.clone(),
                        issuer: issuer.to_string(),
                        source: Arc::new(source),
                    }
                }
            })?,
        None => {
            let token_url = cfg
                .token_url
                .as_ref()
                .ok_or_else(|| SiteError::config(name, "no token_url and no issuer"))?;
            Arc::new(Provider::new(token_url.url().clone()))
        }
    };
    // Endpoints set in the config win over discovered ones (the site then
    // has a copy of the provider of its own).
    if let Some(u) = &cfg.authorize_url {
        Arc::make_mut(&mut provider).authorize_url = Some(Url::clone(u));
    }
    if let Some(u) = &cfg.token_url {
        Arc::make_mut(&mut provider).token_url = u.url().clone();
    }
    if let Some(u) = &cfg.revoke_url {
        Arc::make_mut(&mut provider).revoke_url = Some(Url::clone(u));
    }
    if let Some(u) = &cfg.device_url {
        Arc::make_mut(&mut provider).device_url = Some(Url::clone(u));
    }
    let secret = match &cfg.secret {
        None => None,
        Some(src) => Some(resolve_secret(name, src).await?),
    };
    let (key, assertion) = credentials(deps, cfg)?;
    let client = Client {
        id: cfg.client_id.clone(),
        secret,
        auth: cfg.effective_client_auth(),
        key,
        assertion,
    };
    let mut site = OAuthSite::new(provider, client);
    site.scope_separator = cfg.scope_separator.to_string();
    site.extra_params = cfg.rare.extra_params.clone();
    site.prompt = cfg.effective_prompt().map(str::to_owned);
    site.login_hint = cfg.rare.login_hint.clone();
    Ok(Arc::new(site))
}

/// The client's own key (read and checked now) or where its federated
/// assertion comes from (fetched at each call), as the site says.
type Credentials = (Option<Arc<ClientKey>>, Option<Arc<AssertionSource>>);

fn credentials(deps: &Deps, cfg: &SiteConfig) -> Result<Credentials, SiteError> {
    let key = match &cfg.workload.client_key {
        Some((path, kid)) => Some(Arc::new(load_client_key(
            &cfg.name,
            path,
            kid.clone(),
            deps.clock,
        )?)),
        None => None,
    };
    let assertion = cfg.workload.client_assertion.clone().map(Arc::new);
    Ok((key, assertion))
}

/// `oauth` with the site's DPoP key, so its token requests carry proofs. A
/// `dpop = true` site without a key makes no token request: it would bring
/// back an unbound token.
pub(crate) fn with_dpop(
    oauth: Arc<OAuthSite>,
    cfg: &SiteConfig,
    dpop: Option<&Arc<Dpop>>,
) -> Result<Arc<OAuthSite>, SiteError> {
    if !cfg.dpop {
        return Ok(oauth);
    }
    let Some(dpop) = dpop else {
        return Err(SiteError::Internal(format!(
            "site {}: no DPoP key, so no token is asked for; see the daemon's log",
            cfg.name
        )));
    };
    if oauth.dpop.as_ref().is_some_and(|d| Arc::ptr_eq(d, dpop)) {
        return Ok(oauth);
    }
    let mut site = (*oauth).clone();
    site.dpop = Some(dpop.clone());
    Ok(Arc::new(site))
}
