//! Story: refresh-token rotation is crash safe. With the file store, a
//! `kill -9` right after a client got a freshly rotated token, or while a
//! refresh is in flight at the provider, never loses the login: the next
//! daemon refreshes with the refresh token it finds in the store, and the
//! provider (which revokes the whole grant when a rotated refresh token is
//! reused) never sees a stale one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use tokend_e2e::{files_under, wait_output, Env, Provider, Value};

/// Every `*.json` file of the store parses: an atomic write never leaves
/// half a file behind.
fn store_is_whole(env: &Env, when: &str) {
    let files: Vec<_> = files_under(&env.state_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(!files.is_empty(), "{when}: no store file");
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| {
            panic!("{when}: {} is not whole JSON ({e}): {text:?}", f.display())
        });
    }
}

#[test]
fn kill_9_around_rotations_never_loses_the_login() {
    // 20 s tokens: no refresh-ahead fires inside one iteration, so every
    // rotation is one the test caused with a `--min-ttl` above the lifetime.
    // A restarted daemon serves the access token it kept on disk.
    let provider = Provider::start(20);
    let mut env = Env::with_store("file");
    env.write_config(&Env::site_config("corp", &provider));

    let mut daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    assert_eq!(env.browser_launches(), 1);
    daemon.kill9();
    drop(daemon);

    for i in 0..18 {
        let mut daemon = env.daemon();
        let out = env.token(&["get", "corp", "--no-login"]);
        assert_eq!(
            out.code,
            0,
            "iteration {i}: the login was lost after kill -9 ({out}); provider stats {:?}",
            provider.stats()
        );
        let (status, body) = provider.userinfo(out.line());
        assert_eq!(status, 200, "iteration {i}: the token works: {body}");

        match i % 3 {
            // A forced refresh (rotation), and kill -9 the moment the client
            // has the new token.
            0 => {
                env.token(&["get", "corp", "--no-login", "--min-ttl", "3600"])
                    .ok();
                daemon.kill9();
            }
            // A refresh in flight when the daemon dies: the provider holds
            // it (a hung request it never processes).
            1 => {
                let before = provider.stats().token_calls;
                provider.fault("timeout", 1);
                let client = env
                    .cmd(&["get", "corp", "--no-login", "--min-ttl", "3600"])
                    .spawn();
                assert!(
                    provider.wait_token_calls_above(before, Duration::from_secs(10)),
                    "iteration {i}: the refresh never reached the provider"
                );
                daemon.kill9();
                let out = wait_output(client, Duration::from_secs(30), "token get (daemon killed)");
                assert_ne!(
                    out.code, 0,
                    "iteration {i}: a client of a killed daemon fails: {out}"
                );
            }
            // A rotation, then kill -9 without waiting for anything else.
            _ => {
                env.token(&["get", "corp", "--no-login", "--min-ttl", "3600"])
                    .ok();
                daemon.kill9()
            }
        }
        drop(daemon);
        store_is_whole(&env, &format!("after kill -9 #{i}"));
    }

    let _daemon = env.daemon();
    env.token(&["get", "corp", "--no-login"]).ok();
    let stats = provider.stats();
    assert_eq!(
        stats.grant("authorization_code"),
        1,
        "one login ever, whatever the kills: {stats:?}"
    );
    assert!(
        stats.grant("refresh_token") >= 12,
        "rotations happened: {stats:?}"
    );
    assert_eq!(env.browser_launches(), 1);
}
