//! Building a site's OAuth client: discovery (cached per issuer), explicit
//! endpoints over discovered ones, the client secret resolved.

use std::sync::Arc;

use token_proto::ErrorCode;
use tokend_oauth::{Client, ClientAuth, OAuthSite, Provider};

use super::secret::resolve_secret;
use super::Site;
use crate::config::ClientAuthKind;
use crate::daemon::Daemon;
use crate::error::ApiError;

impl Site {
    /// Builds the OAuth client for this site: discovery (cached per issuer),
    /// explicit endpoints over discovered ones, the client secret resolved.
    pub async fn oauth(&self, d: &Daemon) -> Result<Arc<OAuthSite>, ApiError> {
        let mut slot = self.oauth.lock().await;
        let cfg = self.config();
        // Built from these very settings: reuse. A config edit (new
        // endpoints, a new secret command) makes a new one.
        if let Some((built_from, o)) = &*slot {
            if Arc::ptr_eq(built_from, &cfg) {
                return Ok(o.clone());
            }
        }
        let site_err = |e: tokend_oauth::Error| ApiError::provider(&self.name, &e);
        let bad_url = |key: &str, e: url::ParseError| {
            ApiError::new(
                ErrorCode::ConfigError,
                format!(
                    "site {}: {key} is not a URL: {e}; fix the config",
                    self.name
                ),
            )
        };
        let parse = |key: &str, v: &Option<String>| -> Result<Option<url::Url>, ApiError> {
            v.as_deref()
                .map(|s| url::Url::parse(s).map_err(|e| bad_url(key, e)))
                .transpose()
        };
        let mut provider = match &cfg.issuer {
            Some(issuer) => d.discover(issuer).await.map_err(site_err)?,
            None => {
                let token_url = parse("token_url", &cfg.token_url)?.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::ConfigError,
                        format!(
                            "site {}: no token_url and no issuer; fix the config",
                            self.name
                        ),
                    )
                })?;
                Provider::new(token_url)
            }
        };
        if let Some(u) = parse("authorize_url", &cfg.authorize_url)? {
            provider.authorize_url = Some(u);
        }
        if let Some(u) = parse("token_url", &cfg.token_url)? {
            provider.token_url = u;
        }
        if let Some(u) = parse("revoke_url", &cfg.revoke_url)? {
            provider.revoke_url = Some(u);
        }
        if let Some(u) = parse("device_url", &cfg.device_url)? {
            provider.device_url = Some(u);
        }
        let secret = match &cfg.secret {
            None => None,
            Some(src) => Some(resolve_secret(&self.name, src).await?),
        };
        let client = Client {
            id: cfg.client_id.clone(),
            secret,
            auth: match cfg.effective_client_auth() {
                ClientAuthKind::None => ClientAuth::None,
                ClientAuthKind::Basic => ClientAuth::Basic,
                ClientAuthKind::Post => ClientAuth::Post,
            },
        };
        let mut site = OAuthSite::new(provider, client);
        site.scope_separator = cfg.scope_separator.clone();
        site.extra_params = cfg.extra_params.clone();
        let site = Arc::new(site);
        *slot = Some((cfg.clone(), site.clone()));
        Ok(site)
    }
}
