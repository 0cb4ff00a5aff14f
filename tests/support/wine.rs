//! The Windows leg's world: the Windows builds of `token` and `tokend`
//! under Wine, in a fresh prefix of their own.
//!
//! - [`Wine::start_or_skip`]: finds wine64, wineserver, the mingw compiler
//!   and the `.exe` files (else skips, or fails under the strict switch), makes a prefix
//!   (`wineboot`) and a directory with copies of the binaries and the
//!   test-only `bcryptprimitives.dll` (`tests/windows/bcryptprimitives.c`).
//! - [`Wine::token`], [`Wine::daemon`], [`Wine::credentials`]: `token.exe`,
//!   `tokend.exe`, and what Credential Manager holds.
//!
//! Every Windows process of the prefix is killed on drop.

use super::*;

const TARGET: &str = "x86_64-pc-windows-gnu";
const INSTALL: &str = "apt-get install -y --no-install-recommends wine64 gcc-mingw-w64-x86-64 \
     && rustup target add x86_64-pc-windows-gnu \
     && cargo build --target x86_64-pc-windows-gnu --bins -p token -p tokend \
     (scripts/test does all three)";

// ------------------------------------------------------------------ tools

/// What the Windows leg needs from the machine.
#[derive(Debug)]
struct Tools {
    wine: PathBuf,
    wineserver: PathBuf,
    gcc: PathBuf,
    /// Where `token.exe` and `tokend.exe` were built.
    exes: PathBuf,
}

