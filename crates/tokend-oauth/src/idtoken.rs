//! OpenID Connect ID tokens, validated before they are stored or served
//! (OIDC Core §3.1.3.7): the signature against the provider's JWKS, `iss`,
//! `aud` (and `azp`), `exp`/`iat` with a small leeway, and the login's
//! `nonce`. Signatures are checked by `jsonwebtoken`; asymmetric algorithms
//! only (`none` and HMAC are refused: a client secret is no proof of who
//! signed).

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use url::Url;

use crate::error::{loggable_url, Error};
use crate::http::{FormRequest, Http};
use crate::pkce::constant_time_eq;

/// Seconds of clock skew tolerated on `exp` and `iat`.
pub const LEEWAY: u64 = 60;

/// What an ID token must say to be accepted.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The configured issuer, exactly.
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent with the login; `None` for a refresh response, whose
    /// ID token need not carry one.
    pub nonce: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

/// The claims tokend uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdClaims {
    pub subject: String,
    pub expires_at: u64,
    pub issued_at: u64,
}

/// Why an ID token was refused. Messages name the check, never the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the ID token is not a signed JWT: {0}")]
    Malformed(String),
    #[error(
        "the ID token is signed with {0}, which tokend does not accept (only RS*, PS* and ES* are)"
    )]
    Algorithm(String),
    /// The key the token names is published for encryption or for another
    /// algorithm than the token's.
    #[error(
        "the ID token names key `{0}`, which its provider publishes for another use or algorithm"
    )]
    KeyMisuse(String),
    #[error("no key in the provider's JWKS matches the ID token (kid {0})")]
    UnknownKey(String),
    #[error("the ID token's signature does not verify against the provider's keys")]
    Signature,
    #[error("the ID token was issued by {got}, not by the configured issuer {want}")]
    Issuer { got: String, want: String },
    #[error("the ID token is not meant for this client (aud does not contain {0})")]
    Audience(String),
    #[error("the ID token names another authorized party (azp {0})")]
    AuthorizedParty(String),
    #[error("the ID token expired at {0}")]
    Expired(u64),
    #[error("the ID token claims to be issued in the future (iat {0})")]
    Future(u64),
    #[error("the ID token's nonce does not match the login's")]
    Nonce,
    /// A refreshed ID token names another user than the login's first
    /// (OIDC Core §12.2: `sub` stays the same).
    #[error("the provider's new ID token is for another user than the login's (its `sub` changed), so it is refused")]
    SubjectChanged,
    #[error("cannot get the provider's keys: {0}")]
    Keys(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    iat: u64,
    azp: Option<String>,
    nonce: Option<String>,
}

fn accepted(alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(
        alg,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384
    )
}

/// The key of `set` that signed a token with this `kid` (or the only key,
/// when the token names none).
fn key_for<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

/// A key published for signing with `alg`: its `use`, when given, is `sig`,
/// and its `alg`, when given, is the token's (RFC 7517 §4.2, §4.4).
fn signs_with(jwk: &Jwk, alg: Algorithm) -> bool {
    let use_ok = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature);
    let alg_ok = jwk
        .common
        .key_algorithm
        .is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
    use_ok && alg_ok
}

