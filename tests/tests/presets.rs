//! Story: `preset = "NAME"` fills a site's endpoints and quirks; a bad
//! preset is a config error naming the key and its line while the other
//! sites are served; Stack Overflow for Teams logs in by paste mode and logs
//! out through its own `/api/2.3`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::stub;

use stub::SeStub;
use tokend_e2e::{exit, Daemon, Env, Output};

/// A good SE site, then `[site.bad]` with the `bad` lines.
fn config(se: &SeStub, bad: &str) -> String {
    format!(
        "{}\n[site.bad]\nclient_id = \"x\"\n{bad}",
        se.site("good", &["no_expiry"], "")
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in config")
        + 1
}

/// Starts a daemon on [`config`] with the `bad` lines: `token get bad` is a
/// usage error pointing at the line that holds `needle`. Returns its output.
#[track_caller]
fn bad_site_error(env: &mut Env, se: &SeStub, bad: &str, needle: &str) -> (Output, Daemon) {
    let text = config(se, bad);
    env.write_config(&text);
    let daemon = env.daemon();
    let out = env.token(&["get", "bad"]);
    out.code(exit::USAGE);
    let line = line_of(&text, needle);
    assert!(
        out.stderr.contains(&format!("config.toml:{line}:")),
        "line {line}: {out}"
    );
    (out, daemon)
}

#[test]
fn unknown_preset_names_the_key_the_line_and_the_known_presets() {
    let se = SeStub::start();
    let mut env = Env::new();
    se.use_browser(&mut env);
    let (out, _daemon) =
        bad_site_error(&mut env, &se, "preset = \"stackoverflw\"\n", "stackoverflw");
    assert!(out.stderr.contains("`preset`"), "{out}");
    for name in [
        "stackexchange",
        "stackoverflow-teams",
        "github",
        "gitlab",
        "google",
        "microsoft",
    ] {
        assert!(
            out.stderr.contains(&format!("\"{name}\"")),
            "lists {name}: {out}"
        );
    }
    // The good site is served.
    env.token(&["get", "good"]).ok();
}

#[test]
fn teams_without_subdomain_is_a_config_error_at_the_site_header() {
    let se = SeStub::start();
    let mut env = Env::new();
    let (out, _daemon) = bad_site_error(
        &mut env,
        &se,
        "preset = \"stackoverflow-teams\"\n",
        "[site.bad]",
    );
    assert!(out.stderr.contains("`subdomain`"), "{out}");
    let status = env.token(&["status", "--json"]);
    status.ok();
    let errors = status.json()["config_errors"].to_string();
    assert!(
        errors.contains("subdomain"),
        "status lists the error: {errors}"
    );
}

#[test]
fn a_parameter_without_its_preset_is_refused() {
    let se = SeStub::start();
    let mut env = Env::new();
    let (out, _daemon) = bad_site_error(
        &mut env,
        &se,
        "preset = \"github\"\nsubdomain = \"acme\"\n",
        "subdomain",
    );
    assert!(out.stderr.contains("stackoverflow-teams"), "{out}");
}

#[test]
fn teams_paste_login_and_logout() {
    let se = SeStub::start();
    let mut env = Env::new();
    se.use_browser(&mut env);
    let b = se.base();
    // The preset's https://acme.stackenterprise.co endpoints, pointed at the
    // stub; the redirect stays the fixed /oauth/login_success (paste mode).
    env.write_config(&format!(
        "[site.teams]\npreset = \"stackoverflow-teams\"\nsubdomain = \"acme\"\nclient_id = \"110\"\n\
         scopes = [\"write_access\", \"no_expiry\", \"access_team\"]\napi_key = \"{key}\"\n\
         authorize_url = \"{b}/oauth\"\ntoken_url = \"{b}/oauth/access_token/json\"\n\
         redirect_uri = \"{b}/oauth/login_success\"\napi_base = \"{b}/api/2.3\"\n",
        key = stub::KEY
    ));
    let _daemon = env.daemon();

    let login = stub::run_paste_login(&env, &se, "teams");
    let url = &login.authorization_url;
    assert!(
        url.contains("scope=write_access%2Cno_expiry%2Caccess_team"),
        "{url}"
    );
    login.out.ok();

    let out = env.token(&["get", "teams", "--no-login"]);
    out.ok();
    let token = out.line().to_owned();
    let (status, body) = se.me("/api/2.3", &token);
    assert_eq!(status, 200, "{body}");
    env.token(&["logout", "teams"]).ok();
    assert_eq!(se.stat("invalidations"), 1);
    let (status, _) = se.me("/api/2.3", &token);
    assert_eq!(status, 400);
}
