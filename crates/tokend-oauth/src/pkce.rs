//! PKCE (RFC 7636, S256 only), the `state` nonce and the constant-time
//! comparison used to check it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::secret::PkceVerifier;

/// A PKCE pair: the verifier stays with tokend, the challenge goes in the
/// authorization URL.
#[derive(Clone, Debug)]
pub struct Pkce {
    pub verifier: PkceVerifier,
    /// `BASE64URL(SHA256(verifier))`, method S256.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair from 32 random bytes (a 43-character verifier). A failing
    /// OS random source is an error: a guessable verifier would defeat PKCE.
    pub fn try_new() -> Result<Pkce, Error> {
        Ok(Pkce::from_verifier(PkceVerifier::new(random_token()?)))
    }

    /// The pair for a known verifier (tests, or a verifier restored from disk).
    pub fn from_verifier(verifier: PkceVerifier) -> Pkce {
        let challenge = challenge_for(&verifier);
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// The S256 challenge of a verifier.
pub fn challenge_for(verifier: &PkceVerifier) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()))
}

/// A fresh `state` value: 32 random bytes, base64url without padding. A
/// failing OS random source is an error: a predictable state defeats its purpose.
pub fn try_random_state() -> Result<String, Error> {
    random_token()
}

fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::Invalid(format!("the operating system random source failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Compare two byte strings without an early exit, so the time taken does not
/// tell an attacker how much of a guessed `state` was right. Only the length
/// may leak, which is public anyway.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let pkce = Pkce::from_verifier(PkceVerifier::new(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        ));
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn fresh_values_are_long_and_distinct() {
        let a = Pkce::try_new().unwrap();
        let b = Pkce::try_new().unwrap();
        assert_eq!(a.verifier.expose().len(), 43);
        assert_ne!(a.verifier, b.verifier);
        assert_eq!(a.challenge, challenge_for(&a.verifier));
        let s = try_random_state().unwrap();
        assert_eq!(s.len(), 43);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(s, try_random_state().unwrap());
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
