//! The site's rules, in-process: a scripted provider, a memory store and
//! tokio's paused clock, so counts and order are exact and nothing waits
//! on the wall clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use token_proto::{ErrorCode, LoginMode};
use tokio::time::Instant;

use super::{Deps, Served, SiteHandle, Standalone, TtlFrom};
use crate::config::{Config, SiteConfig};
use crate::error::ApiError;
use crate::kit::Provider;
use crate::store::{Record, Store};

fn config(extra: &str) -> Arc<SiteConfig> {
    let text = format!(
        "[site.corp]\ntoken_url = \"https://auth.example/token\"\nauthorize_url = \"https://auth.example/authorize\"\nclient_id = \"c\"\nscopes = [\"read\", \"write\"]\n{extra}"
    );
    let cfg = Config::parse(Path::new("config.toml"), &text);
    assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
    cfg.sites["corp"].clone()
}

fn deps(provider: &Arc<Provider>, store: Store) -> Arc<Deps> {
    Arc::new(Deps::scripted(provider.http(), store))
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
fn site_with(lifetime: u64, delay: Duration) -> (Standalone, Arc<Provider>, Store) {
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
async fn after_a_restart_three_second_tokens_cause_one_refresh() {
    // Counted conservatively, a 3 s token lives 2 s here.
    let (site, provider, _) = site_with(3, Duration::from_millis(5));
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
        // 9 s counted from the request, less a second: 8 s.
        warned += usize::from(t.warning.as_deref().is_some_and(|w| w.contains("8s")));
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
        first.contains("valid for 29s, less than the 60s the git credential helper wants"),
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
    // The user's own --min-ttl is measured against the conservative
    // expiry: a provider's 60-s token is 59 s here.
    let t = token(&site, Some(60)).await;
    let w = t.warning.clone().unwrap_or_default();
    assert!(
        w.contains("valid for 59s, less than the --min-ttl of 60s"),
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
            warning.contains("valid for 3598s") && warning.contains("7200s"),
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

/// How a login that is to fail ends.
async fn failed(
    mut progress: tokio::sync::watch::Receiver<crate::login::Progress>,
) -> crate::site::SiteError {
    let done = progress
        .wait_for(|p| matches!(p, crate::login::Progress::Done(_)))
        .await
        .unwrap()
        .clone();
    let crate::login::Progress::Done(Err(e)) = done else {
        panic!("the login went on")
    };
    e
}

#[tokio::test(start_paused = true)]
async fn logout_cancels_a_pending_login() {
    let cfg = config("");
    let provider = Provider::new(3600, Duration::from_millis(5));
    let site = SiteHandle::spawn(cfg, deps(&provider, Store::Memory(Arc::default())), None);
    let ticket = site.login(LoginMode::Browser).await.unwrap();
    let progress = ticket.progress.clone();
    site.logout().await.unwrap();
    let e = failed(progress).await;
    assert_eq!(ApiError::from(e).code, ErrorCode::LoginIncomplete);
    assert_eq!(site.status().await.unwrap().state, "login_required");
}

/// A logged-in site whose provider takes 20 s a refresh, 1 s into a `get`'s
/// refresh: the site, its store and the waiting `get`.
async fn refreshing() -> (
    Standalone,
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
    site.stop().unwrap();
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
    old.stop().unwrap();
    let provider = Provider::new(3600, Duration::ZERO);
    let new = SiteHandle::spawn(config(""), deps(&provider, store.clone()), Some(&old));
    // A get waits for the load, which waits for the predecessor.
    assert!(matches!(
        new.get(Vec::new(), None).await,
        Ok(Served::Token(_))
    ));
    assert!(
        old.is_finished(),
        "the successor loaded before its predecessor ended"
    );
    assert!(new.status().await.unwrap().has_refresh_token);
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

/// Without a deadline on the store, these waits never end: bounded, so
/// such a test fails instead of hanging.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("{what} never answered"))
}

/// A logged-in site (a refresh token stored) on a keyring that answers
/// until the test makes it stuck. Its first message comes from the test.
fn flaky_site() -> (Standalone, Arc<Provider>, Arc<crate::store::Flaky>) {
    let cfg = config("");
    let provider = Provider::new(3600, Duration::from_millis(10));
    let flaky = Arc::new(crate::store::Flaky::default());
    flaky.records.lock().unwrap().insert(
        "corp".into(),
        Record::refresh_only(cfg.identity(), "rt0", cfg.scopes.clone(), 1_799_999_000),
    );
    let site = SiteHandle::spawn(cfg, deps(&provider, Store::Flaky(flaky.clone())), None);
    (site, provider, flaky)
}

/// The refresh token a flaky keyring holds for the site.
fn flaky_refresh(flaky: &crate::store::Flaky) -> String {
    let records = flaky.records.lock().unwrap();
    records["corp"]
        .refresh_token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned()
}

/// A keyring that stops answering (an unlock prompt nobody sees) costs the
/// site a store error after the deadline: the token call's result is
/// served from memory, `status` answers meanwhile, and the next save,
/// once the keyring is back, persists the newest login.
#[tokio::test(start_paused = true)]
async fn a_stuck_keyring_costs_a_store_error_not_a_stalled_site() {
    let (site, provider, flaky) = flaky_site();
    let stored = || flaky_refresh(&flaky);
    assert_eq!(bounded("get", token(&site, None)).await.access_token, "at1");
    assert_eq!(stored(), "rt1");

    flaky.stuck.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let renewing = tokio::spawn({
        let site = site.clone();
        async move { site.renew().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    match bounded("renew", renewing).await.unwrap().unwrap() {
        Served::Token(t) => assert_eq!(t.access_token, "at2"),
        Served::NeedLogin => panic!("a login was asked for"),
    }
    let waited = start.elapsed();
    assert!(
        waited <= crate::store::DEADLINE + Duration::from_secs(1),
        "the renewal waited {waited:?}"
    );
    let status = bounded("status", site.status()).await.unwrap();
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("did not answer within 5 s"), "{error}");
    assert_eq!(stored(), "rt1", "the stuck keyring took no write");
    // Memory keeps serving the newest token, without a provider call.
    assert_eq!(bounded("get", token(&site, None)).await.access_token, "at2");
    assert_eq!(provider.calls(), 2);

    flaky.stuck.store(false, Ordering::SeqCst);
    match bounded("renew", site.renew()).await.unwrap() {
        Served::Token(t) => assert_eq!(t.access_token, "at3"),
        Served::NeedLogin => panic!("a login was asked for"),
    }
    assert_eq!(stored(), "rt3");
    let status = site.status().await.unwrap();
    assert_eq!(status.last_error, None, "{status:?}");
}

/// A save that the keyring does not answer stalls nothing: while it waits
/// (up to the deadline), `status` answers and the token in hand is served
/// at once; the rotated refresh token is not handed out unsaved before the
/// deadline; past it the site says so and tries the save again by itself.
#[tokio::test(start_paused = true)]
async fn a_slow_save_stalls_neither_status_nor_a_held_token() {
    let (site, provider, flaky) = flaky_site();
    let stored = || flaky_refresh(&flaky);
    assert_eq!(bounded("get", token(&site, None)).await.access_token, "at1");
    flaky.stuck.store(true, Ordering::SeqCst);
    let renewing = tokio::spawn({
        let site = site.clone();
        async move { site.renew().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(provider.calls(), 2, "the renewal's call landed");
    let quick = Duration::from_secs(1);
    let status = tokio::time::timeout(quick, site.status())
        .await
        .expect("status waited for the save")
        .unwrap();
    assert!(status.has_refresh_token);
    let held = tokio::time::timeout(quick, token(&site, None))
        .await
        .expect("a held token waited for the save");
    assert_eq!(
        held.access_token, "at1",
        "served before its refresh token was saved"
    );
    assert!(!renewing.is_finished(), "the renewal waits for its save");
    match bounded("renew", renewing).await.unwrap().unwrap() {
        Served::Token(t) => {
            assert_eq!(t.access_token, "at2");
            let w = t.warning.clone().unwrap_or_default();
            assert!(w.contains("will not survive a restart"), "{w}");
        }
        Served::NeedLogin => panic!("a login was asked for"),
    }
    let error = site.status().await.unwrap().last_error.unwrap_or_default();
    assert!(error.contains("did not answer within 5 s"), "{error}");
    // The keyring is back: the site saves again on its own.
    flaky.stuck.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(stored(), "rt2");
    assert_eq!(site.status().await.unwrap().last_error, None);
    assert_eq!(provider.calls(), 2);
}

/// A keyring that does not answer the first load is asked again by the
/// next message: the login it holds is found once it answers.
#[tokio::test(start_paused = true)]
async fn a_load_past_the_deadline_is_tried_again() {
    let (site, provider, flaky) = flaky_site();
    flaky.stuck.store(true, Ordering::SeqCst);
    let status = bounded("status", site.status()).await.unwrap();
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("has not answered yet"), "{error}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = bounded("status", site.status()).await.unwrap();
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("did not answer within 5 s"), "{error}");
    // That status asked again; a keyring still stuck misses that deadline too.
    tokio::time::sleep(Duration::from_secs(6)).await;

    flaky.stuck.store(false, Ordering::SeqCst);
    assert_eq!(bounded("get", token(&site, None)).await.access_token, "at1");
    assert_eq!(provider.calls(), 1, "the stored refresh token was used");
}

#[tokio::test(start_paused = true)]
async fn expiry_counts_from_when_the_request_was_sent_less_a_second() {
    // 20 s tokens that take 1.5 s to arrive: the provider's `exp` is at
    // least 20 s after the request was sent, so tokend says 19 s from then.
    let (site, _, _) = site_with(20, Duration::from_millis(1500));
    let t = token(&site, None).await;
    assert_eq!(t.expires_at, Some(1_800_000_019));
    let status = site.status().await.unwrap();
    assert_eq!(status.expires_at, Some(1_800_000_019));
}

fn retrying(e: super::SiteError) -> String {
    let e = ApiError::from(e);
    assert_eq!(e.code, ErrorCode::ProviderError, "{e}");
    assert!(e.message.contains("503"), "the provider's failure: {e}");
    assert!(e.message.contains("tries again in"), "the next try: {e}");
    e.message
}

#[tokio::test(start_paused = true)]
async fn through_an_outage_a_token_is_served_only_while_the_floor_is_left() {
    // 20 s tokens live 19 s as tokend counts them; the floor is 2 s.
    let (site, provider, _) = site_with(20, Duration::ZERO);
    assert_eq!(token(&site, None).await.access_token, "at1");
    provider.fail.store(1000, Ordering::SeqCst);
    // Refresh-ahead (due 11.4–12 s in) fails and backs off.
    tokio::time::sleep(Duration::from_millis(16_500)).await;
    assert!(provider.calls() >= 2, "refresh-ahead ran");
    let calls = provider.calls();
    assert_eq!(token(&site, None).await.access_token, "at1", "2.5 s left");
    assert_eq!(provider.calls(), calls, "no call of the caller's own");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // 1.5 s left: below the floor, the caller hears why and when, at once.
    let calls = provider.calls();
    let e = site.get(Vec::new(), None).await.unwrap_err();
    retrying(e);
    assert_eq!(provider.calls(), calls, "no call of the caller's own");
    // Past expiry: the same answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    retrying(site.get(Vec::new(), None).await.unwrap_err());
}

#[tokio::test(start_paused = true)]
async fn with_nothing_held_a_failing_provider_is_asked_once_and_callers_hear_when_next() {
    let (site, provider, _) = site_with(20, Duration::ZERO);
    provider.fail.store(1000, Ordering::SeqCst);
    let first = retrying(site.get(Vec::new(), None).await.unwrap_err());
    assert_eq!(provider.calls(), 1);
    let second = retrying(site.get(Vec::new(), None).await.unwrap_err());
    assert_eq!(
        provider.calls(),
        1,
        "the provider is left alone until the retry"
    );
    assert_eq!(first, second);
}

#[tokio::test(start_paused = true)]
async fn a_token_that_expired_before_it_arrived_is_never_served() {
    // 2 s tokens that take 1.5 s: counted from the request less a second,
    // expired on arrival. The caller hears it from the provider's side, no
    // login (a refresh token is in hand).
    let (site, _, _) = site_with(2, Duration::from_millis(1500));
    let e = ApiError::from(site.get(Vec::new(), None).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::ProviderError, "{e}");
    assert!(e.message.contains("expired before it arrived"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn after_one_failure_the_retry_comes_while_the_token_still_serves() {
    // 20 s tokens (19 s counted, floor 2 s); refresh-ahead's first attempt
    // fails, its retry must land before the token drops below the floor,
    // so no caller ever goes without.
    let (site, provider, _) = site_with(20, Duration::ZERO);
    token(&site, None).await;
    provider.fail.store(1, Ordering::SeqCst);
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(e) = site.get(Vec::new(), None).await {
            panic!("a caller went without: {e}");
        }
    }
    assert_eq!(provider.calls(), 3, "the first token, a failure, the retry");
}

#[tokio::test(start_paused = true)]
async fn after_two_failures_one_more_try_comes_before_expiry() {
    // The retry before the floor fails too: one more try before expiry,
    // not the doubled backoff, so callers go without for about a second.
    let (site, provider, _) = site_with(20, Duration::ZERO);
    token(&site, None).await;
    provider.fail.store(2, Ordering::SeqCst);
    let mut without = 0;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(e) = site.get(Vec::new(), None).await {
            retrying(e);
            without += 1;
        }
    }
    assert!(
        without <= 12,
        "callers went without for {without} tenths of a second"
    );
    assert_eq!(
        provider.calls(),
        4,
        "the first token, two failures, the retry"
    );
}

/// A client-credentials site renews with the grant itself, and has no
/// login to start: a login asked of its actor says what to run instead
/// (the `login` handler makes a token call for it).
#[tokio::test]
async fn a_client_credentials_site_fetches_its_token_and_starts_no_login() {
    let cfg = config("grant = \"client_credentials\"\nclient_secret_cmd = \"echo s\"\n");
    let provider = Provider::new(3600, Duration::ZERO);
    let site = SiteHandle::spawn(cfg, deps(&provider, Store::Memory(Arc::default())), None);
    token(&site, None).await;
    assert_eq!(provider.calls(), 1);
    let e = site.login(LoginMode::Browser).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("logs in without the user: `token get corp` fetches a token"),
        "{e}"
    );
}

/// After a login nobody answered, callers without a person at them start
/// none (the cooldown) until an interactive one asks.
#[tokio::test(start_paused = true)]
async fn after_an_unanswered_login_background_callers_start_none_until_a_person_asks() {
    let cfg = config("");
    let provider = Provider::new(3600, Duration::from_millis(5));
    let deps = deps(&provider, Store::Memory(Arc::default()));
    deps.login_timeout.set(Duration::from_secs(10));
    let site = SiteHandle::spawn(cfg, deps, None);
    let first = site.login_as(LoginMode::Browser, false).await.unwrap();
    assert!(
        first.opener.is_some(),
        "the first background caller may log in"
    );
    let e = failed(first.progress.clone()).await;
    assert!(
        matches!(e, crate::site::SiteError::LoginTimedOut { .. }),
        "{e}"
    );
    drop(first);
    for _ in 0..3 {
        let held = site
            .login_as(LoginMode::Browser, false)
            .await
            .err()
            .unwrap();
        let api = ApiError::from(held);
        assert_eq!(api.code, ErrorCode::LoginRequired);
        assert!(api.message.contains("token login"), "{}", api.message);
        assert!(api.message.contains("login_cooldown"), "{}", api.message);
    }
    let status = site.status().await.unwrap();
    assert!(status.login_cooldown_until.is_some(), "{status:?}");
    // A person asks: a login starts, and the cooldown is over.
    let asked = site.login_as(LoginMode::Browser, true).await.unwrap();
    assert!(asked.opener.is_some());
    assert!(site.status().await.unwrap().login_cooldown_until.is_none());
    // A login left open by a caller that gave up is not replaced by a
    // background caller (no second tab), only joined by a person.
    drop(asked);
    let e = site
        .login_as(LoginMode::Browser, false)
        .await
        .err()
        .unwrap();
    assert_eq!(ApiError::from(e).code, ErrorCode::LoginRequired);
    assert!(site
        .login_as(LoginMode::Browser, true)
        .await
        .unwrap()
        .opener
        .is_some());
}

/// `renew_at` is when refresh-ahead replaces the token: what a cache of it
/// (cargo's) may last until; never past its expiry, and the status's
/// `next_refresh`.
#[tokio::test(start_paused = true)]
async fn a_token_says_when_it_will_be_renewed() {
    let (site, _provider, _) = site_with(3600, Duration::from_millis(5));
    let t = token(&site, None).await;
    let (renew, expires) = (t.renew_at.unwrap(), t.expires_at.unwrap());
    assert!(renew < expires, "{renew} < {expires}");
    assert!(
        expires - renew >= 60,
        "renewed well ahead: {renew} {expires}"
    );
    assert_eq!(site.status().await.unwrap().next_refresh, Some(renew));
}

/// A keyring slow to answer the first load (an unlock prompt) stalls
/// neither `status`, which says what it waits for, nor is a `get` told
/// "needs login" before the store has answered: it waits, then is served
/// from the stored login.
#[tokio::test(start_paused = true)]
async fn a_slow_first_load_stalls_no_status_and_a_get_waits_for_it() {
    let (site, provider, flaky) = flaky_site();
    *flaky.delay.lock().unwrap() = Duration::from_secs(3);
    let getting = tokio::spawn({
        let site = site.clone();
        async move { site.get(Vec::new(), None).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quick = Duration::from_secs(2);
    let status = tokio::time::timeout(quick, site.status())
        .await
        .expect("status waited for the load")
        .unwrap();
    assert_eq!(status.state, "not_loaded");
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("has not answered yet"), "{error}");
    assert!(!getting.is_finished(), "the get did not wait for the load");
    tokio::time::sleep(Duration::from_secs(4)).await;
    match bounded("get", getting).await.unwrap().unwrap() {
        Served::Token(t) => assert_eq!(t.access_token, "at1"),
        Served::NeedLogin => panic!("served \"needs login\" before the store answered"),
    }
    assert_eq!(provider.calls(), 1, "the stored refresh token was used");
    let status = bounded("status", site.status()).await.unwrap();
    assert!(status.has_refresh_token);
    assert_eq!(status.last_error, None);
}

/// A keyring slow to delete stalls neither logout's answer nor the
/// `status` after it; a delete past the deadline is said in `status` and
/// tried again until the keyring has removed the login.
#[tokio::test(start_paused = true)]
async fn a_slow_delete_stalls_neither_logout_nor_status() {
    let (site, _provider, flaky) = flaky_site();
    assert_eq!(bounded("get", token(&site, None)).await.access_token, "at1");
    assert_eq!(flaky_refresh(&flaky), "rt1");
    *flaky.delay.lock().unwrap() = Duration::from_secs(3);
    let quick = Duration::from_secs(1);
    let out = tokio::time::timeout(quick, site.logout())
        .await
        .expect("logout waited for the delete")
        .unwrap();
    assert!(out.refresh.is_some(), "the tokens to revoke are handed out");
    let status = tokio::time::timeout(quick, site.status())
        .await
        .expect("status waited for the delete")
        .unwrap();
    assert!(!status.has_refresh_token && !status.has_access_token);
    assert!(flaky.records.lock().unwrap().contains_key("corp"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !flaky.records.lock().unwrap().contains_key("corp"),
        "deleted off the actor"
    );

    // A delete the keyring does not answer: said, and tried again.
    *flaky.delay.lock().unwrap() = Duration::ZERO;
    assert!(matches!(
        bounded("get", site.get(Vec::new(), None)).await.unwrap(),
        Served::NeedLogin
    ));
    flaky.records.lock().unwrap().insert(
        "corp".into(),
        Record::refresh_only(String::new(), "stale", Vec::new(), 0),
    );
    flaky.stuck.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(quick, site.logout())
        .await
        .expect("logout waited for a stuck delete")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let error = tokio::time::timeout(quick, site.status())
        .await
        .expect("status waited")
        .unwrap()
        .last_error
        .unwrap_or_default();
    assert!(error.contains("cannot remove the login"), "{error}");
    flaky.stuck.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !flaky.records.lock().unwrap().contains_key("corp"),
        "the delete was retried"
    );
    assert_eq!(site.status().await.unwrap().last_error, None);
}
