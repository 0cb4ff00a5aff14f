//! Story: the service files in the repo work. The systemd user units pass
//! `systemd-analyze verify --user`; the socket unit listens where the
//! client looks by default; tokend serves on a socket passed in by socket
//! activation (`LISTEN_FDS`); the launchd plist is a valid property list
//! that runs tokend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;

use tokend_e2e::{bin, require, wait_until, workspace_root, Env, Provider, Value};

fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty()).then(|| PathBuf::from(s))
}

/// `key=value` lines of one unit file (all sections).
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[test]
fn systemd_units_verify_and_listen_where_the_client_looks() {
    let root = workspace_root().join("systemd");
    let socket = fs::read_to_string(root.join("tokend.socket")).expect("systemd/tokend.socket");
    let service = fs::read_to_string(root.join("tokend.service")).expect("systemd/tokend.service");

    // The socket is the client's default: $XDG_RUNTIME_DIR/tokend/tokend.sock.
    assert_eq!(
        unit_values(&socket, "ListenStream"),
        ["%t/tokend/tokend.sock"],
        "{socket}"
    );
    assert_eq!(unit_values(&socket, "SocketMode"), ["0600"]);
    let exec = unit_values(&service, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {service}");
    assert!(
        exec[0].ends_with("/tokend"),
        "ExecStart runs tokend: {exec:?}"
    );

    let Some(analyze) = which("systemd-analyze") else {
        require(
            false,
            "systemd_units_verify_and_listen_where_the_client_looks (verify part)",
            "systemd-analyze is not installed",
            "apt-get install -y systemd",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    fs::create_dir(&run).expect("mkdir run");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).expect("chmod");
    let units = dir.path().join("units");
    fs::create_dir(&units).expect("mkdir units");
    fs::write(units.join("tokend.socket"), &socket).expect("copy socket unit");
    let tokend = bin("tokend");
    let service: String = service
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={}", tokend.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(units.join("tokend.service"), service + "\n").expect("copy service unit");

    let out = Command::new(&analyze)
        .args(["verify", "--user", "./tokend.socket", "./tokend.service"])
        .current_dir(&units)
        .env("XDG_RUNTIME_DIR", &run)
        .env("HOME", dir.path())
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify --user failed:\n{stdout}\n{stderr}"
    );
    // Unknown keys and bad values are only warnings: none allowed either.
    let units_s = units.to_string_lossy();
    let complaints: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains(&*units_s) || l.contains("tokend."))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze complains about the units:\n{stdout}\n{stderr}"
    );
}

#[test]
fn launchd_plist_is_valid_and_runs_tokend() {
    let plist = workspace_root().join("launchd").join("dev.tokend.plist");
    assert!(plist.is_file(), "{} is missing", plist.display());
    let script = "import plistlib,sys,json\nwith open(sys.argv[1],'rb') as f: d=plistlib.load(f)\nprint(json.dumps(d, default=str))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&plist)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "not a valid plist: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("plist as JSON");
    assert_eq!(v["Label"], "dev.tokend", "{v}");
    let args = v["ProgramArguments"]
        .as_array()
        .unwrap_or_else(|| panic!("ProgramArguments: {v}"));
    assert!(
        args.first()
            .and_then(Value::as_str)
            .is_some_and(|p| p.ends_with("/tokend")),
        "ProgramArguments[0] is tokend: {v}"
    );
    assert!(
        v["RunAtLoad"] == true || !v["KeepAlive"].is_null() || !v["Sockets"].is_null(),
        "the agent starts (RunAtLoad, KeepAlive or Sockets): {v}"
    );
    // Logs go to the user's own Logs folder, never to shared /tmp.
    assert_eq!(
        v["EnvironmentVariables"]["TOKEND_LOG_FILE"], "~/Library/Logs/tokend.log",
        "{v}"
    );
    for key in ["StandardErrorPath", "StandardOutPath"] {
        let path = v[key].as_str().unwrap_or("");
        assert!(!path.starts_with("/tmp"), "{key} = {path}");
    }
}

