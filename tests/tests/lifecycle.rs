//! Story: a token's life in a running daemon. Refreshes happen ahead of
//! expiry with nobody asking; concurrent callers share one token-endpoint
//! call; a slow refresh of one site never holds up another; a
//! refused refresh token leads to exactly one browser login that every
//! waiting caller joins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Child;
use std::thread;
use std::time::Duration;

use tokend_e2e::{
    exit, files_under, form_encode, http, now_unix, one_token, serve_corp, serve_corp_with_store,
    tests_dir, wait_output, wait_outputs, wait_until, Env, Provider, Value,
};

fn find_key(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            if k == key {
                x.as_str().map(str::to_owned)
            } else {
                find_key(x, key)
            }
        }),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// The refresh token the file store holds (any `refresh_token` string in a
/// JSON file under the state dir).
fn stored_refresh_token(env: &Env) -> String {
    for f in files_under(&env.state_dir()) {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(rt) = find_key(&v, "refresh_token") {
            return rt;
        }
    }
    panic!(
        "no refresh_token in the file store under {}",
        env.state_dir().display()
    );
}

/// RFC 7009 revocation of a refresh token, as the public client.
fn revoke_refresh_token(provider: &Provider, rt: &str) {
    let body = format!(
        "token={}&token_type_hint=refresh_token&client_id=public-pkce",
        form_encode(rt)
    );
    let (status, text) = http(
        "POST",
        &format!("{}/token/revocation", provider.issuer()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&body),
    );
    assert_eq!(status, 200, "revocation: {text}");
}

#[test]
fn refresh_happens_ahead_with_nobody_calling() {
    let (provider, env, _daemon) = serve_corp(6);

    let first = env.token(&["get", "corp"]);
    first.ok();
    let t1 = first.line().to_owned();

    // The plan: a next refresh in the future, before the token expires.
    let st = env.site_status("corp");
    let now = now_unix();
    let expires_at = st["expires_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_at: {st}"));
    let next = st["next_refresh"]
        .as_u64()
        .unwrap_or_else(|| panic!("next_refresh: {st}"));
    assert!(
        next + 1 >= now,
        "next_refresh {next} is in the past (now {now}): {st}"
    );
    assert!(
        next < expires_at,
        "next_refresh {next} is not before expiry {expires_at}: {st}"
    );
    assert!(
        st["last_refresh"].as_u64().is_some(),
        "last_refresh after a login: {st}"
    );
    assert_eq!(provider.stats().grant("refresh_token"), 0);

    // Nobody calls: the daemon refreshes by itself.
    assert!(
        provider.wait_grant("refresh_token", 1, Duration::from_secs(20)),
        "no refresh-ahead within 20 s: {:?}",
        provider.stats()
    );
    // The provider has seen the call; the daemon has its answer once the
    // site's last refresh moves (until then the old token still serves).
    let logged_in = st["last_refresh"].as_u64();
    env.wait_site_status(
        "corp",
        Duration::from_secs(10),
        "the refresh landing",
        |s| s["last_refresh"].as_u64() > logged_in,
    );
    let calls = provider.stats().token_calls;
    let second = env.token(&["get", "corp"]);
    second.ok();
    assert_ne!(second.line(), t1, "the refreshed token is served");
    assert_eq!(
        provider.stats().token_calls,
        calls,
        "the refreshed token is served without another token call"
    );
    let (status, body) = provider.userinfo(second.line());
    assert_eq!(status, 200, "the refreshed token works: {body}");

    let st = env.site_status("corp");
    let last = st["last_refresh"]
        .as_u64()
        .unwrap_or_else(|| panic!("last_refresh: {st}"));
    assert!(last >= now, "last_refresh moved with the refresh: {st}");
    assert_eq!(st["last_error"], Value::Null, "{st}");
    assert_eq!(env.browser_launches(), 1, "no login for a refresh");
}

#[test]
fn client_credentials_are_refreshed_ahead_only_while_in_use() {
    let provider = Provider::start(4);
    let mut env = Env::new();
    env.write_client_credentials_config(&provider);
    let _daemon = env.daemon();
    let first = env.token(&["get", "svc", "--no-login"]);
    first.ok();
    assert_eq!(provider.stats().grant("client_credentials"), 1);

    // In use (a get since the token): refreshed ahead once.
    assert!(
        provider.wait_grant("client_credentials", 2, Duration::from_secs(15)),
        "an in-use client-credentials site is refreshed ahead: {:?}",
        provider.stats()
    );
    // Nobody asked for that token: no further refresh is planned.
    let st = env.wait_site_status(
        "svc",
        Duration::from_secs(10),
        "no next_refresh while unused",
        |s| s["next_refresh"].is_null() && s["state"] != "refreshing",
    );
    let expires_at = st["expires_at"].as_u64().unwrap_or_else(|| panic!("{st}"));
    assert!(
        wait_until(Duration::from_secs(15), || now_unix() > expires_at + 1),
        "the token expires"
    );
    let stats = provider.stats();
    assert_eq!(
        stats.grant("client_credentials"),
        2,
        "an unused client-credentials token is left to expire: {stats:?}"
    );

    // The next get fetches a new one.
    let out = env.token(&["get", "svc", "--no-login"]);
    out.ok();
    assert_ne!(out.line(), first.line());
    assert_eq!(provider.stats().grant("client_credentials"), 3);
}

