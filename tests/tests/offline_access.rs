//! Story: an OpenID Connect provider that follows OIDC Core §11 (the test
//! provider with oidc-provider's stock refresh-token policy) issues a
//! refresh token only when `offline_access` was granted, which it grants
//! only with `prompt=consent`. tokend asks with it, so the login lasts; a
//! site that turns the prompt off is told plainly what that costs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{Daemon, Env, Output, Provider};

fn strict_provider() -> Provider {
    Provider::start_with(&[("AT_TTL", "3600"), ("RT_POLICY", "stock")])
}

fn site(provider: &Provider, extra: &str) -> String {
    format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = [\"openid\", \"offline_access\", \"read\"]\n{extra}",
        provider.issuer()
    )
}

/// `[site.corp]` (with `extra` keys) at the strict provider, and its first
/// `get`, which logs in.
fn first_get(extra: &str) -> (Provider, Env, Daemon, Output) {
    let provider = strict_provider();
    let mut env = Env::new();
    env.write_config(&site(&provider, extra));
    let daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    (provider, env, daemon, out)
}

#[test]
fn offline_access_on_an_oidc_provider_asks_for_consent_and_gets_a_refresh_token() {
    let (provider, env, _daemon, out) = first_get("");
    assert!(!out.stderr.contains("refresh token"), "{out}");
    let st = env.site_status("corp");
    assert_eq!(st["has_refresh_token"], true, "{st}");
    assert!(
        st["scopes"].to_string().contains("offline_access"),
        "granted: {st}"
    );
    // The login lasts: a refresh, not a new login.
    env.token(&["get", "corp", "--no-login", "--min-ttl", "3600"])
        .ok();
    assert_eq!(provider.stats().grant("refresh_token"), 1);
    assert_eq!(env.browser_launches(), 1);
}

#[test]
fn a_login_without_the_refresh_token_it_asked_for_says_what_that_costs() {
    let (_provider, env, _daemon, out) = first_get("prompt = \"\"\n");
    let said = "site corp: no refresh token: you will be asked to log in again when this token expires in 1h";
    assert!(out.stderr.contains(said), "{out}");
    assert!(out.stderr.contains("prompt"), "{out}");
    assert!(
        !out.stderr.contains("will be refused"),
        "not the generic narrower-scopes note: {out}"
    );
    let st = env.site_status("corp");
    assert_eq!(st["has_refresh_token"], false, "{st}");
    assert!(st["notes"].to_string().contains(said), "{st}");
}
