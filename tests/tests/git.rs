//! Story: git gets its Bearer token from tokend. `token credential get`
//! (also installed as `git-credential-token`) finds the site by the remote's
//! host, answers git 2.46+ with `authtype=Bearer` and older git with
//! `username=oauth2`/`password`, and stays silent for hosts it does not
//! know. A real `git clone` over smart HTTP from a server that accepts only
//! Bearer tokens (tests/git_server.py, validating against the provider)
//! succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use tokend_e2e::{
    bin, now_unix, ready_line, skip_unless, tests_dir, Daemon, Env, Output, Provider, TokenCmd,
    Value,
};

const GIT: &str = "/usr/local/bin/git";

fn git_path() -> Option<PathBuf> {
    let p = PathBuf::from(GIT);
    if p.is_file() {
        return Some(p);
    }
    // Elsewhere: whatever git is on PATH.
    let out = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// The git to test with, or `None` after printing that `test` is skipped.
fn git_or_skip(test: &str) -> Option<PathBuf> {
    let git = git_path();
    if git.is_none() {
        skip_unless(false, test, "no git");
    }
    git
}

/// `git ARGS` in tokend's world, never prompting and without system config.
fn git_cmd<'a>(env: &'a Env, git: &Path, args: &[&str]) -> TokenCmd<'a> {
    env.cmd(args)
        .program(git)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}

/// A provider, a world configured with [`git_site`] and its daemon.
fn git_world() -> (Provider, Env, Daemon) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&git_site(&provider));
    let daemon = env.daemon();
    (provider, env, daemon)
}

/// [`git_world`] logged in to `git`: also the output of that `token get git`.
fn git_logged_in() -> (Provider, Env, Daemon, Output) {
    let (provider, env, daemon) = git_world();
    let token = env.token(&["get", "git"]);
    token.ok();
    (provider, env, daemon, token)
}

/// `[site.git]` for the public client, mapped to 127.0.0.1 for git.
fn git_site(provider: &Provider) -> String {
    format!(
        "{}hosts = [\"127.0.0.1\"]\n",
        Env::site_config("git", provider)
    )
}

/// git's attribute lines, parsed.
fn attrs(out: &Output) -> BTreeMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A symlink `DIR/git-credential-token` -> the built `token`.
fn helper_link(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir helper dir");
    let link = dir.join("git-credential-token");
    std::os::unix::fs::symlink(bin("token"), &link).expect("symlink git-credential-token");
    link
}

/// The git smart-HTTP server of tests/git_server.py. Killed on drop.
struct GitServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl GitServer {
    fn start(root: &Path, provider: &Provider, log: PathBuf, git: &Path) -> GitServer {
        let mut child = Command::new("python3")
            .arg(tests_dir().join("git_server.py"))
            .arg(root)
            .arg(provider.issuer())
            .arg(&log)
            .arg(git)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/git_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let line = ready_line(stdout, Duration::from_secs(15))
            .map(|(line, _)| line)
            .unwrap_or_default();
        let port = serde_json::from_str::<Value>(line.trim())
            .ok()
            .and_then(|v| v["port"].as_u64())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("git_server.py did not start: {line:?}")
            }) as u16;
        GitServer { child, port, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- git server log ---\n{}", self.log());
        }
    }
}

/// Runs git outside tokend's world (repository setup).
fn git_plain(git: &Path, home: &Path, args: &[&str]) {
    let out = Command::new(git)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare repo `ROOT/repo.git` with one commit holding README.
fn make_repo(git: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("srv");
    let work = dir.join("work");
    let home = dir.join("githome");
    for d in [&root, &work, &home] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let bare = root.join("repo.git");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    git_plain(
        git,
        &home,
        &["init", "-q", "--bare", "-b", "main", &s(&bare)],
    );
    git_plain(git, &home, &["init", "-q", "-b", "main", &s(&work)]);
    fs::write(work.join("README"), "hello from the bearer-only server\n").expect("README");
    let w = s(&work);
    git_plain(git, &home, &["-C", &w, "add", "README"]);
    git_plain(
        git,
        &home,
        &[
            "-C",
            &w,
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.test",
            "commit",
            "-q",
            "-m",
            "first",
        ],
    );
    git_plain(git, &home, &["-C", &w, "push", "-q", &s(&bare), "main"]);
    root
}

#[test]
fn git_clone_over_http_uses_the_bearer_token() {
    let Some(git) = git_or_skip("git_clone_over_http_uses_the_bearer_token") else {
        return;
    };
    let (provider, env, _daemon, _token) = git_logged_in();

    let root = make_repo(&git, env.root());
    let server = GitServer::start(&root, &provider, env.root().join("git-server.log"), &git);
    let helper = helper_link(&env.root().join("helper"));
    let dest = env.root().join("clone");
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);

    // Without the helper the server refuses (it really wants a Bearer token).
    let out = git_cmd(
        &env,
        &git,
        &[
            "-c",
            "credential.helper=",
            "clone",
            &url,
            &env.root().join("nohelper").to_string_lossy(),
        ],
    )
    .run();
    assert_ne!(out.code, 0, "a clone without credentials must fail: {out}");

    let out = git_cmd(
        &env,
        &git,
        &[
            "-c",
            "credential.helper=",
            "-c",
            &format!("credential.helper={}", helper.display()),
            "clone",
            &url,
            &dest.to_string_lossy(),
        ],
    )
    .timeout(Duration::from_secs(60))
    .run();
    assert_eq!(
        out.code,
        0,
        "git clone failed: {out}\nserver log:\n{}",
        server.log()
    );
    let readme = fs::read_to_string(dest.join("README")).expect("cloned README");
    assert!(readme.contains("bearer-only"), "{readme}");

    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("auth=Bearer -> 200")),
        "the server saw a Bearer token: {log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("auth=Basic")),
        "git 2.46+ must get authtype=Bearer, not Basic: {log}"
    );
    // The helper served the daemon's token: no new login, no new token.
    assert_eq!(env.browser_launches(), 1);
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}

