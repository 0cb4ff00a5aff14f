//! Story: one daemon for your laptop and your servers. `ssh -R
//! REMOTE_SOCK:$TOKEND_SOCKET host` forwards the laptop's daemon socket to a
//! socket on the server; with `TOKEND_SOCKET=REMOTE_SOCK` there, `token get`
//! and the git credential helper on the server are served by the laptop's
//! daemon, with the laptop's login. Tested against a real OpenSSH server
//! (Debian's `openssh-server`) on 127.0.0.1 with a private config, key auth
//! only, forwarding one socket to another on the same machine. The client's
//! checks hold on both ends: the daemon sees the ssh client (our uid) as its
//! peer, the remote `token` sees sshd's session (our uid) in a 0700 directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokend_e2e::{
    bin, exit, require, tie_to_test, wait_until, Daemon, Env, Output, Provider, TokenCmd,
};

const SSHD: &str = "/usr/sbin/sshd";

/// The made-up git remote the site serves.
const GIT_HOST: &str = "127.0.0.1:8080";

/// Quotes a string for a POSIX shell (the remote command line).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A free TCP port on 127.0.0.1 (sshd is retried on another one if a
/// parallel test takes it first).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `ssh-keygen -t ed25519` without a passphrase.
fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tokend-e2e", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(st.success(), "ssh-keygen -f {}", path.display());
}

/// A real `sshd -D -e` on 127.0.0.1 with a private config, a fresh host key
/// and one authorized user key. Killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    user_key: PathBuf,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd, or `None` after printing why `test` is skipped.
    fn start(dir: &Path, test: &str) -> Option<Sshd> {
        let ssh_ok = Command::new("ssh")
            .arg("-V")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !require(
            Path::new(SSHD).is_file() && ssh_ok,
            test,
            "no /usr/sbin/sshd or ssh",
            "apt-get install -y openssh-server openssh-client (scripts/test installs them)",
        ) {
            return None;
        }
        if euid() == 0 && !Path::new("/run/sshd").is_dir() {
            // sshd's privilege-separation directory (its service creates it).
            fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
            fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755))
                .expect("chmod /run/sshd");
        }
        fs::create_dir_all(dir).expect("mkdir sshd dir");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod sshd dir");
        let host_key = dir.join("host_ed25519");
        let user_key = dir.join("user_ed25519");
        keygen(&host_key);
        keygen(&user_key);
        fs::copy(dir.join("user_ed25519.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");

        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            fs::write(
                &config,
                format!(
                    "Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     HostKey {host}\n\
                     PidFile none\n\
                     AuthorizedKeysFile {keys}\n\
                     AuthenticationMethods publickey\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     PermitRootLogin prohibit-password\n\
                     StrictModes no\n\
                     AllowTcpForwarding remote\n\
                     X11Forwarding no\n\
                     AllowStreamLocalForwarding yes\n\
                     StreamLocalBindUnlink yes\n\
                     PrintMotd no\n\
                     UseDNS no\n\
                     LogLevel VERBOSE\n",
                    host = host_key.display(),
                    keys = dir.join("authorized_keys").display(),
                ),
            )
            .expect("write sshd_config");
            let log = dir.join(format!("sshd-{attempt}.log"));
            let logf = fs::File::create(&log).expect("sshd log");
            let mut cmd = Command::new(SSHD);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::from(logf.try_clone().expect("dup log")))
                .stderr(Stdio::from(logf));
            tie_to_test(&mut cmd);
            let mut child = cmd.spawn().expect("spawn /usr/sbin/sshd");
            let listening = format!("Server listening on 127.0.0.1 port {port}");
            let mut exited = false;
            let ready = wait_until(Duration::from_secs(15), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited || fs::read_to_string(&log).is_ok_and(|l| l.contains(&listening))
            });
            if ready && !exited {
                let sshd = Sshd {
                    child,
                    port,
                    user_key,
                    log,
                };
                return sshd.can_log_in(test).then_some(sshd);
            }
            let _ = child.kill();
            let _ = child.wait();
            last = fs::read_to_string(&log).unwrap_or_default();
            if !last.contains("Address already in use") {
                break;
            }
        }
        panic!("sshd did not start; its log:\n{last}");
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// ssh's options for this server: its port and the user key, no config
    /// files, no agent, no prompts, no known_hosts.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-F", "/dev/null", "-i"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.push(self.user_key.to_string_lossy().into_owned());
        for o in [
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "ConnectTimeout=30",
            "ExitOnForwardFailure=yes",
        ] {
            args.push("-o".to_owned());
            args.push(o.to_owned());
        }
        args.push("-p".to_owned());
        args.push(self.port.to_string());
        args
    }

    /// Logs in once (`ssh … true`): `false` after printing why `test` is
    /// skipped when sshd refuses this account (a locked password makes
    /// sshd without PAM refuse even key logins); panics on other failures.
    fn can_log_in(&self, test: &str) -> bool {
        let out = Command::new("ssh")
            .args(self.args())
            .args(["127.0.0.1", "true"])
            .stdin(Stdio::null())
            .output()
            .expect("run ssh");
        if out.status.success() {
            return true;
        }
        let log = self.log();
        if log.contains("account is locked") || log.contains("not allowed because") {
            return require(
                false,
                test,
                &format!("sshd refuses to log this account in: {}", log.trim()),
                "run the suite as an account sshd lets log in with a key (not a locked one: passwd -u)",
            );
        }
        panic!(
            "ssh to the test sshd failed ({}): {}\n--- sshd log ---\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ssh [OPTS] -R remote:local 127.0.0.1 COMMAND` in `env`'s world (so it
    /// carries the world's environment, and dies with it).
    fn ssh_cmd<'a>(
        &self,
        env: &'a Env,
        forward: (&Path, &Path),
        opts: &[&str],
        command: &str,
    ) -> TokenCmd<'a> {
        let forward = format!("{}:{}", forward.0.display(), forward.1.display());
        let mut owned = self.args();
        owned.push("-R".to_owned());
        owned.push(forward);
        let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
        args.extend_from_slice(opts);
        args.extend_from_slice(&["127.0.0.1", command]);
        env.cmd(&args)
            .program("ssh")
            .timeout(Duration::from_secs(60))
    }

    /// [`Sshd::ssh_cmd`] without options, run to the end with `stdin`.
    fn ssh(&self, env: &Env, forward: (&Path, &Path), command: &str, stdin: &str) -> Output {
        self.ssh_cmd(env, forward, &[], command).stdin(stdin).run()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", self.log());
        }
    }
}

