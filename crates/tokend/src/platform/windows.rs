//! Windows: a named pipe whose DACL admits only the user running the daemon
//! (by SID), rejecting remote clients; one pipe instance waits at a time.
//! The pipe's name is claimed by a lock file in the state directory, as a
//! Unix socket's is by the flock'd `.lock` beside it.

use super::Holder;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};

pub(crate) type Stream = NamedPipeServer;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    #[error("another tokend is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("another user holds the pipe {0}: set TOKEND_SOCKET to another pipe name, and find out who created this one")]
    Foreign(PathBuf),
    #[error("cannot create the pipe {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot claim the pipe's name with {path}: {source}")]
    Claim { path: PathBuf, source: io::Error },
}

/// Every loopback connection is admitted on Windows (the login's `state` and
/// one-time start link still guard it); the TCP owner table is not read.
pub(crate) fn loopback_peer_is_ours(
    _local: std::net::SocketAddr,
    _peer: std::net::SocketAddr,
) -> bool {
    true
}

pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    // The per-user profile directories are already private on Windows.
    std::fs::create_dir_all(dir)
}

pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

pub(crate) fn open_private_log(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[derive(Debug)]
pub(crate) struct Listener {
    name: PathBuf,
    next: tokio::sync::Mutex<NamedPipeServer>,
    /// This daemon's claim on `name`, held while it serves.
    _claim: File,
}

fn create(name: &Path, first: bool) -> io::Result<NamedPipeServer> {
    // A protected DACL with one ACE: full access for the user running the
    // daemon (by SID, so an elevated owner such as Administrators is not
    // what decides), nothing for anyone else.
    let sddl = format!("D:P(A;;GA;;;{})", token_proto::windows::current_user_sid()?);
    let wide: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `wide` is a NUL-terminated UTF-16 string; `sd` receives a
    // LocalAlloc'd descriptor that we free below.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd,
        bInheritHandle: 0,
    };
    let mut opts = ServerOptions::new();
    opts.first_pipe_instance(first).reject_remote_clients(true);
    // SAFETY: `sa` points to a valid SECURITY_ATTRIBUTES for the duration of the call.
    let server = unsafe {
        opts.create_with_security_attributes_raw(name, (&mut sa as *mut SECURITY_ATTRIBUTES).cast())
    };
    // SAFETY: `sd` was allocated by the conversion above and is no longer used.
    unsafe { LocalFree(sd as _) };
    server
}

impl Listener {
    /// The DACL already keeps other users out, so every peer is ours.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, bool)> {
        let mut next = self.next.lock().await;
        next.connect().await?;
        let fresh = create(&self.name, false)?;
        let connected = std::mem::replace(&mut *next, fresh);
        Ok((connected, true))
    }

    pub(crate) fn describe(&self) -> String {
        self.name.display().to_string()
    }
}

/// The claim file of pipe `name` in the state directory: `pipe-NAME.lock`,
/// `NAME` without its `\\.\pipe\` prefix, every character but letters,
/// digits, `-` and `.` written as `_HEX_` (so two names never share a file).
fn claim_path(dir: &Path, name: &Path) -> PathBuf {
    const PREFIX: &str = r"\\.\pipe\";
    let name = name.to_string_lossy();
    let short = name
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| name.get(PREFIX.len()..))
        .unwrap_or(&name);
    let mut file = String::from("pipe-");
    for c in short.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            file.push(c);
        } else {
            file.push_str(&format!("_{:x}_", u32::from(c)));
        }
    }
    file.push_str(".lock");
    dir.join(file)
}

/// Claims pipe `name` for this daemon: its claim file opened for writing
/// with read sharing only (as the state lock), so a second daemon of this
/// user cannot open it for writing while this one lives, and a reader (a
/// virus scanner) does not turn a starting daemon away. The first-instance flag alone is no claim: Wine (8.0) ignores it
/// and hands a second daemon a second instance of the same pipe, whose
/// clients then wait on a daemon that is about to refuse the store.
fn claim(name: &Path) -> Result<File, BindError> {
    use std::os::windows::fs::OpenOptionsExt;
    let dir = crate::paths::state_dir();
    let path = claim_path(&dir, name);
    let opened = create_private_dir(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .share_mode(FILE_SHARE_READ)
            .open(&path)
    });
    match opened {
        Ok(file) => Ok(file),
        Err(e) if e.raw_os_error() == Some(ERROR_SHARING_VIOLATION) => {
            Err(BindError::AlreadyRunning(name.to_owned()))
        }
        Err(source) => Err(BindError::Claim { path, source }),
    }
}

