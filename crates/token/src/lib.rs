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

/// Entry points for the `cargo fuzz` targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// The git credential helper's reading of what git writes on its stdin.
    pub fn git_credential_input(data: &[u8]) -> Vec<(String, String)> {
        crate::cmd::credential::read_attributes(data)
    }
}

/// Runs the client with the process's arguments; the binary is a shim over this.
pub fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv.next();
    // A `git-credential-token` (or docker's, cargo's) symlink to `token` is
    // that helper too.
    let stem = program
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_stem())
        .and_then(|n| n.to_str());
    match stem {
        Some("git-credential-token") => git_credential_main(),
        Some("docker-credential-token") => docker_credential_main(),
        Some("cargo-credential-token") => cargo_credential_main(),
        _ => run(argv.collect()),
    }
}

/// The arguments after the program name, lossily as text (the helpers'
/// arguments are ASCII words).
fn helper_args() -> Vec<String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// `docker-credential-token get|list|store|erase`: the docker credential
/// helper (`"credHelpers": {"registry.example.com": "token"}`).
pub fn docker_credential_main() -> ExitCode {
    ExitCode::from(cmd::docker_credential(&helper_args()))
}

/// `cargo-credential-token --cargo-plugin`: cargo's credential provider.
pub fn cargo_credential_main() -> ExitCode {
    ExitCode::from(cmd::cargo_credential(&helper_args()))
}

/// `git-credential-token ACTION`: git runs it as `git-credential-token get`.
pub fn git_credential_main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.insert(0, "credential".into());
    run(args)
}

fn run(args: Vec<std::ffi::OsString>) -> ExitCode {
    match cli::parse(args).and_then(cmd::run) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}
