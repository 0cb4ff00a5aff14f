//! Story: the daemon follows its config file without `token reload`. A new
//! site becomes servable, a removed one unknown; a change that keeps the
//! login's identity (e.g. `refresh_before`) keeps the login, a change of
//! client, scopes or issuer drops it; a broken edit keeps the previous
//! settings running and is reported in `token status --json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::thread;
use std::time::Duration;

use tokend_e2e::{exit, wait_until, Daemon, Env, Output, Provider, Value};

/// `token status --json`, parsed.
fn status(env: &Env) -> Value {
    let out = env.token(&["status", "--json"]);
    out.ok();
    out.json()
}

fn site_of(v: &Value, site: &str) -> Option<Value> {
    v["sites"]
        .as_array()?
        .iter()
        .find(|s| s["site"] == site)
        .cloned()
}

/// Polls `token status --json` until `cond` holds (15 s max).
#[track_caller]
fn wait_status(env: &Env, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        last = status(env);
        let ok = cond(&last);
        if !ok {
            thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(ok, "{what}: not seen within 15 s; last status: {last}");
    last
}

/// Replaces the config the way editors that save atomically do: a temp file
/// renamed over the old one.
fn rewrite_config_atomically(env: &Env, toml: &str) {
    let p = env.config_path();
    let tmp = p.with_extension("toml.tmp");
    fs::write(&tmp, toml).expect("write temp config");
    fs::rename(&tmp, &p).expect("rename config");
}

fn two_sites(provider: &Provider) -> String {
    format!(
        "{}\n{}",
        Env::site_config("a", provider),
        Env::site_config("b", provider)
    )
}

#[test]
fn an_added_site_is_served_and_a_removed_one_is_unknown() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("a", &provider);
    let _daemon = env.daemon();
    env.token(&["get", "a"]).ok();
    env.token(&["get", "b"]).code(exit::USAGE);

    // Added (in-place write): servable without `token reload`.
    env.write_config(&two_sites(&provider));
    wait_status(&env, "site b added", |v| site_of(v, "b").is_some());
    env.token(&["get", "b"]).ok();
    assert_eq!(env.browser_launches(), 2);

    // Removed (atomic rename): unknown, and a keeps its login.
    rewrite_config_atomically(&env, &Env::site_config("a", &provider));
    wait_status(&env, "site b removed", |v| site_of(v, "b").is_none());
    let out = env.token(&["get", "b", "--no-login"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr.contains('b'),
        "the message names the site: {out}"
    );
    env.token(&["get", "a", "--no-login"]).ok();
    assert_eq!(env.browser_launches(), 2, "a kept its login");
}

#[test]
fn changing_refresh_before_keeps_the_login() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("a", &provider);
    let _daemon = env.daemon();
    let first = env.token(&["get", "a"]);
    first.ok();
    let before = site_of(&status(&env), "a").unwrap();
    let expires_at = before["expires_at"].as_u64().expect("expires_at");
    // Default: about 1320–1440 s before expiry.
    assert!(
        before["next_refresh"].as_u64().expect("next_refresh") <= expires_at - 1300,
        "{before}"
    );

    // 600 s (+10–20 %) before expiry now.
    rewrite_config_atomically(
        &env,
        &format!(
            "{}refresh_before = \"600s\"\n",
            Env::site_config("a", &provider)
        ),
    );
    let st = wait_status(&env, "the new refresh_before in next_refresh", |v| {
        site_of(v, "a")
            .and_then(|s| s["next_refresh"].as_u64())
            .is_some_and(|n| n >= expires_at - 730)
    });
    let a = site_of(&st, "a").unwrap();
    assert_eq!(a["has_refresh_token"], true, "{a}");
    let out = env.token(&["get", "a", "--no-login"]);
    out.ok();
    assert_eq!(out.line(), first.line(), "the same token, no new login");
    assert_eq!(env.browser_launches(), 1);
    assert_eq!(provider.stats().token_calls, 1);
}

/// Logs in to `a`, rewrites its table with `changed`, and checks the login
/// is dropped (and a new one works).
fn identity_change_drops_the_login(env: &mut Env, changed: &str) -> Daemon {
    let daemon = env.daemon();
    env.token(&["get", "a", "--no-login"])
        .code(exit::LOGIN_REQUIRED);
    env.token(&["get", "a"]).ok();
    assert_eq!(env.browser_launches(), 1);
    rewrite_config_atomically(env, changed);
    wait_status(env, "the login dropped", |v| {
        site_of(v, "a").is_some_and(|s| s["has_refresh_token"] == false)
    });
    env.token(&["get", "a", "--no-login"])
        .code(exit::LOGIN_REQUIRED);
    let out = env.token(&["get", "a"]);
    out.ok();
    assert_eq!(env.browser_launches(), 2, "a new login after the change");
    daemon
}

