//! Story: what `token` says is true and says what to do: a scope the
//! provider left out is its doing, not the config's; warnings come one to a
//! line, and the keyring fallback once per store change; notes are not
//! errors; a mistyped command or name gets the right spelling, a name the
//! config would refuse is not suggested; `exec` fails as shells do; a client
//! secret the daemon cannot read, or the provider refuses, says which
//! settings to look at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{exit, Daemon, Env, Provider};

/// `[site.corp]` for the public client with `scopes`, of which the test
/// provider grants only the ones it knows (openid, read).
fn corp_with_scopes(provider: &Provider, scopes: &str) -> String {
    format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = {scopes}\n",
        provider.issuer()
    )
}

/// corp configured with `admin`, which the provider leaves out, logged in.
fn logged_in_without_admin() -> (Provider, Env, Daemon) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&corp_with_scopes(
        &provider,
        r#"["openid", "read", "admin"]"#,
    ));
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    (provider, env, daemon)
}

#[test]
fn a_configured_scope_the_provider_did_not_grant_is_said_to_be_the_providers() {
    let (_provider, env, _daemon) = logged_in_without_admin();

    let out = env.token(&["get", "corp", "--scope", "admin"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr
            .contains("the provider did not grant scope `admin` at the login (it granted"),
        "{out}"
    );
    assert!(
        !out.stderr.contains("add it to `scopes`"),
        "it is there: {out}"
    );

    // A scope that is not configured at all still points to the config.
    let out = env.token(&["get", "corp", "--scope", "write"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("add it to `scopes`"), "{out}");
}

/// The text of `column` in `row`, by the header's column positions.
fn column<'a>(header: &str, row: &'a str, column: &str, next: Option<&str>) -> &'a str {
    let start = header
        .find(column)
        .unwrap_or_else(|| panic!("{column} in {header}"));
    let end = next.map_or(row.len(), |n| header.find(n).unwrap_or(row.len()));
    row.get(start..end.min(row.len())).unwrap_or("").trim()
}

