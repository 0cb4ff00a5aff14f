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
    out.code(tokend_e2e::exit::LOGIN_INCOMPLETE);
    assert!(out.stderr.contains("/nonexistent/browser"), "{out}");
    assert!(out.stderr.contains("is not installed"), "{out}");
    assert!(out.stderr.contains("token login corp --device"), "{out}");
    assert!(out.stderr.contains("token login corp --paste"), "{out}");
    assert!(out.stderr.contains("set BROWSER"), "{out}");
}

#[test]
fn a_browser_opener_that_fails_is_reported_at_once_with_the_other_ways() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    // What xdg-open does with no display to open in: exits non-zero at once.
    env.set("BROWSER", "false");
    env.set("TOKEND_LOGIN_TIMEOUT", "120");
    let _daemon = env.daemon();
    let started = Instant::now();
    let mut login = env.cmd(&["login", "corp"]).spawn();
    let stderr = login.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = started + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|l: &String| l.contains("token login corp --paste"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no word of the failed browser within 20 s: {seen:#?}"),
        }
    }
    let _ = login.kill();
    let _ = login.wait();
    let said = seen.join("\n");
    assert!(
        said.contains("the browser did not open: `false` exited with status 1"),
        "{said}"
    );
    assert!(said.contains("Open the URL above by hand"), "{said}");
    assert!(said.contains("token login corp --device"), "{said}");
}

#[test]
fn without_a_keyring_logins_go_to_the_file_store_and_survive_a_restart() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    // The default store, and no session bus to find a Secret Service on.
    env.unset("TOKEND_STORE");
    env.set("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let mut daemon = env.daemon();
    let first = env.token(&["get", "corp"]);
    first.ok();
    assert!(
        daemon.log().contains("no keyring is reachable"),
        "{}",
        daemon.log()
    );
    // Said once to the caller, and always in status.
    assert!(first.stderr.contains("no keyring is reachable"), "{first}");
    let again = env.token(&["get", "corp"]);
    again.ok();
    assert!(!again.stderr.contains("keyring"), "said once: {again}");
    let status = env.token(&["status"]);
    status.ok();
    assert!(status.stdout.contains("store: file"), "{status}");
    assert!(
        status.stdout.contains("no keyring is reachable"),
        "{status}"
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

#[test]
fn an_explicit_keyring_that_cannot_be_reached_warns_that_the_login_will_not_survive() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.set("TOKEND_STORE", "keyring");
    env.set("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    assert!(
        out.stderr.contains("this login will not survive a restart"),
        "{out}"
    );
    let status = env.token(&["status", "--json"]).ok().json();
    assert_eq!(status["store"], "keyring", "{status}");
}

#[test]
fn scopes_narrower_than_configured_are_said_at_login_and_in_status_and_logout_clears_them() {
    let provider = Provider::start(3600);
    let env = Env::new();
    // oidc-provider drops scopes it does not know, silently.
    env.write_config(&format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = [\"openid\", \"read\", \"admin\"]\n",
        provider.issuer()
    ));
    let mut env = env;
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    assert!(out.stderr.contains("without admin"), "{out}");
    let status = env.token(&["status", "--json"]).ok().json();
    let site = &status["sites"][0];
    assert!(
        site["notes"].to_string().contains("without admin"),
        "{status}"
    );
    env.token(&["logout", "corp"]).ok();
    let status = env.token(&["status", "--json"]).ok().json();
    assert_eq!(
        status["sites"][0]["scopes"],
        serde_json::json!([]),
        "{status}"
    );
}

#[test]
fn over_ssh_without_a_browser_a_get_uses_the_device_flow() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.unset("BROWSER");
    env.set("SSH_CONNECTION", "10.0.0.2 50000 10.0.0.1 22");
    env.set("TOKEND_LOGIN_TIMEOUT", "3");
    let _daemon = env.daemon();
    let out = env.token(&["login", "corp"]);
    out.code(tokend_e2e::exit::LOGIN_INCOMPLETE);
    assert!(out.stderr.contains("enter the code"), "device flow: {out}");
    assert_eq!(env.browser_launches(), 0, "no browser was tried");
}

#[test]
fn over_ssh_without_a_device_endpoint_a_get_uses_paste_back() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "[site.corp]\nauthorize_url = \"{0}/auth\"\ntoken_url = \"{0}/token\"\nclient_id = \"public-pkce\"\nscopes = [\"openid\", \"read\"]\n",
        provider.issuer()
    ));
    env.unset("BROWSER");
    env.set("SSH_CONNECTION", "10.0.0.2 50000 10.0.0.1 22");
    let _daemon = env.daemon();
    let out = env.cmd(&["login", "corp"]).stdin("").run();
    assert!(
        out.stderr.contains("paste the address"),
        "paste-back: {out}"
    );
    assert_eq!(env.browser_launches(), 0, "no browser was tried");
}

#[test]
fn an_unreachable_issuer_stays_in_status_and_points_at_the_issuer_key() {
    let mut env = Env::new();
    env.write_config(
        "[site.corp]\nissuer = \"https://127.0.0.1:1\"\nclient_id = \"public-pkce\"\nscopes = [\"openid\"]\n",
    );
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.code(tokend_e2e::exit::PROVIDER);
    assert!(out.stderr.contains("check `issuer`"), "{out}");
    let status = env.token(&["status", "--json"]).ok().json();
    let error = status["sites"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("check `issuer`"), "{status}");
}

/// A config with a thousand sites: the first `get` after a restart starts
/// the daemon and serves the stored access token, with no provider call for
/// it or for the 999 other sites; `status` lists every site and calls
/// nobody either. (That a site's task starts only when asked for is the
/// daemon's unit test `a_sites_task_starts_when_the_site_is_first_asked_for`.)
#[test]
fn a_thousand_sites_cold_start_serves_the_stored_login_without_provider_calls() {
    let provider = Provider::start(3600);
    let mut env = Env::with_store("file");
    env.set("CC_SECRET", "cc-secret");
    let mut config = Env::site_config("corp", &provider);
    for i in 1..1000 {
        config.push_str(&format!(
            "\n[site.svc{i}]\nissuer = \"{}\"\nclient_id = \"cc-client\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\nclient_secret_env = \"CC_SECRET\"\n",
            provider.issuer()
        ));
    }
    env.write_config(&config);
    env.cmd(&["get", "corp"]).autostart().run().ok();
    env.token(&["stop"]).ok();
    let gone = tokend_e2e::wait_until(std::time::Duration::from_secs(5), || {
        !tokend_e2e::raw_status_answers(&env.socket_path())
    });
    assert!(gone, "the daemon did not stop");
    provider.reset();

    let cold = env.cmd(&["get", "corp", "--no-login"]).autostart().run();
    cold.ok();
    assert_eq!(provider.stats().token_calls, 0, "a cold get calls nobody");
    let status = env.token(&["status", "--json"]).ok().json();
    let sites = status["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1000);
    assert_eq!(provider.stats().token_calls, 0, "status calls nobody");
    assert_eq!(env.browser_launches(), 1);
    env.token(&["stop"]).ok();
}
