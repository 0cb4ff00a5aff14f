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

#[test]
fn without_a_keyring_logins_go_to_the_file_store_and_survive_a_restart() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    // The default store, and no session bus to find a Secret Service on.
    env.unset("TOKEND_STORE");
    env.set("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let mut daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    assert!(
        daemon.log().contains("no keyring is reachable"),
        "{}",
        daemon.log()
    );
    assert!(env.state_dir().join("tokens.json").is_file());
    daemon.stop();

    let _daemon = env.daemon();
    env.token(&["get", "corp", "--no-login"]).ok();
    assert_eq!(env.browser_launches(), 1, "the login survived the restart");
}

#[test]
fn the_daemon_table_chooses_the_store_whoever_starts_the_daemon() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "[daemon]\nstore = \"file\"\nlog = \"debug\"\n\n{}",
        Env::site_config("corp", &provider)
    ));
    env.unset("TOKEND_STORE");
    let mut daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    assert!(
        env.state_dir().join("tokens.json").is_file(),
        "{}",
        daemon.log()
    );
    daemon.stop();
}