#[test]
fn status_shows_notes_under_notes_and_only_errors_under_last_error() {
    let (_provider, env, _daemon) = logged_in_without_admin();

    let out = env.token(&["status"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.starts_with("SITE"))
        .unwrap_or_else(|| panic!("a header: {out}"));
    let row = lines
        .iter()
        .find(|l| l.starts_with("corp "))
        .unwrap_or_else(|| panic!("a row for corp: {out}"));
    assert_eq!(
        column(header, row, "LAST ERROR", Some("NOTES")),
        "-",
        "a note is no error: {out}"
    );
    assert!(
        column(header, row, "NOTES", None).contains("without admin"),
        "{out}"
    );
    // The JSON says the same.
    let site = env.site_status("corp");
    assert!(site["last_error"].is_null(), "{site}");
    assert!(
        site["notes"].to_string().contains("without admin"),
        "{site}"
    );
}

#[test]
fn mistyped_names_get_the_right_spelling_and_impossible_ones_no_table_to_add() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    let _daemon = env.daemon();

    let out = env.token(&["get", "bad name!"]);
    out.code(exit::USAGE);
    assert!(
        !out.stderr.contains("[site.bad name!]"),
        "the config refuses it: {out}"
    );
    assert!(out.stderr.contains("a site name holds only"), "{out}");
    let out = env.token(&["get", "crop"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("did you mean `corp`?"), "{out}");

    let out = env.token(&["gett", "corp"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("did you mean `get`?"), "{out}");
    let out = env.token(&["get", "corp", "--formt", "json"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("did you mean `--format`?"), "{out}");
}

#[test]
fn exec_says_only_the_missing_double_dash_and_exits_127_for_a_missing_command() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    let _daemon = env.daemon();
    let out = env.token(&["exec", "corp", "sh", "-c", "echo $TOKEN"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr
            .contains("the `--` before the COMMAND is missing"),
        "the command is there: {out}"
    );
    assert!(!out.stderr.contains("and COMMAND are missing"), "{out}");

    let out = env.token(&["exec", "corp", "--", "/nonexistent"]);
    assert_eq!(out.code, 127, "as shells do: {out}");
    assert!(out.stderr.contains("could not run `/nonexistent`"), "{out}");
}

#[test]
fn a_config_that_does_not_parse_is_not_also_no_sites() {
    let mut env = Env::new();
    env.write_config("[site.corp]\nissuer = \"https://a.example\nclient_id = \"x\"\n");
    let _daemon = env.daemon();
    let out = env.token(&["status"]);
    assert!(out.stdout.contains("does not parse"), "{out}");
    assert!(!out.stdout.contains("no sites configured"), "{out}");
    let out = env.token(&["get", "corp"]);
    out.code(exit::USAGE);
    assert!(!out.stderr.contains("add a [site"), "{out}");
}

/// Lines `token` printed as warnings.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("token: warning:"))
        .collect()
}

#[test]
fn warnings_come_one_to_a_line_and_the_keyring_fallback_once_per_store_change() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&corp_with_scopes(
        &provider,
        r#"["openid", "read", "admin"]"#,
    ));
    // The default store, and no session bus to find a Secret Service on.
    env.unset("TOKEND_STORE");
    env.set("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let mut daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    let said = warnings(&out.stderr);
    assert_eq!(said.len(), 2, "two warnings, two lines: {out}");
    assert!(
        said.iter().any(|l| l.contains("no keyring is reachable")),
        "{out}"
    );
    assert!(said.iter().any(|l| l.contains("without admin")), "{out}");
    daemon.stop();

    // The next start has the same fallback: not news, but status says it.
    let mut daemon = env.daemon();
    let out = env.token(&["get", "corp", "--no-login"]);
    out.ok();
    assert!(
        !out.stderr.contains("keyring"),
        "once per store change: {out}"
    );
    let status = env.token(&["status"]);
    assert!(
        status.stdout.contains("no keyring is reachable"),
        "{status}"
    );
    daemon.stop();

    // A start with another store, then the fallback again: news again.
    env.set("TOKEND_STORE", "file");
    let mut daemon = env.daemon();
    env.token(&["get", "corp", "--no-login"]).ok();
    daemon.stop();
    env.unset("TOKEND_STORE");
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp", "--no-login"]);
    out.ok();
    assert!(out.stderr.contains("no keyring is reachable"), "{out}");
}

/// The client-credentials site `svc` (client_secret_env CC_SECRET), its
/// daemon started with `secret` in CC_SECRET (or without CC_SECRET).
fn svc_whose_daemon_has(secret: Option<&str>) -> (Provider, Env, Daemon) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_client_credentials_config(&provider);
    match secret {
        Some(s) => env.set("CC_SECRET", s),
        None => env.unset("CC_SECRET"),
    };
    let daemon = env.daemon();
    (provider, env, daemon)
}

/// `client_secret_env` is read from the daemon's environment: a daemon
/// started without it says so in `status`, with the fix.
#[test]
fn a_secret_missing_from_the_daemons_environment_shows_in_status_with_the_fix() {
    let (_provider, env, _daemon) = svc_whose_daemon_has(None);
    let site = env.site_status("svc");
    assert_eq!(site["state"], "error", "{site}");
    let why = site["last_error"].as_str().unwrap_or_default().to_owned();
    for fix in [
        "needs its client secret",
        "CC_SECRET",
        "token stop",
        "client_secret_cmd",
        "Environment=CC_SECRET",
    ] {
        assert!(why.contains(fix), "{fix}: {why}");
    }
    // The caller that passes the variable to `token` hears the same.
    let out = env.cmd(&["get", "svc"]).env("CC_SECRET", "cc-secret").run();
    out.code(exit::USAGE);
    assert!(out.stderr.contains("token stop"), "{out}");
}

#[test]
fn invalid_client_names_the_client_settings_and_the_secrets_source() {
    let (_provider, env, _daemon) = svc_whose_daemon_has(Some("not-the-secret"));
    let out = env.token(&["get", "svc"]);
    out.code(exit::PROVIDER);
    for part in [
        "invalid_client",
        "client_id `cc-client`",
        "client_auth `basic` (the default)",
        "the secret from client_secret_env CC_SECRET",
    ] {
        assert!(out.stderr.contains(part), "{part}: {out}");
    }
    assert!(!out.stderr.contains("not-the-secret"), "no secret: {out}");
}
