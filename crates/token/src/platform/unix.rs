//! Unix: a stream socket. The daemon checks our uid on its side; we check
//! its uid and its directory on ours before sending anything.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub type Stream = std::os::unix::net::UnixStream;

/// The process start std's runtime would do, for `token::entry!`: fds 0-2
/// open (on `/dev/null` when closed), `SIGPIPE` ignored.
pub fn start() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the call's length;
    // a zero timeout only reports which descriptors are invalid.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled > 0 {
        for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
            // SAFETY: a NUL-terminated path; the lowest free descriptor is
            // the closed one, which stays open for the process's life.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if fd != p.fd {
                // Not the slot it should fill: nothing safe to do but stop.
                std::process::abort();
            }
        }
    }
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

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

/// What names this user's default socket: nothing on Unix, where the
/// socket's directory is already per user.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `TOKEND_DAEMON_UID`: the uid the daemon we reach runs as, when it is
/// not ours on purpose (a share socket of the host user, seen from a
/// container). `None`: unset, the daemon must be ours.
fn expected_daemon_uid() -> Result<Option<u32>, String> {
    match std::env::var("TOKEND_DAEMON_UID") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| {
            format!(
                "TOKEND_DAEMON_UID=`{}` is not a numeric uid",
                v.escape_debug()
            )
        }),
        Err(_) => Ok(None),
    }
}

/// The socket's directory must be ours, 0700 and not a symlink, or another
/// user could have put their own socket (and daemon) in our way. A missing
/// directory is fine: no daemon runs, and the one we start creates it.
/// With `TOKEND_DAEMON_UID` the directory is not ours to judge (a socket
/// mounted into a container): the daemon's uid alone is checked.
pub fn check_socket_dir(socket: &Path) -> Result<(), String> {
    if expected_daemon_uid()?.is_some() {
        return Ok(());
    }
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot check {}: {e}", dir.display())),
    };
    let problem = if meta.file_type().is_symlink() {
        Some("is a symlink".to_owned())
    } else if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != euid() {
        Some(format!(
            "belongs to uid {}, not to you (uid {})",
            meta.uid(),
            euid()
        ))
    } else if meta.permissions().mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:o}; it must be 0700",
            meta.permissions().mode() & 0o777
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!(
            "the socket directory {} {p}: another user could stand in for tokend there; \
             remove it (or fix it), or set TOKEND_SOCKET to a path in a private directory \
             (for a share socket mounted here from another machine or user, set \
             TOKEND_DAEMON_UID to the uid its daemon runs as)",
            dir.display()
        )),
        None => Ok(()),
    }
}

