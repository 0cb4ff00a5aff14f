//! Story: a laptop sleeps past its tokens' expiry. Timers run on the
//! monotonic clock, which does not count a suspend; the wall clock does.
//! libfaketime moves the wall clock of `tokend` (and `token`) ahead while
//! the monotonic clock does not move, which is what a resume looks like:
//! the daemon serves no token that expired while it slept and makes the
//! refresh-ahead that came due at once, not a suspend's length late.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokend_e2e::{require, Daemon, Env, Provider};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Access tokens live 10 minutes; the sleep lasts 15.
const AT_TTL: u64 = 600;
const SLEEP: &str = "+15m";

/// A logged-in site whose daemon (and client) read the wall clock through
/// libfaketime, its offset in a file the test rewrites; `None` (skipped)
/// without libfaketime.
fn logged_in(test: &str) -> Option<(Provider, Env, Daemon, PathBuf, String)> {
    if !require(
        Path::new(LIBFAKETIME).is_file(),
        test,
        "libfaketime is not installed",
        "apt-get install faketime (scripts/test installs it)",
    ) {
        return None;
    }
    let provider = Provider::start(AT_TTL);
    let mut env = Env::with_site("corp", &provider);
    let offset = env.root().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    env.set("LD_PRELOAD", LIBFAKETIME)
        .set("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap())
        .set("FAKETIME_NO_CACHE", "1")
        .set("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();
    // The site parks, its refresh-ahead planned on the monotonic clock.
    std::thread::sleep(Duration::from_millis(500));
    Some((provider, env, daemon, offset, token))
}

#[test]
fn no_token_that_expired_in_a_suspend_is_served_on_wake() {
    let Some((_provider, env, _daemon, offset, before)) =
        logged_in("no_token_that_expired_in_a_suspend_is_served_on_wake")
    else {
        return;
    };
    std::fs::write(&offset, format!("{SLEEP}\n")).unwrap();
    let out = env.token(&["get", "corp", "--no-login"]);
    out.ok();
    assert_ne!(
        out.line(),
        before,
        "the token from before the sleep has expired"
    );
}

#[test]
fn refresh_ahead_resumes_at_once_after_a_suspend() {
    let Some((provider, env, _daemon, offset, before)) =
        logged_in("refresh_ahead_resumes_at_once_after_a_suspend")
    else {
        return;
    };
    let refreshes = provider.stats().grant("refresh_token");
    std::fs::write(&offset, format!("{SLEEP}\n")).unwrap();
    // Refresh-ahead was planned for about 6 minutes of monotonic time from
    // now; the wall clock says it is due: it is made within a tick (5 s).
    assert!(
        provider.wait_grant("refresh_token", refreshes + 1, Duration::from_secs(15)),
        "no refresh within 15 s of the wake"
    );
    let out = env.token(&["get", "corp", "--no-login"]);
    out.ok();
    assert_ne!(out.line(), before);
    assert_eq!(
        provider.stats().grant("refresh_token"),
        refreshes + 1,
        "the get is served from the refresh made on wake"
    );
}
