//! Story: provider faults (a 5xx, a timeout) during refresh-ahead. The
//! daemon keeps serving the still-valid token without calling the provider
//! while it backs off, `token status --json` shows the failure, and the
//! backoff retry (10 s) recovers before the token expires.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokend_e2e::{now_unix, Env, Provider};

/// Faults of `kind` hit the refresh-ahead: the valid token stays in service
/// without further provider calls, status reports the failure, and the
/// backoff retry recovers.
fn faults_during_refresh_ahead(kind: &str) {
    // 30 s tokens refreshed 25 s (+10–20 %) before expiry: the first attempt
    // is due within ~2.5 s of the login, the first retry (10 s ± 20 %) falls
    // well before expiry.
    let provider = Provider::start(30);
    let mut env = Env::new();
    env.set("TOKEND_HTTP_TIMEOUT", "2");
    env.write_config(&format!(
        "{}refresh_before = \"25s\"\n",
        Env::site_config("corp", &provider)
    ));
    let mut daemon = env.daemon();
    let first = env.token(&["get", "corp"]);
    first.ok();
    let t1 = first.line().to_owned();
    provider.fault(kind, 1);

    let st = env.wait_site_status(
        "corp",
        Duration::from_secs(20),
        "last_error after a fault",
        |s| !s["last_error"].is_null(),
    );
    assert_eq!(
        provider.stats().grant("refresh_token"),
        1,
        "one failed attempt so far"
    );
    assert!(daemon.alive(), "tokend died on a {kind} fault");
    assert!(
        st["expires_at"].as_u64().is_some_and(|e| e > now_unix()),
        "the old token is still valid: {st}"
    );

    // While backing off, a get is served the still-valid token, no call.
    let calls = provider.stats().token_calls;
    let out = env.token(&["get", "corp", "--no-login"]);
    out.ok();
    assert_eq!(out.line(), t1, "the still-valid token keeps being served");
    assert_eq!(
        provider.stats().token_calls,
        calls,
        "no token call while backing off"
    );

    // The retry succeeds: a new token, the error cleared.
    let st = env.wait_site_status(
        "corp",
        Duration::from_secs(25),
        "recovery after the fault",
        |s| s["last_error"].is_null(),
    );
    let stats = provider.stats();
    assert!(
        stats.grant("refresh_token") >= 2,
        "a retry happened: {stats:?}"
    );
    let out = env.token(&["get", "corp", "--no-login"]);
    out.ok();
    assert_ne!(out.line(), t1, "a new token after recovery: {st}");
    let (status, body) = provider.userinfo(out.line());
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.browser_launches(), 1, "no login for a transient fault");
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}

#[test]
fn a_500_during_refresh_ahead_keeps_the_token_and_recovers() {
    faults_during_refresh_ahead("500");
}

#[test]
fn a_timeout_during_refresh_ahead_keeps_the_token_and_recovers() {
    faults_during_refresh_ahead("timeout");
}
