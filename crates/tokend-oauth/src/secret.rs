//! Secret newtypes: the only way a token, client secret, PKCE verifier,
//! authorization code or device code travels through tokend.
//!
//! Each redacts itself in `Debug`, has no `Display` (so it cannot slip into a
//! `format!` by accident), compares in constant time, zeroizes its memory on
//! drop and exposes its value through one greppable method, `expose()`. They
//! serialize as a bare string because the daemon persists them in its store.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: String) -> Self {
                Self(value)
            }

            /// The secret itself. Every call site is a place a secret leaves
            /// its type, so keep them few and obvious.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                crate::pkce::constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }

        impl Eq for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }
    };
}

secret!(
    /// An OAuth access token, as handed to callers.
    AccessToken
);
secret!(
    /// A refresh token: the long-lived credential the daemon stores.
    RefreshToken
);
secret!(
    /// A validated OpenID Connect ID token: a credential for the APIs that
    /// accept one (Kubernetes with OIDC), so a secret like the others.
    IdToken
);
secret!(
    /// A confidential client's secret.
    ClientSecret
);
secret!(
    /// The PKCE `code_verifier` (RFC 7636), kept until the code exchange.
    PkceVerifier
);
secret!(
    /// An authorization code from the redirect back to tokend.
    AuthCode
);
secret!(
    /// An RFC 8628 `device_code`: whoever holds it can collect the tokens.
    DeviceCode
);
secret!(
    /// A signed assertion someone else issued (a projected service-account
    /// token, a CI job's OIDC token), sent as a client assertion, a
    /// jwt-bearer grant or a token-exchange subject.
    Assertion
);
secret!(
    /// A site's DPoP private key as the store keeps it (PKCS#8, base64url).
    StoredDpopKey
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_for_every_type() {
        let s = "hunter2-very-secret".to_string();
        let all = [
            format!("{:?}", AccessToken::new(s.clone())),
            format!("{:?}", RefreshToken::new(s.clone())),
            format!("{:?}", ClientSecret::new(s.clone())),
            format!("{:?}", PkceVerifier::new(s.clone())),
            format!("{:?}", AuthCode::new(s.clone())),
            format!("{:?}", DeviceCode::new(s.clone())),
            format!("{:?}", Some(AccessToken::new(s.clone()))),
        ];
        for shown in &all {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        assert_eq!(all[0], "AccessToken([redacted])");
        assert_eq!(all[2], "ClientSecret([redacted])");
    }

    #[test]
    fn serde_is_a_bare_string() {
        let token = RefreshToken::new("r1".into());
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, "\"r1\"");
        let back: RefreshToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back, token);
        assert_eq!(back.expose(), "r1");
        assert_ne!(back, RefreshToken::new("r2".into()));
    }
}
