//! `jwk`: the public key a site signs with, as a JWK set, to register at
//! the provider: its `private_key_jwt` key (read from `client_key_file`,
//! checked as for a call), else its DPoP key. Never a private part.

use std::sync::Arc;

use token_proto::{ErrorCode, JwkReply};
use tokend_oauth::AccessToken;

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::secret::load_client_key;

pub(super) async fn jwk(d: &Arc<Daemon>, name: &str) -> Result<JwkReply, ApiError> {
    let (site, cfg) = d.site_with_settings(name)?;
    if let Some((path, kid)) = &cfg.workload.client_key {
        let key = load_client_key(name, path, kid.clone(), d.deps().clock)?;
        let keys = key.public_jwks()["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        return Ok(JwkReply { keys });
    }
    if cfg.dpop {
        // The key stays in the site's actor; a proof it signs carries the
        // public half in its header (RFC 9449 §4.2), which is all we need.
        let url = url::Url::parse("https://jwk.invalid/")
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let proof = site
            .proof("GET".into(), url, AccessToken::new("-".into()), None)
            .await?;
        let Some(jwk) = tokend_oauth::header_jwk(&proof) else {
            return Err(ApiError::internal(format!(
                "site {name}: its DPoP proof carries no key"
            )));
        };
        return Ok(JwkReply { keys: vec![jwk] });
    }
    Err(ApiError::new(
        ErrorCode::BadRequest,
        format!(
            "site {name} signs with no key of its own: `token jwk` is for sites with \
             client_auth = \"private_key_jwt\" (client_key_file) or dpop = true"
        ),
    ))
}
