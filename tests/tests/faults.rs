//! Story: provider faults (5xx, garbage, reset connections, timeouts) never
//! take the daemon down, never stall other clients, and never lose the login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::thread;
use std::time::Duration;

use tokend_e2e::{exit, Daemon, Env, Provider};

/// A provider with 3 s access tokens (2 s as tokend counts them, renewed
/// ahead about every second), a world with `[site.corp]` logged in and its
/// daemon, which gives up on the provider after 3 s.
fn logged_in_with_short_timeouts() -> (Provider, Env, Daemon) {
    let provider = Provider::start(3);
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
        // Each fault meets a site that has recovered from the last one.
        recovered(&env);
        let calls = provider.stats().token_calls;
        provider.fault(kind, 1);
        assert!(
            provider.wait_token_calls_above(calls, Duration::from_secs(10)),
            "refresh-ahead met the {kind} fault"
        );
        // The token may still be served (exit 0). Otherwise the provider's
        // failure is reported (exit 4) naming the site, and when tokend
        // tries again. Never a crash, a hang, or a login.
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
            [exit::OK, exit::PROVIDER].contains(&out.code),
            "{kind}: unexpected outcome {out}"
        );
        if out.code == exit::PROVIDER {
            assert!(out.stderr.contains("site corp"), "{kind}: {out}");
            assert!(out.stderr.contains("tries again in"), "{kind}: {out}");
        }
        assert_ne!(
            out.code,
            exit::LOGIN_REQUIRED,
            "a {kind} fault must not drop the login: {out}"
        );
        env.token(&["status"]);
    }

    // Faults are used up: the refresh token still works, no new login.
    recovered(&env);
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

/// The backoff retry after a fault has succeeded.
fn recovered(env: &Env) {
    env.wait_site_status(
        "corp",
        Duration::from_secs(30),
        "recovery from the last fault",
        |s| s["last_error"].is_null(),
    );
}

#[test]
fn a_hanging_token_endpoint_does_not_stall_other_clients() {
    let (provider, env, mut daemon) = logged_in_with_short_timeouts();
    thread::sleep(Duration::from_millis(2500));

    provider.fault("timeout", 1);
    // `--min-ttl` beyond the lifetime: this get needs a token-endpoint call,
    // so it hangs with the refresh (its own, or refresh-ahead's that holds
    // the site's single flight) until the daemon's 3 s HTTP timeout.
    let mut hanging = env
        .cmd(&["get", "corp", "--no-login", "--min-ttl", "1h"])
        .spawn();
    thread::sleep(Duration::from_millis(300)); // the refresh is now held by the provider

    let out = env.cmd(&["status"]).timeout(Duration::from_secs(10)).run();
    assert_ne!(out.code, exit::UNREACHABLE, "{out}");
    // Order, not duration: status answered while the refresh still hangs.
    assert!(
        hanging.try_wait().unwrap().is_none(),
        "status stalled until the hanging refresh gave up"
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
