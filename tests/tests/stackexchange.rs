//! Story: a Stack Exchange site (`preset = "stackexchange"`) against a stub
//! that behaves like stackoverflow.com and api.stackexchange.com: a login
//! through the browser with comma-joined scopes and PKCE, a `no_expiry`
//! token that never expires and survives a restart (there is no refresh
//! token to fall back on), `api_key` handed to callers, and logout through
//! `/2.3/access-tokens/{token}/invalidate`.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::stub;

use std::time::Duration;

use stub::{wait_for_file, SeStub, KEY};
use tokend_e2e::{exit, Env, Value};

fn site_status(env: &Env, site: &str) -> Value {
    let out = env.token(&["status", site, "--json"]);
    out.ok();
    let v = out.json();
    v["sites"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["site"] == site))
        .cloned()
        .unwrap_or_else(|| panic!("no site {site} in {v}"))
}

#[test]
fn login_use_restart_and_logout() {
    let se = SeStub::start();
    let mut env = Env::with_store("file");
    se.use_browser(&mut env);
    env.write_config(&se.site("so", &["no_expiry", "write_access"], ""));
    let mut daemon = env.daemon();

    let out = env.token(&["get", "so"]);
    out.ok();
    let token = out.line().to_owned();
    assert_eq!(env.browser_launches(), 1);
    let url = &env.browser_urls()[0];
    assert!(url.starts_with(&format!("{}/oauth?", se.base())), "{url}");
    assert!(
        url.contains("scope=no_expiry%2Cwrite_access"),
        "scopes are comma-joined: {url}"
    );
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "loopback redirect: {url}"
    );
    assert!(
        url.contains("code_challenge_method=S256"),
        "PKCE is sent to SE too: {url}"
    );
    let stats = se.stats();
    assert_eq!(
        stats["token_calls_by_path"]["/oauth/access_token/json"], 1,
        "{stats}"
    );
    assert_eq!(stats["pkce"], 1, "{stats}");

    let (status, body) = se.me("/2.3", &token);
    assert_eq!(
        status, 200,
        "the token works at /2.3/me with the key: {body}"
    );

    let json = env.token(&["get", "so", "--format", "json"]);
    json.ok();
    let v = json.json();
    assert_eq!(v["access_token"], token.as_str());
    assert_eq!(
        v["api_key"], KEY,
        "callers get the app key to send as `key`: {v}"
    );
    assert!(v["expires_at"].is_null(), "no_expiry: {v}");

    let st = site_status(&env, "so");
    assert!(st["expires_at"].is_null(), "status shows no expiry: {st}");
    assert_eq!(st["has_refresh_token"], false, "{st}");

    // No refresh token: the access token itself is the login, and persists.
    daemon.stop();
    drop(daemon);
    let _daemon = env.daemon();
    let again = env.token(&["get", "so", "--no-login"]);
    again.ok();
    assert_eq!(again.line(), token, "the same token after a restart");
    assert_eq!(env.browser_launches(), 1, "no new login after a restart");
    assert_eq!(se.stat("token_calls"), 1);

    let out = env.token(&["logout", "so"]);
    out.ok();
    assert!(out.stderr.contains("invalidated"), "{out}");
    let stats = se.stats();
    assert_eq!(stats["invalidations"], 1, "{stats}");
    assert_eq!(stats["invalidated"][0], token.as_str(), "{stats}");
    let (status, _) = se.me("/2.3", &token);
    assert_eq!(status, 400, "the token is dead after logout");
    env.token(&["get", "so", "--no-login"])
        .code(exit::LOGIN_REQUIRED);
}

