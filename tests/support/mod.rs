//! Harness for tokend's end-to-end tests: the real `token` and `tokend`
//! binaries against a real authorization server (oidc-provider, in
//! `tests/provider/`) and a scripted browser (`tests/browser.py`).
//!
//! - [`Provider`]: a node oidc-provider on 127.0.0.1, with test-control
//!   endpoints for counters and fault injection. Killed on drop.
//! - [`Env`]: a private temp dir with its own XDG dirs, config file, socket
//!   path, store and `BROWSER`; runs `token` ([`Env::token`]) and starts
//!   `tokend` ([`Env::daemon`]).
//! - [`Daemon`]: a running `tokend`, SIGTERM (then SIGKILL) on drop.
//!
//! Everything started here is killed on drop, also when a test panics; the
//! children also get `PR_SET_PDEATHSIG` so a harness killed outright leaves
//! no node or tokend behind, and [`Env`]'s drop kills any process that still
//! carries its unique socket path in its environment (an autostarted daemon, a
//! detached browser script).
//!
//! Test code panics on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// The client's exit codes (DESIGN.md, "Client commands").
pub mod exit {
    pub const OK: i32 = 0;
    pub const UNEXPECTED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const LOGIN_REQUIRED: i32 = 3;
    pub const PROVIDER: i32 = 4;
    pub const UNREACHABLE: i32 = 5;
}

// ------------------------------------------------------------------ paths

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `tests/` in the source tree.
pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The directory holding the `token` and `tokend` binaries built for this
/// test run: `$TOKEND_E2E_BIN_DIR` when set (to test an installed build), else
/// the parent of `deps/` where the test executable lives (so the profile
/// matches), else `$CARGO_TARGET_DIR/debug`, else `target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOKEND_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = deps.parent() {
                    candidates.push(profile.to_path_buf());
                }
            } else {
                candidates.push(deps.to_path_buf());
            }
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        let t = PathBuf::from(t);
        let t = if t.is_absolute() {
            t
        } else {
            workspace_root().join(t)
        };
        candidates.push(t.join("debug"));
    }
    candidates.push(workspace_root().join("target").join("debug"));
    candidates
        .iter()
        .find(|d| d.join("tokend").is_file() && d.join("token").is_file())
        .or(candidates.first())
        .cloned()
        .expect("at least one candidate")
}

/// Path of a workspace binary (`token` or `tokend`); panics with a hint when
/// it is not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built (looked in {}); run `cargo build --workspace --bins` first, or scripts/test",
        name,
        p.display()
    );
    p
}

/// True when both binaries exist (tests of unfinished binaries still fail
/// loudly; this is for diagnostics).
pub fn bins_built() -> bool {
    let d = bin_dir();
    d.join("token").is_file() && d.join("tokend").is_file()
}

// ------------------------------------------------------------------ processes

/// Makes the child get `sig` when the spawning thread dies (a harness killed
/// by SIGKILL leaves no orphan). Linux only; elsewhere a no-op.
fn die_with_parent(cmd: &mut Command, sig: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; no allocation here.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may already be gone between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (cmd, sig);
    }
}

