//! Story: one login shared with a container, without handing it every token.
//! A `[share.NAME]` socket serves `get` and `status` of its listed sites
//! only: an unlisted site is `unknown_site`, every other op `forbidden`, a
//! `get` that needs a login is `login_required` (no browser) unless the share
//! says `login = true`. Another uid is refused unless the share lists it in
//! `uids`, and then reaches it with only the client and `TOKEND_DAEMON_UID`.
//! Shares come and go with config reloads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokend_e2e::{bin, exit, wait_until, Daemon, Env, Provider, Value};

/// `[site.corp]`, `[site.other]`, `[site.fresh]` at `provider`, and `share`
/// (the `[share.box]` table's extra lines) at `SOCKET`.
fn config(provider: &Provider, socket: &Path, share: &str) -> String {
    format!(
        "{}{}{}\n[share.box]\nsocket = \"{}\"\n{share}",
        Env::site_config("corp", provider),
        Env::site_config("other", provider),
        Env::site_config("fresh", provider),
        socket.display()
    )
}

/// A daemon with `corp` and `other` logged in, and `[share.box]` with `share`.
fn shared(share: &str) -> (Provider, Env, Daemon, PathBuf) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let socket = env.root().join("share").join("box.sock");
    env.write_config(&config(&provider, &socket, share));
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    env.token(&["get", "other"]).ok();
    assert!(
        wait_until(Duration::from_secs(5), || socket.exists()),
        "the share's socket is there: {}",
        daemon.log()
    );
    (provider, env, daemon, socket)
}

/// One raw request line on `socket`; the answer line as JSON.
fn raw(socket: &Path, line: &str) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect to the share");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn a_share_serves_only_get_and_status_of_its_sites() {
    let (_provider, env, _daemon, socket) = shared("sites = [\"corp\", \"fresh\"]\n");
    let on_share = |args: &[&str]| {
        env.cmd(args)
            .env("TOKEND_SOCKET", socket.to_str().unwrap())
            .run()
    };
    let direct = env.token(&["get", "corp"]);
    direct.ok();
    let shared = on_share(&["get", "corp"]);
    shared.ok();
    assert_eq!(
        shared.line(),
        direct.line(),
        "the same token through the share"
    );

    let out = on_share(&["get", "other"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr
            .contains("no site named `other` on this socket: it shares corp, fresh"),
        "{out}"
    );

    // Listed but not logged in: no login from here, and no browser.
    let launches = env.browser_launches();
    let out = on_share(&["get", "fresh"]);
    out.code(exit::LOGIN_REQUIRED);
    assert!(
        out.stderr.contains("on the machine that shares it"),
        "{out}"
    );
    assert_eq!(
        env.browser_launches(),
        launches,
        "no browser for a share's caller"
    );

    for args in [
        &["login", "corp"][..],
        &["logout", "corp"],
        &["reload"],
        &["stop"],
    ] {
        let out = on_share(args);
        out.code(exit::UNREACHABLE);
        assert!(
            out.stderr.contains("is not served on a share socket"),
            "{args:?}: {out}"
        );
    }
    let paste = raw(&socket, r#"{"v":1,"op":"paste","site":"corp","input":"x"}"#);
    assert_eq!(paste["error"]["code"], "forbidden", "{paste}");

    // Status: the listed sites only, and none of the config's own errors.
    let out = on_share(&["status", "--json"]);
    out.ok();
    let v = out.json();
    let names: Vec<&str> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["corp", "fresh"], "{v}");
    let out = on_share(&["status", "other"]);
    out.code(exit::USAGE);

    // The daemon itself is untouched: corp is still logged in and serving.
    assert_eq!(env.token(&["get", "corp"]).line(), direct.line());
    let out = env.token(&["status", "--json"]);
    assert_eq!(out.json()["sites"].as_array().unwrap().len(), 3);
}

