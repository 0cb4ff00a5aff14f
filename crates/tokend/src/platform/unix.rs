//! Unix: a stream socket in a 0700 directory, created 0600 (umask set around
//! bind, so there is no window with a wider mode), guarded by a lock file so
//! exactly one daemon owns it, and the peer uid checked on every accept.

use super::Holder;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) type Stream = tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    #[error("another tokend is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot set up the socket directory {path}: {message}")]
    Dir { path: PathBuf, message: String },
    #[error("cannot bind {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Does the loopback TCP connection from `peer` to our `local` address come
/// from a process of our uid? On Linux the kernel's socket table says;
/// elsewhere there is no cheap way to ask, and every connection is admitted
/// (the login's `state` and one-time start link still guard it).
pub(crate) fn loopback_peer_is_ours(
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
) -> bool {
    #[cfg(target_os = "linux")]
    {
        super::procnet::peer_uid(local, peer) == Some(euid())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (local, peer);
        true
    }
}

/// Creates `dir` 0700 (its parents with the default mode), or checks that an
/// existing one is private: ours, 0700, and not a symlink. An existing
/// directory is never re-moded, since tokend did not create it (it may be
/// `$HOME`): a wrong one is refused with a message saying what to do.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    check_private_dir(dir)
}

/// `dir` (not followed if it is a symlink) is a directory of ours with no
/// access for group or others.
pub(super) fn check_private_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    let refuse = |what: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} {what}", dir.display()),
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse(
            "is a symlink: tokend keeps private files only in a real directory; remove the link"
                .to_owned(),
        );
    }
    if !meta.is_dir() {
        return refuse("is not a directory".to_owned());
    }
    if meta.uid() != euid() {
        return refuse(format!(
            "belongs to uid {}, not to this user (uid {}): remove it, or choose another path",
            meta.uid(),
            euid()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return refuse(format!(
            "has mode {mode:o}, open to other users; tokend does not change directories it did \
             not create: run `chmod 700 {}`, or choose another path",
            dir.display()
        ));
    }
    Ok(())
}

/// Creates a new file readable by its owner only.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    // A new file only (O_EXCL), never through a symlink (O_NOFOLLOW): what
    // is written is never redirected to a file someone planted.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// Opens a log file for appending, readable by its owner only; a symlink
/// at its path is refused (O_NOFOLLOW), not followed.
pub(crate) fn open_private_log(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The listening socket and the lock that makes this daemon its only owner.
#[derive(Debug)]
pub(crate) struct Listener {
    inner: tokio::net::UnixListener,
    /// Removed on drop; `None` for an inherited (systemd) socket, which is not ours to remove.
    path: Option<PathBuf>,
    /// Where an inherited socket is bound, for messages.
    inherited: Option<PathBuf>,
    _lock: Option<File>,
    /// Other uids admitted besides ours (a `[share]` with `uids`).
    admit: Vec<u32>,
}

impl Listener {
    /// Accepts the next connection whose peer is this user. A foreign peer is
    /// answered with `forbidden` right here and never reaches a handler.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, bool)> {
        let (stream, _) = self.inner.accept().await?;
        let ours = stream
            .peer_cred()
            .map(|c| c.uid() == euid() || self.admit.contains(&c.uid()))
            .unwrap_or(false);
        Ok((stream, ours))
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.path, &self.inherited) {
            (Some(p), _) | (None, Some(p)) => p.display().to_string(),
            (None, None) => "the socket inherited from systemd".to_owned(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A listener on `path` for the in-process tests (`crate::kit`): no lock
/// file and no umask change (the umask is the whole process's, and tests
/// bind in parallel); accepted peers are checked as in the daemon.
#[cfg(test)]
pub(crate) fn bind_for_tests(path: &Path) -> io::Result<Listener> {
    Ok(Listener {
        inner: tokio::net::UnixListener::bind(path)?,
        path: Some(path.to_owned()),
        inherited: None,
        _lock: None,
        admit: Vec::new(),
    })
}

/// Binds `path`: 0700 parent, lock file, stale socket removed only after a
/// connect attempt shows nobody listens.
pub(crate) fn bind(path: &Path) -> Result<Listener, BindError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    create_private_dir(dir).map_err(|e| BindError::Dir {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err)?;
    // SAFETY: flock on a descriptor we own; no memory is shared with the call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(BindError::AlreadyRunning(path.to_owned()));
        }
        return Err(io_err(e));
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    // SAFETY: umask only swaps the process mask; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let std_listener = bound.map_err(io_err)?;
    std_listener.set_nonblocking(true).map_err(io_err)?;
    let inner = tokio::net::UnixListener::from_std(std_listener).map_err(io_err)?;
    Ok(Listener {
        inner,
        path: Some(path.to_owned()),
        inherited: None,
        _lock: Some(lock),
        admit: Vec::new(),
    })
}

/// Binds a `[share]` socket at `path`. Without `admit`: in a private
/// (0700) directory, 0600, like the daemon's own. With `admit` (other uids):
/// 0666, admission by peer uid on accept, in a directory of ours that
/// others cannot write (created 0711 when missing, so they can reach it).
/// The file is not removed on drop: whoever stops the share removes it, at
/// once, so that a share moved to the same path is not unlinked later.
pub(crate) fn bind_share(path: &Path, admit: &[u32]) -> Result<Listener, BindError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir_err = |message: String| BindError::Dir {
        path: dir.to_owned(),
        message,
    };
    if admit.is_empty() {
        create_private_dir(dir).map_err(|e| dir_err(e.to_string()))?;
    } else {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| dir_err(e.to_string()))?;
        }
        match std::fs::DirBuilder::new().mode(0o711).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(dir_err(e.to_string())),
        }
        let meta = std::fs::symlink_metadata(dir).map_err(|e| dir_err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(dir_err("is not a directory (or is a symlink)".to_owned()));
        }
        if meta.uid() != euid() {
            return Err(dir_err(format!(
                "belongs to uid {}, not to this user: choose a directory of your own",
                meta.uid()
            )));
        }
        if mode & 0o022 != 0 {
            return Err(dir_err(format!(
                "has mode {mode:o}: others could replace the socket there; run `chmod go-w {}`",
                dir.display()
            )));
        }
    }
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(BindError::Dir {
                path: path.to_owned(),
                message: "is there and is not a socket: tokend does not remove it; choose another path or remove it".to_owned(),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    // No umask here (it is the process's, and a reload runs beside other
    // work): the mode is set right after bind. It is not the guard anyway:
    // every connection's peer uid is checked on accept.
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    let mode = if admit.is_empty() { 0o600 } else { 0o666 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    std_listener.set_nonblocking(true).map_err(io_err)?;
    let inner = tokio::net::UnixListener::from_std(std_listener).map_err(io_err)?;
    Ok(Listener {
        inner,
        path: None,
        inherited: Some(path.to_owned()),
        _lock: None,
        admit: admit.to_vec(),
    })
}

/// The socket systemd passed us (`LISTEN_FDS`/`LISTEN_PID`, fd 3), if any.
pub(crate) fn from_activation() -> io::Result<Option<Listener>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !pid_ok || fds < 1 {
        return Ok(None);
    }
    // Children (the browser, client_secret_cmd) must not think they were activated.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    const SD_LISTEN_FDS_START: i32 = 3;
    // Only the first is used: any others (a unit with more sockets) must not
    // reach the programs tokend runs, so they are marked close-on-exec.
    for extra in SD_LISTEN_FDS_START + 1..SD_LISTEN_FDS_START.saturating_add(fds) {
        set_cloexec(extra);
    }
    check_activated_fd(SD_LISTEN_FDS_START)?;
    // SAFETY: systemd hands us fd 3, checked above to be a Unix stream
    // socket, owned by this process from now on; nothing else uses it.
    let std_listener =
        unsafe { std::os::unix::net::UnixListener::from_raw_fd(SD_LISTEN_FDS_START) };
    // getsockname fails unless it is an AF_UNIX socket.
    let inherited = std_listener
        .local_addr()
        .map_err(|e| io::Error::new(e.kind(), format!("fd 3 is not a Unix socket: {e}")))?
        .as_pathname()
        .map(Path::to_owned);
    std_listener.set_nonblocking(true)?;
    let inner = tokio::net::UnixListener::from_std(std_listener)?;
    Ok(Some(Listener {
        inner,
        path: None,
        inherited,
        _lock: None,
        admit: Vec::new(),
    }))
}

/// Marks an inherited descriptor close-on-exec; one that is not open is
/// left alone.
fn set_cloexec(fd: i32) {
    // SAFETY: F_GETFD/F_SETFD take and return plain integers; on a closed
    // descriptor they fail with EBADF, which changes nothing.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// An inherited fd must be a stream socket, and must not leak into the
/// programs tokend runs (`client_secret_cmd`, the browser): close-on-exec.
fn check_activated_fd(fd: i32) -> io::Result<()> {
    // SAFETY: fstat writes into a zeroed stat struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid fd makes fstat fail, which we report.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fd 3 is not a socket",
        ));
    }
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut kind).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if kind != libc::SOCK_STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fd 3 is not a stream socket",
        ));
    }
    // SAFETY: fcntl on an fd checked above; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The exclusive lock on the state directory, held for the daemon's life:
