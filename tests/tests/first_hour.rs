//! Story: a new user's first hour on a headless machine. Without a browser,
//! tokend says what to do instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{Env, Provider};

#[test]
fn without_a_browser_the_login_says_what_to_do_instead() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.set("BROWSER", "/nonexistent/browser");
    env.set("TOKEND_LOGIN_TIMEOUT", "2");
    let _daemon = env.daemon();
    let out = env.token(&["login", "corp"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("/nonexistent/browser"), "{out}");
    assert!(out.stderr.contains("is not installed"), "{out}");
    assert!(out.stderr.contains("token login corp --device"), "{out}");
    assert!(out.stderr.contains("token login corp --paste"), "{out}");
    assert!(out.stderr.contains("set BROWSER"), "{out}");
}
