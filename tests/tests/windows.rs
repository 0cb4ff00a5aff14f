//! Story: Windows, for real. The `x86_64-pc-windows-gnu` builds of
//! `tokend.exe` and `token.exe` run under Wine against the Linux test
//! provider: the daemon serves the pipe named after the user's SID with
//! Credential Manager as its store; a browser login (PKCE, the daemon's
//! loopback listener, `$BROWSER` run through `start.exe /unix`); a refresh
//! whose refresh token is too large for one Credential Manager entry (split,
//! then joined back when the daemon starts again: the provider checks it); a
//! client-credentials site; a second daemon refused while the first runs;
//! `token.exe stop`; six callers at once that start one daemon between them.
//!
//! Needs Debian's `wine64` and `gcc-mingw-w64-x86-64` and the Windows build
//! (`cargo build --target x86_64-pc-windows-gnu --bins -p token -p tokend`);
//! scripts/test installs and builds them. Without them the test is skipped,
//! except under CI (or when scripts/test promised the leg), where it fails.
//! Wine runs one user: what another user's SID would meet is not tried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::thread;
use std::time::{Duration, Instant};

use tokend_e2e::{exit, wait_outputs, wait_until, win, Env, Output, Provider, Value, Wine};

/// More padding than the refresh token itself: a record of about 6 KiB of
/// UTF-16, which Credential Manager (2560 bytes an entry) cannot hold whole.
const RT_PADDING: usize = 3000;

/// `token.exe get corp` with a `--min-ttl` that the token obtained at
/// `obtained` no longer meets 1.5 s later, and a fresh one does (the
/// provider's tokens live 3600 s): a refresh.
#[track_caller]
fn refresh_corp(wine: &Wine, obtained: &Instant) -> Output {
    let due = *obtained + Duration::from_millis(1500);
    thread::sleep(due.saturating_duration_since(Instant::now()));
    wine.token(&["get", "corp", "--min-ttl", "3599s"])
}

// ------------------------------------------------------------------ the story

fn site_of<'a>(status: &'a Value, site: &str) -> &'a Value {
    status["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["site"] == site))
        .unwrap_or_else(|| panic!("status --json does not list {site}: {status}"))
}

