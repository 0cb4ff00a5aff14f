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
