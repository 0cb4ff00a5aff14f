//! ID tokens in-process: a scripted OpenID provider (discovery, JWKS, a
//! token endpoint whose ID token each test shapes), tokio's paused clock.
//! A login whose ID token fails a check fails naming it; a refresh whose
//! ID token fails keeps the access token and drops the ID token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use token_proto::{ErrorCode, Event, LoginMode, TokenKind};
use tokend_oauth::{Http, RawResponse};

use crate::clock::Clock;
use crate::config::{Config, SiteConfig};
use crate::login::Progress;
use crate::site::{Deps, Served, SiteHandle};
use crate::store::{Record, Store};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://op.example";

/// A P-256 key (the daemon's own key type makes it) and its JWK.
fn key(kid: &str) -> (EncodingKey, Value) {
    let key = tokend_oauth::DpopKey::generate().unwrap();
    let mut jwk = key.public_jwk().clone();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("ES256");
    (EncodingKey::from_ec_der(key.pkcs8()), jwk)
}

/// What the token endpoint's ID token says (the test edits it), signed
/// with `signer` (the published key, or another for a forged signature).
struct Op {
    jwk: Value,
    published: EncodingKey,
    forger: EncodingKey,
    claims: Mutex<Value>,
    forge: Mutex<bool>,
    token_calls: Mutex<u64>,
}

impl Op {
    fn new() -> Arc<Op> {
        let (published, jwk) = key("k1");
        let (forger, _) = key("k1");
        Arc::new(Op {
            jwk,
            published,
            forger,
            claims: Mutex::new(json!({
                "iss": ISS, "sub": "alice", "aud": "c", "iat": NOW - 5, "exp": NOW + 600,
            })),
            forge: Mutex::new(false),
            token_calls: Mutex::new(0),
        })
    }

    fn set(&self, key: &str, value: Value) {
        self.claims.lock().unwrap()[key] = value;
    }

    fn id_token(&self) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let key = if *self.forge.lock().unwrap() {
            &self.forger
        } else {
            &self.published
        };
        jsonwebtoken::encode(&h, &*self.claims.lock().unwrap(), key).unwrap()
    }

    fn http(self: &Arc<Self>) -> Http {
        let op = self.clone();
        Http::scripted(Arc::new(move |req| {
            let body = match req.url.path() {
                "/.well-known/openid-configuration" => json!({
                    "issuer": ISS,
                    "authorization_endpoint": format!("{ISS}/auth"),
                    "token_endpoint": format!("{ISS}/token"),
                    "jwks_uri": format!("{ISS}/jwks"),
                }),
                "/jwks" => json!({ "keys": [op.jwk] }),
                "/token" => {
                    let n = {
                        let mut calls = op.token_calls.lock().unwrap();
                        *calls += 1;
                        *calls
                    };
                    json!({
                        "access_token": format!("at{n}"), "token_type": "Bearer",
                        "expires_in": 3600, "refresh_token": format!("rt{n}"),
                        "id_token": op.id_token(),
                    })
                }
                other => panic!("unexpected request to {other}"),
            };
            Box::pin(async move {
                Ok(RawResponse {
                    status: 200,
                    content_type: Some("application/json".into()),
                    location: None,
                    dpop_nonce: None,
                    body: body.to_string().into_bytes(),
                })
            })
        }))
    }
}

fn config() -> Arc<SiteConfig> {
    let text = format!(
        "[site.corp]\nissuer = \"{ISS}\"\nclient_id = \"c\"\nscopes = [\"openid\", \"read\"]\n"
    );
    let cfg = Config::parse(Path::new("config.toml"), &text);
    assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
    cfg.sites["corp"].clone()
}

fn site(op: &Arc<Op>, store: Store) -> SiteHandle {
    let deps = Deps {
        store,
        http: op.http(),
        discovery: Arc::default(),
        clock: Clock::tokio_at(NOW as f64),
        login_timeout: crate::site::LoginTimeout::new(Duration::from_secs(300)),
        login_cooldown: crate::site::LoginTimeout::new(Duration::from_secs(900)),
        load_slots: Arc::new(tokio::sync::Semaphore::new(8)),
        store_notice: None,
        keys: Arc::default(),
    };
    SiteHandle::spawn(config(), Arc::new(deps), None)
}

/// A paste-back login to its end: the user pastes a bare code. `shape`
/// sees the nonce the authorization request carried and edits the claims.
async fn login(site: &SiteHandle, op: &Op, shape: impl FnOnce(&Op, &str)) -> Progress {
    let ticket = site.login(LoginMode::Paste).await.unwrap();
    let mut progress = ticket.progress.clone();
    let waiting = progress
        .wait_for(|p| matches!(p, Progress::Waiting { .. }))
        .await
        .unwrap()
        .clone();
    let Progress::Waiting {
        first: Event::PasteUrl { url, .. },
        ..
    } = waiting
    else {
        panic!("not a paste login: {waiting:?}")
    };
    let url = url::Url::parse(&url).unwrap();
    let nonce = url
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .expect("an openid login sends a nonce");
    shape(op, &nonce);
    let paste = site.paste_sender().await.unwrap().expect("a paste login");
    paste.send("the-code".into()).await.unwrap();
    let done = progress
        .wait_for(|p| matches!(p, Progress::Done(_)))
        .await
        .unwrap()
        .clone();
    drop(ticket);
    done
}

