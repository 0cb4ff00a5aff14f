//! Unix: a stream socket; the daemon checks our uid on its side.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub type Stream = std::os::unix::net::UnixStream;

pub fn connect(path: &Path) -> io::Result<Stream> {
    Stream::connect(path)
}

/// No socket file, or a socket nobody listens on: a daemon may be started.
pub fn is_not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The daemon gets its own process group so the terminal's Ctrl-C, aimed at
/// this `token`, does not also stop the daemon it started.
pub fn detach(cmd: &mut Command) {
    cmd.process_group(0);
}

/// Replaces this process with `cmd`; returns only on failure.
pub fn exec(mut cmd: Command) -> Result<u8, io::Error> {
    Err(cmd.exec())
}

/// Lets a blocked read return every so often (for the waiting countdown).
pub fn set_read_timeout(stream: &Stream, timeout: Option<std::time::Duration>) {
    let _ = stream.set_read_timeout(timeout);
}

/// Whether a `git push` is among our nearest ancestors (git runs helpers
/// from `git-remote-https`, which `git push` runs): a hint for advice, read
/// from /proc on Linux; elsewhere always false.
#[cfg(target_os = "linux")]
pub fn in_git_push() -> bool {
    let mut pid = std::process::id();
    for _ in 0..4 {
        let Some(parent) = parent_of(pid) else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|&b| b == 0);
        let is_git = args
            .next()
            .and_then(|a| a.rsplit(|&b| b == b'/').next())
            .is_some_and(|name| name == b"git");
        if is_git && args.any(|a| a == b"push") {
            return true;
        }
        pid = parent;
    }
    false
}

/// The parent pid from /proc/PID/stat (after the `(comm)` field, which may
/// hold spaces and parentheses).
#[cfg(target_os = "linux")]
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
    (ppid > 1).then_some(ppid)
}

#[cfg(not(target_os = "linux"))]
pub fn in_git_push() -> bool {
    false
}