#[test]
fn changing_scopes_drops_the_login() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("a", &provider);
    let changed = format!(
        "[site.a]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = [\"openid\", \"read\", \"write\"]\n",
        provider.issuer()
    );
    let _daemon = identity_change_drops_the_login(&mut env, &changed);
    let out = env.token(&["get", "a", "--format", "json"]);
    out.ok();
    let scopes = out.json()["scopes"].clone();
    assert!(
        scopes
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == "write")),
        "the new login has the new scopes: {scopes}"
    );
}

#[test]
fn changing_client_id_drops_the_login() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("a", &provider);
    env.set("A_SECRET", "post-secret");
    let changed = format!(
        "[site.a]\nissuer = \"{}\"\nclient_id = \"conf-post\"\nclient_secret_env = \"A_SECRET\"\nclient_auth = \"post\"\nscopes = [\"openid\", \"read\"]\n",
        provider.issuer()
    );
    let _daemon = identity_change_drops_the_login(&mut env, &changed);
}

#[test]
fn changing_the_issuer_drops_the_login() {
    let provider = Provider::start(3600);
    let other = Provider::start(3600);
    let mut env = Env::with_site("a", &provider);
    let _daemon = identity_change_drops_the_login(&mut env, &Env::site_config("a", &other));
    assert_eq!(
        other.stats().grant("authorization_code"),
        1,
        "logged in at the new issuer"
    );
}

/// A world with sites `a` and `b` at `provider`, its daemon, and both
/// logged in; returns a's first token too.
fn both_logged_in(provider: &Provider) -> (Env, Daemon, Output) {
    let mut env = Env::new();
    env.write_config(&two_sites(provider));
    let daemon = env.daemon();
    let a1 = env.token(&["get", "a"]);
    a1.ok();
    env.token(&["get", "b"]).ok();
    (env, daemon, a1)
}

/// Waits until `token status --json` lists config errors.
#[track_caller]
fn wait_config_errors(env: &Env, what: &str) -> Value {
    wait_status(env, what, |v| {
        v["config_errors"].as_array().is_some_and(|e| !e.is_empty())
    })
}

