//! The site's rules, in-process: a scripted provider, a memory store and
//! tokio's paused clock, so counts and order are exact and nothing waits
//! on the wall clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_proto::{ErrorCode, LoginMode};
use tokend_oauth::{Http, RawResponse};
use tokio::time::Instant;

use super::{Deps, Served, SiteHandle, TtlFrom};
use crate::clock::Clock;
use crate::config::{Config, SiteConfig};
use crate::error::ApiError;
use crate::store::{Record, Store};

/// A token endpoint: tokens live `lifetime` s, each call takes `delay`,
/// refresh tokens rotate; `refuse` answers `invalid_grant`, and the next
/// `fail` calls get a 503.
struct Provider {
    lifetime: AtomicU64,
    delay: Mutex<Duration>,
    calls: AtomicU64,
    refuse: std::sync::atomic::AtomicBool,
    fail: AtomicU64,
    /// When each call came (tokio time since the provider was made).
    at: Mutex<Vec<Duration>>,
    start: Instant,
    /// Scope of each call (`-` for none).
    scopes: Mutex<Vec<String>>,
}

impl Provider {
    fn new(lifetime: u64, delay: Duration) -> Arc<Provider> {
        Arc::new(Provider {
            lifetime: AtomicU64::new(lifetime),
            delay: Mutex::new(delay),
            calls: AtomicU64::new(0),
            refuse: Default::default(),
            fail: AtomicU64::new(0),
            at: Mutex::default(),
            start: Instant::now(),
            scopes: Mutex::default(),
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn http(self: &Arc<Self>) -> Http {
        let p = self.clone();
        Http::scripted(Arc::new(move |req| {
            let n = p.calls.fetch_add(1, Ordering::SeqCst) + 1;
            p.at.lock().unwrap().push(p.start.elapsed());
            let failing = p
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok();
            p.scopes
                .lock()
                .unwrap()
                .push(req.form_value("scope").unwrap_or("-").to_owned());
            let body = if p.refuse.load(Ordering::SeqCst) {
                r#"{"error":"invalid_grant"}"#.to_owned()
            } else {
                format!(
                    r#"{{"access_token":"at{n}","token_type":"bearer","expires_in":{},"refresh_token":"rt{n}"}}"#,
                    p.lifetime.load(Ordering::SeqCst)
                )
            };
            let (status, body) = if failing {
                (503, "temporarily down".to_owned())
            } else if p.refuse.load(Ordering::SeqCst) {
                (400, body)
            } else {
                (200, body)
            };
            let delay = *p.delay.lock().unwrap();
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

fn config(extra: &str) -> Arc<SiteConfig> {
    let text = format!(
        "[site.corp]\ntoken_url = \"https://auth.example/token\"\nauthorize_url = \"https://auth.example/authorize\"\nclient_id = \"c\"\nscopes = [\"read\", \"write\"]\n{extra}"
    );
    let cfg = Config::parse(Path::new("config.toml"), &text);
    assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
    cfg.sites["corp"].clone()
}

fn deps(provider: &Arc<Provider>, store: Store) -> Arc<Deps> {
    Arc::new(Deps {
        store_notice: None,
        store,
        http: provider.http(),
        discovery: Arc::default(),
        clock: Clock::tokio_at(1_800_000_000.0),
        login_timeout: crate::site::LoginTimeout::new(Duration::from_secs(300)),
        load_slots: Arc::new(tokio::sync::Semaphore::new(8)),
        keys: Arc::default(),
    })
}

/// A memory store holding a login for `cfg` (a refresh token only, as
/// after a restart).
fn logged_in(cfg: &SiteConfig) -> Store {
    let store = Store::Memory(Arc::default());
    if let Store::Memory(m) = &store {
        m.lock().unwrap().insert(
            "corp".into(),
            Record::refresh_only(cfg.identity(), "rt0", cfg.scopes.clone(), 1_799_999_000),
        );
    }
    store
}

fn stored_refresh(store: &Store) -> Option<String> {
    match store {
        Store::Memory(m) => m
            .lock()
            .unwrap()
            .get("corp")
            .and_then(|r| r.refresh_token.as_ref().map(|t| t.expose().to_owned())),
        _ => None,
    }
}

/// A logged-in site (after a restart: a refresh token in the store) whose
/// provider issues `lifetime`-second tokens, taking `delay` for each.
fn site_with(lifetime: u64, delay: Duration) -> (SiteHandle, Arc<Provider>, Store) {
    let cfg = config("");
    let provider = Provider::new(lifetime, delay);
    let store = logged_in(&cfg);
    let site = SiteHandle::spawn(cfg, deps(&provider, store.clone()), None);
    (site, provider, store)
}

async fn token(site: &SiteHandle, min_ttl: Option<u64>) -> token_proto::TokenReply {
    match site.get(Vec::new(), min_ttl).await.unwrap() {
        Served::Token(t) => t,
        Served::NeedLogin => panic!("a login was asked for"),
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_two_second_tokens_cause_one_refresh() {
    let (site, provider, _) = site_with(2, Duration::from_millis(5));
    token(&site, None).await;
    assert_eq!(provider.calls(), 1);
    // The new token's renewal is planned ~1.3 s after it was obtained, not "now".
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        provider.calls(),
        1,
        "no second refresh right after the first"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(provider.calls(), 2, "refresh-ahead renews before expiry");
}

#[tokio::test(start_paused = true)]
async fn a_crowd_with_an_unmeetable_min_ttl_makes_one_call() {
    let (site, provider, _) = site_with(9, Duration::from_millis(50));
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let site = site.clone();
        crowd.spawn(async move { token(&site, Some(590)).await });
    }
    let mut warned = 0;
    while let Some(t) = crowd.join_next().await {
        let t = t.unwrap();
        assert_eq!(t.access_token, "at1");
        warned += usize::from(t.warning.as_deref().is_some_and(|w| w.contains("9s")));
    }
    assert_eq!(provider.calls(), 1, "one call for the whole crowd");
    assert_eq!(warned, 100, "every caller is told the provider's lifetime");
    // Latecomers are served the freshest token without another call.
    tokio::time::sleep(Duration::from_secs(1)).await;
    token(&site, Some(590)).await;
    assert_eq!(provider.calls(), 1);
}

async fn git_token(site: &SiteHandle) -> token_proto::TokenReply {
    match site
        .get_for(Vec::new(), Some(60), TtlFrom::GitHelper)
        .await
        .unwrap()
    {
        Served::Token(t) => t,
        Served::NeedLogin => panic!("a login was asked for"),
    }
}

/// git runs the helper (min_ttl 60, its own margin) for every command.
#[tokio::test(start_paused = true)]
async fn the_git_helpers_margin_is_told_once_in_its_own_words() {
    let (site, _, _) = site_with(30, Duration::from_millis(5));
    let first = git_token(&site).await.warning.clone().unwrap_or_default();
    assert!(
        first.contains("valid for 30s, less than the 60s the git credential helper wants"),
        "{first}"
    );
    assert!(
        !first.contains("--min-ttl"),
        "the user gave no option: {first}"
    );
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(git_token(&site).await.warning, None, "said once");
    }
    // The user's own --min-ttl is still told every time.
    let t = token(&site, Some(60)).await;
    assert!(t
        .warning
        .as_deref()
        .is_some_and(|w| w.contains("--min-ttl of 60s")));

    // Tokens as long as the margin: nothing to say, ever.
    let (site, _, _) = site_with(60, Duration::from_millis(5));
    for _ in 0..3 {
        assert_eq!(git_token(&site).await.warning, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // And 60 is not less than 60.
    let t = token(&site, Some(60)).await;
    let w = t.warning.clone().unwrap_or_default();
    assert!(
        w.contains("valid for 60s, no more than the --min-ttl of 60s"),
        "{w}"
    );
}

#[tokio::test(start_paused = true)]
async fn sequential_gets_past_the_lifetime_make_one_call_and_warn() {
    let (site, provider, _) = site_with(3600, Duration::from_millis(50));
    token(&site, None).await;
    assert_eq!(provider.calls(), 1);
    for _ in 0..3 {
        let t = token(&site, Some(7200)).await;
        let warning = t.warning.clone().unwrap_or_default();
        assert!(
            warning.contains("3600s") && warning.contains("7200s"),
            "{warning}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        provider.calls(),
        2,
        "one call for the unmeetable min_ttl, not one per get"
    );
    // A min_ttl a fresh token can meet is still a reason to ask.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let t = token(&site, Some(3595)).await;
    assert!(t.warning.is_none());
    assert_eq!(provider.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn callers_never_wait_for_a_renewal_that_refresh_ahead_does() {
    let (site, provider, _) = site_with(20, Duration::from_millis(1500));
    token(&site, None).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        token(&site, None).await;
        slowest = slowest.max(asked.elapsed());
    }
    // 60 s of 20 s tokens: renewed ahead, callers served from memory.
    assert!(provider.calls() >= 4, "{}", provider.calls());
    assert_eq!(slowest, Duration::ZERO, "a get waited for the provider");
}

#[tokio::test(start_paused = true)]
async fn a_refused_down_scoped_refresh_keeps_the_login() {
    let (site, provider, store) = site_with(3600, Duration::from_millis(5));
    token(&site, None).await;
    provider.refuse.store(true, Ordering::SeqCst);
    let e = ApiError::from(site.get(vec!["read".into()], None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::ProviderError, "{e}");
    assert!(stored_refresh(&store).is_some(), "the login is kept");
    token(&site, None).await;
    assert_eq!(provider.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn down_scoped_tokens_are_cached_per_scope_set() {
    let (site, provider, _) = site_with(3600, Duration::from_millis(5));
    token(&site, None).await;
    let narrow = |s: &SiteHandle| {
        let s = s.clone();
        async move { s.get(vec!["read".into()], None).await.unwrap() }
    };
    let (a, b) = tokio::join!(narrow(&site), narrow(&site));
    let (Served::Token(a), Served::Token(b)) = (a, b) else {
        panic!("no token")
    };
    assert_eq!(a.access_token, b.access_token);
    assert_eq!(a.scopes, ["read"]);
    assert_eq!(provider.calls(), 2);
    assert_eq!(*provider.scopes.lock().unwrap(), ["-", "read"]);
    // All the site's scopes, in any order: the site's own token, in hand.
    let own = site
        .get(vec!["write".into(), "read".into()], None)
        .await
        .unwrap();
    let Served::Token(own) = own else {
        panic!("no token")
    };
    assert_eq!(own.access_token, "at1");
    assert_eq!(provider.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_login_whose_callers_went_away_is_cancelled_and_the_next_caller_starts_one() {
    let cfg = config("");
    let provider = Provider::new(3600, Duration::from_millis(5));
    let site = SiteHandle::spawn(cfg, deps(&provider, Store::Memory(Arc::default())), None);
    assert!(matches!(
        site.get(Vec::new(), None).await.unwrap(),
        Served::NeedLogin
    ));
    let first = site.login(LoginMode::Browser).await.unwrap();
    assert!(first.opener.is_some());
    drop(first);
    // The next caller opens the browser again instead of waiting on a login
    // nobody watches.
    let second = site.login(LoginMode::Browser).await.unwrap();
    assert!(second.opener.is_some(), "a fresh login for the next caller");
    let joined = site.login(LoginMode::Browser).await.unwrap();
    assert!(joined.opener.is_none(), "one login at a time");
    let status = site.status().await.unwrap();
    assert_eq!(status.state, "login_pending");
}

#[tokio::test(start_paused = true)]
async fn logout_cancels_a_pending_login() {
    let cfg = config("");
    let provider = Provider::new(3600, Duration::from_millis(5));
    let site = SiteHandle::spawn(cfg, deps(&provider, Store::Memory(Arc::default())), None);
    let ticket = site.login(LoginMode::Browser).await.unwrap();
    let mut progress = ticket.progress.clone();
    site.logout().await.unwrap();
    let done = progress
        .wait_for(|p| matches!(p, crate::login::Progress::Done(_)))
        .await
        .unwrap()
        .clone();
    let crate::login::Progress::Done(Err(e)) = done else {
        panic!("the login went on")
    };
    assert_eq!(ApiError::from(e).code, ErrorCode::LoginIncomplete);
    assert_eq!(site.status().await.unwrap().state, "login_required");
}

/// A logged-in site whose provider takes 20 s a refresh, 1 s into a `get`'s
/// refresh: the site, its store and the waiting `get`.
async fn refreshing() -> (
    SiteHandle,
    Store,
    tokio::task::JoinHandle<Result<Served, super::SiteError>>,
) {
    let (site, provider, store) = site_with(3600, Duration::from_secs(20));
    let waiting = tokio::spawn({
        let site = site.clone();
        async move { site.get(Vec::new(), None).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(provider.calls(), 1);
    (site, store, waiting)
}

#[tokio::test(start_paused = true)]
async fn stop_lets_a_running_refresh_land_and_persist() {
    let (site, store, waiting) = refreshing().await;
    site.stop();
    site.finished().await;
    assert_eq!(
        stored_refresh(&store).as_deref(),
        Some("rt1"),
        "the rotated token was kept"
    );
    assert!(matches!(waiting.await.unwrap(), Ok(Served::Token(_))));
    assert!(
        site.get(Vec::new(), None).await.is_err(),
        "a stopped site takes no requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retired_site_ends_before_its_successor_reads_the_store() {
    let (old, store, _waiting) = refreshing().await;
    old.stop();
    let provider = Provider::new(3600, Duration::ZERO);
    let new = SiteHandle::spawn(config(""), deps(&provider, store.clone()), Some(&old));
    let status = new.status().await.unwrap();
    assert!(
        old.is_finished(),
        "the successor loaded before its predecessor ended"
    );
    assert!(status.has_refresh_token);
    assert_eq!(stored_refresh(&store).as_deref(), Some("rt1"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_provider_is_retried_with_backoff_before_expiry_while_the_token_serves() {
    let (site, provider, _) = site_with(300, Duration::ZERO);
    assert_eq!(token(&site, None).await.access_token, "at1");
    provider.fail.store(3, Ordering::SeqCst);
    // Refresh-ahead fails three times, backing off; callers meanwhile get
    // the still-valid token without a call of their own.
    tokio::time::sleep(Duration::from_secs(200)).await;
    let during = provider.calls();
    assert!(during >= 2, "refresh-ahead ran: {during}");
    assert_eq!(token(&site, None).await.access_token, "at1");
    assert_eq!(
        provider.calls(),
        during,
        "a get while backing off made a call"
    );
    tokio::time::sleep(Duration::from_secs(95)).await;
    let at = provider.at.lock().unwrap().clone();
    assert_eq!(at.len(), 5, "three failures, then a success: {at:?}");
    let gaps: Vec<Duration> = at.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "backoff grows: {gaps:?}"
    );
    assert!(
        at[4] < Duration::from_secs(300),
        "renewed before expiry: {at:?}"
    );
    assert_eq!(token(&site, None).await.access_token, "at5");
    assert_eq!(provider.calls(), 5);
}
