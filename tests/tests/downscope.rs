//! Story: `token get SITE --scope S` hands out a down-scoped token (a
//! refresh with the narrower scope), cached per scope set, that the
//! provider knows as carrying only S; a scope the site was not granted is a
//! usage error naming it; the full login keeps working afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::thread;
use std::time::Duration;

use tokend_e2e::{exit, serve_corp, Provider, Value};

fn scopes_of(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v["scopes"]
        .as_array()
        .unwrap_or_else(|| panic!("no scopes in {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect();
    s.sort();
    s
}

fn introspected_scopes(provider: &Provider, token: &str) -> Vec<String> {
    let v = provider.introspect(token);
    assert_eq!(v["active"], true, "introspection: {v}");
    let mut s: Vec<String> = v["scope"]
        .as_str()
        .unwrap_or_else(|| panic!("introspection has no scope: {v}"))
        .split(' ')
        .map(str::to_owned)
        .collect();
    s.sort();
    s
}

#[test]
fn a_down_scoped_token_is_narrower_and_cached_per_scope_set() {
    let (provider, env, _daemon) = serve_corp(3600);

    let full = env.token(&["get", "corp", "--format", "json"]);
    full.ok();
    let full = full.json();
    let full_token = full["access_token"].as_str().expect("token").to_owned();
    assert_eq!(scopes_of(&full), ["openid", "read"]);
    assert_eq!(
        introspected_scopes(&provider, &full_token),
        ["openid", "read"]
    );

    // Down-scoped: a different token that carries only openid.
    let calls = provider.stats().token_calls;
    let narrow = env.token(&["get", "corp", "--scope", "openid", "--format", "json"]);
    narrow.ok();
    let narrow = narrow.json();
    let narrow_token = narrow["access_token"].as_str().expect("token").to_owned();
    assert_eq!(scopes_of(&narrow), ["openid"], "{narrow}");
    assert_ne!(
        narrow_token, full_token,
        "a down-scoped token is another token"
    );
    assert_eq!(introspected_scopes(&provider, &narrow_token), ["openid"]);
    let stats = provider.stats();
    assert_eq!(
        stats.token_calls,
        calls + 1,
        "one call for the narrow token: {stats:?}"
    );
    assert_eq!(stats.grant("refresh_token"), 1, "{stats:?}");

    // Cached per scope set: no new call the second time.
    let again = env.token(&["get", "corp", "--scope", "openid"]);
    again.ok();
    assert_eq!(again.line(), narrow_token, "the cached narrow token");
    assert_eq!(
        provider.stats().token_calls,
        calls + 1,
        "served from the cache"
    );

    // Another subset is another cache entry.
    let read = env.token(&["get", "corp", "--scope", "read", "--format", "json"]);
    read.ok();
    let read = read.json();
    assert_eq!(scopes_of(&read), ["read"], "{read}");
    assert_ne!(read["access_token"], narrow["access_token"]);
    assert_eq!(provider.stats().token_calls, calls + 2);

    // Every scope of the site is the full token, not a down-scoped one.
    let all = env.token(&["get", "corp", "--scope", "read", "--scope", "openid"]);
    all.ok();
    assert_eq!(all.line(), full_token, "all scopes = the site's own token");
    let plain = env.token(&["get", "corp"]);
    plain.ok();
    assert_eq!(plain.line(), full_token, "the full token is untouched");
    assert_eq!(provider.stats().token_calls, calls + 2);

    // The login survived the down-scoped refreshes (rotation kept): a forced
    // refresh of the full token works without a login.
    thread::sleep(Duration::from_millis(1100));
    let refreshed = env.token(&["get", "corp", "--no-login", "--min-ttl", "3599"]);
    refreshed.ok();
    assert_ne!(refreshed.line(), full_token);
    assert_eq!(
        introspected_scopes(&provider, refreshed.line()),
        ["openid", "read"],
        "the full refresh asks for every scope again"
    );
    assert_eq!(env.browser_launches(), 1, "no new login");
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}

#[test]
fn an_ungranted_scope_is_a_usage_error_naming_it() {
    let (provider, env, _daemon) = serve_corp(3600);
    env.token(&["get", "corp"]).ok();
    let calls = provider.stats().token_calls;

    let out = env.token(&["get", "corp", "--scope", "write"]);
    out.code(exit::USAGE);
    assert!(out.stdout.is_empty(), "no token on stdout: {out}");
    assert!(
        out.stderr.contains("write"),
        "the message names the scope: {out}"
    );
    assert!(
        out.stderr.contains("corp"),
        "the message names the site: {out}"
    );

    let out = env.token(&["get", "corp", "--scope", "openid", "--scope", "write"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("write"), "{out}");

    assert_eq!(provider.stats().token_calls, calls, "no provider call");
    assert_eq!(env.browser_launches(), 1, "no login for a wrong scope");
}