/// The remote side's `token ARGS`, served through `remote_sock`: sshd gives
/// the session a clean environment, so the command line sets
/// `TOKEND_SOCKET` (and no autostart: a forward that is down must fail, not
/// start a daemon on the server).
fn remote_token(remote_sock: &Path, args: &str) -> String {
    format!(
        "TOKEND_SOCKET={} TOKEND_NO_AUTOSTART=1 exec {} {args}",
        sh_quote(&remote_sock.to_string_lossy()),
        sh_quote(&bin("token").to_string_lossy()),
    )
}

/// A private directory for the remote socket, as a user would make it once
/// on the server (`mkdir -m 700`).
fn remote_socket(env: &Env) -> PathBuf {
    let dir = env.root().join("remote-run").join("tokend");
    fs::create_dir_all(&dir).expect("mkdir remote socket dir");
    for d in [dir.parent().expect("parent"), dir.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).expect("chmod 700");
    }
    dir.join("remote.sock")
}

/// A provider, a world with `[site.corp]` serving git at [`GIT_HOST`], and
/// its daemon (the laptop), not logged in yet.
fn laptop() -> (Provider, Env, Daemon) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}hosts = [\"{GIT_HOST}\"]\n",
        Env::site_config("corp", &provider)
    ));
    let daemon = env.daemon();
    (provider, env, daemon)
}

/// [`laptop`] after a login made on the laptop: also the token it printed.
fn logged_in() -> (Provider, Env, Daemon, String) {
    let (provider, env, daemon) = laptop();
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();
    (provider, env, daemon, token)
}

