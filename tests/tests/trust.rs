//! Story: the trust boundary holds in both directions. The client talks only
//! to a daemon of its own user in a private directory, never starts one over
//! somebody else's socket, and finds its socket in a private place without
//! `$XDG_RUNTIME_DIR`; one daemon owns a user's store; the daemon never
//! loosens or tightens directories it did not create, keeps its files
//! private and its memory out of core dumps; config files that others can
//! edit do not get to run commands; tokens go only over TLS; a flood of
//! idle or half-sent connections does not lock real callers out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokend_e2e::{exit, require, wait_until, Env, Provider};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn private_dir(p: &Path) {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn the_client_refuses_a_daemon_run_by_another_user() {
    if !require(
        is_root(),
        "the_client_refuses_a_daemon_run_by_another_user",
        "needs root to listen as another uid",
        "run the suite as root (sudo scripts/test)",
    ) {
        return;
    }
    let env = Env::new();
    let sock = env.socket_path();
    private_dir(sock.parent().unwrap());
    // Binds in our private directory, then listens as uid 65534: the socket
    // peer is "another user", as if they had won the race for the path.
    let script = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
os.setgid(65534); os.setuid(65534)
s.listen(8)
print("ready", flush=True)
c, _ = s.accept()
c.settimeout(5)
data = b""
try:
    while True:
        chunk = c.recv(4096)
        if not chunk: break
        data += chunk
except OSError:
    pass
print(len(data), flush=True)
"#;
    let mut impostor = Command::new("python3")
        .args(["-c", script])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufReader::new(impostor.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let out = env.cmd(&["get", "corp"]).autostart().run();
    out.code(exit::UNREACHABLE);
    assert!(
        out.stderr.contains("uid 65534"),
        "names the owner found: {out}"
    );
    assert!(
        out.stderr.contains(&sock.display().to_string()),
        "names the path: {out}"
    );
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "0",
        "nothing was sent to the impostor"
    );
    let _ = impostor.wait();
    // An autostarted daemon would have logged to the state dir.
    assert!(
        !env.state_dir().join("tokend.log").exists(),
        "no daemon was started over it"
    );
}

#[test]
fn the_client_refuses_a_socket_directory_that_is_not_private() {
    let env = Env::new();
    let sock = env.socket_path();
    let dir = sock.parent().unwrap().to_owned();

    // Open to others.
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.cmd(&["status"]).autostart().run();
    out.code(exit::UNREACHABLE);
    assert!(out.stderr.contains("mode 755"), "{out}");
    assert!(!sock.exists(), "no daemon was started there: {out}");

    // A symlink to a private directory is still not the directory itself.
    fs::remove_dir(&dir).unwrap();
    let real = env.root().join("elsewhere");
    private_dir(&real);
    std::os::unix::fs::symlink(&real, &dir).unwrap();
    let out = env.cmd(&["status"]).autostart().run();
    out.code(exit::UNREACHABLE);
    assert!(out.stderr.contains("symlink"), "{out}");

    // Somebody else's.
    if is_root() {
        fs::remove_file(&dir).unwrap();
        private_dir(&dir);
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let out = env.cmd(&["status"]).autostart().run();
        out.code(exit::UNREACHABLE);
        assert!(out.stderr.contains("uid 65534"), "{out}");
    }
}

#[test]
fn a_second_daemon_on_another_socket_refuses_the_same_store() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    let _first = env.daemon();
    let first_socket = env.socket_path();
    let other = env.root().join("run").join("other").join("tokend.sock");
    env.set("TOKEND_SOCKET", &other.to_string_lossy());
    let mut second = env.spawn_daemon(&[]);
    let code = second.wait_exit(Duration::from_secs(10));
    let log = second.log();
    assert_eq!(
        code,
        Some(exit::UNEXPECTED),
        "the second daemon refuses: {log}"
    );
    assert!(
        log.contains(&first_socket.display().to_string()),
        "it names the first one's socket: {log}"
    );
    // A client that would autostart on the other socket hears why at once.
    let out = env.cmd(&["status"]).autostart().run();
    out.code(exit::UNREACHABLE);
    assert!(out.stderr.contains("already owns"), "{out}");
}

#[test]
fn the_daemon_does_not_change_directories_it_did_not_create() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    // The config straight in $HOME, which is 0755 as usual.
    let home = PathBuf::from(env.var("HOME").unwrap());
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    let config = home.join("config.toml");
    env.set("TOKEND_CONFIG", &config.to_string_lossy());
    env.write_config(&Env::site_config("corp", &provider));
    {
        let _daemon = env.daemon();
        env.token(&["status"]).ok();
    }
    assert_eq!(mode(&home), 0o755, "$HOME keeps its mode");

    // A state directory that someone made open is refused, not re-moded.
    let state = env.state_dir();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = env.spawn_daemon(&[]);
    let code = daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.log();
    assert_eq!(code, Some(exit::UNEXPECTED), "{log}");
    assert!(log.contains("chmod 700"), "says what to do: {log}");
    assert_eq!(mode(&state), 0o755, "left as it was");
}

#[test]
fn without_a_runtime_dir_the_socket_lives_in_the_private_state_dir() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.unset("TOKEND_SOCKET");
    env.unset("XDG_RUNTIME_DIR");
    let out = env.cmd(&["status", "--json"]).autostart().run();
    out.ok();
    let sock = env.state_dir().join("tokend.sock");
    assert!(
        UnixStream::connect(&sock).is_ok(),
        "the daemon listens at {}",
        sock.display()
    );
    assert_eq!(mode(&env.state_dir()), 0o700);
    env.token(&["stop"]).ok();
}

