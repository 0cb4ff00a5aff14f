//! Windows: a named pipe opened as a file; the daemon's pipe DACL admits only
//! the current user.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::process::CommandExt;
use std::path::Path;
use std::process::Command;

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

pub fn uid() -> u32 {
    0
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
