//! Story: `token logout` revokes at the provider (RFC 7009) and forgets the
//! site locally; the next get needs a new login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokend_e2e::{exit, serve_corp_with_store, wait_until, Env};

#[test]
fn logout_revokes_and_forgets() {
    let (provider, env, _daemon) = serve_corp_with_store(3600, "file");
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();

    env.token(&["logout", "corp"]).ok();
    let stats = provider.stats();
    assert!(
        stats.revocations >= 1,
        "logout revokes at the provider: {stats:?}"
    );
    // Revoking the refresh token revokes the grant, and with it the access token.
    let (status, _) = provider.userinfo(&token);
    assert_eq!(status, 401, "the old access token is dead after logout");

    let again = env.token(&["get", "corp", "--no-login"]);
    again.code(exit::LOGIN_REQUIRED);
}

/// A site deleted from the config keeps its stored login, and `token
/// logout NAME` still reaches it: revoked at the provider, deleted.
#[test]
fn logout_reaches_a_removed_sites_login() {
    let (provider, env, _daemon) = serve_corp_with_store(3600, "file");
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();
    env.write_config(&Env::site_config("other", &provider));
    env.token(&["reload"]).ok();

    let out = env.token(&["logout", "corp"]);
    out.ok();
    assert!(out.stderr.contains("no longer configured"), "{out}");
    assert!(provider.stats().revocations >= 1, "revoked at the provider");
    let (status, _) = provider.userinfo(&token);
    assert_eq!(status, 401, "the old access token is dead after logout");
    let store = std::fs::read_to_string(env.state_dir().join("tokens.json")).unwrap();
    assert!(
        !store.contains("\"corp\""),
        "deleted from the store: {store}"
    );
    // Now there is nothing left to reach.
    let again = env.token(&["logout", "corp"]);
    assert!(again.stderr.contains("no site named `corp`"), "{again}");
}

/// After `[daemon] prune_after`, a removed site's login is revoked and
/// deleted without being asked.
#[test]
fn a_removed_sites_login_is_pruned_after_the_grace() {
    let (provider, env, _daemon) = serve_corp_with_store(3600, "file");
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();
    let other = Env::site_config("other", &provider);
    env.write_config(&format!("[daemon]\nprune_after = \"0s\"\n{other}"));
    env.token(&["reload"]).ok();
    let tokens = env.state_dir().join("tokens.json");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&tokens).is_ok_and(|s| !s.contains("\"corp\""))
        }),
        "the removed site's login is pruned from the store"
    );
    assert!(
        wait_until(Duration::from_secs(10), || provider.stats().revocations
            >= 1),
        "revoked at the provider"
    );
    let (status, _) = provider.userinfo(&token);
    assert_eq!(status, 401, "the old access token is dead");
}