/// two daemons on one store would undo each other's refresh-token rotations.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

/// Takes the state lock in `dir`, recording our pid and socket in it; a
/// lock already held is `Err(Ok(holder))`.
pub(crate) fn lock_state(dir: &Path, socket: &str) -> Result<StateLock, Result<Holder, io::Error>> {
    use std::io::{Read, Seek, Write};
    create_private_dir(dir).map_err(Err)?;
    let path = dir.join("daemon.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(Err)?;
    // SAFETY: flock on a descriptor we own; no memory is shared with the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(Err(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(Ok(Holder::parse(&text)));
    }
    let record = Holder::record(socket);
    file.set_len(0)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)))
        .and_then(|_| file.write_all(record.as_bytes()))
        .map_err(Err)?;
    Ok(StateLock { _file: file })
}

/// No core dumps (they would hold every token in memory) and, on Linux, no
/// ptrace attach or /proc/PID/mem from other processes of the user; and
/// as many descriptors as the hard limit allows.
pub(crate) fn harden_process() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass; failure changes nothing.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    raise_fd_limit();
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Raises the soft limit on open descriptors to the hard one, so a flood of
/// connections (the loopback listener is open to every local process)
/// needs far more than the usual 1024 to starve the daemon. macOS refuses
/// an unlimited soft limit: there the kernel's per-process maximum is used.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur >= lim.rlim_max
    {
        return;
    }
    let wanted = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass; failure changes nothing.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return;
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max.min(10240),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) };
}

