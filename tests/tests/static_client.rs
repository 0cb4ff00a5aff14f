//! Story: the client as `scripts/install` ships it on Linux, one static
//! musl binary (scripts/lib/client.sh), installed beside `tokend` as
//! `cargo install` puts them: it starts the daemon itself and logs in
//! through the browser, then serves `get` in its formats, `status`,
//! `exec`, the git and docker helpers (their own binaries), and refuses a
//! closed stdout rather than writing the token anywhere else.
//!
//! Needs the musl build of the client (`rustup target add
//! x86_64-unknown-linux-musl && cargo build --target
//! x86_64-unknown-linux-musl --bins -p token`), which scripts/test adds and
//! builds; without it the test is skipped, except under the strict switch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tokend_e2e::{bin, bin_dir, require, Env, Provider};

/// Where `cargo build --target TRIPLE` put the musl client: beside the
/// host build's profile directory (`target/debug` -> `target/TRIPLE/debug`).
fn musl_dir() -> Option<PathBuf> {
    let triple = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    let profile = bin_dir();
    let dir = profile.parent()?.join(triple).join(profile.file_name()?);
    dir.join("token").is_file().then_some(dir)
}

/// The musl `token` and helpers copied into `dir`, with `tokend` beside
/// them (a link to this run's build): an install's layout.
fn install(from: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in [
        "token",
        "git-credential-token",
        "docker-credential-token",
        "cargo-credential-token",
    ] {
        std::fs::copy(from.join(b), dir.join(b)).unwrap();
    }
    std::os::unix::fs::symlink(bin("tokend"), dir.join("tokend")).unwrap();
}

#[test]
fn the_static_musl_client_starts_the_daemon_logs_in_and_serves_every_caller() {
    let test = "the_static_musl_client_starts_the_daemon_logs_in_and_serves_every_caller";
    let musl = musl_dir();
    if !require(
        musl.is_some(),
        test,
        "no musl build of the client",
        "rustup target add x86_64-unknown-linux-musl && cargo build --target x86_64-unknown-linux-musl --bins -p token (scripts/test does both)",
    ) {
        return;
    }
    let provider = Provider::start(3600);
    let env = Env::new();
    env.write_config(&format!(
        "{}urls = [\"https://registry.example.com\", \"https://git.example.com/team/\"]\n",
        Env::site_config("corp", &provider)
    ));
    let installed = env.root().join("bin");
    install(&musl.unwrap(), &installed);
    let token = |args: &[&str]| env.cmd(args).program(installed.join("token"));

    // No daemon yet: the client starts the one beside it, which logs in
    // through the browser; the caller gets the token.
    let first = token(&["get", "corp"]).autostart().run();
    first.ok();
    let access = first.line().to_owned();
    assert!(!access.is_empty());
    assert_eq!(env.browser_launches(), 1);

    // Served again without a login, in each format.
    assert_eq!(token(&["get", "corp"]).run().ok().line(), access);
    let json = token(&["get", "corp", "--format", "json"])
        .run()
        .ok()
        .json();
    assert_eq!(json["access_token"], access.as_str());
    assert!(json["expires_at"].as_u64().is_some(), "{json}");
    let status = token(&["status", "--json"]).run().ok().json();
    let corp = status["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["site"] == "corp"))
        .cloned()
        .unwrap_or_else(|| panic!("status lists corp: {status}"));
    assert_eq!(corp["state"], "ready", "{status}");
    let exec = token(&[
        "exec",
        "corp",
        "--env",
        "T",
        "--",
        "sh",
        "-c",
        "printf %s \"$T\"",
    ])
    .run();
    assert_eq!(exec.ok().stdout, access);

    // The helpers, each its own static binary.
    let git = env
        .cmd(&["get"])
        .program(installed.join("git-credential-token"))
        .stdin("protocol=https\nhost=git.example.com\npath=team/repo.git\n\n")
        .run();
    assert!(
        git.ok().stdout.contains(&format!("password={access}\n")),
        "{}",
        git.stdout
    );
    let docker = env
        .cmd(&["get"])
        .program(installed.join("docker-credential-token"))
        .stdin("https://registry.example.com")
        .run();
    assert_eq!(docker.ok().json()["Secret"], access.as_str());

    // Closed standard descriptors: std's start on musl opens /dev/null in
    // each closed slot, so the daemon's socket cannot become fd 1 (and get
    // the token, or the next request, written into it); the token goes to
    // /dev/null, and the daemon answers the next caller as before.
    let script = format!(
        "exec {} get corp <&- >&- 2>&-",
        installed.join("token").display()
    );
    env.cmd(&["-c", &script]).program("sh").run().ok();
    assert_eq!(token(&["get", "corp"]).run().ok().line(), access);

    token(&["stop"]).run().ok();
}
