//! Story: a browser login's secrets stay ours. The browser opener's command
//! line (world-readable in `/proc/PID/cmdline`) carries a one-time loopback
//! start link, never the login's `state`, PKCE challenge or nonce; a second
//! use of that link ends the login loudly; and another user's process cannot
//! talk to the loopback listener at all (closed unanswered), so it can
//! neither end the login with a forged `error=` nor deliver a code of its
//! own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Child;
use std::time::Duration;

use tokend_e2e::{query_param, raw_get, wait_output, Daemon, Env, Provider};

/// A `get` whose login waits: the browser (mode `ignore`) followed the
/// start link and did nothing more.
fn pending_login() -> (Provider, Env, Daemon, Child) {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.set("BROWSER_MODE", "ignore");
    let daemon = env.daemon();
    let waiting = env.cmd(&["get", "corp"]).spawn();
    assert!(env.wait_browser_launches(1, Duration::from_secs(10)));
    (provider, env, daemon, waiting)
}

#[test]
fn the_openers_command_line_carries_no_secret_of_the_login() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    let _daemon = env.daemon();
    env.token(&["get", "corp"]).ok();

    let argvs = env.browser_argvs();
    assert_eq!(argvs.len(), 1, "{argvs:?}");
    let opened = argvs[0].last().unwrap();
    assert!(
        opened.starts_with("http://127.0.0.1:") && opened.contains("/start/"),
        "the opener gets the loopback start link: {opened}"
    );
    for secret in ["state", "code_challenge", "nonce", "redirect_uri"] {
        assert!(
            !argvs[0].iter().any(|a| a.contains(&format!("{secret}="))),
            "no {secret} on the command line: {argvs:?}"
        );
    }
    // The link led the browser to the provider's authorization URL.
    let urls = env.browser_urls();
    assert!(urls[0].starts_with(provider.issuer()), "{urls:?}");
    assert!(!query_param(&urls[0], "state").is_empty());
}

#[test]
fn a_start_link_used_twice_ends_the_login() {
    let (provider, env, _daemon, waiting) = pending_login();
    // The browser followed the link once; a racer's (or anyone's) second
    // use ends the login instead of handing it over.
    let link = env.browser_argvs()[0].last().unwrap().clone();
    let url = url::Url::parse(&link).unwrap();
    let again = raw_get(&env, false, url.port().unwrap(), url.path());
    assert!(again.starts_with("HTTP/1.1 409"), "{again}");
    let out = wait_output(waiting, Duration::from_secs(20), "get");
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("opened twice"), "{out}");
    assert_eq!(provider.stats().token_calls, 0);
}

#[test]
fn another_user_cannot_use_the_callback_port() {
    if !tokend_e2e::require_root("another_user_cannot_use_the_callback_port") {
        return;
    }
    let (provider, env, _daemon, waiting) = pending_login();
    let url = env.browser_urls().pop().unwrap();
    let redirect = url::Url::parse(&query_param(&url, "redirect_uri")).unwrap();
    let port = redirect.port().unwrap();
    let state = query_param(&url, "state");

    // Even knowing the state, another user gets no answer, and its forged
    // error does not end the login.
    let forged = format!("{}?error=access_denied&state={state}", redirect.path());
    let theirs = raw_get(&env, true, port, &forged);
    assert_eq!(theirs, "", "another uid is closed unanswered");
    // We are answered (a wrong state is ignored with a 400).
    let ours = raw_get(&env, false, port, &format!("{}?state=x", redirect.path()));
    assert!(ours.starts_with("HTTP/1.1 400"), "{ours}");

    // The login is still waiting, and completes.
    env.run_browser(&[&url], "approval");
    let out = wait_output(waiting, Duration::from_secs(30), "get");
    out.ok();
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}