#[test]
fn an_invalid_site_edit_keeps_the_previous_settings_running() {
    let provider = Provider::start(3600);
    let (env, _daemon, a1) = both_logged_in(&provider);

    // An unknown key in a's table.
    rewrite_config_atomically(
        &env,
        &format!(
            "{}bogus_key = 1\n\n{}",
            Env::site_config("a", &provider),
            Env::site_config("b", &provider)
        ),
    );
    let st = wait_config_errors(&env, "config_errors for the unknown key");
    let errors = st["config_errors"].to_string();
    assert!(
        errors.contains("bogus_key"),
        "the error names the key: {st}"
    );
    let a = site_of(&st, "a").unwrap_or_else(|| panic!("a is still listed: {st}"));
    let last_error = a["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("a's last_error: {a}"));
    assert!(
        last_error.contains("bogus_key") || last_error.contains("config"),
        "a's last_error mentions the config error: {a}"
    );

    // The previous settings keep running: same login, same token.
    let out = env.token(&["get", "a", "--no-login"]);
    out.ok();
    assert_eq!(out.line(), a1.line());
    env.token(&["get", "b", "--no-login"]).ok();

    // Fixed: the errors go away, the login is still there.
    rewrite_config_atomically(&env, &two_sites(&provider));
    wait_status(&env, "config_errors cleared", |v| {
        v["config_errors"].as_array().is_some_and(Vec::is_empty)
    });
    env.token(&["get", "a", "--no-login"]).ok();
    assert_eq!(env.browser_launches(), 2);
}

#[test]
fn a_toml_syntax_error_keeps_every_site_running() {
    let provider = Provider::start(3600);
    let (env, _daemon, a1) = both_logged_in(&provider);

    rewrite_config_atomically(
        &env,
        &format!("{}\n[site.c\nissuer = \n", two_sites(&provider)),
    );
    let st = wait_config_errors(&env, "config_errors for the syntax error");
    assert!(
        site_of(&st, "a").is_some() && site_of(&st, "b").is_some(),
        "{st}"
    );
    let out = env.token(&["reload"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("kept its previous settings (2 site(s))"),
        "{out}"
    );
    assert!(!out.stderr.contains("reloaded its config"), "{out}");
    let out = env.token(&["get", "a", "--no-login"]);
    out.ok();
    assert_eq!(out.line(), a1.line());
    env.token(&["get", "b", "--no-login"]).ok();
    assert_eq!(env.browser_launches(), 2);
}

#[test]
fn a_deleted_config_file_keeps_the_previous_settings_until_it_is_back() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("a", &provider);
    let daemon = env.daemon();
    env.token(&["get", "a"]).ok();

    // An accidental `rm`, or an editor's delete-then-rename half done.
    fs::remove_file(env.config_path()).unwrap();
    let v = wait_status(&env, "the deletion noticed", |v| {
        v["config_errors"]
            .to_string()
            .contains("the config file is gone")
    });
    assert!(site_of(&v, "a").is_some(), "site a still served: {v}");
    assert!(
        v["config_errors"]
            .to_string()
            .contains("keeps running the previous settings (1 site(s))"),
        "{v}"
    );
    let table = env.token(&["status"]);
    assert!(table.stdout.contains("the config file is gone"), "{table}");
    env.token(&["get", "a", "--no-login"]).ok();
    assert!(
        daemon.log().contains("the config file is gone"),
        "{}",
        daemon.log()
    );

    // Back, with a second site: read at once, the first keeps its login.
    env.write_config(&two_sites(&provider));
    let v = wait_status(&env, "the file read again", |v| site_of(v, "b").is_some());
    assert_eq!(v["config_errors"], Value::Array(vec![]), "{v}");
    env.token(&["get", "a", "--no-login"]).ok();
    assert_eq!(env.browser_launches(), 1);
}

#[test]
fn daemon_settings_apply_on_reload_and_a_store_change_waits_for_the_next_start() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    // The [daemon] table decides, not the environment.
    env.unset("TOKEND_STORE").unset("TOKEND_LOG");
    env.set("BROWSER_MODE", "ignore");
    let site = Env::site_config("corp", &provider);
    env.write_config(&format!("{site}\n[daemon]\nstore = \"memory\"\n"));
    let daemon = env.daemon();
    env.token(&["status"]).ok();
    assert!(!daemon.log().contains("request"), "info: {}", daemon.log());

    rewrite_config_atomically(
        &env,
        &format!("{site}\n[daemon]\nstore = \"file\"\nlog = \"debug\"\nlogin_timeout = \"2s\"\n"),
    );
    let later = "[daemon] store = \"file\" takes effect at the next start (`token stop`)";
    let v = wait_status(&env, "the store change said", |v| {
        v["store_note"].as_str().is_some_and(|n| n.contains(later))
    });
    assert_eq!(v["store"], "memory", "{v}");
    assert!(daemon.log().contains(later), "{}", daemon.log());
    let table = env.token(&["status"]);
    assert!(table.stdout.contains(later), "{table}");

    // log: debug lines from now on.
    env.token(&["status"]).ok();
    assert!(
        daemon.log().contains("request"),
        "debug after the reload: {}",
        daemon.log()
    );
    // login_timeout: the next login waits 2 s, not 5 min.
    let out = env
        .cmd(&["get", "corp"])
        .timeout(Duration::from_secs(60))
        .run();
    out.code(exit::LOGIN_INCOMPLETE);
    assert!(out.stderr.contains("waiting up to 2s"), "{out}");
}

/// A config edit that points a logged-in site's tokens somewhere else (an
/// overriding `token_url` or `revoke_url`, a new client authentication or
/// secret variable) drops the login instead of sending the refresh token
/// there, even for a token that is still valid.
#[test]
fn redirecting_a_sites_endpoints_drops_the_login_unsent() {
    let provider = Provider::start(3600);
    let elsewhere = Provider::start(3600);
    let base = Env::site_config("a", &provider);
    let edits = [
        format!("token_url = \"{}/token\"\n", elsewhere.issuer()),
        format!("revoke_url = \"{}/token/revocation\"\n", elsewhere.issuer()),
        "client_secret_env = \"HOME\"\nclient_auth = \"post\"\n".to_owned(),
    ];
    let mut env = Env::with_site("a", &provider);
    let _daemon = env.daemon();
    for (n, edit) in edits.iter().enumerate() {
        if n > 0 {
            // Back to the provider's own endpoints, reloaded before the login.
            rewrite_config_atomically(&env, &base);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        env.token(&["get", "a"]).ok();
        wait_status(&env, "logged in", |v| {
            site_of(v, "a").is_some_and(|s| s["has_refresh_token"] == true)
        });
        rewrite_config_atomically(&env, &format!("{base}{edit}"));
        wait_status(&env, &format!("the login dropped after {edit}"), |v| {
            site_of(v, "a").is_some_and(|s| s["has_refresh_token"] == false)
        });
        env.token(&["get", "a", "--no-login"])
            .code(exit::LOGIN_REQUIRED);
    }
    assert_eq!(elsewhere.stats().token_calls, 0, "nothing sent elsewhere");
    assert_eq!(provider.stats().grant("refresh_token"), 0);
}
