//! The suite's small HTTP services in python (tests/registry_token.py,
//! tests/cargo_registry.py): started tied to the test, their ready line read,
//! killed on drop.

use super::*;

/// A python service of `tests/` that prints `{"port": N, ...}` when it
/// listens, with a request log. Killed on drop (its log is printed when the
/// test panicked).
#[derive(Debug)]
pub struct PyService {
    child: Child,
    /// What it printed when ready (`port` and whatever else it said).
    pub ready: Value,
    pub port: u16,
    log: PathBuf,
}

impl PyService {
    /// `python3 tests/SCRIPT ARGS...` (the last argument is usually `log`),
    /// waiting up to 15 s for its ready line.
    pub fn start(script: &str, args: &[&OsStr], log: &Path) -> PyService {
        let mut cmd = Command::new("python3");
        cmd.arg(tests_dir().join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        tie_to_test(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("python3 tests/{script}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let line = ready_line(stdout, Duration::from_secs(15))
            .map(|(line, _)| line)
            .unwrap_or_default();
        let ready: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
        let Some(port) = ready["port"].as_u64() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tests/{script} did not start: {line:?}");
        };
        PyService {
            child,
            ready,
            port: port as u16,
            log: log.to_path_buf(),
        }
    }

    /// Its request log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PyService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server that
/// must be told its port (the registry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `PATH` with the build's binaries first, so tools find the helpers
/// (`docker-credential-token`, `cargo-credential-token`) as a user's install would.
pub fn path_with_bins() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}
