//! Story: `token login SITE --device` shows a user code and verification URL
//! (RFC 8628); once approved elsewhere, the site is logged in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tokend_e2e::{serve_corp, wait_output, Env, Provider};

/// The user code in a line: two groups of 4 uppercase letters joined by '-'
/// (oidc-provider's default format).
fn user_code(line: &str) -> Option<String> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| {
            let b = w.as_bytes();
            b.len() == 9
                && b[4] == b'-'
                && w.chars()
                    .filter(|c| *c != '-')
                    .all(|c| c.is_ascii_uppercase())
        })
        .map(str::to_owned)
}

/// `token login SITE --device`, approved by the scripted browser: returns
/// what the login printed.
fn device_login(provider: &Provider, env: &Env, site: &str) -> String {
    let mut child = env.cmd(&["login", site, "--device"]).spawn();
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    for r in [
        Box::new(stderr) as Box<dyn std::io::Read + Send>,
        Box::new(stdout),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let verification = format!("{}/device", provider.issuer());
    let (mut uri, mut code, mut seen) = (None, None, String::new());
    while uri.is_none() || code.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| {
                panic!("no user code and verification URL shown; output so far:\n{seen}")
            });
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(&verification) {
            uri = Some(verification.clone());
        }
        if let Some(c) = user_code(&line) {
            code = Some(c);
        }
    }
    env.run_browser(
        &[
            "--device",
            uri.as_deref().unwrap(),
            code.as_deref().unwrap(),
        ],
        "device approval",
    );

    // Rebuild a waitable child from the remaining process.
    let out = wait_output(child, Duration::from_secs(30), "token login --device");
    assert_eq!(out.code, 0, "login --device: {out}\n{seen}");
    assert_eq!(env.browser_launches(), 0, "--device opens no browser");
    seen
}

#[test]
fn device_login_then_get() {
    let (provider, env, _daemon) = serve_corp(3600);
    device_login(&provider, &env, "corp");

    let get = env.token(&["get", "corp", "--no-login"]);
    get.ok();
    let (status, body) = provider.userinfo(get.line());
    assert_eq!(status, 200, "{body}");
    assert!(
        provider
            .stats()
            .grant("urn:ietf:params:oauth:grant-type:device_code")
            >= 1
    );
}

/// A `dpop = true` site that logs in by device code gets a DPoP-bound
/// token: every poll carries a proof (with the server's nonce, which this
/// provider demands), and the token is bound to the daemon's key. Before,
/// polls went without a proof and an unbound Bearer token was stored.
#[test]
fn a_dpop_site_logged_in_by_device_code_gets_a_bound_token() {
    let provider = Provider::start_with(&[("AT_TTL", "3600"), ("DPOP_NONCE", "1")]);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}dpop = true\n",
        Env::site_config("corp", &provider)
    ));
    let _daemon = env.daemon();
    device_login(&provider, &env, "corp");

    let me = provider.userinfo_url();
    let out = env.token(&[
        "get",
        "corp",
        "--dpop",
        "GET",
        &me,
        "--format",
        "json",
        "--no-login",
    ]);
    out.ok();
    let v = out.json();
    assert_eq!(v["token_type"], "DPoP", "{v}");
    let token = v["access_token"].as_str().unwrap();
    let intro = provider.introspect(token);
    assert_eq!(intro["token_type"], "DPoP", "{intro}");
    assert!(intro["cnf"]["jkt"].is_string(), "bound to a key: {intro}");
    // Unbound, as a Bearer token, it is refused.
    let (status, body) = provider.userinfo(token);
    assert_eq!(status, 401, "{body}");
}