#[test]
fn token_get_and_git_credentials_on_the_server_come_from_the_laptops_daemon() {
    let test = "token_get_and_git_credentials_on_the_server_come_from_the_laptops_daemon";
    let (provider, env, _daemon, token) = logged_in();
    let Some(sshd) = Sshd::start(&env.root().join("sshd"), test) else {
        return;
    };
    let local = env.socket_path();
    let remote = remote_socket(&env);
    let calls = provider.stats().token_calls;

    // `token get` on the server prints the laptop's token: no second login.
    let out = sshd.ssh(
        &env,
        (&remote, &local),
        &remote_token(&remote, "get corp"),
        "",
    );
    out.ok();
    assert_eq!(out.line(), token, "the server gets the laptop's token");
    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 1, "one login: {stats:?}");
    assert_eq!(
        stats.token_calls, calls,
        "served from the daemon's memory: {stats:?}"
    );
    assert_eq!(env.browser_launches(), 1, "no second browser");

    // sshd made the forwarded socket private (StreamLocalBindMask 0177).
    let mode = fs::symlink_metadata(&remote)
        .expect("the forwarded socket stays behind")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "forwarded socket mode {mode:o}");

    // git's credential helper on the server, over a second connection: the
    // stale socket of the first is replaced (StreamLocalBindUnlink yes).
    let out = sshd.ssh(
        &env,
        (&remote, &local),
        &remote_token(&remote, "credential get"),
        &format!("protocol=http\nhost={GIT_HOST}\npath=repo.git\n\n"),
    );
    out.ok();
    let attrs: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    assert!(attrs.contains(&("username", "oauth2")), "{out}");
    assert!(attrs.contains(&("password", token.as_str())), "{out}");
    assert_eq!(provider.stats().grant("authorization_code"), 1);
    assert_eq!(env.browser_launches(), 1);

    // Disconnected, the server has nothing: the socket left behind answers
    // nobody, and the client does not start a daemon of its own there.
    let out = env
        .cmd(&["get", "corp"])
        .env("TOKEND_SOCKET", &remote.to_string_lossy())
        .run();
    out.code(exit::UNREACHABLE);
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn the_server_side_client_refuses_a_socket_directory_others_can_enter() {
    let test = "the_server_side_client_refuses_a_socket_directory_others_can_enter";
    let (provider, env, _daemon, _token) = logged_in();
    let Some(sshd) = Sshd::start(&env.root().join("sshd"), test) else {
        return;
    };
    let local = env.socket_path();
    let remote = remote_socket(&env);
    let dir = remote.parent().expect("socket dir");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    let calls = provider.stats().token_calls;

    let out = sshd.ssh(
        &env,
        (&remote, &local),
        &remote_token(&remote, "get corp"),
        "",
    );
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stdout.is_empty(), "no token printed: {out}");
    assert!(
        out.stderr.contains(&dir.display().to_string()) && out.stderr.contains("0700"),
        "the error names the directory and what it must be: {out}"
    );
    assert_eq!(provider.stats().token_calls, calls);
}

#[test]
fn a_login_asked_for_on_the_server_is_finished_in_the_laptops_browser() {
    let test = "a_login_asked_for_on_the_server_is_finished_in_the_laptops_browser";
    let (provider, env, _daemon) = laptop();
    let Some(sshd) = Sshd::start(&env.root().join("sshd"), test) else {
        return;
    };
    let local = env.socket_path();
    let remote = remote_socket(&env);

    // A command run over ssh without a terminal (no browser, no display on
    // the server) cannot show anyone a URL: it fails at once, naming the site.
    let out = sshd.ssh(
        &env,
        (&remote, &local),
        &remote_token(&remote, "get corp"),
        "",
    );
    out.code(exit::LOGIN_REQUIRED);
    assert!(
        out.stdout.is_empty() && out.stderr.contains("corp"),
        "{out}"
    );
    assert_eq!(provider.stats().token_calls, 0);

    // In a terminal on the server (-tt: a remote pty), the server's `token`
    // prints the URL and starts the server's browser, which shows nothing
    // there (`true` stands in for an xdg-open that finds none). The URL's
    // redirect goes to the laptop's loopback listener, so the user opens it
    // in the laptop's browser, and the command on the server gets the token.
    let command = format!("BROWSER=true {}", remote_token(&remote, "get corp"));
    let mut child = sshd
        .ssh_cmd(&env, (&remote, &local), &["-tt"], &command)
        .spawn();
    let (lines, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_owned();
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    });
    let url = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            // tokend's one-time start link on the laptop's loopback
            // listener, which redirects to the provider.
            Ok(line)
                if line.trim_start().starts_with("http://127.0.0.1:")
                    && line.contains("/start/") =>
            {
                break line.trim().to_owned()
            }
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("no login URL from the server's token ({e})");
            }
        }
    };
    env.run_browser(&[&url], "the laptop's browser");
    let out = tokend_e2e::wait_output(child, Duration::from_secs(60), "ssh -tt token get");
    let printed = reader.join().expect("reader");
    assert_eq!(out.code, 0, "{out}\n--- pty ---\n{printed}");

    let token = env.token(&["get", "corp", "--no-login"]);
    token.ok();
    // The progress line is cleared (`\r`, erase to end of line) before the
    // token is printed over it: what the terminal shows is what follows.
    let shown = |l: &str| {
        let l = l.rsplit('\r').next().unwrap_or(l);
        l.rsplit("\x1b[K").next().unwrap_or(l).to_owned()
    };
    assert!(
        printed.lines().any(|l| shown(l) == token.line()),
        "the server printed the laptop's token:\n{printed}"
    );
    assert_eq!(provider.stats().grant("authorization_code"), 1);
    assert_eq!(
        env.browser_launches(),
        0,
        "nothing opened a browser on the laptop by itself"
    );
}
