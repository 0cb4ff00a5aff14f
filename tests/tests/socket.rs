//! Story: the socket is a security boundary: 0700 dir, 0600 socket, and a
//! connection from another uid is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use tokend_e2e::{bin, exit, mode, require, serve_corp};

#[test]
fn socket_dir_is_0700_and_socket_0600() {
    let (_provider, env, _daemon) = serve_corp(3600);

    let sock = env.socket_path();
    let dir = sock.parent().unwrap();
    assert_eq!(mode(dir), 0o700, "socket dir {}", dir.display());
    assert_eq!(mode(&sock), 0o600, "socket {}", sock.display());
}

#[test]
fn a_foreign_uid_is_refused() {
    if !tokend_e2e::require_root("a_foreign_uid_is_refused") {
        return;
    }
    if !require(
        std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok(),
        "a_foreign_uid_is_refused",
        "setpriv is not installed",
        "apt-get install -y util-linux",
    ) {
        return;
    }
    let (_provider, env, _daemon) = serve_corp(3600);

    // Open the path up so only the daemon's peer-uid check stands in the way.
    let sock = env.socket_path();
    let open = |p: &std::path::Path, m: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap()
    };
    open(env.root(), 0o755);
    open(&env.root().join("run"), 0o755);
    open(sock.parent().unwrap(), 0o755);
    open(&sock, 0o666);

    // A raw client (socat) as uid 65534 (`token` itself would refuse a socket
    // directory of another user before sending anything).
    let target = format!("UNIX-CONNECT:{}", sock.display());
    let out = env
        .cmd(&[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "socat",
            "-t",
            "3",
            "-",
            &target,
        ])
        .program("setpriv")
        // Nothing to send: the daemon answers a foreign peer before reading.
        .stdin("")
        .run();
    assert!(
        out.stdout.contains("\"forbidden\""),
        "a client of another uid is refused by the daemon: {out}"
    );
    assert!(!out.stdout.contains("\"sites\""), "{out}");

    // And `token` run as that uid refuses the directory before sending.
    let token = bin("token");
    let out = env
        .cmd(&[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            token.to_str().unwrap(),
            "status",
        ])
        .program("setpriv")
        .run();
    out.code(exit::UNREACHABLE);
    assert!(out.stderr.contains("belongs to uid 0"), "{out}");

    // The daemon still serves its owner (once the directory is private again).
    open(sock.parent().unwrap(), 0o700);
    env.token(&["status"]).ok();
}