/// Every file and directory under `dir`: (path, mode, is_dir).
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32, bool)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let meta = fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn every_file_the_daemon_writes_is_private_and_core_dumps_are_off() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.set("TOKEND_STORE", "file");
    // Autostarted, so it also writes its log in the state dir.
    env.cmd(&["get", "corp"]).autostart().run().ok();
    let status = env.token(&["status", "--json"]).ok().json();
    let pid = status["pid"].as_u64().unwrap();

    let mut written = Vec::new();
    walk(&env.state_dir(), &mut written);
    walk(env.socket_path().parent().unwrap(), &mut written);
    assert!(written.len() >= 4, "{written:?}");
    for (path, m, is_dir) in &written {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} is {m:o}", path.display());
    }
    assert_eq!(mode(&env.state_dir()), 0o700);
    assert_eq!(mode(env.socket_path().parent().unwrap()), 0o700);

    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    if !limits.is_empty() {
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        let fields: Vec<&str> = core.split_whitespace().collect();
        assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    }
    env.token(&["stop"]).ok();
}

#[test]
fn a_config_that_others_can_edit_does_not_run_commands() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "[site.svc]\nissuer = \"{}\"\nclient_id = \"cc-client\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\nclient_secret_cmd = \"echo cc-secret\"\n",
        provider.issuer()
    ));
    fs::set_permissions(env.config_path(), fs::Permissions::from_mode(0o664)).unwrap();
    let _daemon = env.daemon();
    let out = env.token(&["get", "svc"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("writable by group or others"), "{out}");
    assert_eq!(provider.stats().token_calls, 0);

    fs::set_permissions(env.config_path(), fs::Permissions::from_mode(0o600)).unwrap();
    env.token(&["reload"]).ok();
    env.token(&["get", "svc"]).ok();
}

/// A dotfiles setup: the config is a symlink into `~/dotfiles`. When the
/// directory it points into, or one above the link, is open to others, the
/// whole config is refused (no site served, no login started), with the
/// `chmod` to run; fixed, it is served again.
#[test]
fn a_symlinked_dotfile_config_in_a_directory_others_can_write_is_refused() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let dots = env.root().join("home/dotfiles");
    fs::create_dir_all(&dots).unwrap();
    let target = dots.join("tokend.toml");
    fs::write(&target, Env::site_config("corp", &provider)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(env.config_path()).ok();
    std::os::unix::fs::symlink(&target, env.config_path()).unwrap();
    let link_dir = env.config_path().parent().unwrap().to_owned();

    for open in [&dots, &link_dir] {
        fs::set_permissions(open, fs::Permissions::from_mode(0o777)).unwrap();
        let mut daemon = env.daemon();
        let out = env.token(&["get", "corp"]);
        out.code(exit::USAGE);
        assert!(
            out.stderr.contains("refused as a whole")
                && out
                    .stderr
                    .contains(&format!("run `chmod go-w {}`", open.display())),
            "names the directory and what to run: {out}"
        );
        assert_eq!(env.browser_launches(), 0, "no login from a refused config");
        fs::set_permissions(open, fs::Permissions::from_mode(0o755)).unwrap();
        env.token(&["reload"]).ok();
        env.token(&["get", "corp", "--no-login"])
            .code(exit::LOGIN_REQUIRED);
        daemon.stop();
    }
}

/// Without HOME the daemon would read its config and keep its tokens under
/// whatever directory it was started in: it refuses to start instead.
#[test]
fn without_home_the_daemon_refuses_to_start() {
    let env = Env::new();
    let out = env
        .cmd(&[])
        .program(tokend_e2e::bin("tokend"))
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("TOKEND_CONFIG")
        .timeout(Duration::from_secs(10))
        .run();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("HOME is not set"), "{out}");
    assert!(
        !env.root().join(".local").exists(),
        "nothing made under the working directory"
    );
}

#[test]
fn plain_http_endpoints_are_refused() {
    let env = Env::new();
    env.write_config(
        "[site.corp]\nauthorize_url = \"https://auth.example.com/authorize\"\ntoken_url = \"http://auth.example.com/token\"\nclient_id = \"x\"\n",
    );
    let mut env = env;
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("token_url"), "{out}");
    assert!(out.stderr.contains("TLS"), "{out}");
}

#[test]
fn a_flood_of_idle_and_half_sent_connections_does_not_lock_callers_out() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    let sock = env.socket_path();

    let mut idle = Vec::new();
    for _ in 0..2000 {
        if let Ok(s) = UnixStream::connect(&sock) {
            idle.push(s);
        }
    }
    let mut half = Vec::new();
    for _ in 0..200 {
        if let Ok(mut s) = UnixStream::connect(&sock) {
            let _ = s.write_all(br#"{"v":1,"op":"get","site":"co"#);
            half.push(s);
        }
    }
    // While all of them are still open, a real caller gets its token.
    let out = env
        .cmd(&["get", "corp"])
        .timeout(Duration::from_secs(20))
        .run();
    out.ok();
    let rss_kib = fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    assert!(
        rss_kib < 64 * 1024,
        "daemon RSS {rss_kib} KiB after the flood"
    );
    // The half-sent ones are closed by the daemon within a few seconds.
    let closed = wait_until(Duration::from_secs(15), || {
        half.iter_mut().all(|s| {
            use std::io::Read;
            s.set_read_timeout(Some(Duration::from_millis(1))).ok();
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(0))
        })
    });
    assert!(closed, "half-sent connections are closed");
    drop(idle);
}
