//! Opening the authorization URL in the caller's browser. The client does
//! this, not the daemon, so the browser opens in the caller's session
//! (its `DISPLAY`, `BROWSER`, desktop), never wherever the daemon started.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

/// True when a person can act on a login URL: a terminal to read it on, a
/// desktop to open it in, or a `BROWSER` command.
pub fn caller_can_log_in() -> bool {
    if stderr_is_terminal() || std::env::var_os("BROWSER").is_some() {
        return true;
    }
    if cfg!(any(target_os = "macos", windows)) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// True when a person is at the caller: a terminal on its stdin or stderr.
/// A background caller (an IDE running git or kubectl) has neither, and
/// after a login that went unanswered it starts no new one.
pub fn person_at_terminal() -> bool {
    std::io::stdin().is_terminal() || stderr_is_terminal()
}

/// Asked once a process: a `get` asks it twice (may it log in, is a
/// person there), and it does not change.
fn stderr_is_terminal() -> bool {
    static TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TERMINAL.get_or_init(|| std::io::stderr().is_terminal())
}

/// True over SSH with nothing to open a browser with here (no `BROWSER`, no
/// display): a login should then not wait for a browser that never opens.
pub fn no_browser_here() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    set("SSH_CONNECTION")
        && !["BROWSER", "DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| set(v))
}

/// A browser opener started on a URL.
pub struct Opener {
    child: std::process::Child,
    program: String,
}

impl Opener {
    /// Waits for the opener to end; why it failed when it exited non-zero
    /// (`false`, or `xdg-open` with nothing to open with: exit 3). An opener
    /// that is the browser itself ends when the user closes it.
    pub fn failure(mut self) -> Option<String> {
        let status = self.child.wait().ok()?;
        let code = status.code().filter(|&c| c != 0)?;
        Some(format!(
            "the browser did not open: `{}` exited with status {code}",
            self.program
        ))
    }
}

/// Starts the browser on `url` without waiting for it. `BROWSER` wins on every
/// platform (split on whitespace, `%s` replaced, else the URL appended).
/// Only `https` URLs, or `http` to a loopback address, are opened: the URL
/// comes from the daemon and the provider, and an opener handed a path or a
/// `file:` URL would run or show local things.
pub fn open(url: &str) -> Result<Opener, String> {
    if !token_text::safe_to_open(url) {
        return Err(
            "not opening this URL in a browser: only https (or http to this machine) URLs are \
             opened automatically"
                .to_owned(),
        );
    }
    let mut cmd = match std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        Some(browser) => {
            let mut words = browser.split_whitespace();
            let program = words.next().unwrap_or_default();
            let mut cmd = Command::new(program);
            let mut substituted = false;
            for w in words {
                if w.contains("%s") {
                    substituted = true;
                    cmd.arg(w.replace("%s", url));
                } else {
                    cmd.arg(w);
                }
            }
            if !substituted {
                cmd.arg(url);
            }
            cmd
        }
        None => platform_opener(url),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("no browser here: `{program}` is not installed")
        } else {
            format!("could not start the browser (`{program}`): {e}")
        }
    })?;
    Ok(Opener { child, program })
}

#[cfg(target_os = "macos")]
fn platform_opener(url: &str) -> Command {
    let mut c = Command::new("open");
    c.arg(url);
    c
}

#[cfg(windows)]
fn platform_opener(url: &str) -> Command {
    let mut c = Command::new("rundll32");
    c.arg("url.dll,FileProtocolHandler").arg(url);
    c
}

#[cfg(all(unix, not(target_os = "macos")))]
fn platform_opener(url: &str) -> Command {
    let mut c = Command::new("xdg-open");
    c.arg(url);
    c
}
