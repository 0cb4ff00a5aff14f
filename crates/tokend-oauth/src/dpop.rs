//! Sender-constrained tokens (DPoP, RFC 9449): a P-256 key per site, held by
//! the daemon, and the proofs that bind each request to it.
//!
//! A proof is a compact JWS (`typ: dpop+jwt`, `alg: ES256`, the public key
//! as `jwk` in the header) over `{jti, htm, htu, iat}`, plus `ath` (the
//! SHA-256 of the access token) for resource requests and `nonce` when the
//! server asked for one (`DPoP-Nonce`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::pkce::try_random_state;
use crate::secret::StoredDpopKey;

/// The response header that carries a server's DPoP nonce.
pub const NONCE_HEADER: &str = "DPoP-Nonce";

/// A site's DPoP key. Its private half leaves the daemon only into the store
/// (as PKCS#8), never over the socket.
pub struct DpopKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
    /// The public key as a JWK, members in RFC 7638 order.
    jwk: serde_json::Value,
    thumbprint: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

fn crypto(what: &str) -> Error {
    Error::Invalid(format!("DPoP: {what}"))
}

impl DpopKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<DpopKey, Error> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| crypto("cannot generate a P-256 key"))?;
        DpopKey::from_pkcs8(doc.as_ref())
    }

    /// The key stored earlier with [`DpopKey::pkcs8`].
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<DpopKey, Error> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| crypto("the stored key is not a P-256 PKCS#8 key"))?;
        // An uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(crypto("unexpected public key encoding"));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        // RFC 7638: the required members, lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Ok(DpopKey {
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            pair,
            jwk: json!({"crv": "P-256", "kty": "EC", "x": x, "y": y}),
            thumbprint,
        })
    }

    /// The private key as PKCS#8, for the store.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key in the form the store keeps.
    pub fn to_stored(&self) -> StoredDpopKey {
        StoredDpopKey::new(URL_SAFE_NO_PAD.encode(self.pkcs8()))
    }

    /// The key [`DpopKey::to_stored`] gave.
    pub fn from_stored(stored: &StoredDpopKey) -> Result<DpopKey, Error> {
        let der = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(stored.expose())
                .map_err(|_| crypto("the stored key is not base64url"))?,
        );
        DpopKey::from_pkcs8(&der)
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`).
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// The JWK SHA-256 thumbprint (`jkt`), which a bound token names in `cnf`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for `method` on `url` at `now` (Unix seconds). `access_token`:
    /// for a resource request (adds `ath`); `nonce`: the server's last
    /// `DPoP-Nonce`, if it sent one.
    pub fn proof(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String, Error> {
        let mut htu = url.clone();
        htu.set_query(None);
        htu.set_fragment(None);
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let mut claims = json!({
            "jti": try_random_state()?,
            "htm": method.to_ascii_uppercase(),
            "htu": htu.as_str(),
            "iat": now,
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| crypto("signing failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn part(jws: &str, n: usize) -> serde_json::Value {
        let b = URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(n).unwrap())
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn a_proof_is_signed_by_the_key_it_names() {
        let key = DpopKey::generate().unwrap();
        let url = Url::parse("https://rs.example/api/items?page=2#x").unwrap();
        let proof = key
            .proof("get", &url, Some("tok"), Some("n-1"), 1_700_000_000)
            .unwrap();
        let header = part(&proof, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        let claims = part(&proof, 1);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://rs.example/api/items");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"tok"))
        );
        // The signature verifies with the public key in the header.
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(
                URL_SAFE_NO_PAD
                    .decode(header["jwk"][c].as_str().unwrap())
                    .unwrap(),
            );
        }
        let (input, sig) = proof.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();
        // Two proofs never share a jti.
        let again = key.proof("GET", &url, None, None, 1).unwrap();
        assert_ne!(part(&again, 1)["jti"], claims["jti"]);
        assert!(part(&again, 1).get("ath").is_none());
    }

    #[test]
    fn a_stored_key_comes_back_with_the_same_thumbprint() {
        let key = DpopKey::generate().unwrap();
        let back = DpopKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(key.thumbprint(), back.thumbprint());
        assert_eq!(key.thumbprint().len(), 43);
        assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.pkcs8())));
        assert!(DpopKey::from_pkcs8(b"not a key").is_err());
        let stored = key.to_stored();
        assert_eq!(
            DpopKey::from_stored(&stored).unwrap().thumbprint(),
            key.thumbprint()
        );
        assert!(DpopKey::from_stored(&StoredDpopKey::new("!!".into())).is_err());
    }
}
