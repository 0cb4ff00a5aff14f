//! The in-process test kit: one scripted provider, [`Deps::scripted`] for
//! the sites' dependencies, and [`serve`]: the real server (its accept
//! loop, framing, limits and handlers) on a Unix socket in a temp dir, with
//! a raw line client for the real wire. Tests built on it run in
//! milliseconds; the end-to-end tests (`tests/`) run the binaries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokend_oauth::{Http, RawResponse};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Config;
use crate::site::{Deps, LoginTimeout};
use crate::store::{Record, Store};

#[cfg(unix)]
mod serve;
#[cfg(unix)]
pub(crate) use serve::*;

/// The unix time at which every kit clock starts.
pub(crate) const NOW: f64 = 1_800_000_000.0;

impl Deps {
    /// What a site talks to in a test: `http` (a [`Provider`]'s), `store`,
    /// tokio's clock from [`NOW`], a five-minute login timeout, fresh caches.
    pub(crate) fn scripted(http: Http, store: Store) -> Deps {
        Deps {
            store,
            http,
            discovery: Arc::default(),
            clock: Clock::tokio_at(NOW),
            login_timeout: LoginTimeout::new(Duration::from_secs(300)),
            login_cooldown: LoginTimeout::new(Duration::from_secs(900)),
            load_slots: Arc::new(tokio::sync::Semaphore::new(8)),
            store_notice: None,
            keys: Arc::default(),
            sites: Default::default(),
        }
    }
}

/// A provider for every issuer, from a script the test edits as it goes.
/// Discovery (`/.well-known/…`) names `{issuer}/authorize` and
/// `{issuer}/token`, at once unless [`Provider::slow_discovery`] says
/// otherwise; every other request is a token call: `at{n}` tokens that live
/// `lifetime` s, each call taking `delay`, refresh tokens rotating to
/// `rt{n}` (unless `rotate` is off); `refuse` answers `invalid_grant`, and
/// the next `fail` calls get a 503. Token calls are counted, with when
/// they came and their `scope`. Made an OpenID provider
/// ([`Provider::openid`]), it also publishes a key set and issues ID tokens.
pub(crate) struct Provider {
    pub lifetime: AtomicU64,
    pub delay: Mutex<Duration>,
    calls: AtomicU64,
    pub refuse: AtomicBool,
    pub fail: AtomicU64,
    pub rotate: AtomicBool,
    /// When each token call came (tokio time since the provider was made).
    pub at: Mutex<Vec<Duration>>,
    start: Instant,
    /// Scope of each token call (`-` for none).
    pub scopes: Mutex<Vec<String>>,
    /// Issuers whose discovery takes this long.
    slow: Mutex<Vec<(String, Duration)>>,
    oidc: Mutex<Option<Arc<Oidc>>>,
}

/// What an OpenID provider adds: the key set at `{issuer}/jwks` (named
/// `jwks_uri` in discovery) and an ID token with each token.
struct Oidc {
    jwks: serde_json::Value,
    id_token: Box<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub(crate) fn new(lifetime: u64, delay: Duration) -> Arc<Provider> {
        Arc::new(Provider {
            lifetime: AtomicU64::new(lifetime),
            delay: Mutex::new(delay),
            calls: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            fail: AtomicU64::new(0),
            rotate: AtomicBool::new(true),
            at: Mutex::default(),
            start: Instant::now(),
            scopes: Mutex::default(),
            slow: Mutex::default(),
            oidc: Mutex::default(),
        })
    }

    /// Makes it an OpenID provider: it publishes `jwks` and each token
    /// comes with the ID token `id_token` makes at the time.
    pub(crate) fn openid(
        &self,
        jwks: serde_json::Value,
        id_token: impl Fn() -> String + Send + Sync + 'static,
    ) {
        *self.oidc.lock().unwrap() = Some(Arc::new(Oidc {
            jwks,
            id_token: Box::new(id_token),
        }));
    }

    fn openid_part(&self) -> Option<Arc<Oidc>> {
        self.oidc.lock().unwrap().clone()
    }

    /// Token calls so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// `issuer`'s discovery takes `delay` from now on.
    pub(crate) fn slow_discovery(&self, issuer: &str, delay: Duration) {
        self.slow.lock().unwrap().push((issuer.to_owned(), delay));
    }

    fn discovery(&self, url: &url::Url) -> (u16, String, Duration) {
        let issuer = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        let delay = self
            .slow
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| *i == issuer)
            .map_or(Duration::ZERO, |(_, d)| *d);
        let jwks = match self.openid_part() {
            Some(_) => format!(r#","jwks_uri":"{issuer}/jwks""#),
            None => String::new(),
        };
        let body = format!(
            r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/authorize","token_endpoint":"{issuer}/token"{jwks}}}"#
        );
        (200, body, delay)
    }

    fn token_call(&self, req: &tokend_oauth::FormRequest) -> (u16, String, Duration) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.at.lock().unwrap().push(self.start.elapsed());
        self.scopes
            .lock()
            .unwrap()
            .push(req.form_value("scope").unwrap_or("-").to_owned());
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok();
        let delay = *self.delay.lock().unwrap();
        if failing {
            return (503, "temporarily down".to_owned(), delay);
        }
        if self.refuse.load(Ordering::SeqCst) {
            return (400, r#"{"error":"invalid_grant"}"#.to_owned(), delay);
        }
        let refresh = if self.rotate.load(Ordering::SeqCst) {
            format!(r#","refresh_token":"rt{n}""#)
        } else {
            String::new()
        };
        let id_token = match self.openid_part() {
            Some(oidc) => format!(r#","id_token":"{}""#, (oidc.id_token)()),
            None => String::new(),
        };
        let body = format!(
            r#"{{"access_token":"at{n}","token_type":"bearer","expires_in":{}{refresh}{id_token}}}"#,
            self.lifetime.load(Ordering::SeqCst)
        );
        (200, body, delay)
    }

    /// The provider as the sites' HTTP client.
    pub(crate) fn http(self: &Arc<Self>) -> Http {
        let p = self.clone();
        Http::scripted(Arc::new(move |req| {
            let oidc = p.openid_part();
            let (status, body, delay) = if req.url.path().starts_with("/.well-known/") {
                p.discovery(&req.url)
            } else if let (Some(oidc), "/jwks") = (oidc, req.url.path()) {
                (200, oidc.jwks.to_string(), Duration::ZERO)
            } else {
                p.token_call(req)
            };
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(RawResponse {
                    status,
                    content_type: Some("application/json".into()),
                    location: None,
                    dpop_nonce: None,
                    body: body.into_bytes(),
                })
            })
        }))
    }
}

/// A memory store holding, for each site of `config` named in `sites`, a
/// login as after a restart (a refresh token `rt-{site}`, no access token).
pub(crate) fn logged_in(config: &Config, sites: &[&str]) -> Store {
    let store = Store::Memory(Arc::default());
    if let Store::Memory(m) = &store {
        for name in sites {
            let cfg = &config.sites[*name];
            m.lock().unwrap().insert(
                (*name).to_owned(),
                Record::refresh_only(
                    cfg.identity(),
                    &format!("rt-{name}"),
                    cfg.scopes.clone(),
                    NOW as u64 - 1000,
                ),
            );
        }
    }
    store
}

/// A `[site.NAME]` table with its endpoints on `https://NAME.example`.
pub(crate) fn site(name: &str) -> String {
    format!(
        "[site.{name}]\ntoken_url = \"https://{name}.example/token\"\n\
         authorize_url = \"https://{name}.example/authorize\"\n\
         client_id = \"c\"\nscopes = [\"read\", \"write\"]\n"
    )
}
