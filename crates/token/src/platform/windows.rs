//! Windows: a named pipe opened as a file; the daemon's pipe DACL admits only
//! the current user, and we check that the pipe's server runs as us.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::path::Path;
use std::process::Command;

use token_proto::windows::token_user;
use windows_sys::Win32::Foundation::{
    CloseHandle, SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::EqualSid;
use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

pub type Stream = File;

const ERROR_PIPE_BUSY: i32 = 231;
const DETACHED_PROCESS: u32 = 0x0000_0008;
const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;

/// `SecurityIdentification << 16`: the pipe's server may learn who we are,
/// not act as us.
const SECURITY_IDENTIFICATION: u32 = 0x0001_0000;

/// Opens the pipe. With `SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION`
/// (std adds the first when flags are given): without them a pipe's server
/// may impersonate its client at the default level, so a server planted
/// under our pipe's name could act as us on this machine before we check
/// whose it is.
fn open_pipe(path: &Path) -> io::Result<Stream> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .security_qos_flags(SECURITY_IDENTIFICATION)
        .open(path)
}

/// Nothing to do at the start of the process on Windows (`token::entry!`
/// uses std's own `main` there).
pub fn start() {}

pub fn connect(path: &Path) -> io::Result<Stream> {
    // A busy pipe (every instance taken) clears quickly: retry briefly.
    for _ in 0..50 {
        match open_pipe(path) {
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    open_pipe(path)
}

pub fn is_not_running(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Starts the daemon on its own, and without this process's standard
/// handles: Windows hands a child every inheritable handle of its parent,
/// whatever stdio the child is given, so a daemon started by
/// `$(token get …)` would hold the caller's stdout pipe open and the caller
/// would wait for the daemon to exit. Clearing their inherit flag keeps
/// them out of every later child; one that is handed a stream on purpose
/// (`token exec`) still gets it, as std duplicates an inherited stream
/// for the child.
pub fn detach(cmd: &mut Command) {
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    let handles = [
        std::io::stdin().as_raw_handle(),
        std::io::stdout().as_raw_handle(),
        std::io::stderr().as_raw_handle(),
    ];
    for handle in handles {
        if !handle.is_null() && handle != INVALID_HANDLE_VALUE {
            // SAFETY: the handle is one of this process's standard handles,
            // open for its whole life; only its inherit flag changes. A
            // handle that has no such flag (an old console pseudo-handle)
            // makes the call fail, which changes nothing.
            unsafe { SetHandleInformation(handle as HANDLE, HANDLE_FLAG_INHERIT, 0) };
        }
    }
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
    // SAFETY: `process` was opened above with query access.
    let theirs = unsafe { token_user(process) };
    // SAFETY: opened above, not used after this.
    unsafe { CloseHandle(process) };
    // SAFETY: the current-process pseudo-handle is always valid.
    let ours = unsafe { token_user(GetCurrentProcess()) };
    let (theirs, ours) = match (theirs, ours) {
        (Ok(t), Ok(o)) => (t, o),
        (Err(e), _) | (_, Err(e)) => return Err(format!("cannot check who serves the pipe: {e}")),
    };
    // SAFETY: both SIDs are valid while their buffers live.
    let same = unsafe { EqualSid(theirs.sid(), ours.sid()) != 0 };
    if same {
        Ok(())
    } else {
        Err(format!(
            "the pipe is served by process {pid}, which runs as another user: \
             it is not your tokend, so nothing was sent to it"
        ))
    }
}

/// The line a Ctrl-C prints while a login waits, and the exit code it ends
/// with (see [`exit_on_interrupt`]).
static INTERRUPTED: std::sync::OnceLock<(String, u8)> = std::sync::OnceLock::new();

/// From now on Ctrl-C (or Ctrl-Break) writes `line` to stderr and exits with
/// `code`: a login the user gave up on is a result of its own, not a kill.
pub fn exit_on_interrupt(line: String, code: u8) {
    unsafe extern "system" fn on_ctrl(_: u32) -> windows_sys::Win32::Foundation::BOOL {
        // Windows runs the handler on a thread of its own: std is fine here.
        if let Some((line, code)) = INTERRUPTED.get() {
            use std::io::Write;
            let _ = std::io::stderr().write_all(line.as_bytes());
            std::process::exit(i32::from(*code));
        }
        0
    }
    if INTERRUPTED.set((line, code)).is_err() {
        return;
    }
    // SAFETY: the handler is a plain function that lives for the process.
    unsafe {
        windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_ctrl), 1);
    }
}
