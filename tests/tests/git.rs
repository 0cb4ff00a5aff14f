//! Story: git gets its token from tokend. `token credential get` (also the
//! `git-credential-token` binary, found by `credential.helper = token`) finds
//! the site by the remote's protocol, host and port, answers with the token
//! as a Basic password (or `authtype=Bearer` for `git_auth = "bearer"` sites
//! on git 2.46+), and stays silent for remotes it must not serve. Real git
//! (2.47, and Debian's 2.39) clones from and pushes 3 MB to a smart-HTTP
//! server (tests/git_server.py) that checks the token with the provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use tokend_e2e::{
    bin, now_unix, ready_line, require, tests_dir, Daemon, Env, Output, Provider, TokenCmd, Value,
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
pub(crate) fn git_or_skip(test: &str) -> Option<PathBuf> {
    let git = git_path();
    if !require(git.is_some(), test, "no git", "apt-get install -y git") {
        return None;
    }
    git
}

/// `git ARGS` in tokend's world, never prompting and without system config.
pub(crate) fn git_cmd<'a>(env: &'a Env, git: &Path, args: &[&str]) -> TokenCmd<'a> {
    env.cmd(args)
        .program(git)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}

/// `git -c credential.helper= -c credential.helper=token ARGS`: tokend's
/// helper and no other.
pub(crate) fn git_with_helper<'a>(env: &'a Env, git: &Path, args: &[&str]) -> TokenCmd<'a> {
    let mut all = vec!["-c", "credential.helper=", "-c", "credential.helper=token"];
    all.extend_from_slice(args);
    git_cmd(env, git, &all)
}

/// Port of the made-up remote in the tests that only run `credential get`.
const REMOTE_PORT: u16 = 8080;

/// A provider, a world configured with [`git_site`] for [`REMOTE_PORT`] and its daemon.
fn git_world() -> (Provider, Env, Daemon) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&git_site(&provider, REMOTE_PORT, ""));
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

