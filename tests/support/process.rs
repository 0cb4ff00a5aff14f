//! Child processes: started so they die with the harness, stopped politely
//! (SIGTERM, then SIGKILL), and what a finished `token` run left.

use super::*;

/// Makes the child get `sig` when the spawning thread dies (a harness killed
/// by SIGKILL leaves no orphan). Linux only; elsewhere a no-op.
pub(crate) fn die_with_parent(cmd: &mut Command, sig: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; no allocation here.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may already be gone between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (cmd, sig);
    }
}

/// Makes a child the test starts itself (an sshd, a browser) get SIGKILL
/// when the test process dies, like everything the harness starts.
pub fn tie_to_test(cmd: &mut Command) {
    die_with_parent(cmd, libc::SIGKILL);
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Reads a child's first line of stdout (its "ready" line) on a thread, so a
/// wedged child cannot hang the test: the line and the reader (keep it while
/// the child runs, so its stdout stays open), or what went wrong.
pub fn ready_line(
    stdout: ChildStdout,
    within: Duration,
) -> Result<(String, BufReader<ChildStdout>), String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let res = r.read_line(&mut line).map(|_| line);
        let _ = tx.send((res, r));
    });
    match rx.recv_timeout(within) {
        Ok((Ok(line), reader)) => Ok((line, reader)),
        Ok((Err(e), _)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Exit code as a shell would show it: the code, or 128 + signal.
pub(crate) fn code_of(st: &ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// What a finished `token` run left.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; 128 + signal when killed.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with the whole output unless the exit code is 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {self}");
        self
    }

    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}, got {self}");
        self
    }

    /// stdout without the trailing newline.
    pub fn line(&self) -> &str {
        self.stdout.trim_end_matches(['\n', '\r'])
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Collects a child's output, killing it after `timeout` (then panics).
#[track_caller]
pub fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    let out = child.stdout.take();
    let err = child.stderr.take();
    let reader = |p: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let to = reader(out.map(|o| Box::new(o) as Box<dyn Read + Send>));
    let te = reader(err.map(|e| Box::new(e) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = to.join().unwrap_or_default();
            let stderr = te.join().unwrap_or_default();
            panic!("{what} did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    // A grandchild (a detached browser) may hold the pipes: don't wait forever.
    let stdout = join_within(to, Duration::from_secs(5));
    let stderr = join_within(te, Duration::from_secs(5));
    Output {
        code: code_of(&status),
        stdout,
        stderr,
    }
}

fn join_within(h: thread::JoinHandle<String>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    while !h.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if h.is_finished() {
        h.join().unwrap_or_default()
    } else {
        "<output still held open by another process>".to_owned()
    }
}

/// Waits for `token` runs started with [`TokenCmd::spawn`]; every output, in
/// order.
#[track_caller]
pub fn wait_outputs(children: Vec<Child>, timeout: Duration, what: &str) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| wait_output(c, timeout, what))
        .collect()
}

/// Asserts that every run succeeded and printed the same token (`what` says
/// why they should); returns that token.
#[track_caller]
pub fn one_token(outs: &[Output], what: &str) -> String {
    for o in outs {
        o.ok();
    }
    let token = outs[0].line().to_owned();
    let differing = outs.iter().filter(|o| o.line() != token).count();
    assert_eq!(differing, 0, "{what}: {outs:#?}");
    token
}
