//! A running `tokend`, stopped on drop (its log printed when a test panicked).

use super::*;

/// A running `tokend`; SIGTERM then SIGKILL (after 5 s) on drop.
pub struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("log", &self.log)
            .finish()
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The daemon's stderr/stdout so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL now, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait (SIGKILL after 5 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        terminate(&mut c, Duration::from_secs(5)).map(|st| code_of(&st))
    }

    /// Waits for the process to exit by itself (e.g. after `token stop`).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(code_of(&st));
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- tokend log ({}) ---\n{}",
                self.log.display(),
                tail(&self.log(), 8000)
            );
        }
    }
}
