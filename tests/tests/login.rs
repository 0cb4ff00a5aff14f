//! Story: the first `token get` logs in through the browser; later gets are
//! served from the daemon's memory; `--no-login` and unknown sites fail with
//! the documented exit codes; concurrent callers share one login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{exit, one_token, serve_corp};

#[test]
fn first_get_logs_in_through_the_browser_and_the_token_works() {
    let (provider, env, _daemon) = serve_corp(3600);

    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();
    assert!(!token.is_empty(), "empty token: {out}");
    assert!(
        !token.contains(char::is_whitespace),
        "stdout must be the bare token: {out}"
    );
    assert_eq!(
        env.browser_launches(),
        1,
        "exactly one browser; log:\n{}",
        env.browser_log()
    );

    let (status, body) = provider.userinfo(&token);
    assert_eq!(status, 200, "userinfo refused the token: {body}");
    assert!(body.contains("\"sub\""), "userinfo: {body}");

    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 1, "{stats:?}");
}

#[test]
fn second_get_is_served_from_memory() {
    let (provider, env, _daemon) = serve_corp(3600);

    let first = env.token(&["get", "corp"]);
    first.ok();
    let calls = provider.stats().token_calls;

    let second = env.token(&["get", "corp"]);
    second.ok();
    assert_eq!(
        second.line(),
        first.line(),
        "the cached token is handed out again"
    );
    assert_eq!(
        provider.stats().token_calls,
        calls,
        "no call to the token endpoint"
    );
    assert_eq!(env.browser_launches(), 1, "no second login");
}

#[test]
fn no_login_without_a_login_exits_3() {
    let (provider, env, _daemon) = serve_corp(3600);

    let out = env.token(&["get", "corp", "--no-login"]);
    out.code(exit::LOGIN_REQUIRED);
    assert!(out.stdout.is_empty(), "no token on stdout: {out}");
    assert!(
        out.stderr.contains("corp"),
        "the error names the site: {out}"
    );
    assert_eq!(
        env.browser_launches(),
        0,
        "--no-login never opens a browser"
    );
    assert_eq!(provider.stats().token_calls, 0);
}

#[test]
fn unknown_site_exits_2_naming_it() {
    let (_provider, env, _daemon) = serve_corp(3600);

    let out = env.token(&["get", "unknown"]);
    out.code(exit::USAGE);
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("unknown"),
        "the error names the site: {out}"
    );
    assert_eq!(env.browser_launches(), 0);
}

#[test]
fn concurrent_gets_share_one_login_and_one_browser() {
    let (provider, env, _daemon) = serve_corp(3600);

    let outs = env.token_concurrently(4, &["get", "corp"]);
    one_token(&outs, "every waiter gets the same token");
    assert_eq!(
        env.browser_launches(),
        1,
        "one login per site; log:\n{}",
        env.browser_log()
    );
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}
