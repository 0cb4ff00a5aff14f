//! A test's world: a private temp dir with its own XDG dirs, config file,
//! socket path, store and `BROWSER`, and the `token` client run in it.

use super::*;

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
    "BROWSER_ARGV_FILE",
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
        vars.insert("BROWSER_ARGV_FILE".into(), p("browser-argv"));
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
    /// `python3 -c SCRIPT` in this environment; as uid 65534 (through
    /// `setpriv`, which needs root) when `as_nobody`.
    pub fn python(&self, as_nobody: bool, script: &str) -> TokenCmd<'_> {
        let mut args: Vec<&str> = Vec::new();
        if as_nobody {
            args.extend(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        }
        args.extend(["/usr/bin/python3", "-c", script]);
        self.cmd(&args)
            .program(if as_nobody { "setpriv" } else { "env" })
    }

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

    /// The argv of each browser launch (what `/proc/PID/cmdline` shows).
    pub fn browser_argvs(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.root().join("browser-argv"))
            .map(|s| {
                s.lines()
                    .map(|l| l.split('\0').map(str::to_owned).collect())
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

/// A raw HTTP GET of `path` on 127.0.0.1:`port` by python3, run as
/// `as_nobody` uid 65534 or as us; prints what came back (nothing when the
/// connection was closed unanswered).
pub fn raw_get(env: &Env, as_nobody: bool, port: u16, path: &str) -> String {
    let script = format!(
        "import socket,sys\n\
         s=socket.create_connection(('127.0.0.1',{port}),timeout=5)\n\
         s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n')\n\
         out=b''\n\
         try:\n\
         \x20 while True:\n\
         \x20   b=s.recv(4096)\n\
         \x20   if not b: break\n\
         \x20   out+=b\n\
         except OSError as e:\n\
         \x20 pass\n\
         sys.stdout.write(out.decode('latin-1'))\n"
    );
    let out = env.python(as_nobody, &script).run();
    assert_eq!(out.code, 0, "raw client: {out}");
    out.stdout
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