/// `[share]` sockets are Unix-only for now: said where the share is set up.
pub(crate) fn bind_share(path: &Path, _admit: &[u32]) -> Result<Listener, BindError> {
    Err(BindError::Io {
        path: path.to_owned(),
        source: io::Error::new(
            io::ErrorKind::Unsupported,
            "[share] sockets are not served on Windows yet",
        ),
    })
}

pub(crate) fn bind(path: &Path) -> Result<Listener, BindError> {
    let claim = claim(path)?;
    match create(path, true) {
        Ok(server) => Ok(Listener {
            name: path.to_owned(),
            next: tokio::sync::Mutex::new(server),
            _claim: claim,
        }),
        // The first instance exists although the name is ours to claim.
        // Its DACL admits us: a tokend of this user with another state
        // directory serves it. Not ours: someone else created it first, and
        // our clients will refuse it (they check the server's SID).
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                Ok(_) => Err(BindError::AlreadyRunning(path.to_owned())),
                Err(_) => Err(BindError::Foreign(path.to_owned())),
            }
        }
        Err(source) => Err(BindError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(crate) fn from_activation() -> io::Result<Option<Listener>> {
    Ok(None)
}

/// The state lock: `daemon.lock` opened for writing with read sharing only,
/// so a second daemon cannot open it for writing while this one lives.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

const FILE_SHARE_READ: u32 = 1;
const FILE_SHARE_WRITE: u32 = 2;
const ERROR_SHARING_VIOLATION: i32 = 32;

pub(crate) fn lock_state(dir: &Path, socket: &str) -> Result<StateLock, Result<Holder, io::Error>> {
    use std::io::Write;
    use std::os::windows::fs::OpenOptionsExt;
    create_private_dir(dir).map_err(Err)?;
    let path = dir.join("daemon.lock");
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .share_mode(FILE_SHARE_READ)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(Holder::record(socket).as_bytes())
                .map_err(Err)?;
            Ok(StateLock { _file: file })
        }
        Err(e) if e.raw_os_error() == Some(ERROR_SHARING_VIOLATION) => {
            let text = std::fs::OpenOptions::new()
                .read(true)
                .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
                .open(&path)
                .and_then(std::io::read_to_string)
                .unwrap_or_default();
            Err(Ok(Holder::parse(&text)))
        }
        Err(e) => Err(Err(e)),
    }
}

/// Windows writes no core dumps of user processes unless WER is set up to.
pub(crate) fn harden_process() {}

/// Profile directories are private on Windows: nothing to refuse.
pub(crate) fn writable_by_others(_path: &Path) -> Option<String> {
    None
}

/// Profile directories are private on Windows: nothing to refuse.
pub(crate) fn opened_writable_by_others(_file: &File, _shown: &Path) -> Option<String> {
    None
}

/// Writes a generic credential (target `target`, user name `user`, the
/// secret as UTF-16LE, as the `keyring` crate reads it) that stays on this
/// machine: `CRED_PERSIST_LOCAL_MACHINE`, never copied by a roaming profile.
pub(crate) fn write_local_credential(target: &str, user: &str, secret: &str) -> io::Result<()> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::Security::Credentials::{
        CredWriteW, CREDENTIALW, CRED_PERSIST_LOCAL_MACHINE, CRED_TYPE_GENERIC,
    };
    let wide = |s: &str| {
        s.encode_utf16()
            .chain(std::iter::once(0))
            .collect::<Vec<u16>>()
    };
    let (mut target, mut user, mut comment) = (wide(target), wide(user), wide("tokend"));
    let mut blob: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let credential = CREDENTIALW {
        Flags: 0,
        Type: CRED_TYPE_GENERIC,
        TargetName: target.as_mut_ptr(),
        Comment: comment.as_mut_ptr(),
        LastWritten: FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        },
        CredentialBlobSize: u32::try_from(blob.len()).map_err(io::Error::other)?,
        CredentialBlob: blob.as_mut_ptr(),
        Persist: CRED_PERSIST_LOCAL_MACHINE,
        AttributeCount: 0,
        Attributes: std::ptr::null_mut(),
        TargetAlias: std::ptr::null_mut(),
        UserName: user.as_mut_ptr(),
    };
    // SAFETY: every pointer in `credential` points into a buffer above that
    // outlives the call; CredWriteW copies what it keeps.
    let written = unsafe { CredWriteW(&credential, 0) } != 0;
    let result = if written {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    token_proto::wipe(&mut blob);
    result
}
