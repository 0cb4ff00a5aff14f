//! `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9): the client proves who it
//! is with a short-lived JWT signed by a key whose public half the provider
//! holds. No secret is shared: the private key never leaves this machine.
//!
//! A key is PEM: PKCS#8 (`BEGIN PRIVATE KEY`, EC P-256 or RSA) or PKCS#1
//! (`BEGIN RSA PRIVATE KEY`). EC keys sign ES256, RSA keys RS256.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::pkce::try_random_state;

/// The most an assertion lives (the contract says at most 5 minutes; a
/// minute is plenty for one call and limits a replay).
pub const ASSERTION_LIFETIME: u64 = 60;

/// RFC 7521 §4.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A client's signing key, its public JWK and the clock its assertions are
/// dated by (the caller's: this crate reads no clock).
pub struct ClientKey {
    signer: Signer,
    /// The public key as a JWK (with `kid`, `alg` and `use`).
    jwk: serde_json::Value,
    kid: Option<String>,
    now_unix: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn bad_key(what: &str) -> Error {
    Error::Invalid(what.to_owned())
}

impl ClientKey {
    /// A key from PEM text. `kid`: the key id to name in each assertion's
    /// header (`client_key_id`); without one, the RFC 7638 thumbprint.
    pub fn from_pem(
        pem: &str,
        kid: Option<String>,
        now_unix: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<ClientKey, Error> {
        let (label, der) = pem_block(pem)?;
        let rng = SystemRandom::new();
        let signer = match label.as_str() {
            "PRIVATE KEY" => {
                match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng) {
                    Ok(pair) => Signer::Ec(pair),
                    Err(_) => Signer::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(|e| {
                        bad_key(&format!(
                            "the key is neither an EC P-256 nor a usable RSA key ({e}); make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
                        ))
                    })?),
                }
            }
            "RSA PRIVATE KEY" => Signer::Rsa(RsaKeyPair::from_der(&der).map_err(|e| {
                bad_key(&format!("the RSA key is not usable ({e}); RSA keys need 2048 bits or more"))
            })?),
            "EC PRIVATE KEY" => {
                return Err(bad_key(
                    "the key is SEC1 (`BEGIN EC PRIVATE KEY`); convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8`",
                ))
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(bad_key(
                    "the key is encrypted; tokend needs it unencrypted (kept private by the file's mode): `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8`",
                ))
            }
            other => {
                return Err(bad_key(&format!(
                    "the PEM block is `{other}`, not a private key (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`)"
                )))
            }
        };
        let mut jwk = public_jwk(&signer)?;
        let kid = kid.or_else(|| Some(thumbprint(&jwk)));
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(alg(&signer));
        Ok(ClientKey {
            signer,
            jwk,
            kid,
            now_unix: Box::new(now_unix),
        })
    }

    /// `ES256` or `RS256`.
    pub fn alg(&self) -> &'static str {
        alg(&self.signer)
    }

    /// The public key as a JWK set (`{"keys": [...]}`), to register at the
    /// provider.
    pub fn public_jwks(&self) -> serde_json::Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// A fresh client assertion for `client_id` at `audience` (the token
    /// endpoint): `iss` = `sub` = the client, a unique `jti`, `iat` now and
    /// `exp` a minute later.
    pub fn assertion(&self, client_id: &str, audience: &Url) -> Result<String, Error> {
        let now = (self.now_unix)();
        let mut header = json!({"typ": "JWT", "alg": self.alg()});
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience.as_str(),
            "jti": try_random_state()?,
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(pair) => pair
                .sign(&rng, input.as_bytes())
                .map_err(|_| bad_key("signing the client assertion failed"))?
                .as_ref()
                .to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| bad_key("signing the client assertion failed"))?;
                sig
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

fn alg(signer: &Signer) -> &'static str {
    match signer {
        Signer::Ec(_) => "ES256",
        Signer::Rsa(_) => "RS256",
    }
}

