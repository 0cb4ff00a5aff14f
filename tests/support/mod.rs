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
use std::ffi::{OsStr, OsString};
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

mod daemon;
mod env;
mod http;
mod process;
mod provider;
mod service;
mod wine;

pub use daemon::Daemon;
pub use env::*;
pub use http::*;
pub use process::*;
pub use provider::*;
pub use service::*;
pub use wine::{win, WinDaemon, Wine};

/// The client's exit codes (DESIGN.md, "Client commands").
pub mod exit {
    pub const OK: i32 = 0;
    pub const UNEXPECTED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const LOGIN_REQUIRED: i32 = 3;
    pub const PROVIDER: i32 = 4;
    pub const UNREACHABLE: i32 = 5;
    pub const LOGIN_INCOMPLETE: i32 = 6;
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
/// the parent of `deps/` (or `examples/`) where the executable lives (so the profile
/// matches), else `$CARGO_TARGET_DIR/debug`, else `target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOKEND_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps
                .file_name()
                .is_some_and(|n| n == "deps" || n == "examples")
            {
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

// ------------------------------------------------------------------ misc

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

pub(crate) fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

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

/// The strict switch: `TOKEND_TEST_STRICT=1` (set by `.ci/run`, and by
/// scripts/test when `CI` is set). Under it a test whose tool is missing
/// fails instead of skipping.
pub fn strict() -> bool {
    std::env::var("TOKEND_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// The one place a test decides to skip: true when what `test` needs is
/// there (`have`), and the test runs. Otherwise it says `SKIPPED test:
/// missing (to run it: install)` on stderr (cargo shows it with
/// --nocapture) and returns false, so the test returns early; under the
/// [`strict`] switch it fails with the install line instead.
pub fn require(have: bool, test: &str, missing: &str, install: &str) -> bool {
    if !have {
        assert!(
            !strict(),
            "{test}: {missing}, and TOKEND_TEST_STRICT=1 runs every test: {install}"
        );
        eprintln!("SKIPPED {test}: {missing} (to run it: {install})");
    }
    have
}

/// Whether this run may act as another uid (root, with util-linux's
/// `setpriv`), through [`require`]: under the strict switch it must.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    require(
        root && std::path::Path::new("/usr/bin/setpriv").exists(),
        test,
        "not root (setpriv --reuid needs it, to act as another uid)",
        "run the suite as root (the CI container does), with util-linux's setpriv",
    )
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
pub fn now_unix() -> u64 {
    now_unix_f64() as u64
}

/// [`now_unix`] with sub-second precision: how long a token has left.
#[allow(clippy::disallowed_methods)]
pub fn now_unix_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