/// Why another user could change `path` (a file or a directory), if they
/// could: it is owned by someone other than us or root, or writable by
/// group or others (a sticky directory of ours or root's excepted: there
/// only an entry's owner may replace it). A config that others can edit is
/// refused, as ssh treats its config.
pub(crate) fn writable_by_others(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    judge(&meta, path)
}

/// [`writable_by_others`] for a file already open (fstat: the file that is
/// read is the one judged).
pub(crate) fn opened_writable_by_others(file: &File, shown: &Path) -> Option<String> {
    let meta = file.metadata().ok()?;
    judge(&meta, shown)
}

fn judge(meta: &std::fs::Metadata, path: &Path) -> Option<String> {
    let mode = meta.permissions().mode() & 0o7777;
    let trusted_owner = meta.uid() == euid() || meta.uid() == 0;
    if !trusted_owner {
        Some(format!("{} belongs to uid {}", path.display(), meta.uid()))
    } else if mode & 0o022 != 0 && !(meta.is_dir() && mode & 0o1000 != 0) {
        Some(format!(
            "{} is writable by group or others (mode {:o}); run `chmod go-w {}`",
            path.display(),
            mode & 0o777,
            path.display()
        ))
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_new_and_never_reached_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(create_private_file(&link).is_err());
        assert!(open_private_log(&link).is_err());
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep");
        let new = tmp.path().join("new");
        create_private_file(&new).unwrap();
        assert!(create_private_file(&new).is_err(), "never an existing file");
        assert_eq!(mode_of(&new), 0o600);
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn extra_activated_descriptors_are_made_close_on_exec() {
        let file = tempfile::tempfile().unwrap();
        // SAFETY: dup of a descriptor we own; the copy is closed below.
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(fd >= 0);
        // SAFETY: F_GETFD on our own descriptor.
        let before = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(before & libc::FD_CLOEXEC, 0, "dup clears close-on-exec");
        set_cloexec(fd);
        // SAFETY: as above.
        let after = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(after & libc::FD_CLOEXEC, 0);
        // SAFETY: closes the copy we made.
        unsafe { libc::close(fd) };
        set_cloexec(fd); // closed: nothing happens
    }
}