fn public_jwk(signer: &Signer) -> Result<serde_json::Value, Error> {
    match signer {
        Signer::Ec(pair) => {
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(bad_key("unexpected EC public key encoding"));
            }
            Ok(json!({
                "crv": "P-256",
                "kty": "EC",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }))
        }
        Signer::Rsa(pair) => {
            let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public());
            Ok(json!({
                "e": URL_SAFE_NO_PAD.encode(&parts.e),
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(&parts.n),
            }))
        }
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &serde_json::Value) -> String {
    let s = |k: &str| jwk[k].as_str().unwrap_or_default().to_owned();
    let canonical = if jwk["kty"] == "EC" {
        format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv"),
            s("x"),
            s("y")
        )
    } else {
        format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e"), s("n"))
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The first PEM block: its label and DER bytes.
fn pem_block(pem: &str) -> Result<(String, Zeroizing<Vec<u8>>), Error> {
    let mut lines = pem.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
        })
        .ok_or_else(|| bad_key("the file holds no PEM block (`-----BEGIN PRIVATE KEY-----`)"))?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        if line.contains(':') {
            // An RFC 1421 header (`Proc-Type: 4,ENCRYPTED`): not for us.
            return Err(bad_key(
                "the key is encrypted; tokend needs it unencrypted (kept private by the file's mode)",
            ));
        }
        body.push_str(line);
    }
    if !ended {
        return Err(bad_key(&format!("the PEM block has no `{end}` line")));
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| bad_key("the PEM block is not valid base64"))?;
    Ok((label, Zeroizing::new(der)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256};

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    fn part(jws: &str, n: usize) -> serde_json::Value {
        let b = URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(n).unwrap())
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    fn ec_key() -> ClientKey {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        ClientKey::from_pem(&pem("PRIVATE KEY", doc.as_ref()), None, || 1_700_000_000).unwrap()
    }

    #[test]
    fn an_ec_assertion_is_signed_and_dated() {
        let key = ec_key();
        assert_eq!(key.alg(), "ES256");
        let aud = Url::parse("https://idp.example/token").unwrap();
        let jwt = key.assertion("my-client", &aud).unwrap();
        let header = part(&jwt, 0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], key.public_jwks()["keys"][0]["kid"]);
        let claims = part(&jwt, 1);
        assert_eq!(claims["iss"], "my-client");
        assert_eq!(claims["sub"], "my-client");
        assert_eq!(claims["aud"], "https://idp.example/token");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert!(claims["exp"].as_u64().unwrap() - 1_700_000_000 <= 300);
        let jwk = &key.public_jwks()["keys"][0];
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap());
        }
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();
        let again = key.assertion("my-client", &aud).unwrap();
        assert_ne!(
            part(&again, 1)["jti"],
            claims["jti"],
            "a jti is never reused"
        );
        assert!(!format!("{key:?}").contains(jwk["x"].as_str().unwrap()));
    }

    /// A 2048-bit RSA key made once with `openssl genrsa` (PKCS#1), test only.
    const RSA_PKCS1: &str = include_str!("testdata/rsa_pkcs1.pem");

    #[test]
    fn an_rsa_assertion_verifies_with_its_jwk() {
        let key = ClientKey::from_pem(RSA_PKCS1, Some("k1".into()), || 5).unwrap();
        assert_eq!(key.alg(), "RS256");
        let jwks = key.public_jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["kty"], "RSA");
        let aud = Url::parse("https://idp.example/token").unwrap();
        let jwt = key.assertion("c", &aud).unwrap();
        assert_eq!(part(&jwt, 0)["kid"], "k1");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        PublicKeyComponents { n: &n, e: &e }
            .verify(
                &RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn unusable_pem_is_refused_with_the_fix() {
        let err = |pem: &str| {
            ClientKey::from_pem(pem, None, || 0)
                .unwrap_err()
                .to_string()
        };
        assert!(err("hello").contains("no PEM block"));
        assert!(err(&pem("EC PRIVATE KEY", b"x")).contains("openssl pkcs8"));
        assert!(err(&pem("CERTIFICATE", b"x")).contains("not a private key"));
        assert!(err(&pem("PRIVATE KEY", b"junk")).contains("neither"));
        assert!(err("-----BEGIN PRIVATE KEY-----\nAAAA\n").contains("no `-----END"));
    }
}