/// `[site.git]` for the public client, serving `127.0.0.1:PORT` to git, with `extra` keys.
fn git_site(provider: &Provider, port: u16, extra: &str) -> String {
    format!(
        "{}hosts = [\"127.0.0.1:{port}\"]\n{extra}",
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

/// `PATH` with the cargo build's binaries (`git-credential-token`) first, so
/// `credential.helper = token` finds the helper as a user's install would.
pub(crate) fn path_with_build() -> String {
    let dir = bin("git-credential-token");
    let dir = dir.parent().expect("bin dir");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// How the git server checks credentials.
#[derive(Clone, Copy)]
pub(crate) enum ServerAuth {
    /// Basic with the token as password, or Bearer: what forges accept.
    Any,
    /// Only `Authorization: Bearer`.
    BearerOnly,
}

/// The git smart-HTTP server of tests/git_server.py. Killed on drop.
pub(crate) struct GitServer {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl GitServer {
    pub(crate) fn start(
        root: &Path,
        provider: &Provider,
        log: PathBuf,
        git: &Path,
        auth: ServerAuth,
    ) -> GitServer {
        let auth = match auth {
            ServerAuth::Any => "any",
            ServerAuth::BearerOnly => "bearer",
        };
        let mut child = Command::new("python3")
            .arg(tests_dir().join("git_server.py"))
            .arg(root)
            .arg(provider.issuer())
            .arg(&log)
            .arg(git)
            .arg(auth)
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

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether a logged request line contains `needle`.
    fn saw(&self, needle: &str) -> bool {
        self.log().lines().any(|l| l.contains(needle))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
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

/// A git server with one repository, a site that serves it (with `extra`
/// keys), a daemon, and a login: what a user has after `token get git`.
struct Forge {
    provider: Provider,
    env: Env,
    _daemon: Daemon,
    server: GitServer,
    git: PathBuf,
}

impl Forge {
    fn start(git: PathBuf, auth: ServerAuth, extra: &str) -> Forge {
        Forge::start_ttl(git, auth, extra, 3600)
    }

    /// [`Forge::start`] with a provider that issues `at_ttl`-second tokens.
    fn start_ttl(git: PathBuf, auth: ServerAuth, extra: &str, at_ttl: u64) -> Forge {
        let provider = Provider::start(at_ttl);
        let mut env = Env::new();
        let root = make_repo(&git, env.root());
        let server = GitServer::start(
            &root,
            &provider,
            env.root().join("git-server.log"),
            &git,
            auth,
        );
        env.write_config(&git_site(&provider, server.port, extra));
        let daemon = env.daemon();
        env.token(&["get", "git"]).ok();
        Forge {
            provider,
            env,
            _daemon: daemon,
            server,
            git,
        }
    }

    /// `git -c credential.helper=token ARGS`, with the helper on PATH,
    /// whatever its exit.
    fn git_any(&self, args: &[&str]) -> Output {
        git_with_helper(&self.env, &self.git, args)
            .env("PATH", &path_with_build())
            .timeout(Duration::from_secs(90))
            .run()
    }

    /// [`Forge::git_any`], which must succeed.
    fn git(&self, args: &[&str]) -> Output {
        let out = self.git_any(args);
        assert_eq!(
            out.code,
            0,
            "git {args:?}: {out}\nserver log:\n{}",
            self.server.log()
        );
        out
    }

    /// Clones the repository into `NAME` under the world's root.
    fn clone(&self, name: &str) -> PathBuf {
        let dest = self.env.root().join(name);
        self.git(&["clone", &self.server.url(), &dest.to_string_lossy()]);
        let readme = fs::read_to_string(dest.join("README")).expect("cloned README");
        assert!(readme.contains("hello"), "{readme}");
        dest
    }

    /// Commits 3 MB of incompressible bytes in `work` and pushes them:
    /// a pack larger than git's default http.postBuffer (1 MiB).
    fn push_3mb(&self, work: &Path, git_args: &[&str]) {
        let out = self.try_push_3mb(work, git_args);
        assert_eq!(
            out.code,
            0,
            "git push: {out}\nserver log:\n{}",
            self.server.log()
        );
        let log = self.server.log();
        assert!(
            log.lines()
                .any(|l| l.starts_with("POST /repo.git/git-receive-pack") && l.ends_with("-> 200")),
            "the push reached receive-pack: {log}"
        );
    }

    /// The commit of [`Forge::push_3mb`] and git's push, whatever its exit.
    fn try_push_3mb(&self, work: &Path, git_args: &[&str]) -> Output {
        let mut data = vec![0u8; 3 * 1024 * 1024];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(work.join("big.bin"), &data).expect("big.bin");
        let w = work.to_string_lossy().into_owned();
        let id = ["-c", "user.name=Test", "-c", "user.email=test@example.test"];
        self.git(&["-C", &w, "add", "big.bin"]);
        let mut commit = vec!["-C", w.as_str()];
        commit.extend_from_slice(&id);
        commit.extend_from_slice(&["commit", "-q", "-m", "three megabytes"]);
        self.git(&commit);
        let mut push: Vec<&str> = git_args.to_vec();
        push.extend_from_slice(&["-C", &w, "push", "origin", "main"]);
        self.git_any(&push)
    }
}

/// Runs git outside tokend's world (repository setup).
pub(crate) fn git_plain(git: &Path, home: &Path, args: &[&str]) {
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
pub(crate) fn make_repo(git: &Path, dir: &Path) -> PathBuf {
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
fn git_pushes_3mb_with_the_token_as_basic_password() {
    let Some(git) = git_or_skip("git_pushes_3mb_with_the_token_as_basic_password") else {
        return;
    };
    let forge = Forge::start(git, ServerAuth::Any, "");

    // Without the helper the server refuses (it really wants a token).
    let out = git_cmd(
        &forge.env,
        &forge.git,
        &[
            "-c",
            "credential.helper=",
            "clone",
            &forge.server.url(),
            &forge.env.root().join("nohelper").to_string_lossy(),
        ],
    )
    .run();
    assert_ne!(out.code, 0, "a clone without credentials must fail: {out}");

    let work = forge.clone("clone");
    forge.push_3mb(&work, &[]);

    let log = forge.server.log();
    assert!(
        forge.server.saw("auth=Basic user=oauth2 -> 200"),
        "the server saw Basic with user oauth2 and the token as password: {log}"
    );
    assert!(
        !forge.server.saw("auth=Bearer"),
        "basic is the default: {log}"
    );
    // The helper served the daemon's token: no new login, no new token.
    assert_eq!(forge.env.browser_launches(), 1);
    assert_eq!(forge.provider.stats().grant("authorization_code"), 1);
}

#[test]
fn bearer_sites_clone_with_bearer_and_push_3mb_with_a_raised_post_buffer() {
    let Some(git) =
        git_or_skip("bearer_sites_clone_with_bearer_and_push_3mb_with_a_raised_post_buffer")
    else {
        return;
    };
    let forge = Forge::start(git, ServerAuth::BearerOnly, "git_auth = \"bearer\"\n");
    let work = forge.clone("clone");
    forge.push_3mb(&work, &["-c", "http.postBuffer=67108864"]);
    let log = forge.server.log();
    assert!(forge.server.saw("auth=Bearer -> 200"), "{log}");
    assert!(!forge.server.saw("auth=Basic"), "{log}");
}

#[test]
fn a_bearer_push_past_the_post_buffer_is_told_to_raise_it() {
    let Some(git) = git_or_skip("a_bearer_push_past_the_post_buffer_is_told_to_raise_it") else {
        return;
    };
    let forge = Forge::start(git, ServerAuth::BearerOnly, "git_auth = \"bearer\"\n");
    let work = forge.clone("clone");
    let fetch = forge.git(&["-C", &work.to_string_lossy(), "fetch", "origin"]);
    assert!(
        !fetch.stderr.contains("postBuffer"),
        "a fetch is not told about pushes: {fetch}"
    );
    // git sends the probe of a 3 MB push without the Bearer header: refused.
    let out = forge.try_push_3mb(&work, &[]);
    assert_ne!(
        out.code, 0,
        "the server wants Bearer on every request: {out}"
    );
    assert!(
        out.stderr.contains("git config http.postBuffer 67108864"),
        "the helper says how to make the push work: {out}"
    );
    // With the buffer raised, it says nothing and the push goes through.
    let w = work.to_string_lossy();
    let out = forge.git_any(&[
        "-c",
        "http.postBuffer=67108864",
        "-C",
        &w,
        "push",
        "origin",
        "main",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("postBuffer"), "{out}");
}

/// git runs the helper for every command, and the helper asks for tokens
/// with 60 s left (its own margin, so a command does not outlive its token).
#[test]
fn short_tokens_are_told_to_git_once_in_the_helpers_words() {
    let Some(git) = git_or_skip("short_tokens_are_told_to_git_once_in_the_helpers_words") else {
        return;
    };
    // Tokens as long as the margin: a fresh one is the best there is.
    let forge = Forge::start_ttl(git.clone(), ServerAuth::Any, "", 60);
    let work = forge.clone("clone");
    let w = work.to_string_lossy();
    for _ in 0..3 {
        let out = forge.git(&["-C", &w, "fetch", "origin"]);
        assert!(!out.stderr.contains("token:"), "nothing to say: {out}");
        thread::sleep(Duration::from_millis(1500));
    }
    drop(forge);

    // Shorter tokens: said once, without an option the user never passed.
    let forge = Forge::start_ttl(git, ServerAuth::Any, "", 20);
    let mut said = Vec::new();
    for _ in 0..3 {
        let out = forge.git_any(&["ls-remote", &forge.server.url()]);
        assert_eq!(out.code, 0, "{out}");
        said.extend(
            out.stderr
                .lines()
                .filter(|l| l.starts_with("token:"))
                .map(str::to_owned),
        );
        thread::sleep(Duration::from_millis(1500));
    }
    assert_eq!(said.len(), 1, "once per site and daemon: {said:?}");
    assert!(
        said[0].contains("s, less than the 60s the git credential helper wants"),
        "{said:?}"
    );
    assert!(!said[0].contains("--min-ttl"), "{said:?}");
}

#[test]
fn old_git_clones_and_pushes_3mb_in_the_default_mode() {
    let old = PathBuf::from("/usr/bin/git");
    if !require(
        old.is_file(),
        "old_git_clones_and_pushes_3mb_in_the_default_mode",
        "no /usr/bin/git",
        "apt-get install -y git",
    ) {
        return;
    }
    let forge = Forge::start(old, ServerAuth::Any, "username = \"tokend-test\"\n");
    let work = forge.clone("clone");
    forge.push_3mb(&work, &[]);
    assert!(
        forge.server.saw("auth=Basic user=tokend-test -> 200"),
        "the site's username went with the token: {}",
        forge.server.log()
    );
}

#[test]
fn only_the_listed_https_host_and_port_get_a_token() {
    let Some(git) = git_or_skip("only_the_listed_https_host_and_port_get_a_token") else {
        return;
    };
    // The site lists the forge's loopback port and git.example.com (https, 443).
    let forge = Forge::start(git, ServerAuth::Any, "");
    let config = fs::read_to_string(forge.env.config_path()).expect("config");
    forge.env.write_config(&config.replace(
        "hosts = [\"127.0.0.1:",
        "hosts = [\"git.example.com\", \"127.0.0.1:",
    ));
    forge.env.token(&["reload"]).ok();
    for (what, input) in [
        (
            "plain http to a listed host",
            "protocol=http\nhost=git.example.com\n\n",
        ),
        (
            "https on another port of a listed host",
            "protocol=https\nhost=git.example.com:8443\n\n",
        ),
        (
            "another port of the listed loopback host",
            &format!(
                "protocol=http\nhost=127.0.0.1:{}\n\n",
                forge.server.port + 1
            ),
        ),
        (
            "a host that only ends like a listed one",
            "protocol=https\nhost=evilgit.example.com\n\n",
        ),
    ] {
        assert!(fill_refused(&forge, input), "{what} must get no credential");
    }
    // The listed https host gets one.
    assert!(!fill_refused(
        &forge,
        "protocol=https\nhost=git.example.com\n\n"
    ));
    // And the listed loopback remote still clones.
    forge.clone("clone");
}

/// Whether real git's `credential fill` got nothing from tokend for `input`.
fn fill_refused(forge: &Forge, input: &str) -> bool {
    let out = git_cmd(
        &forge.env,
        &forge.git,
        &[
            "-c",
            "credential.helper=",
            "-c",
            "credential.helper=token",
            "credential",
            "fill",
        ],
    )
    .env("PATH", &path_with_build())
    .stdin(input)
    .run();
    // With no helper answering and prompts off, git fails to fill.
    out.code != 0 && !out.stdout.contains("password=")
}

#[test]
fn git_credential_fill_finds_the_helper_by_name_on_path() {
    let Some(git) = git_or_skip("git_credential_fill_finds_the_helper_by_name_on_path") else {
        return;
    };
    let (_provider, env, _daemon, token) = git_logged_in();
    // A symlink named git-credential-token works as well as the built binary.
    let dir = env.root().join("helper");
    helper_link(&dir);
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = git_with_helper(&env, &git, &["credential", "fill"])
        .env("PATH", &path)
        .stdin(&format!(
            "capability[]=authtype\nprotocol=http\nhost=127.0.0.1:{REMOTE_PORT}\npath=repo.git\n\n"
        ))
        .run();
    out.ok();
    let a = attrs(&out);
    assert_eq!(
        a.get("username").map(String::as_str),
        Some("oauth2"),
        "{out}"
    );
    assert_eq!(
        a.get("password").map(String::as_str),
        Some(token.line()),
        "{out}"
    );
    assert!(!a.contains_key("authtype"), "basic is the default: {out}");
}

#[test]
fn credential_get_answers_basic_by_default_and_bearer_when_the_site_asks() {
    let (provider, env, _daemon, token) = git_logged_in();
    let token = token.line().to_owned();
    let remote = format!("protocol=http\nhost=127.0.0.1:{REMOTE_PORT}\n");

    // Default: the token as password, with its expiry, whatever git supports.
    for caps in ["capability[]=authtype\n", ""] {
        let out = env
            .cmd(&["credential", "get"])
            .stdin(&format!("{caps}{remote}path=repo.git\n\n"))
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
        let expiry: u64 = a
            .get("password_expiry_utc")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("password_expiry_utc: {out}"));
        assert!(expiry > now_unix(), "expiry {expiry} in the future: {out}");
    }

    // The same through the git-credential-token name (the built binary).
    let out = env
        .cmd(&["get"])
        .program(bin("git-credential-token"))
        .stdin(&format!("{remote}\n"))
        .run();
    out.ok();
    assert_eq!(attrs(&out).get("password"), Some(&token), "{out}");

    // store and erase are accepted and do nothing.
    for action in ["store", "erase"] {
        let out = env
            .cmd(&["credential", action])
            .stdin(&format!("{remote}username=oauth2\npassword={token}\n\n"))
            .run();
        out.ok();
        assert_eq!(out.stdout, "", "{action}: {out}");
    }

    // git_auth = "bearer": git 2.46+ gets an ephemeral Bearer credential.
    let config = fs::read_to_string(env.config_path()).expect("config");
    env.write_config(&format!("{config}git_auth = \"bearer\"\n"));
    env.token(&["reload"]).ok();
    let out = env
        .cmd(&["credential", "get"])
        .stdin(&format!(
            "capability[]=authtype\n{remote}wwwauth[]=Bearer realm=\"git\"\n\n"
        ))
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
    assert!(!a.contains_key("password"), "{out}");
    // Older git cannot send Bearer: the password, and a note saying why.
    let out = env
        .cmd(&["credential", "get"])
        .stdin(&format!("{remote}\n"))
        .run();
    out.ok();
    assert_eq!(attrs(&out).get("password"), Some(&token), "{out}");
    assert!(out.stderr.contains("2.46"), "{out}");

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
