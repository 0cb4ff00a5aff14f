//! Story: a login that the user denies, or whose callback was tampered with
//! (`state`, RFC 9207 `iss`), fails without a token and without exchanging
//! the code; a pending login is joined, not restarted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokend_e2e::{wait_until, Env, Provider};

fn env_with_mode(provider: &Provider, mode: &str) -> Env {
    let mut env = Env::with_site("corp", provider);
    env.set("BROWSER_MODE", mode);
    env
}

/// A `token get corp` whose login's browser has been launched.
fn a_get_waiting_for_its_login(env: &Env) -> std::process::Child {
    let child = env.cmd(&["get", "corp"]).spawn();
    assert!(
        env.wait_browser_launches(1, Duration::from_secs(10)),
        "the browser opens"
    );
    child
}

#[test]
fn denied_consent_fails_with_the_providers_error() {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, "deny");
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("access_denied"),
        "the provider's error is printed: {out}"
    );
    assert!(out.stderr.contains("corp"), "{out}");
    assert_eq!(provider.stats().token_calls, 0);
}

/// The browser (in `mode`) returns a tampered callback (`what`): the login
/// fails and the code is never exchanged.
fn forged_callback_is_rejected(mode: &str, what: &str) {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, mode);
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    assert_ne!(out.code, 0, "{what} must fail the login: {out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        provider.stats().token_calls,
        0,
        "the code must not be exchanged"
    );
}

#[test]
fn a_callback_with_a_wrong_state_is_ignored_and_the_code_never_exchanged() {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, "forge-state");
    env.set("TOKEND_LOGIN_TIMEOUT", "4");
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    assert_ne!(
        out.code, 0,
        "a forged callback never completes the login: {out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        provider.stats().token_calls,
        0,
        "the code must not be exchanged"
    );
    let log = env.browser_log();
    assert!(
        log.contains("callback answered 400"),
        "the listener refused it: {log}"
    );
}

#[test]
fn forged_callbacks_before_the_real_one_do_not_end_the_login() {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, "forge-first");
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    let log = env.browser_log();
    assert_eq!(
        log.matches("forged callback answered 400").count(),
        3,
        "wrong state, and error= without the right state, are refused: {log}"
    );
    assert!(log.contains("forged callback answered 404"), "{log}");
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}

#[test]
fn forged_iss_is_rejected_and_the_code_never_exchanged() {
    forged_callback_is_rejected("forge-iss", "a callback from another issuer");
}

#[test]
fn a_pending_login_prints_the_url_and_a_second_caller_joins_it() {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, "ignore");
    let _daemon = env.daemon();

    let first = a_get_waiting_for_its_login(&env);
    let second = env.cmd(&["get", "corp"]).spawn();
    // The second caller waits on the same login: no second browser.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.browser_launches(), 1, "one browser per pending login");

    // Complete the pending login by hand, with the URL the browser got.
    let url = env.browser_urls().pop().unwrap();
    env.run_browser(&[&url], "manual approval");

    let a = tokend_e2e::wait_output(first, Duration::from_secs(30), "first get");
    let b = tokend_e2e::wait_output(second, Duration::from_secs(30), "second get");
    a.ok();
    b.ok();
    assert_eq!(a.line(), b.line());
    assert!(
        a.stderr.contains("http://127.0.0.1"),
        "the URL is printed on stderr too: {a}"
    );
    assert_eq!(provider.stats().grant("authorization_code"), 1);
    assert!(wait_until(Duration::from_secs(1), || env
        .browser_launches()
        == 1));
}

#[test]
fn a_pending_login_shows_in_status_and_times_out_releasing_its_listener() {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, "ignore");
    env.set("TOKEND_LOGIN_TIMEOUT", "3");
    let _daemon = env.daemon();

    let waiting = a_get_waiting_for_its_login(&env);
    let status = env.token(&["status", "--json"]).ok().json();
    assert_eq!(status["sites"][0]["state"], "login_pending", "{status}");

    // The loopback listener is the redirect_uri of the pending login.
    let url = env.browser_urls().pop().unwrap();
    let redirect = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("redirect_uri="))
        .unwrap()
        .replace("%3A", ":")
        .replace("%2F", "/");
    let addr = redirect
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "listening on {addr}"
    );

    let out = tokend_e2e::wait_output(waiting, Duration::from_secs(30), "waiting get");
    // Not the provider's refusal (4): the login did not complete (6).
    out.code(tokend_e2e::exit::LOGIN_INCOMPLETE);
    assert!(out.stderr.contains("not completed in time"), "{out}");
    assert!(out.stderr.contains("token login corp --device"), "{out}");
    assert!(out.stderr.contains("token login corp --paste"), "{out}");

    // A login is what the site needs, not a fault of its own; the timeout
    // says why.
    let status = env.token(&["status", "--json"]).ok().json();
    assert_eq!(status["sites"][0]["state"], "login_required", "{status}");
    assert!(
        status["sites"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not completed in time")),
        "{status}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
            &addr
        )
        .is_err()),
        "the listener on {addr} is closed after the timeout"
    );
    assert_eq!(provider.stats().token_calls, 0);
}

#[test]
fn ctrl_c_during_a_login_says_so_in_one_line_and_exits_6() {
    let provider = Provider::start(3600);
    let mut env = env_with_mode(&provider, "ignore");
    let _daemon = env.daemon();

    let waiting = a_get_waiting_for_its_login(&env);
    // What the terminal's Ctrl-C sends.
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(
        unsafe { libc::kill(waiting.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = tokend_e2e::wait_output(waiting, Duration::from_secs(10), "interrupted get");
    out.code(tokend_e2e::exit::LOGIN_INCOMPLETE);
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("cancelled"))
        .collect();
    assert_eq!(
        said,
        ["token: site corp: login cancelled (Ctrl-C); run `token login corp` to try again"],
        "{out}"
    );
    // The daemon hears the hang-up and drops the login.
    assert!(
        wait_until(Duration::from_secs(10), || env.site_status("corp")["state"]
            != "login_pending"),
        "{}",
        env.site_status("corp")
    );
    assert_eq!(provider.stats().token_calls, 0);
}
