//! Story: provider faults (5xx, garbage, reset connections, timeouts) never
//! take the daemon down, never stall other clients, and never lose the login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::thread;
use std::time::{Duration, Instant};

use tokend_e2e::{exit, Daemon, Env, Provider};

/// A provider with 2 s access tokens, a world with `[site.corp]` logged in
/// and its daemon, which gives up on the provider after 3 s.
fn logged_in_with_short_timeouts() -> (Provider, Env, Daemon) {
    let provider = Provider::start(2);
    let mut env = Env::new();
    // A short HTTP timeout so the timeout fault costs seconds, not 30.
    env.set("TOKEND_HTTP_TIMEOUT", "3");
    env.write_config(&Env::site_config("corp", &provider));
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    (provider, env, daemon)
}

#[test]
fn faults_during_refresh_keep_the_daemon_and_the_login() {
    let (provider, env, mut daemon) = logged_in_with_short_timeouts();

    for kind in ["500", "garbage", "reset"] {
        thread::sleep(Duration::from_millis(2500)); // the token is expired now
        provider.fault(kind, 1);
        // The daemon may retry and succeed, or report the provider's failure;
        // it must not crash, hang, or start a login for a transient fault.
        let out = env
            .cmd(&["get", "corp", "--no-login"])
            .timeout(Duration::from_secs(45))
            .run();
        assert!(
            daemon.alive(),
            "tokend died on a {kind} fault:\n{}",
            daemon.log()
        );
        assert!(
            [exit::OK, exit::PROVIDER, exit::UNEXPECTED].contains(&out.code),
            "{kind}: unexpected outcome {out}"
        );
        assert_ne!(
            out.code,
            exit::LOGIN_REQUIRED,
            "a {kind} fault must not drop the login: {out}"
        );
        env.token(&["status"]);
    }

    // Faults are used up: the refresh token still works, no new login.
    thread::sleep(Duration::from_millis(2500));
    let out = env
        .cmd(&["get", "corp", "--no-login"])
        .timeout(Duration::from_secs(45))
        .run();
    out.ok();
    let (status, body) = provider.userinfo(out.line());
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        env.browser_launches(),
        1,
        "no new login after transient faults"
    );
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}

#[test]
fn a_hanging_token_endpoint_does_not_stall_other_clients() {
    let (provider, env, mut daemon) = logged_in_with_short_timeouts();
    thread::sleep(Duration::from_millis(2500));

    provider.fault("timeout", 1);
    let hanging = env.cmd(&["get", "corp", "--no-login"]).spawn();
    thread::sleep(Duration::from_millis(300)); // the refresh is now held by the provider

    let t = Instant::now();
    let out = env.cmd(&["status"]).timeout(Duration::from_secs(10)).run();
    assert_ne!(out.code, exit::UNREACHABLE, "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "status stalled behind a hanging refresh: {:?}",
        t.elapsed()
    );
    assert!(daemon.alive());

    // The stuck get ends one way or another (daemon HTTP timeout or retry).
    let out = tokend_e2e::wait_output(
        hanging,
        Duration::from_secs(90),
        "get during a provider timeout",
    );
    assert_ne!(
        out.code,
        exit::LOGIN_REQUIRED,
        "a timeout must not drop the login: {out}"
    );
    assert!(daemon.alive());
}