/// The uid of the process at the other end of the socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &Stream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the descriptor is an open socket owned by `stream`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cred.uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The uid of the process at the other end of the socket.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(stream: &Stream) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: both out-pointers are valid; the descriptor is an open socket.
    if unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) } == 0 {
        Ok(uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The daemon we reached must run as us (or as exactly the uid
/// `TOKEND_DAEMON_UID` names): a socket another user listens on would
/// receive our requests and could send us login URLs of their own.
pub fn check_peer(stream: &Stream) -> Result<(), String> {
    let expected = expected_daemon_uid()?;
    match (peer_uid(stream), expected) {
        (Ok(uid), Some(want)) if uid == want => Ok(()),
        (Ok(uid), Some(want)) => Err(format!(
            "the process listening there runs as uid {uid}, not as uid {want} \
             (TOKEND_DAEMON_UID): nothing was sent to it"
        )),
        (Ok(uid), None) if uid == euid() => Ok(()),
        (Ok(uid), None) => Err(format!(
            "the process listening there runs as uid {uid}, not as you (uid {}): \
             it is not your tokend, so nothing was sent to it (if it is a share socket \
             you mean to use, set TOKEND_DAEMON_UID={uid})",
            euid()
        )),
        (Err(e), _) => Err(format!("cannot check who listens there: {e}")),
    }
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

/// Whether this helper serves a `git push`: the first git command among our
/// ancestors that is not one of git's own plumbing steps. git runs a helper
/// as `sh -c 'git credential-NAME get'` from `git-remote-http`, itself run
/// by `git remote-http` under the `git push` (five generations up). Read
/// from /proc on Linux; elsewhere always false.
#[cfg(target_os = "linux")]
pub fn in_git_push() -> bool {
    let mut pid = std::process::id();
    for _ in 0..8 {
        let Some(parent) = parent_of(pid) else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        match git_step(&args) {
            GitStep::Push => return true,
            GitStep::Other => return false,
            GitStep::Between => pid = parent,
        }
    }
    false
}

/// What an ancestor's command line says about the git command running us.
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq, Eq)]
enum GitStep {
    /// `git push`.
    Push,
    /// Another git command (`fetch`, `clone`, …).
    Other,
    /// Not a git command of its own: a shell, `git-remote-http`,
    /// `git remote-https`, `git credential-token`.
    Between,
}

#[cfg(target_os = "linux")]
fn git_step(args: &[&[u8]]) -> GitStep {
    let Some((program, rest)) = args.split_first() else {
        return GitStep::Between;
    };
    if program.rsplit(|&b| b == b'/').next() != Some(b"git".as_slice()) {
        return GitStep::Between;
    }
    // The subcommand: the first word after git's own options (`-c K=V` and
    // `-C DIR` take a value).
    let mut words = rest.iter();
    let sub = loop {
        match words.next() {
            Some(&(b"-c" | b"-C")) => {
                words.next();
            }
            Some(w) if w.starts_with(b"-") => {}
            Some(w) => break *w,
            None => return GitStep::Between,
        }
    };
    if sub == b"push" {
        GitStep::Push
    } else if sub.starts_with(b"remote-") || sub.starts_with(b"credential") {
        GitStep::Between
    } else {
        GitStep::Other
    }
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

/// The line a Ctrl-C prints while a login waits, and the exit code it ends
/// with (see [`exit_on_interrupt`]).
static INTERRUPTED: std::sync::OnceLock<(Vec<u8>, u8)> = std::sync::OnceLock::new();

/// From now on SIGINT (Ctrl-C) writes `line` to stderr and exits with
/// `code` at once: a login the user gave up on is a result of its own, not
/// a kill (the daemon cancels the login when the connection closes). The
/// first call's line stays: a process waits for one login.
pub fn exit_on_interrupt(line: String, code: u8) {
    extern "C" fn on_sigint(_: libc::c_int) {
        // Only async-signal-safe calls here: write(2) and _exit(2).
        if let Some((line, code)) = INTERRUPTED.get() {
            // SAFETY: the buffer is valid for its length and lives for the
            // whole process (a static set before the handler was installed).
            unsafe {
                libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
                libc::_exit(libc::c_int::from(*code));
            }
        }
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(130) }
    }
    if INTERRUPTED.set((line.into_bytes(), code)).is_err() {
        return;
    }
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only makes async-signal-safe calls, and reads a
    // static that is fully set before it is installed.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{git_step, GitStep};

    fn step(line: &str) -> GitStep {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        git_step(&args)
    }

    /// The chain git 2.47 runs a helper from during a push, nearest first.
    #[test]
    fn a_push_is_found_above_gits_own_steps() {
        for between in [
            "git credential-token get",
            "/bin/sh -c git credential-token get git credential-token get",
            "/usr/local/libexec/git-core/git-remote-http origin http://h/r.git",
            "/usr/local/libexec/git-core/git remote-http origin http://h/r.git",
        ] {
            assert_eq!(step(between), GitStep::Between, "{between}");
        }
        assert_eq!(
            step("/usr/local/bin/git -c credential.helper=token -C /w push origin main"),
            GitStep::Push
        );
        assert_eq!(step("git -C /w fetch origin push"), GitStep::Other);
        assert_eq!(step("git clone http://h/push.git"), GitStep::Other);
    }
}
