//! The actor's DPoP key (RFC 9449): read from the site's record, or made at
//! the first load of a `dpop = true` site, and stored with its login (the
//! tokens, the refresh token too, are bound to it). Proofs for resource
//! requests (`token get --dpop`) are signed here: the key never leaves.

use std::sync::Arc;

use tokend_oauth::{AccessToken, Dpop, DpopKey, StoredDpopKey};
use url::Url;

use super::Actor;
use crate::clock::whole;
use crate::site::SiteError;

impl Actor {
    /// The site's key: the stored one, else a new one. `None` for sites
    /// without `dpop`, and when no key can be had (then no token call is
    /// made: it would bring an unbound token).
    pub(super) fn load_dpop_key(&mut self, stored: Option<&StoredDpopKey>) -> Option<Arc<Dpop>> {
        if !self.cfg.dpop {
            return None;
        }
        let clock = self.deps.clock;
        let dated = |key| Some(Arc::new(Dpop::new(key, move || whole(clock.now()))));
        if let Some(stored) = stored {
            match DpopKey::from_stored(stored) {
                Ok(key) => return dated(key),
                Err(e) => tracing::error!(
                    site = %self.name,
                    "the stored DPoP key is unusable ({e}); making a new one (tokens bound to the old one need a new login)"
                ),
            }
        }
        match DpopKey::generate() {
            Ok(key) => {
                tracing::info!(site = %self.name, jkt = key.thumbprint(), "new DPoP key");
                dated(key)
            }
            Err(e) => {
                let msg = format!("site {}: cannot make a DPoP key: {e}", self.name);
                tracing::error!(site = %self.name, "{msg}");
                self.st.last_error = Some(msg);
                None
            }
        }
    }

    /// The `token_type` of the site's tokens (for those read from the store).
    pub(super) fn token_type(&self) -> &'static str {
        if self.cfg.dpop {
            "DPoP"
        } else {
            "Bearer"
        }
    }

    /// A proof for one request with `token`. The token endpoint's last
    /// nonce goes only into proofs for its own origin: a nonce is per server.
    pub(super) fn proof(
        &self,
        method: &str,
        url: &Url,
        token: &AccessToken,
        given: Option<String>,
    ) -> Result<String, SiteError> {
        let Some(dpop) = &self.dpop else {
            return Err(SiteError::Config(format!(
                "site {}: no DPoP key (the site has no `dpop = true`, or the key could not be made: see `token status {}`)",
                self.name, self.name
            )));
        };
        // The resource server's own nonce when the caller has it; else the
        // token endpoint's, for a request to its origin.
        let nonce = given.or_else(|| {
            self.oauth
                .as_ref()
                .filter(|o| o.provider.token_url.origin() == url.origin())
                .and_then(|_| dpop.nonce())
        });
        dpop.key
            .proof(
                method,
                url,
                Some(token.expose()),
                nonce.as_deref(),
                whole(self.now()),
            )
            .map_err(|source| SiteError::Signing {
                site: self.name.clone(),
                source,
            })
    }
}
