//! Story: one URL map for every tool. Sites list URL prefixes (`urls`)
//! beside `hosts`; `token get --url` and git's helper (with
//! `credential.useHttpPath`) find the site by the longest prefix, so two
//! accounts on one host each get their own token; a URL two sites serve
//! alike is refused naming both, one no site serves names the URL. And a
//! login nobody answers leaves background callers with `login required` at
//! once, not a browser tab each, until a person logs in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::{Duration, Instant};

use tokend_e2e::{exit, Env, Provider};

use crate::git::{
    git_or_skip, git_plain, git_with_helper, make_repo, path_with_build, GitServer, ServerAuth,
};

/// One request line on the daemon's socket, and the answer line.
fn one_request(env: &Env, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(env.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    answer
}

#[test]
fn get_url_finds_the_site_by_the_longest_prefix_and_refuses_ambiguous_and_unserved_urls() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let site = |name: &str, keys: &str| format!("{}{keys}\n", Env::site_config(name, &provider));
    env.write_config(&format!(
        "{}{}{}{}",
        site("team-a", "urls = [\"https://api.example.com/team-a/\"]"),
        site("api", "hosts = [\"api.example.com\"]"),
        site(
            "alice",
            "urls = [\"https://shared.example.com/\"]\nusername = \"alice\""
        ),
        site(
            "bob",
            "urls = [\"https://shared.example.com/\"]\nusername = \"bob\""
        ),
    ));
    let daemon = env.daemon();

    // The longest prefix wins, at a `/` boundary; it is that site's token.
    let by_url = env.token(&["get", "--url", "https://API.example.com/team-a/v1/me"]);
    by_url.ok();
    assert_eq!(env.token(&["get", "team-a"]).ok().line(), by_url.line());
    let whole_host = env.token(&["get", "--url", "https://api.example.com/team-ab/x"]);
    whole_host.ok();
    assert_eq!(env.token(&["get", "api"]).ok().line(), whole_host.line());
    assert_ne!(by_url.line(), whole_host.line(), "two sites, two logins");
    // Scheme-less host:port is https; other get options apply.
    let header = env.token(&["get", "--url", "api.example.com:443", "--format", "header"]);
    header.ok();
    assert_eq!(
        header.line(),
        format!("Authorization: Bearer {}", whole_host.line())
    );
    assert_eq!(env.browser_launches(), 2);

    // Two sites serve it alike: refused naming both, unless the URL's user
    // name picks one.
    let tie = env.token(&["get", "--url", "https://shared.example.com/x"]);
    tie.code(exit::USAGE);
    assert!(tie.stderr.contains("sites alice and bob"), "{tie}");
    assert!(tie.stderr.contains("username"), "{tie}");
    let picked = env.token(&[
        "get",
        "--no-login",
        "--url",
        "https://bob@shared.example.com/x",
    ]);
    picked.code(exit::LOGIN_REQUIRED);
    assert!(picked.stderr.contains("site bob"), "{picked}");

    // No site: exit 2 naming the URL (never its password), and how to serve it.
    let none = env.token(&["get", "--url", "https://u:hunter2@nowhere.example.com/x"]);
    none.code(exit::USAGE);
    assert!(
        none.stderr
            .contains("no site serves https://nowhere.example.com/x"),
        "{none}"
    );
    assert!(
        none.stderr
            .contains("urls = [\"https://nowhere.example.com/\"]"),
        "{none}"
    );
    assert!(!none.stderr.contains("hunter2"), "{none}");
    // One request a `get --url` (no `lookup` first), logged without the
    // URL's password.
    let log = daemon.log();
    assert!(
        log.contains("get --url https://API.example.com/team-a/v1/me"),
        "{log}"
    );
    assert!(!log.contains("request=lookup"), "{log}");
    assert!(
        log.contains("get --url https://u:***@nowhere.example.com/x"),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
    // Plain http to a host that is not loopback: never.
    let clear = env.token(&["get", "--url", "http://api.example.com/team-a/"]);
    clear.code(exit::USAGE);
    assert!(clear.stderr.contains("only to https"), "{clear}");
    assert_eq!(env.browser_launches(), 2, "no login for refused URLs");

    // `urls` lists every served prefix, hosts as their https URL.
    let listed = one_request(&env, r#"{"v":1,"op":"urls"}"#);
    for (url, site) in [
        ("https://api.example.com/team-a/", "team-a"),
        ("https://api.example.com/", "api"),
        ("https://shared.example.com/", "alice"),
    ] {
        let want = format!(r#"{{"url":"{url}","site":"{site}","#);
        assert!(listed.contains(&want), "{want} in {listed}");
    }

    // A config with two sites on one prefix and one user name says so.
    env.write_config(&format!(
        "{}{}",
        site("one", "hosts = [\"dup.example.com\"]"),
        site("two", "urls = [\"https://dup.example.com\"]"),
    ));
    // (`reload` itself says so, exit 2.)
    env.token(&["reload"]).code(exit::USAGE);
    let status = env.token(&["status", "--json"]).ok().json();
    let errors = status["config_errors"].to_string();
    assert!(
        errors.contains("sites one and two both serve https://dup.example.com/"),
        "{status}"
    );
}

#[test]
fn git_clones_two_repositories_on_one_host_each_with_its_own_sites_token() {
    let Some(git) =
        git_or_skip("git_clones_two_repositories_on_one_host_each_with_its_own_sites_token")
    else {
        return;
    };
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let root = make_repo(&git, env.root());
    let home = env.root().join("githome");
    for team in ["team-a", "team-b"] {
        let bare = root.join(team).join("repo.git");
        git_plain(
            &git,
            &home,
            &[
                "clone",
                "-q",
                "--bare",
                &root.join("repo.git").to_string_lossy(),
                &bare.to_string_lossy(),
            ],
        );
    }
    let server = GitServer::start(
        &root,
        &provider,
        env.root().join("git-server.log"),
        &git,
        ServerAuth::Any,
    );
    let origin = format!("http://127.0.0.1:{}", server.port);
    let site = |name: &str, keys: &str| format!("{}{keys}\n", Env::site_config(name, &provider));
    env.write_config(&format!(
        "{}{}",
        site(
            "team-a",
            &format!("urls = [\"{origin}/team-a/\"]\nlogin_hint = \"alice@example.test\"")
        ),
        site("team-b", &format!("urls = [\"{origin}/team-b/\"]")),
    ));
    let _daemon = env.daemon();
    // Each site logs in as its own account.
    env.cmd(&["login", "team-a"])
        .env("BROWSER_LOGIN", "alice")
        .run()
        .ok();
    env.cmd(&["login", "team-b"])
        .env("BROWSER_LOGIN", "bob")
        .run()
        .ok();
    let urls = env.browser_urls();
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(
        urls[0].contains("login_hint=alice%40example.test"),
        "team-a's login_hint went to the authorization endpoint: {}",
        urls[0]
    );
    assert!(!urls[1].contains("login_hint"), "{}", urls[1]);

    // The README's line: the path goes to the helper for this host only.
    let use_path = format!("credential.{origin}.useHttpPath=true");
    for team in ["team-a", "team-b"] {
        let dest = env.root().join(format!("clone-{team}"));
        let out = git_with_helper(
            &env,
            &git,
            &[
                "-c",
                &use_path,
                "clone",
                &format!("{origin}/{team}/repo.git"),
                &dest.to_string_lossy(),
            ],
        )
        .env("PATH", &path_with_build())
        .timeout(Duration::from_secs(90))
        .run();
        assert_eq!(out.code, 0, "clone {team}: {out}\n{}", server.log());
        assert!(fs::read_to_string(dest.join("README"))
            .unwrap()
            .contains("hello"));
    }
    let log = server.log();
    let accounts = |team: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.starts_with(&format!("account /{team}/")))
            .map(|l| l.rsplit_once("sub=").unwrap().1.to_owned())
            .collect()
    };
    let (a, b) = (accounts("team-a"), accounts("team-b"));
    assert!(!a.is_empty() && a.iter().all(|s| s == "alice"), "{log}");
    assert!(!b.is_empty() && b.iter().all(|s| s == "bob"), "{log}");
    assert_eq!(
        env.browser_launches(),
        2,
        "git's helper needed no new login"
    );
}

#[test]
fn after_a_login_nobody_answers_background_callers_get_login_required_at_once() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("BROWSER_MODE", "ignore");
    env.set("TOKEND_LOGIN_TIMEOUT", "5");
    env.write_config(&format!(
        "{}\n[daemon]\nlogin_cooldown = \"15m\"\n",
        Env::site_config("corp", &provider)
    ));
    let _daemon = env.daemon();

    // The first background caller opens the browser; nobody answers.
    let first = env
        .cmd(&["get", "corp"])
        .timeout(Duration::from_secs(60))
        .run();
    first.code(exit::LOGIN_INCOMPLETE);
    assert!(env.wait_browser_launches(1, Duration::from_secs(20)));

    // An IDE's git or kubectl every so often: no tab, an answer at once.
    for i in 0..20 {
        let started = Instant::now();
        let out = env.token(&["get", "corp"]);
        let took = started.elapsed();
        out.code(exit::LOGIN_REQUIRED);
        assert!(took < Duration::from_secs(1), "caller {i} took {took:?}");
        assert!(out.stderr.contains("token login corp"), "{out}");
        assert!(out.stderr.contains("login_cooldown"), "{out}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.browser_launches(), 1, "one opening for 21 callers");
    let status = env.token(&["status", "--json"]).ok().json();
    assert!(
        status["sites"][0]["login_cooldown_until"]
            .as_u64()
            .is_some(),
        "{status}"
    );
    let table = env.token(&["status"]).ok().stdout.clone();
    assert!(table.contains("login cooldown"), "{table}");

    // A person logs in: that works, and ends the cooldown.
    env.cmd(&["login", "corp"])
        .env("BROWSER_MODE", "approve")
        .run()
        .ok();
    assert_eq!(env.browser_launches(), 2);
    let status = env.token(&["status", "--json"]).ok().json();
    assert!(
        status["sites"][0].get("login_cooldown_until").is_none(),
        "{status}"
    );
    env.token(&["get", "corp"]).ok();
}