/// Makes a child the test starts itself (an sshd, a browser) get SIGKILL
/// when the test process dies, like everything the harness starts.
pub fn tie_to_test(cmd: &mut Command) {
    die_with_parent(cmd, libc::SIGKILL);
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Reads a child's first line of stdout (its "ready" line) on a thread, so a
/// wedged child cannot hang the test: the line and the reader (keep it while
/// the child runs, so its stdout stays open), or what went wrong.
pub fn ready_line(
    stdout: ChildStdout,
    within: Duration,
) -> Result<(String, BufReader<ChildStdout>), String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let res = r.read_line(&mut line).map(|_| line);
        let _ = tx.send((res, r));
    });
    match rx.recv_timeout(within) {
        Ok((Ok(line), reader)) => Ok((line, reader)),
        Ok((Err(e), _)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Exit code as a shell would show it: the code, or 128 + signal.
fn code_of(st: &ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

// ------------------------------------------------------------------ HTTP (tiny)

/// A minimal HTTP/1.1 client for the provider's loopback endpoints (the test
/// crate needs no HTTP stack for this). Returns (status, body).
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_exchange(method, url, headers, body);
    (status, body)
}

/// [`http`] that also returns the response headers (name, value), e.g. for a
/// `Location`: (status, headers, body).
pub fn http_exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {url}: malformed response {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {url}: no status in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(payload)
    } else {
        payload.to_owned()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ------------------------------------------------------------------ Provider

/// Counters kept by the provider's `/__test/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub token_calls: u64,
    pub by_grant: BTreeMap<String, u64>,
    pub revocations: u64,
    /// `token_type_hint` of each revocation call (None when absent).
    pub revoked: Vec<Option<String>>,
}

impl Stats {
    /// Calls with this grant type (`refresh_token`, `authorization_code`, ...).
    pub fn grant(&self, grant_type: &str) -> u64 {
        self.by_grant.get(grant_type).copied().unwrap_or(0)
    }
}

/// A running oidc-provider (`tests/provider/server.mjs`). Killed on drop.
pub struct Provider {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    issuer: String,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Provider {
    /// Starts the provider with access tokens living `at_ttl_secs`.
    pub fn start(at_ttl_secs: u64) -> Provider {
        Provider::start_with(&[("AT_TTL", &at_ttl_secs.to_string())])
    }

    /// Starts the provider with extra environment (`AT_TTL`, `RT_TTL`, `PORT`,
    /// `PROVIDER_DEBUG`).
    pub fn start_with(env: &[(&str, &str)]) -> Provider {
        let dir = tests_dir().join("provider");
        assert!(
            dir.join("node_modules").join("oidc-provider").is_dir(),
            "tests/provider/node_modules is missing: run scripts/test or `npm ci` in tests/provider"
        );
        let tmp = tempfile::Builder::new()
            .prefix("tokend-provider.")
            .tempdir()
            .expect("tempdir");
        let log = tmp.path().join("provider.log");
        let logf = fs::File::create(&log).expect("provider log");
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("server.mjs"))
            .current_dir(&dir)
            .env_remove("PROVIDER_DEBUG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf));
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run node (Node 20+ is needed for the test provider): {e}")
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (line, reader) = match ready_line(stdout, Duration::from_secs(15)) {
            Ok((line, reader)) if !line.trim().is_empty() => (line, reader),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "test provider did not start ({:?}); its log:\n{}",
                    other.map(|(l, _)| l.trim().to_owned()),
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("bad ready line from provider {line:?}: {e}"));
        let issuer = v["issuer"].as_str().expect("issuer").to_owned();
        let port = v["port"].as_u64().expect("port") as u16;
        Provider {
            child,
            _stdout: reader,
            issuer,
            port,
            log,
            _dir: tmp,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the provider wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    fn control(&self, method: &str, path: &str) -> Value {
        let (status, body) = http(method, &self.url(path), &[], None);
        assert_eq!(status, 200, "{method} {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The counters of token and revocation endpoint calls.
    pub fn stats(&self) -> Stats {
        let v = self.control("GET", "/__test/stats");
        Stats {
            token_calls: v["token_calls"].as_u64().unwrap_or(0),
            by_grant: v["by_grant"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            revocations: v["revocations"].as_u64().unwrap_or(0),
            revoked: v["revoked"]
                .as_array()
                .map(|a| a.iter().map(|h| h.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        }
    }

    /// Zeroes the counters and drops pending faults and delays.
    pub fn reset(&self) {
        self.control("POST", "/__test/reset");
    }

    /// The next `count` token-endpoint calls fail: `"500"` (HTML body),
    /// `"timeout"` (held 60 s), `"garbage"` (200, not JSON), `"reset"` (socket destroyed).
    pub fn fault(&self, kind: &str, count: u32) {
        self.control("POST", &format!("/__test/fault?kind={kind}&count={count}"));
    }

    /// The next `count` token-endpoint calls are held `ms` milliseconds first.
    pub fn delay(&self, ms: u64, count: u32) {
        self.control("POST", &format!("/__test/delay?ms={ms}&count={count}"));
    }

    /// Waits until at least `at_least` token calls of `grant_type` were made.
    pub fn wait_grant(&self, grant_type: &str, at_least: u64, within: Duration) -> bool {
        wait_until(within, || self.stats().grant(grant_type) >= at_least)
    }

    /// Waits until there were more than `before` token calls (a request the
    /// test caused has reached the provider).
    pub fn wait_token_calls_above(&self, before: u64, within: Duration) -> bool {
        wait_until(within, || self.stats().token_calls > before)
    }

    /// The discovery document.
    pub fn discovery(&self) -> Value {
        let (status, body) = http(
            "GET",
            &self.url("/.well-known/openid-configuration"),
            &[],
            None,
        );
        assert_eq!(status, 200, "discovery: {body}");
        serde_json::from_str(&body).expect("discovery JSON")
    }

    /// GET the userinfo endpoint with a Bearer token: (status, body).
    pub fn userinfo(&self, access_token: &str) -> (u16, String) {
        let auth = format!("Bearer {access_token}");
        http("GET", &self.url("/me"), &[("Authorization", &auth)], None)
    }

    /// Introspects a token (as `conf-basic`): the JSON answer.
    pub fn introspect(&self, token: &str) -> Value {
        // base64("conf-basic:" + urlencoded secret), precomputed to keep deps minimal.
        let body = format!("token={}", form_encode(token));
        let (status, text) = http(
            "POST",
            &self.url("/token/introspection"),
            &[
                (
                    "Authorization",
                    &format!("Basic {}", basic_auth("conf-basic", CONF_BASIC_SECRET)),
                ),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&body),
        );
        assert_eq!(status, 200, "introspection: {text}");
        serde_json::from_str(&text).expect("introspection JSON")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
        if thread::panicking() {
            eprintln!(
                "--- provider log ({}) ---\n{}",
                self.issuer,
                tail(&self.log(), 4000)
            );
        }
    }
}

/// The `conf-basic` client's secret (deliberately full of URL/Basic specials).
pub const CONF_BASIC_SECRET: &str = "p@ss:w+rd/=%&?";

/// application/x-www-form-urlencoded encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RFC 6749 §2.3.1 Basic credentials: base64(urlenc(id) ":" urlenc(secret)).
pub fn basic_auth(id: &str, secret: &str) -> String {
    base64(format!("{}:{}", form_encode(id), form_encode(secret)).as_bytes())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

// ------------------------------------------------------------------ Output

/// What a finished `token` run left.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; 128 + signal when killed.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with the whole output unless the exit code is 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {self}");
        self
    }

    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}, got {self}");
        self
    }

    /// stdout without the trailing newline.
    pub fn line(&self) -> &str {
        self.stdout.trim_end_matches(['\n', '\r'])
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

// ------------------------------------------------------------------ Env

/// A private world for one test: temp dir, XDG dirs, config, socket, store,
/// the scripted browser. Nothing is shared with other tests or the user.
pub struct Env {
    dir: tempfile::TempDir,
    vars: BTreeMap<String, String>,
    daemons: u32,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("root", &self.dir.path())
            .field("vars", &self.vars)
            .finish()
    }
}

/// Environment variables of the outer world that must not leak into the
/// binaries under test.
const SCRUB: &[&str] = &[
    "TOKEND_CONFIG",
    "TOKEND_SOCKET",
    "TOKEND_STORE",
    "TOKEND_NO_AUTOSTART",
    "TOKEND_LOG",
    "RUST_LOG",
    "BROWSER",
    "BROWSER_MODE",
    "BROWSER_LOG",
    "BROWSER_COUNT_FILE",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "HOME",
    "SSH_AUTH_SOCK",
];

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    /// A fresh world; `TOKEND_STORE=memory`.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("tokend-e2e.")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        for d in ["run", "config/tokend", "state", "data", "cache", "home"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o700))
            .expect("chmod run");
        let p = |s: &str| root.join(s).to_string_lossy().into_owned();
        let mut vars = BTreeMap::new();
        vars.insert("XDG_RUNTIME_DIR".into(), p("run"));
        vars.insert("XDG_CONFIG_HOME".into(), p("config"));
        vars.insert("XDG_STATE_HOME".into(), p("state"));
        vars.insert("XDG_DATA_HOME".into(), p("data"));
        vars.insert("XDG_CACHE_HOME".into(), p("cache"));
        vars.insert("HOME".into(), p("home"));
        vars.insert("TOKEND_CONFIG".into(), p("config/tokend/config.toml"));
        vars.insert("TOKEND_SOCKET".into(), p("run/tokend/tokend.sock"));
        vars.insert("TOKEND_STORE".into(), "memory".into());
        vars.insert("TOKEND_LOG".into(), "debug".into());
        vars.insert(
            "BROWSER".into(),
            tests_dir()
                .join("browser.py")
                .to_string_lossy()
                .into_owned(),
        );
        vars.insert("BROWSER_LOG".into(), p("browser.log"));
        vars.insert("BROWSER_COUNT_FILE".into(), p("browser-launches"));
        Env {
            dir,
            vars,
            daemons: 0,
        }
    }

    /// A fresh world with the given `TOKEND_STORE`.
    pub fn with_store(store: &str) -> Env {
        let mut e = Env::new();
        e.set("TOKEND_STORE", store);
        e
    }

    /// The temp dir everything lives in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Sets (or overrides) a variable for every later `token`/`tokend` run.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Removes a variable for every later run.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.vars.remove(key);
        self
    }

    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    pub fn config_path(&self) -> PathBuf {
        PathBuf::from(&self.vars["TOKEND_CONFIG"])
    }

    /// `$TOKEND_SOCKET`, else where the client looks without it.
    pub fn socket_path(&self) -> PathBuf {
        match (
            self.vars.get("TOKEND_SOCKET"),
            self.vars.get("XDG_RUNTIME_DIR"),
        ) {
            (Some(s), _) => PathBuf::from(s),
            (None, Some(run)) => PathBuf::from(run).join("tokend").join("tokend.sock"),
            (None, None) => self.state_dir().join("tokend.sock"),
        }
    }

    /// `$XDG_STATE_HOME/tokend`, where the file store lives.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(&self.vars["XDG_STATE_HOME"]).join("tokend")
    }

    /// Writes the config file.
    pub fn write_config(&self, toml: &str) {
        let p = self.config_path();
        fs::create_dir_all(p.parent().expect("config dir")).expect("mkdir config");
        fs::write(&p, toml).expect("write config");
    }

    /// `[site.NAME]` for the provider's `public-pkce` client with scopes
    /// `openid read`.
    pub fn site_config(name: &str, provider: &Provider) -> String {
        format!(
            "[site.{name}]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = [\"openid\", \"read\"]\n",
            provider.issuer()
        )
    }

    /// A fresh world whose config is `[site.NAME]` at `provider` (see
    /// [`Env::site_config`]).
    pub fn with_site(name: &str, provider: &Provider) -> Env {
        let env = Env::new();
        env.write_config(&Env::site_config(name, provider));
        env
    }

    /// Configures `[site.svc]`: the provider's `cc-client` with the
    /// `client_credentials` grant, scope `read`, its secret in `$CC_SECRET`.
    pub fn write_client_credentials_config(&mut self, provider: &Provider) {
        self.set("CC_SECRET", "cc-secret");
        self.write_config(&format!(
            "[site.svc]\nissuer = \"{}\"\nclient_id = \"cc-client\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\nclient_secret_env = \"CC_SECRET\"\n",
            provider.issuer()
        ));
    }

    /// Applies this world's environment to a command (outer variables that
    /// could interfere are removed first).
    pub fn apply(&self, cmd: &mut Command) {
        for k in SCRUB {
            cmd.env_remove(k);
        }
        cmd.envs(&self.vars);
    }

    // -------------------------------------------------------------- daemon

    /// Starts `tokend` in the foreground with this environment and waits
    /// until its socket answers (`token status`, polled every 20 ms, 10 s max).
    pub fn daemon(&mut self) -> Daemon {
        self.daemon_with(&[])
    }

    /// [`Env::daemon`] with extra arguments to `tokend`.
    pub fn daemon_with(&mut self, args: &[&str]) -> Daemon {
        let d = self.spawn_daemon(args);
        let mut d = d;
        self.wait_ready(&mut d);
        d
    }

    /// Starts `tokend` without waiting for it to answer.
    pub fn spawn_daemon(&mut self, args: &[&str]) -> Daemon {
        self.daemons += 1;
        let log = self.root().join(format!("tokend-{}.log", self.daemons));
        let logf = fs::File::create(&log).expect("daemon log");
        let mut cmd = Command::new(bin("tokend"));
        cmd.args(args)
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().expect("dup log")))
            .stderr(Stdio::from(logf));
        self.apply(&mut cmd);
        die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn tokend: {e}"));
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn wait_ready(&self, d: &mut Daemon) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "tokend exited before answering ({st}); its log:\n{}",
                    d.log()
                );
            }
            let out = self.cmd(&["status"]).timeout(Duration::from_secs(5)).run();
            if out.code != exit::UNREACHABLE && out.code < 128 && out.code != exit::UNEXPECTED {
                return;
            }
            // Also accept a daemon that answers the raw protocol (a client that
            // maps some status to 1 should not make every test fail here).
            if raw_status_answers(&self.socket_path()) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tokend did not answer on {} within 10 s; last `token status`: {out}\n--- tokend log ---\n{}",
                    self.socket_path().display(),
                    d.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    // -------------------------------------------------------------- client

    /// Runs `token ARGS` with `TOKEND_NO_AUTOSTART=1`, 60 s max.
    pub fn token(&self, args: &[&str]) -> Output {
        self.cmd(args).run()
    }

    /// A `token` invocation to configure before running.
    pub fn cmd(&self, args: &[&str]) -> TokenCmd<'_> {
        TokenCmd {
            env: self,
            program: bin("token"),
            args: args.iter().map(OsString::from).collect(),
            extra: Vec::new(),
            removed: Vec::new(),
            autostart: false,
            stdin: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Runs `token ARGS` from `n` threads at once; every output, in order.
    pub fn token_concurrently(&self, n: usize, args: &[&str]) -> Vec<Output> {
        thread::scope(|s| {
            let hs: Vec<_> = (0..n).map(|_| s.spawn(|| self.token(args))).collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        })
    }

    // -------------------------------------------------------------- status

    /// The `sites[]` entry of `site` in `token status --json`.
    #[track_caller]
    pub fn site_status(&self, site: &str) -> Value {
        let out = self.token(&["status", "--json"]);
        out.ok();
        let v = out.json();
        v["sites"]
            .as_array()
            .unwrap_or_else(|| panic!("status --json has no sites[]: {v}"))
            .iter()
            .find(|s| s["site"] == site)
            .cloned()
            .unwrap_or_else(|| panic!("status --json does not list {site}: {v}"))
    }

    /// Polls the site's status until `cond` holds (100 ms between polls);
    /// panics with the last status.
    #[track_caller]
    pub fn wait_site_status(
        &self,
        site: &str,
        within: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(within, || {
            last = self.site_status(site);
            let ok = cond(&last);
            if !ok {
                thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        assert!(
            ok,
            "{what}: not seen within {within:?}; last status: {last}"
        );
        last
    }

    // -------------------------------------------------------------- browser

    /// How many times the browser script was launched.
    pub fn browser_launches(&self) -> usize {
        fs::read_to_string(self.root().join("browser-launches"))
            .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0)
    }

    /// The URLs the browser was launched with, in order.
    pub fn browser_urls(&self) -> Vec<String> {
        fs::read_to_string(self.root().join("browser-launches"))
            .map(|s| {
                s.lines()
                    .filter_map(|l| l.split_once(' ').map(|(_, u)| u.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the browser script logged.
    pub fn browser_log(&self) -> String {
        fs::read_to_string(self.root().join("browser.log")).unwrap_or_default()
    }

    /// Runs the scripted browser by hand in the foreground (`browser.py ARGS`,
    /// e.g. a login URL or `--device URI CODE`), logging to this world's
    /// browser log; panics with that log unless it succeeds.
    #[track_caller]
    pub fn run_browser(&self, args: &[&str], what: &str) {
        let st = Command::new(tests_dir().join("browser.py"))
            .args(args)
            .env("BROWSER_FOREGROUND", "1")
            .env("BROWSER_LOG", self.root().join("browser.log"))
            .status()
            .unwrap_or_else(|e| panic!("run browser.py: {e}"));
        assert!(st.success(), "{what} failed:\n{}", self.browser_log());
    }

    /// Waits until the browser was launched at least `n` times.
    pub fn wait_browser_launches(&self, n: usize, within: Duration) -> bool {
        wait_until(within, || self.browser_launches() >= n)
    }

    /// Kills every process that still carries this world's socket path in its
    /// environment (an autostarted daemon, a detached browser script).
    pub fn kill_stragglers(&self) {
        let needle = format!("TOKEND_SOCKET={}", self.socket_path().display());
        let me = std::process::id();
        let Ok(rd) = fs::read_dir("/proc") else {
            return;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_stragglers();
        if thread::panicking() {
            let log = self.browser_log();
            if !log.is_empty() {
                eprintln!("--- browser log ---\n{}", tail(&log, 4000));
            }
            if std::env::var_os("TOKEND_E2E_KEEP").is_some() {
                let p =
                    std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
                eprintln!("TOKEND_E2E_KEEP: kept {}", p.display());
            }
        }
    }
}

/// Sends `{"v":1,"op":"status"}` on the socket and reports whether a JSON
/// line came back.
pub fn raw_status_answers(socket: &Path) -> bool {
    use std::os::unix::net::UnixStream;
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if s.write_all(b"{\"v\":1,\"op\":\"status\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok()
        && serde_json::from_str::<Value>(line.trim()).is_ok()
}

/// A provider whose access tokens live `at_ttl_secs`, a fresh world
/// configured with `[site.corp]` at it (see [`Env::site_config`]), and its
/// running daemon: the opening of most stories. Bind all three to names
/// (`_daemon`, not `_`) so they live to the end of the test.
pub fn serve_corp(at_ttl_secs: u64) -> (Provider, Env, Daemon) {
    serve_corp_with_store(at_ttl_secs, "memory")
}

/// [`serve_corp`] with the given `TOKEND_STORE` (`memory`, `file`, ...).
pub fn serve_corp_with_store(at_ttl_secs: u64, store: &str) -> (Provider, Env, Daemon) {
    let provider = Provider::start(at_ttl_secs);
    let mut env = Env::with_store(store);
    env.write_config(&Env::site_config("corp", &provider));
    let daemon = env.daemon();
    (provider, env, daemon)
}

/// Waits for `token` runs started with [`TokenCmd::spawn`]; every output, in
/// order.
#[track_caller]
pub fn wait_outputs(children: Vec<Child>, timeout: Duration, what: &str) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| wait_output(c, timeout, what))
        .collect()
}

/// Asserts that every run succeeded and printed the same token (`what` says
/// why they should); returns that token.
#[track_caller]
pub fn one_token(outs: &[Output], what: &str) -> String {
    for o in outs {
        o.ok();
    }
    let token = outs[0].line().to_owned();
    let differing = outs.iter().filter(|o| o.line() != token).count();
    assert_eq!(differing, 0, "{what}: {outs:#?}");
    token
}

/// Every file below `dir`, recursively (none when `dir` is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------ TokenCmd

/// A configurable `token` run; see [`Env::cmd`].
pub struct TokenCmd<'a> {
    env: &'a Env,
    program: PathBuf,
    args: Vec<OsString>,
    extra: Vec<(String, String)>,
    removed: Vec<String>,
    autostart: bool,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl fmt::Debug for TokenCmd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCmd")
            .field("args", &self.args)
            .field("extra", &self.extra)
            .finish()
    }
}

impl TokenCmd<'_> {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.removed.push(key.to_owned());
        self
    }

    /// Lets the client start a daemon (no `TOKEND_NO_AUTOSTART`).
    pub fn autostart(mut self) -> Self {
        self.autostart = true;
        self
    }

    pub fn stdin(mut self, data: &str) -> Self {
        self.stdin = Some(data.as_bytes().to_vec());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs another program (e.g. `setpriv`) with this environment instead
    /// of `token`; `args` then are the full argument list.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).current_dir(self.env.root());
        self.env.apply(&mut cmd);
        if self.autostart {
            cmd.env_remove("TOKEND_NO_AUTOSTART");
        } else {
            cmd.env("TOKEND_NO_AUTOSTART", "1");
        }
        for k in &self.removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts it without waiting (stdout/stderr piped, stdin null unless set).
    pub fn spawn(&self) -> Child {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        if let Some(data) = &self.stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            let data = data.clone();
            thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        child
    }

    /// Runs to completion (killed and reported after the timeout).
    #[track_caller]
    pub fn run(&self) -> Output {
        let child = self.spawn();
        wait_output(
            child,
            self.timeout,
            &format!("{} {:?}", self.program.display(), self.args),
        )
    }
}

/// Collects a child's output, killing it after `timeout` (then panics).
#[track_caller]
pub fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    let out = child.stdout.take();
    let err = child.stderr.take();
    let reader = |p: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let to = reader(out.map(|o| Box::new(o) as Box<dyn Read + Send>));
    let te = reader(err.map(|e| Box::new(e) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = to.join().unwrap_or_default();
            let stderr = te.join().unwrap_or_default();
            panic!("{what} did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    // A grandchild (a detached browser) may hold the pipes: don't wait forever.
    let stdout = join_within(to, Duration::from_secs(5));
    let stderr = join_within(te, Duration::from_secs(5));
    Output {
        code: code_of(&status),
        stdout,
        stderr,
    }
}

fn join_within(h: thread::JoinHandle<String>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    while !h.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if h.is_finished() {
        h.join().unwrap_or_default()
    } else {
        "<output still held open by another process>".to_owned()
    }
}

// ------------------------------------------------------------------ Daemon

/// A running `tokend`; SIGTERM then SIGKILL (after 5 s) on drop.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("log", &self.log)
            .finish()
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The daemon's stderr/stdout so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL now, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait (SIGKILL after 5 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        terminate(&mut c, Duration::from_secs(5)).map(|st| code_of(&st))
    }

    /// Waits for the process to exit by itself (e.g. after `token stop`).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(code_of(&st));
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- tokend log ({}) ---\n{}",
                self.log.display(),
                tail(&self.log(), 8000)
            );
        }
    }
}

// ------------------------------------------------------------------ misc

/// Unix mode bits (permissions only) of a path.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// True when the run should exercise the real keyring (scripts/test sets it
/// after unlocking gnome-keyring on a private session bus).
pub fn keyring_available() -> bool {
    std::env::var("TOKEND_TEST_KEYRING").is_ok_and(|v| v == "1")
}

/// Prints a skip notice (cargo shows it with --nocapture) and returns true
/// when the condition for running is not met.
pub fn skip_unless(cond: bool, test: &str, why: &str) -> bool {
    if !cond {
        eprintln!("SKIPPED {test}: {why}");
    }
    !cond
}

/// Unique per process and call, for names in shared places (the keyring).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The wall clock in Unix seconds, to compare with the daemon's timestamps
/// (`expires_at`, `next_refresh`, ...).
#[allow(clippy::disallowed_methods)]
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
