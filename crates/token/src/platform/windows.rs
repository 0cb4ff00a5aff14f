//! Windows: a named pipe opened as a file; the daemon's pipe DACL admits only
//! the current user, and we check that the pipe's server runs as us.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::path::Path;
use std::process::Command;

use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{
    EqualSid, GetTokenInformation, TokenUser, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

pub type Stream = File;

const ERROR_PIPE_BUSY: i32 = 231;
const DETACHED_PROCESS: u32 = 0x0000_0008;
const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;

pub fn connect(path: &Path) -> io::Result<Stream> {
    // A busy pipe (every instance taken) clears quickly: retry briefly.
    for _ in 0..50 {
        match OpenOptions::new().read(true).write(true).open(path) {
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    OpenOptions::new().read(true).write(true).open(path)
}

pub fn is_not_running(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// The user's SID (`S-1-5-21-…`), which names the default pipe; empty if
/// it cannot be read (then `TOKEND_SOCKET` must say).
pub fn user_key() -> String {
    // SAFETY: the current-process pseudo-handle is always valid.
    let Ok(buf) = token_user(unsafe { GetCurrentProcess() }) else {
        return String::new();
    };
    // SAFETY: the buffer starts with a TOKEN_USER whose SID points into it.
    let user = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<TOKEN_USER>()) };
    let mut wide: *mut u16 = std::ptr::null_mut();
    // SAFETY: the SID is valid; `wide` receives a LocalAlloc'd string freed below.
    if unsafe { ConvertSidToStringSidW(user.User.Sid, &mut wide) } == 0 {
        return String::new();
    }
    // SAFETY: `wide` is NUL-terminated; we read up to the NUL, then free it.
    unsafe {
        let mut n = 0;
        while *wide.add(n) != 0 {
            n += 1;
        }
        let sid = String::from_utf16_lossy(std::slice::from_raw_parts(wide, n));
        LocalFree(wide as _);
        sid
    }
}

pub fn detach(cmd: &mut Command) {
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
}

/// Windows has no exec: run the command and pass its exit code on.
pub fn exec(mut cmd: Command) -> Result<u8, io::Error> {
    let status = cmd.status()?;
    Ok(status
        .code()
        .map_or(1, |c| u8::try_from(c & 0xff).unwrap_or(1)))
}

/// A pipe opened as a file has no read timeout: the countdown is not shown.
pub fn set_read_timeout(_stream: &Stream, _timeout: Option<std::time::Duration>) {}

/// Whether a `git push` runs this helper: not known on Windows.
pub fn in_git_push() -> bool {
    false
}

/// The pipe lives in the kernel's pipe namespace: there is no directory.
pub fn check_socket_dir(_socket: &Path) -> Result<(), String> {
    Ok(())
}

/// The user SID in a process token, as bytes (compared with `EqualSid`).
fn token_user(process: HANDLE) -> io::Result<Vec<u8>> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a valid process handle; `token` receives a handle
    // that is closed below.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 256];
    let mut len = 0u32;
    // SAFETY: `buf` is writable for `buf.len()` bytes; `len` receives the size used.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            buf.len() as u32,
            &mut len,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: opened above, not used after this.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(err);
    }
    Ok(buf)
}

/// The pipe's server process must run as the user running this client: a
/// pipe another user created first would receive our requests.
pub fn check_peer(stream: &Stream) -> Result<(), String> {
    let mut pid = 0u32;
    // SAFETY: the handle is an open pipe client handle owned by `stream`.
    if unsafe { GetNamedPipeServerProcessId(stream.as_raw_handle() as HANDLE, &mut pid) } == 0 {
        return Err(format!(
            "cannot check who serves the pipe: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: OpenProcess has no memory preconditions; the handle is closed below.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(format!(
            "cannot check who serves the pipe (process {pid}): {}",
            io::Error::last_os_error()
        ));
    }
    let theirs = token_user(process);
    // SAFETY: opened above, not used after this.
    unsafe { CloseHandle(process) };
    // SAFETY: the current-process pseudo-handle is always valid.
    let ours = token_user(unsafe { GetCurrentProcess() });
    let (theirs, ours) = match (theirs, ours) {
        (Ok(t), Ok(o)) => (t, o),
        (Err(e), _) | (_, Err(e)) => return Err(format!("cannot check who serves the pipe: {e}")),
    };
    // SAFETY: each buffer starts with a TOKEN_USER whose SID points into the
    // same buffer, which outlives the comparison.
    let same = unsafe {
        let t = std::ptr::read_unaligned(theirs.as_ptr().cast::<TOKEN_USER>());
        let o = std::ptr::read_unaligned(ours.as_ptr().cast::<TOKEN_USER>());
        EqualSid(t.User.Sid, o.User.Sid) != 0
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "the pipe is served by process {pid}, which runs as another user: \
             it is not your tokend, so nothing was sent to it"
        ))
    }
}
