//! `token`, the thin client of tokend: parses a command, sends one request
//! line over the local socket (starting the daemon if none answers), prints
//! the answer. std only: no async runtime, no HTTP or TLS stack.

mod browser;
mod cli;
mod cmd;
mod conn;
mod error;
mod platform;
mod time;

use std::process::ExitCode;

pub use error::ClientError;

/// Runs the client with the process's arguments; the binary is a shim over this.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match cli::parse(args).and_then(cmd::run) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}