/// A daemon started outside the harness; killed on drop.
struct Activated {
    child: Child,
    log: PathBuf,
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- tokend log ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn socket_dir(env: &Env) -> PathBuf {
    let sock = env.socket_path();
    let dir = sock.parent().expect("socket dir").to_path_buf();
    fs::create_dir_all(&dir).expect("mkdir socket dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let _ = fs::remove_file(&sock);
    dir
}

/// The activated daemon answers on the socket it was given and is the
/// process that was started (it did not spawn another daemon).
fn check_served(env: &Env, daemon: &mut Activated, provider: &Provider) {
    use std::os::unix::fs::MetadataExt;
    let inode = || fs::metadata(env.socket_path()).map(|m| m.ino()).ok();
    let before = inode();
    assert!(before.is_some(), "the socket exists before tokend runs");
    let mut last = None;
    let ok = wait_until(std::time::Duration::from_secs(10), || {
        let out = env.token(&["status", "--json"]);
        let ok = out.code == 0;
        last = Some(out);
        ok
    });
    assert!(ok, "no answer through the activated socket: {last:?}");
    let st = last.unwrap().json();
    assert_eq!(
        st["pid"].as_u64(),
        Some(u64::from(daemon.child.id())),
        "the activated process answers: {st}"
    );
    assert!(
        st["sites"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["site"] == "corp")),
        "{st}"
    );
    let out = env.token(&["get", "corp"]);
    out.ok();
    let (status, body) = provider.userinfo(out.line());
    assert_eq!(status, 200, "{body}");
    assert!(daemon.child.try_wait().expect("try_wait").is_none());
    assert_eq!(
        inode(),
        before,
        "tokend serves the inherited socket, it does not bind a new one"
    );
}

#[test]
fn tokend_serves_an_inherited_socket() {
    let provider = Provider::start(3600);
    let env = Env::new();
    env.write_config(&Env::site_config("corp", &provider));
    socket_dir(&env);
    let sock = env.socket_path();
    let listener = UnixListener::bind(&sock).expect("bind the socket");
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).expect("chmod socket");
    let fd = listener.as_raw_fd();
    let log = env.root().join("tokend-activated.log");
    let logf = fs::File::create(&log).expect("log");

    // LISTEN_PID must be the daemon's own pid: a shell sets it and execs.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=tokend.socket exec \"$0\"",
    ])
    .arg(bin("tokend"))
    .stdin(Stdio::null())
    .stdout(Stdio::from(logf.try_clone().expect("dup")))
    .stderr(Stdio::from(logf));
    env.apply(&mut cmd);
    // SAFETY: dup2 is async-signal-safe; fd 3 is the inherited listener.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // Already in place: just clear close-on-exec.
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn tokend");
    drop(listener);
    let mut daemon = Activated { child, log };
    check_served(&env, &mut daemon, &provider);
}

#[test]
fn an_inherited_fd_that_is_not_a_stream_socket_is_refused() {
    let env = Env::new();
    let file = env.root().join("not-a-socket");
    fs::write(&file, "x").expect("file");
    let f = fs::File::open(&file).expect("open");
    let fd = f.as_raw_fd();
    let log = env.root().join("tokend-activated.log");
    let logf = fs::File::create(&log).expect("log");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\""])
        .arg(bin("tokend"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone().expect("dup")))
        .stderr(Stdio::from(logf));
    env.apply(&mut cmd);
    // SAFETY: dup2 is async-signal-safe; fd 3 becomes the regular file.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().expect("run tokend");
    let said = fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{said}");
    assert!(said.contains("not a socket"), "{said}");
}

#[test]
fn tokend_under_systemd_socket_activate() {
    let Some(tool) = which("systemd-socket-activate") else {
        require(
            false,
            "tokend_under_systemd_socket_activate",
            "systemd-socket-activate is not installed",
            "apt-get install -y systemd",
        );
        return;
    };
    let provider = Provider::start(3600);
    let env = Env::new();
    env.write_config(&Env::site_config("corp", &provider));
    socket_dir(&env);
    let log = env.root().join("tokend-activated.log");
    let logf = fs::File::create(&log).expect("log");
    let mut cmd = Command::new(tool);
    cmd.arg("-l").arg(env.socket_path());
    // systemd-socket-activate passes only what -E names.
    for (k, v) in env.vars() {
        cmd.arg("-E").arg(format!("{k}={v}"));
    }
    cmd.arg(bin("tokend"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone().expect("dup")))
        .stderr(Stdio::from(logf));
    env.apply(&mut cmd);
    let child = cmd.spawn().expect("spawn systemd-socket-activate");
    let mut daemon = Activated { child, log };
    assert!(
        wait_until(std::time::Duration::from_secs(10), || Path::new(
            &env.socket_path()
        )
        .exists()),
        "systemd-socket-activate did not create the socket"
    );
    check_served(&env, &mut daemon, &provider);
}

/// `ReadWritePaths=` entries that may not exist yet (the state dir of a
/// user on the keyring store, a config dir not created yet) must carry the
/// `-` prefix: without it systemd refuses to start the service
/// (status 226/NAMESPACE), and under `ProtectSystem=strict` tokend could not
/// create them itself either.
#[test]
fn read_write_paths_tolerate_missing_directories() {
    let service = fs::read_to_string(workspace_root().join("systemd").join("tokend.service"))
        .expect("systemd/tokend.service");
    for v in unit_values(&service, "ReadWritePaths") {
        for p in v.split_whitespace() {
            assert!(
                p.starts_with('-') || p == "%t",
                "ReadWritePaths entry {p} fails the service when it does not exist; write -{p} (or use StateDirectory=/ConfigurationDirectory=)"
            );
        }
    }
}