#[test]
fn the_windows_builds_log_in_refresh_keep_the_login_and_stop_under_wine() {
    let test = "the_windows_builds_log_in_refresh_keep_the_login_and_stop_under_wine";
    let started = Instant::now();
    let Some(wine) = Wine::start_or_skip(test) else {
        return;
    };
    let provider = Provider::start(3600);
    wine.write_config(&format!(
        "{}\n[site.svc]\nissuer = \"{}\"\nclient_id = \"cc-client\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\nclient_secret_env = \"CC_SECRET\"\n",
        Env::site_config("corp", &provider),
        provider.issuer()
    ));

    // The daemon serves the pipe named after the user's SID, with
    // Credential Manager as its store (the default, and no fallback note).
    let mut daemon = wine.daemon();
    let pipe_prefix = r"\\.\pipe\tokend-S-1-5-21-";
    assert!(
        daemon.log().contains(&format!("socket={pipe_prefix}")),
        "{}",
        daemon.log()
    );
    let status = wine.token(&["status", "--json"]).ok().json();
    assert_eq!(status["store"], "keyring", "{status}");
    assert!(status.get("store_note").is_none(), "{status}");
    assert_eq!(status["config"], win(&wine.config_path()), "{status}");
    assert_eq!(site_of(&status, "corp")["state"], "login_required");

    // A browser login: token.exe opens $BROWSER (a Linux script, through
    // start.exe), which logs in and calls tokend.exe's loopback listener.
    let login = wine.token(&["get", "corp"]);
    login.ok();
    let login_done = Instant::now();
    let first = login.line().to_owned();
    let (code, body) = provider.userinfo(&first);
    assert_eq!(code, 200, "the login's token works: {body}");
    let launches = wine.browser_launches();
    assert_eq!(launches.len(), 1, "one browser: {launches:?}\n{login}");
    assert!(
        launches[0].contains("code_challenge_method=S256")
            && launches[0].contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "a PKCE login to a loopback listener: {launches:?}"
    );
    assert_eq!(provider.stats().grant("authorization_code"), 1);
    assert_eq!(wine.credentials(), ["corp.tokend"], "one whole entry");

    // A refresh, and from now on refresh tokens too large for one entry:
    // the record is split over several, all of this generation.
    provider.pad_refresh_tokens(RT_PADDING);
    let out = refresh_corp(&wine, &login_done);
    out.ok();
    let refreshed = out.line().to_owned();
    let refreshed_at = Instant::now();
    assert_ne!(refreshed, first, "--min-ttl refreshes first");
    assert_eq!(provider.stats().grant("refresh_token"), 1);
    assert_eq!(provider.userinfo(&refreshed).0, 200);
    let creds = wine.credentials();
    let parts = creds.iter().filter(|c| c.starts_with("corp#1.")).count();
    assert!(
        parts >= 3 && creds.contains(&"corp.tokend".to_owned()),
        "a {RT_PADDING}-character refresh token is split: {creds:?}"
    );

    // A client-credentials site: no browser, one entry.
    let svc = wine.token(&["get", "svc"]);
    svc.ok();
    assert_eq!(provider.introspect(svc.line())["active"], true);
    assert_eq!(provider.stats().grant("client_credentials"), 1);
    assert_eq!(wine.browser_launches().len(), 1);
    assert!(wine.credentials().contains(&"svc.tokend".to_owned()));

    // A second daemon while the first runs: on the same pipe it says who
    // serves it and leaves; on another pipe the state lock refuses it.
    let second = wine.tokend_to_end(&[]);
    assert_eq!(second.code, 0, "{second}");
    assert!(
        second.stderr.contains("already serving") && second.stderr.contains(pipe_prefix),
        "{second}"
    );
    let other = wine.tokend_to_end(&[("TOKEND_SOCKET", r"\\.\pipe\tokend-second")]);
    assert_eq!(other.code, 1, "{other}");
    assert!(
        other.stderr.contains("already owns this user's tokens")
            && other.stderr.contains(pipe_prefix),
        "{other}"
    );
    assert_eq!(wine.token(&["get", "svc"]).ok().line(), svc.line());

    // token.exe stop: the daemon exits, nothing answers.
    wine.token(&["stop"]).ok();
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        daemon.log()
    );
    wine.token(&["status"]).code(exit::UNREACHABLE);

    // Six callers at once, none running: one daemon starts, and each gets
    // the token kept in Credential Manager (its record joined from parts),
    // with no provider call and no browser.
    let calls = provider.stats().token_calls;
    let callers: Vec<_> = (0..6)
        .map(|_| wine.spawn_token_autostart(&["get", "corp", "--no-login"]))
        .collect();
    let outs = wait_outputs(callers, Duration::from_secs(60), "token.exe get corp");
    for o in &outs {
        assert_eq!(o.ok().line(), refreshed, "the stored token: {outs:#?}");
    }
    assert_eq!(provider.stats().token_calls, calls);
    assert_eq!(wine.daemons_running(), 1, "one daemon for six callers");

    // The joined refresh token is whole: the provider checks its padding.
    let out = refresh_corp(&wine, &refreshed_at);
    out.ok();
    assert_ne!(out.line(), refreshed);
    assert_eq!(provider.stats().grant("refresh_token"), 2);
    let creds = wine.credentials();
    assert!(
        creds.iter().any(|c| c.starts_with("corp#2."))
            && !creds.iter().any(|c| c.starts_with("corp#1.")),
        "a new generation, the old one deleted: {creds:?}"
    );

    let status = wine.token(&["status", "--json"]).ok().json();
    for site in ["corp", "svc"] {
        assert_eq!(site_of(&status, site)["state"], "ready", "{status}");
    }
    assert_eq!(site_of(&status, "corp")["has_refresh_token"], true);
    assert_eq!(wine.browser_launches().len(), 1, "one login in all");

    wine.token(&["stop"]).ok();
    assert!(
        wait_until(Duration::from_secs(20), || wine.daemons_running() == 0),
        "token.exe stop: the autostarted daemon exits"
    );
    wine.token(&["status"]).code(exit::UNREACHABLE);
    eprintln!("windows: the story took {:.1?}", started.elapsed());
}