#[test]
fn a_share_follows_the_config() {
    let (provider, env, daemon, socket) = shared("sites = [\"corp\"]\n");
    // Moved: the old socket goes, the new one serves.
    let moved = env.root().join("share").join("moved.sock");
    env.write_config(&config(&provider, &moved, "sites = [\"corp\"]\n"));
    env.token(&["reload"]).ok();
    assert!(!socket.exists(), "the old share socket is removed");
    assert!(moved.exists(), "{}", daemon.log());
    env.cmd(&["get", "corp"])
        .env("TOKEND_SOCKET", moved.to_str().unwrap())
        .run()
        .ok();
    // An unknown site is a config error; the share serves the rest.
    env.write_config(&config(&provider, &moved, "sites = [\"corp\", \"nope\"]\n"));
    let out = env.token(&["reload"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr
            .contains("share.box.sites`: no site named `nope`"),
        "{out}"
    );
    env.cmd(&["get", "corp"])
        .env("TOKEND_SOCKET", moved.to_str().unwrap())
        .run()
        .ok();
    // Removed: nothing listens there any more.
    env.write_config(&format!(
        "{}{}",
        Env::site_config("corp", &provider),
        Env::site_config("other", &provider)
    ));
    env.token(&["reload"]).ok();
    assert!(!moved.exists(), "a removed share's socket is gone");
    env.token(&["get", "corp"]).ok();
}

/// `token ARGS` as uid 65534 (the client copied where that uid can run it),
/// on `socket`, with `TOKEND_DAEMON_UID` of our uid when `trusting`.
fn nobody(env: &Env, socket: &Path, trusting: bool, args: &[&str]) -> tokend_e2e::Output {
    let dir = env.root().join("bin");
    let token = dir.join("token");
    if !token.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(bin("token"), &token).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut full = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        token.to_str().unwrap(),
    ];
    full.extend(args);
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() }.to_string();
    let cmd = env
        .cmd(&full)
        .program("setpriv")
        .env("TOKEND_SOCKET", socket.to_str().unwrap());
    if trusting {
        cmd.env("TOKEND_DAEMON_UID", &uid).run()
    } else {
        cmd.run()
    }
}

/// [`nobody`] trusting our uid: a container's client told whose daemon it uses.
fn as_nobody(env: &Env, socket: &Path, args: &[&str]) -> tokend_e2e::Output {
    nobody(env, socket, true, args)
}

/// [`shared`], with the test's root (private by default) opened for
/// traversal, as a user's home would be: the share's own directory (0711)
/// and socket (0666) are then reachable by another uid.
fn shared_with_others(share: &str) -> (Provider, Env, Daemon, PathBuf) {
    let world = shared(share);
    std::fs::set_permissions(world.1.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    world
}

#[test]
fn another_uid_gets_a_shared_token_only_when_the_share_lists_it() {
    if !tokend_e2e::require_root(
        "share::another_uid_gets_a_shared_token_only_when_the_share_lists_it",
    ) {
        return;
    }
    let (_provider, env, _daemon, socket) =
        shared_with_others("sites = [\"corp\"]\nuids = [65534]\n");
    assert_eq!(tokend_e2e::mode(&socket) & 0o777, 0o666);
    let direct = env.token(&["get", "corp"]);
    let out = as_nobody(&env, &socket, &["get", "corp"]);
    out.ok();
    assert_eq!(out.line(), direct.line());
    let out = as_nobody(&env, &socket, &["get", "other"]);
    out.code(exit::USAGE);
    for args in [
        &["logout", "corp"][..],
        &["login", "corp"],
        &["reload"],
        &["stop"],
    ] {
        as_nobody(&env, &socket, args).code(exit::UNREACHABLE);
    }
    // The same uid on the daemon's own socket is refused (its directory
    // is private, and the daemon admits only us).
    let out = as_nobody(&env, &env.socket_path(), &["get", "corp"]);
    out.code(exit::UNREACHABLE);
    // Without TOKEND_DAEMON_UID the client refuses a daemon of another uid.
    let out = nobody(&env, &socket, false, &["get", "corp"]);
    out.code(exit::UNREACHABLE);
    assert!(out.stderr.contains("TOKEND_DAEMON_UID"), "{out}");
    assert!(!out.stdout.contains(direct.line()), "{out}");
}

#[test]
fn a_share_without_uids_refuses_other_users() {
    if !tokend_e2e::require_root("share::a_share_without_uids_refuses_other_users") {
        return;
    }
    // A share that admits some other uid (so its socket is reachable),
    // but not 65534: refused by the daemon's peer check.
    let (_provider, env, _daemon, socket) =
        shared_with_others("sites = [\"corp\"]\nuids = [12345]\n");
    let out = as_nobody(&env, &socket, &["get", "corp"]);
    out.code(exit::UNREACHABLE);
    assert!(
        out.stderr
            .contains("admits only its owner and the uids in its `uids`"),
        "{out}"
    );
    // A share without `uids` is private: 0600 in a 0700 directory.
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let socket = env.root().join("private").join("box.sock");
    env.write_config(&config(&provider, &socket, "sites = [\"corp\"]\n"));
    let _daemon = env.daemon();
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(tokend_e2e::mode(&socket) & 0o777, 0o600);
    assert_eq!(tokend_e2e::mode(socket.parent().unwrap()) & 0o777, 0o700);
    as_nobody(&env, &socket, &["get", "corp"]).code(exit::UNREACHABLE);
}
