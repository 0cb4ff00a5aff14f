//! The fast path of `get` (`site::held`), in-process on tokio's paused
//! clock: a plain `get` is answered from the site's published token
//! without waking its actor, and never past expiry, after a logout or
//! with settings older than the site's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use token_proto::{GetRequest, LoginPolicy};
use tokio::time::Instant;

use crate::daemon::Daemon;
use crate::kit::Provider;
use crate::site::{Deps, PARK_AFTER};

/// A daemon with one site, `[site.a]` plus `extra`, its login stored;
/// the provider's tokens live `lifetime` s and each call takes a second.
fn one_site(extra: &str, lifetime: u64) -> (tempfile::TempDir, Arc<Provider>, Arc<Daemon>) {
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::new(lifetime, Duration::from_secs(1));
    let config = format!(
        "[site.a]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\nscopes = [\"read\"]\n{extra}"
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let store = crate::kit::logged_in(&crate::config::Config::parse(&path, &config), &["a"]);
    let deps = Deps::scripted(provider.http(), store);
    let d = Daemon::with_deps(path.clone(), crate::config::Config::load(&path), deps);
    (dir, provider, Arc::new(d))
}

fn plain() -> GetRequest {
    GetRequest {
        site: "a".to_owned(),
        login: LoginPolicy::Never,
        ..GetRequest::default()
    }
}

/// Two plain `get`s: a token is published once it has been served before.
async fn get_twice(d: &Arc<Daemon>) -> token_proto::TokenReply {
    get(d).await.unwrap();
    get(d).await.unwrap()
}

/// A `get` as a client's: the fast path, else the actor.
async fn get(d: &Arc<Daemon>) -> Result<token_proto::TokenReply, crate::error::ApiError> {
    super::token_for(d, plain()).await
}

/// The site's settings edited (`refresh_before` added) and reloaded.
fn new_settings(dir: &tempfile::TempDir, d: &Daemon) {
    let path = dir.path().join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, config + "refresh_before = \"5m\"\n").unwrap();
    d.reload();
}

async fn running(d: &Daemon) -> bool {
    !d.sites().running_names().await.is_empty()
}

#[tokio::test(start_paused = true)]
async fn a_plain_get_is_answered_from_the_published_token_without_waking_the_site() {
    let (_dir, provider, d) = one_site("", 3600);
    let first = get(&d).await.unwrap();
    assert!(
        super::get::fast(&d, &plain()).is_none(),
        "published for a site asked once"
    );
    get(&d).await.unwrap();
    tokio::time::sleep(PARK_AFTER * 2).await;
    assert!(!running(&d).await, "parked");
    for _ in 0..3 {
        let again = get(&d).await.unwrap();
        assert_eq!(again.access_token, first.access_token);
        assert_eq!(again.renew_at, first.renew_at);
    }
    assert!(super::get::fast(&d, &plain()).is_some());
    assert!(!running(&d).await, "the parked site was not woken");
    assert_eq!(provider.calls(), 1);
    // Asked for more than the token has left: the actor answers.
    let long = GetRequest {
        min_ttl: Some(3599),
        ..plain()
    };
    assert!(super::get::fast(&d, &long).is_none());
    // Scopes, an ID token: the actor's.
    let scoped = GetRequest {
        scopes: vec!["read".to_owned()],
        ..plain()
    };
    assert!(super::get::fast(&d, &scoped).is_none());
    let id = GetRequest {
        token: Some(token_proto::TokenKind::IdToken),
        ..plain()
    };
    assert!(super::get::fast(&d, &id).is_none());
}

