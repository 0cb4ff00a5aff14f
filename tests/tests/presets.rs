//! Story: `preset = "NAME"` fills a site's endpoints and quirks; a bad
//! preset is a config error naming the key and its line while the other
//! sites are served; Stack Overflow for Teams logs in by paste mode and logs
//! out through its own `/api/2.3`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../se_stub/stub.rs"]
mod stub;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use stub::SeStub;
use tokend_e2e::{exit, wait_output, Env};

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

#[test]
fn unknown_preset_names_the_key_the_line_and_the_known_presets() {
    let se = SeStub::start();
    let mut env = Env::new();
    se.use_browser(&mut env);
    let text = config(&se, "preset = \"stackoverflw\"\n");
    env.write_config(&text);
    let _daemon = env.daemon();

    let out = env.token(&["get", "bad"]);
    out.code(exit::USAGE);
    let line = line_of(&text, "stackoverflw");
    assert!(
        out.stderr.contains(&format!("config.toml:{line}:")),
        "line {line}: {out}"
    );
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
    let text = config(&se, "preset = \"stackoverflow-teams\"\n");
    env.write_config(&text);
    let _daemon = env.daemon();

    let out = env.token(&["get", "bad"]);
    out.code(exit::USAGE);
    let line = line_of(&text, "[site.bad]");
    assert!(
        out.stderr.contains(&format!("config.toml:{line}:")),
        "line {line}: {out}"
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
    let text = config(&se, "preset = \"github\"\nsubdomain = \"acme\"\n");
    env.write_config(&text);
    let _daemon = env.daemon();
    let out = env.token(&["get", "bad"]);
    out.code(exit::USAGE);
    let line = line_of(&text, "subdomain");
    assert!(
        out.stderr.contains(&format!("config.toml:{line}:")),
        "line {line}: {out}"
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

    let mut cmd = env
        .cmd(&["login", "teams", "--paste"])
        .env("BROWSER_MODE", "ignore")
        .command();
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn token login --paste");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let prefix = format!("{b}/oauth");
    let mut seen = Vec::new();
    let url = loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no authorization URL on stderr:\n{}", seen.join("\n"));
        };
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with(&prefix)) {
            break u.to_owned();
        }
        seen.push(line);
    };
    assert!(
        url.contains("scope=write_access%2Cno_expiry%2Caccess_team"),
        "{url}"
    );
    writeln!(stdin, "{}", se.approve(&url)).unwrap();
    drop(stdin);
    wait_output(child, Duration::from_secs(30), "token login --paste").ok();

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