#[tokio::test(start_paused = true)]
async fn a_login_keeps_a_valid_id_token_and_serves_it() {
    let op = Op::new();
    let site = site(&op, Store::Memory(Arc::default()));
    let done = login(&site, &op, |op, nonce| op.set("nonce", json!(nonce))).await;
    assert!(matches!(done, Progress::Done(Ok(_))), "{done:?}");
    let Served::Token(t) = site.get_id_token(None).await.unwrap() else {
        panic!("no ID token")
    };
    // ES256 signatures differ each time: compare what was signed.
    let signed = |jwt: &str| jwt.rsplit_once('.').unwrap().0.to_owned();
    assert_eq!(signed(&t.access_token), signed(&op.id_token()));
    assert_eq!(t.token, Some(TokenKind::IdToken));
    assert_eq!(t.expires_at, Some(NOW + 600));
    assert_eq!(t.token_type, "N_A");
}

#[tokio::test(start_paused = true)]
async fn a_login_whose_id_token_fails_a_check_fails_naming_it() {
    type Shape = fn(&Op, &str);
    let cases: [(&str, Shape); 5] = [
        ("not meant for this client (aud", |op, n| {
            op.set("nonce", json!(n));
            op.set("aud", json!("someone-else"));
        }),
        ("nonce does not match", |op, _| {
            op.set("nonce", json!("replayed"));
        }),
        ("expired at", |op, n| {
            op.set("nonce", json!(n));
            op.set("exp", json!(NOW - 3600));
        }),
        ("signature does not verify", |op, n| {
            op.set("nonce", json!(n));
            *op.forge.lock().unwrap() = true;
        }),
        ("not by the configured issuer", |op, n| {
            op.set("nonce", json!(n));
            op.set("iss", json!("https://evil.example"));
        }),
    ];
    for (check, shape) in cases {
        let op = Op::new();
        let store = Store::Memory(Arc::default());
        let site = site(&op, store.clone());
        let done = login(&site, &op, shape).await;
        let Progress::Done(Err(e)) = done else {
            panic!("{check}: the login succeeded")
        };
        // As the caller sees it.
        let e = crate::error::ApiError::from(e);
        assert_eq!(e.code, ErrorCode::LoginFailed, "{check}");
        assert!(e.message.contains(check), "{check}: {}", e.message);
        assert!(e.message.contains("site corp"), "{}", e.message);
        // Nothing was kept: no token served, nothing stored.
        assert!(matches!(
            site.get(Vec::new(), None).await.unwrap(),
            Served::NeedLogin
        ));
        assert!(matches!(
            site.get_id_token(None).await.unwrap(),
            Served::NeedLogin
        ));
        assert!(store.load("corp").await.unwrap().is_none(), "{check}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_whose_id_token_fails_keeps_the_access_token_without_an_id_token() {
    let op = Op::new();
    op.set("aud", json!("someone-else"));
    let cfg = config();
    let store = Store::Memory(Arc::default());
    store
        .save(
            "corp",
            &Record::refresh_only(cfg.identity(), "rt0", cfg.scopes.clone(), NOW - 100),
        )
        .await
        .unwrap();
    let site = site(&op, store);
    let Served::Token(t) = site.get(Vec::new(), None).await.unwrap() else {
        panic!("the refresh failed")
    };
    assert_eq!(t.access_token, "at1");
    assert!(matches!(
        site.get_id_token(None).await.unwrap(),
        Served::NeedLogin
    ));
    let status = site.status().await.unwrap();
    let why = status.last_error.unwrap_or_default();
    assert!(why.contains("not meant for this client"), "{why}");
    assert!(why.contains("access token is served"), "{why}");

    // The provider mends its ways: the next refresh brings a valid one
    // (no nonce asked of a refresh), and refresh-ahead now plans on the
    // earlier of the two expiries.
    op.set("aud", json!("c"));
    let Served::Token(id) = site.get_id_token(None).await.unwrap() else {
        panic!("no ID token after a good refresh")
    };
    assert_eq!(id.expires_at, Some(NOW + 600));
    let next = site.status().await.unwrap().next_refresh.unwrap();
    assert!(
        next < NOW + 600,
        "refresh-ahead before the ID token's exp, not the access token's: {next}"
    );
}

/// OIDC Core §12.2: a refreshed ID token must name the login's user. One
/// for another `sub` is refused; the access token is still served.
#[tokio::test(start_paused = true)]
async fn a_refreshed_id_token_for_another_user_is_refused() {
    let op = Op::new();
    let site = site(&op, Store::Memory(Arc::default()));
    let done = login(&site, &op, |op, nonce| op.set("nonce", json!(nonce))).await;
    assert!(matches!(done, Progress::Done(Ok(_))), "{done:?}");
    assert!(matches!(
        site.get_id_token(None).await.unwrap(),
        Served::Token(_)
    ));
    op.set("sub", json!("mallory"));
    // More life than the held ID token has: a refresh brings a new one.
    let got = site.get_id_token(Some(3000)).await.unwrap();
    assert!(!matches!(got, Served::Token(_)), "{got:?}");
    let why = site.status().await.unwrap().last_error.unwrap_or_default();
    assert!(why.contains("another user"), "{why}");
    assert!(matches!(
        site.get(Vec::new(), None).await.unwrap(),
        Served::Token(_)
    ));
}
