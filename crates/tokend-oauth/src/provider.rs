//! A provider's resolved endpoints and capabilities, whether discovered
//! (see [`crate::discovery`]) or configured by hand.

use url::Url;

#[derive(Clone, Debug)]
pub struct Provider {
    /// The issuer identifier, when known; `iss` on a callback is checked
    /// against it (RFC 9207).
    pub issuer: Option<String>,
    pub authorize_url: Option<Url>,
    pub token_url: Url,
    pub revoke_url: Option<Url>,
    pub device_url: Option<Url>,
    /// Where the provider publishes its signing keys (for ID tokens).
    pub jwks_url: Option<Url>,
    /// `authorization_response_iss_parameter_supported`: a callback without
    /// `iss` must then be refused.
    pub iss_required: bool,
    /// `code_challenge_methods_supported`; empty means unknown, and S256 is
    /// sent anyway.
    pub pkce_methods: Vec<String>,
}

impl Provider {
    /// A provider known only by its token endpoint; fill in the rest as
    /// configured.
    pub fn new(token_url: Url) -> Provider {
        Provider {
            issuer: None,
            authorize_url: None,
            token_url,
            revoke_url: None,
            device_url: None,
            jwks_url: None,
            iss_required: false,
            pkce_methods: Vec::new(),
        }
    }
}