/// `name` on `PATH`, or the first of `paths` that exists.
fn program(name: &str, paths: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    on_path
        .chain(paths.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// The Windows build's directory: `$CARGO_TARGET_DIR` or `target/`, then
/// `x86_64-pc-windows-gnu/debug`.
fn windows_exes() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .map_or_else(
            || workspace_root().join("target"),
            |t| {
                if t.is_absolute() {
                    t
                } else {
                    workspace_root().join(t)
                }
            },
        );
    target.join(TARGET).join("debug")
}

/// The tools, or `None` after saying why the test is skipped; under the strict switch (or
/// with `TOKEND_TEST_WINDOWS=1`, set by scripts/test) a missing piece fails.
fn tools_or_skip(test: &str) -> Option<Tools> {
    let exes = windows_exes();
    let found = (
        program("wine64", &["/usr/lib/wine/wine64"]).or_else(|| program("wine", &[])),
        program(
            "wineserver",
            &["/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver"],
        ),
        program("x86_64-w64-mingw32-gcc", &[]),
        ["token.exe", "tokend.exe"]
            .iter()
            .all(|e| exes.join(e).is_file()),
    );
    let missing = match found {
        (Some(wine), Some(wineserver), Some(gcc), true) => {
            return Some(Tools {
                wine,
                wineserver,
                gcc,
                exes,
            })
        }
        (None, ..) => "no wine64".to_owned(),
        (_, None, ..) => "no wineserver".to_owned(),
        (_, _, None, _) => "no x86_64-w64-mingw32-gcc".to_owned(),
        (.., false) => format!("no token.exe and tokend.exe in {}", exes.display()),
    };
    // scripts/test sets TOKEND_TEST_WINDOWS=1 when it has every piece: one
    // gone missing since is a failure even outside the strict switch.
    assert!(
        std::env::var("TOKEND_TEST_WINDOWS").as_deref() != Ok("1"),
        "{test}: {missing}, and scripts/test found the Windows leg's tools: {INSTALL}"
    );
    crate::require(false, test, &missing, INSTALL);
    None
}

/// `path` as Windows programs under Wine name it (`Z:` is `/`).
pub fn win(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

// ------------------------------------------------------------------ the world

/// A fresh Wine prefix in a temp dir, copies of the Windows binaries with
/// the test-only `bcryptprimitives.dll` beside them, and the environment
/// every Windows program of the test runs with. Every Windows process of the
/// prefix is killed on drop (`wineserver -k`), also when the test panics.
#[derive(Debug)]
pub struct Wine {
    dir: tempfile::TempDir,
    tools: Tools,
    prefix: PathBuf,
    bin: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Wine {
    /// The world, or `None` after saying why the test `test` is skipped:
    /// wine64, wineserver, the mingw compiler or the Windows build is
    /// missing. Under the strict switch (or with `TOKEND_TEST_WINDOWS=1`) that fails instead.
    pub fn start_or_skip(test: &str) -> Option<Wine> {
        tools_or_skip(test).map(Wine::boot)
    }

    /// Makes the prefix (`wineboot`, the slow part: once per run) and the
    /// binaries' directory.
    fn boot(tools: Tools) -> Wine {
        let dir = tempfile::Builder::new()
            .prefix("tokend-wine.")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let (prefix, bin, home) = (root.join("prefix"), root.join("bin"), root.join("home"));
        for d in [&bin, &home] {
            fs::create_dir_all(d).expect("mkdir");
        }
        for exe in ["token.exe", "tokend.exe"] {
            fs::copy(tools.exes.join(exe), bin.join(exe))
                .unwrap_or_else(|e| panic!("copy {exe}: {e}"));
        }
        // Rust's std imports ProcessPrng, which Wine 8.0 does not have.
        let shim = tests_dir().join("windows").join("bcryptprimitives.c");
        let gcc = Command::new(&tools.gcc)
            .args(["-shared", "-O2", "-o"])
            .arg(bin.join("bcryptprimitives.dll"))
            .arg(&shim)
            .arg("-ladvapi32")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", tools.gcc.display()));
        assert!(
            gcc.status.success(),
            "building the ProcessPrng shim failed:\n{}",
            String::from_utf8_lossy(&gcc.stderr)
        );
        // The browser script, where its path has no spaces ($BROWSER is
        // split into words).
        fs::copy(tests_dir().join("browser.py"), root.join("browser.py")).expect("copy browser.py");

        let p = |p: &Path| p.to_string_lossy().into_owned();
        let mut vars = BTreeMap::new();
        for keep in ["PATH", "USER", "LOGNAME", "LANG"] {
            if let Ok(v) = std::env::var(keep) {
                vars.insert(keep.to_owned(), v);
            }
        }
        vars.insert("HOME".into(), p(&home));
        vars.insert("WINEPREFIX".into(), p(&prefix));
        vars.insert(
            "WINEDEBUG".into(),
            std::env::var("WINEDEBUG").unwrap_or_else(|_| "-all".to_owned()),
        );
        // No Mono or Gecko installer at wineboot: nothing here needs them.
        vars.insert("WINEDLLOVERRIDES".into(), "mscoree,mshtml=".into());
        vars.insert(
            "TOKEND_CONFIG".into(),
            win(&root.join("config").join("config.toml")),
        );
        vars.insert("TOKEND_LOG".into(), "debug".into());
        vars.insert("CC_SECRET".into(), "cc-secret".into());
        // Wine runs the Linux script; the listener it calls back is the
        // Windows one.
        vars.insert(
            "BROWSER".into(),
            format!("start.exe /unix {}", root.join("browser.py").display()),
        );
        vars.insert("BROWSER_LOG".into(), p(&root.join("browser.log")));
        vars.insert(
            "BROWSER_COUNT_FILE".into(),
            p(&root.join("browser-launches")),
        );
        let wine = Wine {
            dir,
            tools,
            prefix,
            bin,
            vars,
        };
        let t = Instant::now();
        let boot = wine.wine(&["wineboot", "--init"]);
        let out = wine.run(boot, Duration::from_secs(300), "wineboot --init");
        assert_eq!(out.code, 0, "wineboot failed: {out}");
        eprintln!("windows: wineboot took {:.1?}", t.elapsed());
        wine
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("config").join("config.toml")
    }

    pub fn write_config(&self, toml: &str) {
        let p = self.config_path();
        fs::create_dir_all(p.parent().expect("config dir")).expect("mkdir config");
        fs::write(&p, toml).expect("write config");
    }

    /// `wine64 BIN/EXE ARGS` in this world (the outer environment cleared).
    fn exe(&self, exe: &str, args: &[&str]) -> Command {
        let mut cmd = self.wine(&[&self.bin.join(exe).to_string_lossy()]);
        cmd.args(args);
        cmd
    }

    /// `wine64 ARGS` in this world (the outer environment cleared).
    fn wine(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tools.wine);
        cmd.args(args)
            .current_dir(self.root())
            .env_clear()
            .envs(&self.vars);
        cmd
    }

    /// Standard streams piped (stdin closed); the child dies with the test.
    fn prepare(&self, cmd: &mut Command) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tie_to_test(cmd);
    }

    fn spawn(&self, mut cmd: Command) -> Child {
        self.prepare(&mut cmd);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.tools.wine.display()))
    }

    #[track_caller]
    fn run(&self, cmd: Command, timeout: Duration, what: &str) -> Output {
        wait_output(self.spawn(cmd), timeout, what)
    }

    /// `token.exe ARGS` with `TOKEND_NO_AUTOSTART=1`, 60 s max.
    #[track_caller]
    pub fn token(&self, args: &[&str]) -> Output {
        let mut cmd = self.exe("token.exe", args);
        cmd.env("TOKEND_NO_AUTOSTART", "1");
        self.run(cmd, Duration::from_secs(60), &format!("token.exe {args:?}"))
    }

    /// `token.exe ARGS`, free to start a daemon, not waited for.
    pub fn spawn_token_autostart(&self, args: &[&str]) -> Child {
        self.spawn(self.exe("token.exe", args))
    }

    /// `tokend.exe` with `vars` added, run to its end (60 s max).
    #[track_caller]
    pub fn tokend_to_end(&self, vars: &[(&str, &str)]) -> Output {
        let mut cmd = self.exe("tokend.exe", &[]);
        cmd.envs(vars.iter().copied());
        self.run(cmd, Duration::from_secs(60), "tokend.exe")
    }

    /// Starts `tokend.exe` in the foreground and waits until `token.exe
    /// status` answers.
    pub fn daemon(&self) -> WinDaemon {
        let log = self.root().join("tokend.log");
        let logf = fs::File::create(&log).expect("daemon log");
        let mut cmd = self.exe("tokend.exe", &[]);
        self.prepare(&mut cmd);
        cmd.stdout(logf.try_clone().expect("dup log")).stderr(logf);
        let child = cmd.spawn().expect("spawn tokend.exe");
        let mut d = WinDaemon {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("tokend.exe exited before answering ({st}):\n{}", d.log());
            }
            let out = self.token(&["status"]);
            if out.code == exit::OK {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "tokend.exe did not answer within 60 s; last status: {out}\n{}",
                d.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The Credential Manager entries of the prefix, by target name
    /// (`SITE.tokend`, `SITE#GEN.N.tokend`): Wine keeps each as a registry
    /// key `Generic: TARGET`.
    pub fn credentials(&self) -> Vec<String> {
        let cmd = self.wine(&["reg", "query", r"HKCU\Software\Wine\Credential Manager"]);
        let out = self.run(cmd, Duration::from_secs(60), "reg query");
        out.ok();
        let mut names: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once("\\Generic: "))
            .map(|(_, name)| name.trim().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The `tokend.exe` processes of this prefix that still run.
    pub fn daemons_running(&self) -> usize {
        self.processes()
            .into_iter()
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("tokend.exe"))
            })
            .count()
    }

    /// Every process whose environment names this prefix.
    fn processes(&self) -> Vec<u32> {
        let needle = format!("WINEPREFIX={}", self.prefix.display());
        let Ok(rd) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
            })
            .collect()
    }

    /// The browser script's launches, one `PID URL` line each.
    pub fn browser_launches(&self) -> Vec<String> {
        fs::read_to_string(self.root().join("browser-launches"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The log of a daemon that `token.exe` started (in the prefix's
    /// `%LOCALAPPDATA%\tokend`).
    fn autostarted_log(&self) -> String {
        files_under(&self.prefix.join("drive_c").join("users"))
            .into_iter()
            .filter(|p| p.ends_with("AppData/Local/tokend/tokend.log"))
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let mut kill = Command::new(&self.tools.wineserver);
        kill.arg("-k")
            .env("WINEPREFIX", &self.prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = kill.status();
        let _ = wait_until(Duration::from_secs(5), || self.processes().is_empty());
        for pid in self.processes() {
            signal(pid, libc::SIGKILL);
        }
        if thread::panicking() {
            let log = fs::read_to_string(self.root().join("browser.log")).unwrap_or_default();
            eprintln!("--- browser log ---\n{}", tail(&log, 4000));
            eprintln!(
                "--- autostarted tokend.exe log ---\n{}",
                tail(&self.autostarted_log(), 8000)
            );
            if std::env::var_os("TOKEND_E2E_KEEP").is_some() {
                let p =
                    std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
                eprintln!("TOKEND_E2E_KEEP: kept {}", p.display());
            }
        }
    }
}

/// A `tokend.exe` the test started in the foreground; killed on drop.
#[derive(Debug)]
pub struct WinDaemon {
    child: Option<Child>,
    log: PathBuf,
}

impl WinDaemon {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return st.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for WinDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("--- tokend.exe log ---\n{}", tail(&self.log(), 8000));
        }
    }
}
