//! Story: an expired access token is refreshed with the refresh token, once,
//! without a new login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::thread;
use std::time::{Duration, Instant};

use tokend_e2e::{serve_corp, Env, Provider};

/// A provider whose access tokens live 4 s (3 s as tokend counts them:
/// from the request, less a second) and a file-store world with
/// `[site.corp]`: logs in, stops the daemon and waits until the access token
/// has expired: with no daemon running, nothing can refresh it ahead
/// meanwhile. The restarted daemon holds only the stored refresh token.
/// Returns the provider, the world and the expired token.
fn expired_after_restart() -> (Provider, Env, String) {
    let provider = Provider::start(4);
    let mut env = Env::with_store("file");
    env.write_config(&Env::site_config("corp", &provider));
    let mut daemon = env.daemon();
    let first = env.token(&["get", "corp"]);
    first.ok();
    let issued = Instant::now();
    daemon.stop();
    assert_eq!(provider.stats().grant("refresh_token"), 0);
    let until = issued + Duration::from_millis(4600);
    thread::sleep(until.saturating_duration_since(Instant::now()));
    let old = first.line().to_owned();
    (provider, env, old)
}

#[test]
fn expired_token_is_refreshed_exactly_once() {
    // Access tokens live 4 s at this provider.
    let (provider, mut env, old) = expired_after_restart();
    let _daemon = env.daemon();

    let second = env.token(&["get", "corp"]);
    second.ok();
    let new = second.line().to_owned();
    let stats = provider.stats();
    assert_ne!(new, old, "an expired token must not be handed out");
    assert_eq!(
        stats.grant("refresh_token"),
        1,
        "exactly one refresh: {stats:?}"
    );
    assert_eq!(
        stats.grant("authorization_code"),
        1,
        "no new login: {stats:?}"
    );
    assert_eq!(env.browser_launches(), 1, "no second browser");

    let (status, body) = provider.userinfo(&new);
    assert_eq!(status, 200, "the refreshed token works: {body}");
}

#[test]
fn min_ttl_forces_a_refresh_of_a_still_valid_token() {
    // 30 s tokens, 29 s as tokend counts them (from the request, less a
    // second): after 2.5 s the cached one has < 27 s left, a new one more.
    let (provider, env, _daemon) = serve_corp(30);

    let first = env.token(&["get", "corp"]);
    first.ok();
    thread::sleep(Duration::from_millis(2500));

    let out = env.token(&["get", "corp", "--min-ttl", "27s"]);
    out.ok();
    let stats = provider.stats();
    assert_ne!(
        out.line(),
        first.line(),
        "--min-ttl must not return the old token"
    );
    assert_eq!(
        stats.grant("refresh_token"),
        1,
        "--min-ttl refreshes first: {stats:?}"
    );
    assert_eq!(env.browser_launches(), 1, "no new login for --min-ttl");
}

#[test]
fn a_min_ttl_beyond_the_lifetime_refreshes_an_aged_token_once_and_serves_the_fresh_one() {
    // 20 s tokens, refreshed ahead at 12-12.7 s; --min-ttl 60 can never be met.
    let (provider, env, _daemon) = serve_corp(20);
    let json = |out: &tokend_e2e::Output| out.ok().json();
    env.token(&["get", "corp"]).ok();
    let first = json(&env.token(&["get", "corp", "--min-ttl", "60", "--format", "json"]));
    let issued = Instant::now();
    let refreshes = provider.stats().grant("refresh_token");
    assert_eq!(refreshes, 1, "the login's token falls short: one refresh");

    // 13 s of 20 left: a fresh token is much better than this one.
    thread::sleep(Duration::from_secs(7).saturating_sub(issued.elapsed()));
    let out = env.token(&["get", "corp", "--min-ttl", "60", "--format", "json"]);
    let second = json(&out);
    assert!(
        out.stderr.contains("less than the --min-ttl of 60s"),
        "the warning stays: {out}"
    );
    assert_ne!(second["access_token"], first["access_token"], "{out}");
    let left = second["expires_at"].as_u64().unwrap() - tokend_e2e::now_unix();
    assert!(left >= 17, "the best token there is: {left} s left ({out})");
    assert_eq!(
        provider.stats().grant("refresh_token"),
        refreshes + 1,
        "one refresh for it"
    );

    // Asked again at once: that token is the best there is, no new call.
    let third = json(&env.token(&["get", "corp", "--min-ttl", "60", "--format", "json"]));
    assert_eq!(third["access_token"], second["access_token"]);
    assert_eq!(provider.stats().grant("refresh_token"), refreshes + 1);
}

#[test]
fn concurrent_gets_of_an_expired_token_share_one_refresh() {
    let (provider, mut env, old) = expired_after_restart();
    // Whatever refresh comes next is slow, so every caller overlaps with it.
    provider.delay(1000, 1);
    let _daemon = env.daemon();
    let outs = env.token_concurrently(4, &["get", "corp"]);
    for o in &outs {
        o.ok();
        assert_ne!(o.line(), old, "no expired token handed out");
    }
    let stats = provider.stats();
    assert_eq!(
        stats.grant("refresh_token"),
        1,
        "one refresh for all callers: {stats:?}"
    );
    assert_eq!(env.browser_launches(), 1);
}