/// The `last_used` trap: a client-credentials token nobody used lapses;
/// one used only through the fast path is still renewed ahead, so no
/// caller waits on the provider, and none is ever served an expired one.
#[tokio::test(start_paused = true)]
async fn a_client_credentials_site_used_only_through_the_fast_path_is_renewed_ahead() {
    let (_dir, provider, d) = one_site(
        // A variable every test has: no command to wait for on the paused clock.
        "grant = \"client_credentials\"\nclient_secret_env = \"PATH\"\n",
        60,
    );
    get(&d).await.unwrap();
    let mut fast = 0;
    let mut tokens = std::collections::BTreeSet::new();
    // Ten lifetimes, a get every 2 s.
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        fast += usize::from(super::get::fast(&d, &plain()).is_some());
        let asked = Instant::now();
        let t = get(&d).await.unwrap();
        assert_eq!(
            asked.elapsed(),
            Duration::ZERO,
            "a caller waited on the provider"
        );
        let now = d.deps().clock.now();
        let left = t.expires_at.unwrap() as f64 - now;
        assert!(left > 0.0, "served {left} s past expiry");
        tokens.insert(t.access_token.clone());
    }
    assert!(fast > 250, "only {fast} of 300 gets took the fast path");
    // About one renewal per 60-s token (refreshed at 60-63 % of its life).
    let calls = provider.calls();
    assert!((10..=20).contains(&calls), "{calls} token calls");
    assert!(tokens.len() as u64 >= calls - 1, "{} tokens", tokens.len());
}

#[tokio::test(start_paused = true)]
async fn a_logout_takes_the_published_token_back() {
    let (_dir, _provider, d) = one_site("", 3600);
    get_twice(&d).await;
    assert!(super::get::fast(&d, &plain()).is_some());
    d.site("a").unwrap().logout().await.unwrap();
    assert!(super::get::fast(&d, &plain()).is_none());
    let e = get(&d).await.unwrap_err();
    assert_eq!(
        e.body().code,
        token_proto::ErrorCode::LoginRequired,
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn new_settings_are_not_answered_with_the_old_ones() {
    let (dir, _provider, d) = one_site("", 3600);
    get_twice(&d).await;
    tokio::time::sleep(PARK_AFTER * 2).await;
    assert!(super::get::fast(&d, &plain()).is_some());
    new_settings(&dir, &d);
    assert!(
        super::get::fast(&d, &plain()).is_none(),
        "the old settings' answer"
    );
    // The actor answers (with the old settings while the registry has
    // yet to hand it the new ones), and publishes again with the new.
    for _ in 0..3 {
        get(&d).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert!(super::get::fast(&d, &plain()).is_some());
}

/// A token that expires: served from the cell until the serve margin, then
/// the actor's (here nothing renews it: a refused refresh).
#[tokio::test(start_paused = true)]
async fn nothing_is_served_from_the_cell_past_the_serve_margin() {
    let (_dir, provider, d) = one_site("", 100);
    let first = get_twice(&d).await;
    let expires = first.expires_at.unwrap() as f64;
    provider
        .refuse
        .store(true, std::sync::atomic::Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = d.deps().clock.now();
        if now > expires + 5.0 {
            break;
        }
        if super::get::fast(&d, &plain()).is_some() {
            assert!(
                expires - now > 0.0,
                "the cell served at {now}, past {expires}"
            );
        }
        if let Ok(t) = get(&d).await {
            assert!(t.expires_at.unwrap() as f64 > now);
        }
    }
    assert!(super::get::fast(&d, &plain()).is_none());
}

/// What a connection thread keeps of its answer (`Kept`) is let go as soon
/// as the cell or the settings change: new settings, a logout.
#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn what_a_connection_thread_keeps_follows_the_cell() {
    let (dir, _provider, d) = one_site("", 3600);
    let first = get_twice(&d).await;
    let mut kept = super::Kept::default();
    let token = |kept: &mut super::Kept| {
        super::get::fast_kept(&d, &plain(), kept).map(|r| r.reply().access_token.clone())
    };
    assert_eq!(token(&mut kept), Some(first.access_token.clone()));
    assert_eq!(token(&mut kept), Some(first.access_token.clone()), "kept");
    // New settings: not answered with the old ones' answer.
    new_settings(&dir, &d);
    assert_eq!(token(&mut kept), None, "the old settings' answer");
    for _ in 0..3 {
        get(&d).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert!(token(&mut kept).is_some(), "published again, kept again");
    // A logout takes it back at once.
    d.site("a").unwrap().logout().await.unwrap();
    assert_eq!(token(&mut kept), None);
    assert!(get(&d).await.is_err());
    assert_eq!(token(&mut kept), None);
}