#[test]
fn git_credential_fill_finds_the_helper_by_name_on_path() {
    let Some(git) = git_or_skip("git_credential_fill_finds_the_helper_by_name_on_path") else {
        return;
    };
    let (_provider, env, _daemon, token) = git_logged_in();
    let dir = env.root().join("helper");
    helper_link(&dir);
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = git_cmd(
        &env,
        &git,
        &[
            "-c",
            "credential.helper=",
            "-c",
            "credential.helper=token",
            "credential",
            "fill",
        ],
    )
    .env("PATH", &path)
    .stdin("capability[]=authtype\nprotocol=http\nhost=127.0.0.1:9\npath=repo.git\n\n")
    .run();
    out.ok();
    let a = attrs(&out);
    assert_eq!(
        a.get("authtype").map(String::as_str),
        Some("Bearer"),
        "{out}"
    );
    assert_eq!(
        a.get("credential").map(String::as_str),
        Some(token.line()),
        "{out}"
    );
}

#[test]
fn credential_get_answers_bearer_with_authtype_and_password_without() {
    let (provider, env, _daemon, token) = git_logged_in();
    let token = token.line().to_owned();

    // git 2.46+: a Bearer credential, ephemeral, with its expiry.
    let out = env
        .cmd(&["credential", "get"])
        .stdin("capability[]=authtype\nprotocol=http\nhost=127.0.0.1:8080\npath=repo.git\nwwwauth[]=Bearer realm=\"git\"\n\n")
        .run();
    out.ok();
    let a = attrs(&out);
    assert!(
        out.stdout.lines().any(|l| l == "capability[]=authtype"),
        "{out}"
    );
    assert_eq!(
        a.get("authtype").map(String::as_str),
        Some("Bearer"),
        "{out}"
    );
    assert_eq!(a.get("credential"), Some(&token), "{out}");
    assert_eq!(
        a.get("ephemeral").map(String::as_str),
        Some("true"),
        "{out}"
    );
    let expiry: u64 = a
        .get("password_expiry_utc")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("password_expiry_utc: {out}"));
    let now = now_unix();
    assert!(expiry > now, "expiry {expiry} in the future: {out}");
    assert!(!a.contains_key("password"), "{out}");

    // Older git: username/password, host without a port.
    let out = env
        .cmd(&["credential", "get"])
        .stdin("protocol=https\nhost=127.0.0.1\n\n")
        .run();
    out.ok();
    let a = attrs(&out);
    assert_eq!(
        a.get("username").map(String::as_str),
        Some("oauth2"),
        "{out}"
    );
    assert_eq!(a.get("password"), Some(&token), "{out}");
    assert!(!a.contains_key("authtype"), "{out}");

    // The same through the git-credential-token name.
    let link = helper_link(&env.root().join("helper"));
    let out = env
        .cmd(&["get"])
        .program(&link)
        .stdin("protocol=https\nhost=127.0.0.1\n\n")
        .run();
    out.ok();
    assert_eq!(attrs(&out).get("password"), Some(&token), "{out}");

    // store and erase are accepted and do nothing.
    for action in ["store", "erase"] {
        let out = env
            .cmd(&["credential", action])
            .stdin(&format!(
                "protocol=https\nhost=127.0.0.1\nusername=oauth2\npassword={token}\n\n"
            ))
            .run();
        out.ok();
        assert_eq!(out.stdout, "", "{action}: {out}");
    }
    assert_eq!(provider.stats().token_calls, 1, "served from memory");
}

#[test]
fn credential_get_for_an_unknown_host_prints_nothing() {
    let (provider, env, _daemon) = git_world();
    let out = env
        .cmd(&["credential", "get"])
        .stdin("capability[]=authtype\nprotocol=https\nhost=git.example.org\n\n")
        .run();
    out.ok();
    assert_eq!(
        out.stdout, "",
        "not ours: git asks its other helpers: {out}"
    );
    assert_eq!(env.browser_launches(), 0, "no login for a foreign host");
    assert_eq!(provider.stats().token_calls, 0);
}
