//! Story: a bad config file is reported with file, line and key; one bad site
//! does not stop the others from being served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tokend_e2e::{exit, raw_status_answers, wait_until, Daemon, Env, Provider};

/// True when `msg` points at line `n` ("line 3", "line: 3", "config.toml:3:").
fn mentions_line(msg: &str, n: u32) -> bool {
    let m = msg.to_lowercase();
    m.contains(&format!("line {n}"))
        || m.contains(&format!("line: {n}"))
        || m.contains(&format!("line={n}"))
        || m.contains(&format!(".toml:{n}:"))
        || m.contains(&format!(".toml:{n} "))
        || m.contains(&format!(".toml:{n},"))
        || m.contains(&format!(".toml:{n}\n"))
        || m.contains(&format!(".toml:{n})"))
}

/// Starts the daemon on a broken config. Either it refuses to start (then its
/// log is the message) or it starts and every get answers a config error
/// (then the client's stderr is the message). Returns the message(s).
fn config_error_message(env: &mut Env, site: &str) -> (String, Option<Daemon>) {
    let mut daemon = env.spawn_daemon(&[]);
    let sock = env.socket_path();
    let up = wait_until(Duration::from_secs(10), || {
        !daemon.alive() || raw_status_answers(&sock)
    });
    assert!(
        up,
        "tokend neither exited nor answered within 10 s:\n{}",
        daemon.log()
    );
    if !daemon.alive() {
        let code = daemon.wait_exit(Duration::from_secs(1));
        assert_eq!(
            code,
            Some(exit::USAGE),
            "a config error exits 2:\n{}",
            daemon.log()
        );
        return (daemon.log(), None);
    }
    let out = env.token(&["get", site]);
    out.code(exit::USAGE);
    (format!("{}\n{}", out.stderr, daemon.log()), Some(daemon))
}

/// `[site.good]` (4 lines), then `[site.bad]` whose line 9 holds the unknown
/// key `scopse`.
fn good_and_bad_sites(provider: &Provider) -> String {
    let good = Env::site_config("good", provider);
    assert_eq!(good.lines().count(), 4);
    format!(
        "{good}\n[site.bad]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopse = [\"openid\"]\n",
        provider.issuer()
    )
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"public-pkce\nscopes = [\"openid\", \"read\"]\n",
        provider.issuer()
    ));
    let (msg, daemon) = config_error_message(&mut env, "corp");
    let path = env.config_path();
    if daemon.is_some() {
        // Every command says the file does not parse, not "no site named corp".
        for args in [&["get", "corp"][..], &["login", "corp"]] {
            let out = env.token(args);
            out.code(exit::USAGE);
            assert!(
                out.stderr.contains(&format!(
                    "{}:3: the config file does not parse",
                    path.display()
                )),
                "{args:?}: {out}"
            );
        }
    }
    assert!(
        msg.contains(path.to_str().unwrap()),
        "the message names {}:\n{msg}",
        path.display()
    );
    assert!(mentions_line(&msg, 3), "the message names line 3:\n{msg}");
    assert_eq!(env.browser_launches(), 0);
}

#[test]
fn unknown_key_in_one_site_names_line_and_key_and_other_sites_are_served() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    // Line 9 holds the unknown key `scopse`.
    env.write_config(&good_and_bad_sites(&provider));
    let _daemon = env.daemon();

    let bad = env.token(&["get", "bad"]);
    bad.code(exit::USAGE);
    assert!(
        bad.stderr.contains("bad"),
        "the error names the site: {bad}"
    );
    assert!(
        bad.stderr.contains("scopse"),
        "the error names the key: {bad}"
    );
    assert!(
        mentions_line(&bad.stderr, 9),
        "the error names line 9: {bad}"
    );
    assert_eq!(env.browser_launches(), 0, "no login for a broken site");

    let ok = env.token(&["get", "good"]);
    ok.ok();
    let (status, body) = provider.userinfo(ok.line());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn status_reports_a_broken_site_without_failing_the_good_ones() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&good_and_bad_sites(&provider));
    let _daemon = env.daemon();
    let out = env.token(&["status"]);
    assert_ne!(out.code, exit::UNREACHABLE, "{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("good") && all.contains("bad"),
        "status lists every site: {out}"
    );
}