/// Checks `token` against the keys in `set` and `expected`.
pub fn validate(
    token: &str,
    set: &JwkSet,
    expected: &Expected<'_>,
) -> Result<IdClaims, IdTokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    if !accepted(header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = key_for(set, header.kid.as_deref())
        .ok_or_else(|| IdTokenError::UnknownKey(header.kid.clone().unwrap_or_default()))?;
    if !signs_with(jwk, header.alg) {
        return Err(IdTokenError::KeyMisuse(
            header.kid.clone().unwrap_or_default(),
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::Signature)?;
    // The library checks the signature and the algorithm; the claims are
    // checked below, against an injected clock and with precise messages.
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                IdTokenError::Malformed(format!("missing or malformed claims: {e}"))
            }
            _ => IdTokenError::Signature,
        })?
        .claims;
    if claims.iss != expected.issuer {
        return Err(IdTokenError::Issuer {
            got: crate::response::clip(&claims.iss),
            want: expected.issuer.to_owned(),
        });
    }
    let audiences = match &claims.aud {
        Audience::One(a) => vec![a.as_str()],
        Audience::Many(v) => v.iter().map(String::as_str).collect(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(IdTokenError::Audience(expected.client_id.to_owned()));
    }
    match claims.azp.as_deref() {
        Some(azp) if azp != expected.client_id => {
            return Err(IdTokenError::AuthorizedParty(crate::response::clip(azp)))
        }
        None if audiences.len() > 1 => {
            return Err(IdTokenError::AuthorizedParty("missing".to_owned()))
        }
        _ => {}
    }
    if claims.exp + LEEWAY <= expected.now {
        return Err(IdTokenError::Expired(claims.exp));
    }
    if claims.iat > expected.now + LEEWAY {
        return Err(IdTokenError::Future(claims.iat));
    }
    if let Some(want) = expected.nonce {
        let ok = claims
            .nonce
            .as_deref()
            .is_some_and(|got| constant_time_eq(got.as_bytes(), want.as_bytes()));
        if !ok {
            return Err(IdTokenError::Nonce);
        }
    }
    Ok(IdClaims {
        subject: claims.sub,
        expires_at: claims.exp,
        issued_at: claims.iat,
    })
}

/// The providers' key sets, by `jwks_uri`: fetched once and kept for a day
/// (a key the provider withdrew stops being trusted), fetched again when a
/// token names a key the cached set lacks (the provider rotated), at most
/// once a minute so tokens naming made-up keys cannot make us hammer the
/// provider. No lock is held across the network.
#[derive(Debug, Default)]
pub struct KeyCache {
    sets: std::sync::Mutex<HashMap<Url, (Arc<JwkSet>, u64)>>,
}

/// How long a fetched key set is trusted, in seconds.
pub const KEYS_LIFETIME: u64 = 24 * 3600;
/// The least time between two fetches of one key set for unknown keys.
pub const UNKNOWN_KEY_REFETCH: u64 = 60;

impl KeyCache {
    /// The set at `uri` and when it was fetched (Unix s), while it lives.
    fn cached(&self, uri: &Url, now: u64) -> Option<(Arc<JwkSet>, u64)> {
        self.sets
            .lock()
            .ok()?
            .get(uri)
            .filter(|(_, at)| now.saturating_sub(*at) < KEYS_LIFETIME)
            .cloned()
    }

    async fn fetch(&self, http: &Http, uri: &Url, now: u64) -> Result<Arc<JwkSet>, IdTokenError> {
        let keys = |m: String| IdTokenError::Keys(m);
        let raw = http
            .send(&FormRequest::get(uri.clone()))
            .await
            .map_err(|e: Error| keys(e.to_string()))?;
        if !(200..300).contains(&raw.status) {
            return Err(keys(format!(
                "{} answered HTTP {}",
                loggable_url(uri),
                raw.status
            )));
        }
        let set: JwkSet = serde_json::from_slice(&raw.body)
            .map_err(|e| keys(format!("{} is not a JWK set: {e}", loggable_url(uri))))?;
        let set = Arc::new(set);
        if let Ok(mut sets) = self.sets.lock() {
            sets.insert(uri.clone(), (set.clone(), now));
        }
        Ok(set)
    }

