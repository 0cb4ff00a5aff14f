//! Reading `exp` from an access token that happens to be a JWT.
//!
//! The signature is not checked: tokend is the token's holder, not its
//! audience, and only uses `exp` to guess when to refresh a token whose
//! response carried no lifetime. A forged `exp` could only make us refresh
//! early or late, never grant anything.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The `exp` claim (Unix seconds) of a compact JWS, if it is one and has it.
pub(crate) fn exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // Some issuers pad their base64url despite RFC 7515; tolerate it.
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Part `n` of a compact JWS (0: header, 1: claims) as JSON, unchecked.
fn part(token: &str, n: usize) -> Option<serde_json::Value> {
    let encoded = token.split('.').nth(n)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `sub` claim of a compact JWS, unchecked: for an ID token that was
/// validated when it was taken and is read back from the store.
pub fn unverified_subject(token: &str) -> Option<String> {
    part(token, 1)?.get("sub")?.as_str().map(str::to_owned)
}

/// The `jwk` member of a compact JWS's header (a DPoP proof's public key).
pub fn header_jwk(token: &str) -> Option<serde_json::Value> {
    part(token, 0)?.get("jwk").cloned()
}

#[cfg(test)]
pub(crate) fn fake(claims: &str) -> String {
    format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp() {
        assert_eq!(
            exp(&fake(r#"{"exp":1767225600,"sub":"u"}"#)),
            Some(1_767_225_600)
        );
        assert_eq!(exp(&fake(r#"{"sub":"u"}"#)), None);
        assert_eq!(exp("opaque-token"), None);
        assert_eq!(exp("a.b.c"), None);
        assert_eq!(exp("a.b.c.d"), None);
    }
}