#[test]
fn expiring_token_from_the_form_endpoint() {
    let se = SeStub::start_with(&[("SE_EXPIRES", "7200")]);
    let mut env = Env::new();
    se.use_browser(&mut env);
    // `/oauth/access_token` answers `access_token=...&expires=7200`.
    let config = se
        .site("so", &["write_access"], "")
        .replace("/oauth/access_token/json", "/oauth/access_token");
    env.write_config(&config);
    let _daemon = env.daemon();

    let out = env.token(&["get", "so", "--format", "json"]);
    out.ok();
    let v = out.json();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = v["expires_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("an expiry: {v}"));
    assert!(
        at > now + 7000 && at <= now + 7200 + 5,
        "`expires` is read: {v}"
    );
    assert_eq!(se.stats()["token_calls_by_path"]["/oauth/access_token"], 1);
    let (status, body) = se.me("/2.3", v["access_token"].as_str().unwrap());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_failed_invalidation_is_reported_and_the_login_forgotten() {
    let se = SeStub::start();
    let mut env = Env::new();
    se.use_browser(&mut env);
    env.write_config(
        &se.site("so", &["no_expiry"], "")
            .replace(KEY, "not-the-key"),
    );
    let _daemon = env.daemon();
    let out = env.token(&["get", "so"]);
    out.ok();
    let token = out.line().to_owned();

    let out = env.token(&["logout", "so"]);
    out.ok();
    assert!(out.stderr.contains("failed"), "{out}");
    assert!(
        out.stderr.contains("bad_parameter"),
        "the provider's error is shown: {out}"
    );
    assert!(!out.stderr.contains(&token), "never the token: {out}");
    assert_eq!(se.stat("invalidations"), 0);
    env.token(&["get", "so", "--no-login"])
        .code(exit::LOGIN_REQUIRED);
}

/// [`stub::run_paste_login`] to a site whose redirect is the stub's
/// `/oauth/login_success`: that is the URL pasted back.
fn paste_login(env: &Env, se: &SeStub, site: &str) -> tokend_e2e::Output {
    let login = stub::run_paste_login(env, se, site);
    assert!(
        login
            .pasted
            .starts_with(&format!("{}/oauth/login_success", se.base())),
        "{}",
        login.pasted
    );
    login.out
}

#[test]
fn paste_mode_login() {
    let se = SeStub::start();
    let mut env = Env::new();
    se.use_browser(&mut env);
    let redirect = format!("redirect_uri = \"{}/oauth/login_success\"\n", se.base());
    env.write_config(&se.site("so", &["no_expiry", "write_access"], &redirect));
    let _daemon = env.daemon();

    paste_login(&env, &se, "so").ok();
    let out = env.token(&["get", "so", "--no-login"]);
    out.ok();
    let (status, body) = se.me("/2.3", out.line());
    assert_eq!(status, 200, "{body}");
    assert_eq!(se.stat("pkce"), 1, "PKCE in paste mode too");
}

#[test]
fn implicit_flow_by_paste() {
    let se = SeStub::start();
    let mut env = Env::new();
    se.use_browser(&mut env);
    let config = se
        .site(
            "so",
            &["no_expiry"],
            &format!(
                "grant = \"implicit\"\nredirect_uri = \"{}/oauth/login_success\"\n",
                se.base()
            ),
        )
        .replace(
            &format!("{}/oauth\"", se.base()),
            &format!("{}/oauth/dialog\"", se.base()),
        );
    env.write_config(&config);
    let _daemon = env.daemon();

    paste_login(&env, &se, "so").ok();
    assert_eq!(
        se.stat("token_calls"),
        0,
        "the implicit flow has no token call"
    );
    let out = env.token(&["get", "so", "--no-login", "--format", "json"]);
    out.ok();
    let v = out.json();
    assert!(v["expires_at"].is_null(), "no_expiry: {v}");
    let (status, body) = se.me("/2.3", v["access_token"].as_str().unwrap());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_se_browser_writes_paste_urls() {
    // The stub's browser script on its own, so the paste tests above have a
    // working counterpart even before paste mode lands.
    let se = SeStub::start();
    let mut env = Env::new();
    let paste = se.use_browser(&mut env);
    let url = format!(
        "{}/oauth?client_id=1&scope=no_expiry&state=s1&redirect_uri={}",
        se.base(),
        tokend_e2e::form_encode(&format!("{}/oauth/login_success", se.base()))
    );
    let out = env
        .cmd(&[&url])
        .program(tokend_e2e::tests_dir().join("se_stub").join("browser.py"))
        .run();
    out.ok();
    let final_url = wait_for_file(&paste, Duration::from_secs(10)).expect("a paste URL");
    assert!(
        final_url.contains("/oauth/login_success?code="),
        "{final_url}"
    );
    assert!(final_url.ends_with("&state=s1"), "{final_url}");
}
