//! Unix: a stream socket in a 0700 directory, created 0600 (umask set around
//! bind, so there is no window with a wider mode), guarded by a lock file so
//! exactly one daemon owns it, and the peer uid checked on every accept.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub type Stream = tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
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

/// Creates `dir` (and parents) 0700, or checks that an existing one is ours
/// and tightens it to 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to uid {}, not to us", dir.display(), meta.uid()),
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates (or truncates) a file readable by its owner only.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Opens a log file for appending, readable by its owner only.
pub fn open_private_log(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The listening socket and the lock that makes this daemon its only owner.
#[derive(Debug)]
pub struct Listener {
    inner: tokio::net::UnixListener,
    /// Removed on drop; `None` for an inherited (systemd) socket, which is not ours to remove.
    path: Option<PathBuf>,
    _lock: Option<File>,
}

impl Listener {
    /// Accepts the next connection whose peer is this user. A foreign peer is
    /// answered with `forbidden` right here and never reaches a handler.
    pub async fn accept(&self) -> io::Result<(Stream, bool)> {
        let (stream, _) = self.inner.accept().await?;
        let ours = stream
            .peer_cred()
            .map(|c| c.uid() == euid())
            .unwrap_or(false);
        Ok((stream, ours))
    }

    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "the socket inherited from systemd".to_owned(),
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

/// Binds `path`: 0700 parent, lock file, stale socket removed only after a
/// connect attempt shows nobody listens.
pub fn bind(path: &Path) -> Result<Listener, BindError> {
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
        _lock: Some(lock),
    })
}

/// The socket systemd passed us (`LISTEN_FDS`/`LISTEN_PID`, fd 3), if any.
pub fn from_activation() -> io::Result<Option<Listener>> {
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
    // SAFETY: systemd hands us fd 3 as an open listening socket owned by this
    // process from now on; nothing else in the process uses it.
    let std_listener =
        unsafe { std::os::unix::net::UnixListener::from_raw_fd(SD_LISTEN_FDS_START) };
    std_listener.set_nonblocking(true)?;
    let inner = tokio::net::UnixListener::from_std(std_listener)?;
    Ok(Some(Listener {
        inner,
        path: None,
        _lock: None,
    }))
}