    /// [`validate`] with the keys at `jwks_uri`.
    pub async fn validate(
        &self,
        http: &Http,
        jwks_uri: &Url,
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<IdClaims, IdTokenError> {
        let now = expected.now;
        let (set, fetched_at) = match self.cached(jwks_uri, now) {
            Some(cached) => cached,
            None => (self.fetch(http, jwks_uri, now).await?, now),
        };
        match validate(token, &set, expected) {
            Err(IdTokenError::UnknownKey(_))
                if now.saturating_sub(fetched_at) >= UNKNOWN_KEY_REFETCH =>
            {
                let fresh = self.fetch(http, jwks_uri, now).await?;
                validate(token, &fresh, expected)
            }
            other => other,
        }
    }

    /// Forgets an issuer's keys (its config changed).
    pub fn forget(&self, jwks_uri: &Url) {
        if let Ok(mut sets) = self.sets.lock() {
            sets.remove(jwks_uri);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://op.example";

    /// A P-256 signing key and its JWK set entry under `kid`.
    fn key(kid: &str) -> (EncodingKey, serde_json::Value) {
        let key = crate::dpop::DpopKey::generate().unwrap();
        let mut jwk = key.public_jwk().clone();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("ES256");
        (EncodingKey::from_ec_der(key.pkcs8()), jwk)
    }

    fn set(keys: &[&serde_json::Value]) -> JwkSet {
        serde_json::from_value(json!({ "keys": keys })).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISS, "sub": "alice", "aud": "cli", "exp": NOW + 300, "iat": NOW - 5, "nonce": "n0"})
    }

    fn sign(enc: &EncodingKey, kid: &str, claims: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, claims, enc).unwrap()
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISS,
            client_id: "cli",
            nonce: Some("n0"),
            now: NOW,
        }
    }

    /// A key set server whose keys the test swaps; counts its fetches.
    fn jwks_server(
        keys: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
        fetches: Arc<std::sync::atomic::AtomicU64>,
    ) -> Http {
        Http::scripted(Arc::new(move |_req| {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = json!({ "keys": *keys.lock().unwrap() }).to_string();
            Box::pin(async move {
                Ok(crate::http::RawResponse {
                    status: 200,
                    content_type: Some("application/json".into()),
                    location: None,
                    dpop_nonce: None,
                    body: body.into_bytes(),
                })
            })
        }))
    }

    /// Keys live a day; a token naming an unknown key fetches the set again
    /// at most once a minute; `forget` drops the set at once.
    #[tokio::test]
    async fn key_sets_expire_and_unknown_keys_refetch_at_most_once_a_minute() {
        let (enc1, jwk1) = key("k1");
        let (enc2, jwk2) = key("k2");
        let keys = Arc::new(std::sync::Mutex::new(vec![jwk1]));
        let fetches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let http = jwks_server(keys.clone(), fetches.clone());
        let count = || fetches.load(std::sync::atomic::Ordering::SeqCst);
        let uri = Url::parse("https://op.example/jwks").unwrap();
        let cache = KeyCache::default();
        let at = |now: u64| Expected { now, ..expected() };
        let mut c = claims();
        c["exp"] = json!(NOW + 10 * KEYS_LIFETIME);
        let t1 = sign(&enc1, "k1", &c);
        let t2 = sign(&enc2, "k2", &c);

        cache.validate(&http, &uri, &t1, &at(NOW)).await.unwrap();
        cache
            .validate(&http, &uri, &t1, &at(NOW + 10))
            .await
            .unwrap();
        assert_eq!(count(), 1, "cached");
        // A made-up key, within the minute: no fetch.
        assert!(cache
            .validate(&http, &uri, &t2, &at(NOW + 20))
            .await
            .is_err());
        assert_eq!(count(), 1, "no fetch within a minute of the last");
        // The provider rotates; after the minute the new key is fetched.
        keys.lock().unwrap().push(jwk2);
        cache
            .validate(&http, &uri, &t2, &at(NOW + 61))
            .await
            .unwrap();
        assert_eq!(count(), 2);
        // A day later the set is fetched again: a withdrawn key is not trusted.
        keys.lock().unwrap().remove(0);
        let later = NOW + 61 + KEYS_LIFETIME;
        assert!(cache.validate(&http, &uri, &t1, &at(later)).await.is_err());
        assert_eq!(count(), 3);
        cache.forget(&uri);
        cache
            .validate(&http, &uri, &t2, &at(later + 1))
            .await
            .unwrap();
        assert_eq!(count(), 4, "forgotten: fetched again");
    }

    #[test]
    fn a_key_published_for_encryption_or_another_algorithm_is_not_used() {
        let (enc, mut jwk) = key("k1");
        let token = sign(&enc, "k1", &claims());
        jwk["use"] = json!("enc");
        let err = validate(&token, &set(&[&jwk]), &expected()).unwrap_err();
        assert!(matches!(err, IdTokenError::KeyMisuse(_)), "{err}");
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("ES384");
        let err = validate(&token, &set(&[&jwk]), &expected()).unwrap_err();
        assert!(matches!(err, IdTokenError::KeyMisuse(_)), "{err}");
        jwk.as_object_mut().unwrap().remove("alg");
        jwk.as_object_mut().unwrap().remove("use");
        validate(&token, &set(&[&jwk]), &expected()).unwrap();
    }

    #[test]
    fn a_good_token_is_accepted() {
        let (enc, jwk) = key("k1");
        let got = validate(&sign(&enc, "k1", &claims()), &set(&[&jwk]), &expected()).unwrap();
        assert_eq!(got.subject, "alice");
        assert_eq!(got.expires_at, NOW + 300);
        // A refresh response's token need not carry the nonce.
        let mut c = claims();
        c.as_object_mut().unwrap().remove("nonce");
        let refresh = Expected {
            nonce: None,
            ..expected()
        };
        validate(&sign(&enc, "k1", &c), &set(&[&jwk]), &refresh).unwrap();
    }

    #[test]
    fn each_check_refuses_with_its_own_message() {
        let (enc, jwk) = key("k1");
        let keys = set(&[&jwk]);
        let with = |k: &str, v: serde_json::Value| {
            let mut c = claims();
            c[k] = v;
            validate(&sign(&enc, "k1", &c), &keys, &expected()).unwrap_err()
        };
        assert!(matches!(
            with("iss", json!("https://evil.example")),
            IdTokenError::Issuer { .. }
        ));
        assert_eq!(
            with("aud", json!("someone-else")),
            IdTokenError::Audience("cli".into())
        );
        assert_eq!(
            with("aud", json!(["cli", "other"])),
            IdTokenError::AuthorizedParty("missing".into())
        );
        assert!(matches!(
            with("azp", json!("other")),
            IdTokenError::AuthorizedParty(_)
        ));
        assert_eq!(
            with("exp", json!(NOW - 61)),
            IdTokenError::Expired(NOW - 61)
        );
        assert_eq!(
            with("iat", json!(NOW + 3600)),
            IdTokenError::Future(NOW + 3600)
        );
        assert_eq!(with("nonce", json!("replayed")), IdTokenError::Nonce);
        // Within the leeway is fine.
        let mut c = claims();
        c["exp"] = json!(NOW - 30);
        validate(&sign(&enc, "k1", &c), &keys, &expected()).unwrap();
    }

    #[test]
    fn tampered_unsigned_hmac_and_unknown_keys_are_refused() {
        let (enc, jwk) = key("k1");
        let keys = set(&[&jwk]);
        let good = sign(&enc, "k1", &claims());
        // Another subject pasted over the signed payload.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims();
        c["sub"] = json!("mallory");
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        assert_eq!(
            validate(&parts.join("."), &keys, &expected()).unwrap_err(),
            IdTokenError::Signature
        );
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert!(validate(&none, &keys, &expected()).is_err());
        // HMAC with the public key as the secret (the classic confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(b"x")).unwrap();
        assert_eq!(
            validate(&hs, &keys, &expected()).unwrap_err(),
            IdTokenError::Algorithm("HS256".into())
        );
        // Signed by a key the provider does not publish.
        let (other, _) = key("k2");
        assert_eq!(
            validate(&sign(&other, "k2", &claims()), &keys, &expected()).unwrap_err(),
            IdTokenError::UnknownKey("k2".into())
        );
        // A known kid whose key did not sign it.
        assert_eq!(
            validate(&sign(&other, "k1", &claims()), &keys, &expected()).unwrap_err(),
            IdTokenError::Signature
        );
    }
}