#[test]
fn hundred_concurrent_gets_share_one_refresh() {
    let (provider, env, _daemon) = serve_corp(3600);
    let first = env.token(&["get", "corp"]);
    first.ok();
    // After 3.2 s the cached token has < 3598 s left; a fresh one has 3600 s
    // and keeps satisfying --min-ttl 3598 for ~2 s more.
    thread::sleep(Duration::from_millis(3200));

    provider.delay(3000, 1);
    let children: Vec<Child> = (0..100)
        .map(|_| env.cmd(&["get", "corp", "--min-ttl", "3598"]).spawn())
        .collect();
    let outs = wait_outputs(children, Duration::from_secs(60), "token get corp");
    let token = one_token(&outs, "all 100 callers print the same token");
    assert_ne!(token, first.line(), "the refreshed token, not the old one");
    let stats = provider.stats();
    assert_eq!(
        stats.grant("refresh_token"),
        1,
        "one refresh for 100 callers: {stats:?}"
    );
    assert_eq!(stats.grant("authorization_code"), 1, "{stats:?}");
    assert_eq!(env.browser_launches(), 1);
}

#[test]
fn a_slow_refresh_of_one_site_does_not_hold_up_another() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}\n{}",
        Env::site_config("a", &provider),
        Env::site_config("b", &provider)
    ));
    let _daemon = env.daemon();
    env.token(&["get", "a"]).ok();
    env.token(&["get", "b"]).ok();
    let before = provider.stats();
    thread::sleep(Duration::from_millis(1100));

    // a's refresh is held at the provider; b's refresh goes through.
    provider.delay(6000, 1);
    let mut a = env.cmd(&["get", "a", "--min-ttl", "3599"]).spawn();
    assert!(
        provider.wait_token_calls_above(before.token_calls, Duration::from_secs(10)),
        "a's refresh never reached the provider"
    );
    let b = env.token(&["get", "b", "--min-ttl", "3599"]);
    b.ok();
    assert!(
        a.try_wait().expect("try_wait").is_none(),
        "b's get must complete while a's refresh is still held"
    );
    let a = wait_output(a, Duration::from_secs(60), "token get a");
    a.ok();
    let stats = provider.stats();
    assert_eq!(
        stats.grant("refresh_token"),
        2,
        "one refresh per site: {stats:?}"
    );
    assert_ne!(a.line(), b.line());
}

/// A `BROWSER` that waits `secs` before the scripted browser runs, so the
/// login stays pending for a while.
fn slow_browser(env: &Env, secs: u32) -> String {
    let p = env.root().join("slow-browser.sh");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\nsleep {secs}\nexec \"{}\" \"$@\"\n",
            tests_dir().join("browser.py").display()
        ),
    )
    .expect("write slow browser");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p.to_string_lossy().into_owned()
}

#[test]
fn invalid_grant_leads_to_one_login_that_ten_callers_join() {
    let (provider, env, _daemon) = serve_corp_with_store(3600, "file");
    let first = env.token(&["get", "corp"]);
    first.ok();
    assert_eq!(env.browser_launches(), 1);

    // The provider forgets the refresh token; the next refresh is refused.
    revoke_refresh_token(&provider, &stored_refresh_token(&env));
    let out = env.token(&["get", "corp", "--no-login", "--min-ttl", "3600"]);
    out.code(exit::LOGIN_REQUIRED);
    let st = env.site_status("corp");
    assert_eq!(
        st["has_refresh_token"], false,
        "the refused refresh token is dropped: {st}"
    );
    assert_eq!(
        st["state"], "login_required",
        "status shows that a login is needed: {st}"
    );
    let reason = st["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("last_error: {st}"));
    assert!(
        reason.contains("invalid_grant") || reason.contains("login"),
        "reason: {st}"
    );

    // Ten callers at once: one login, one browser, everyone gets the token.
    let browser = slow_browser(&env, 4);
    let children: Vec<Child> = (0..10)
        .map(|_| env.cmd(&["get", "corp"]).env("BROWSER", &browser).spawn())
        .collect();
    env.wait_site_status("corp", Duration::from_secs(20), "login_pending", |s| {
        s["state"] == "login_pending"
    });

    // A caller that allows no login fails at once, even with a login pending.
    let nl = env.token(&["get", "corp", "--no-login"]);
    nl.code(exit::LOGIN_REQUIRED);
    assert_eq!(
        env.site_status("corp")["state"],
        "login_pending",
        "--no-login returned while the login is pending"
    );

    let outs = wait_outputs(children, Duration::from_secs(60), "token get corp");
    let token = one_token(&outs, "all ten get the same token");
    assert_ne!(token, first.line());
    assert_eq!(env.browser_launches(), 2, "one browser for ten callers");
    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 2, "{stats:?}");
    let (status, body) = provider.userinfo(&token);
    assert_eq!(status, 200, "{body}");
}
