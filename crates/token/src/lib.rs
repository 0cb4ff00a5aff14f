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

pub use error::ClientError;

/// A binary's `main`: `token::entry!(token::main);`. On glibc Linux it is
/// the C `main` itself (the binary is `#![no_main]`, except in its test
/// build, where the test harness's `main` must run), which skips std's
/// runtime start: reading `/proc/self/maps` for the main thread's stack
/// guard, an alternate signal stack and the stack-overflow handlers, about
/// a dozen system calls on every `token get` (std still reads the
/// arguments and environment there, from glibc's init hook). What of that
/// start matters here is done by [`start`] and [`finish`]. On musl (the
/// static build `scripts/install` ships on Linux) std's start stays: std
/// reads the arguments there and nowhere else, and that start is short
/// (no `/proc/self/maps`; an alternate signal stack, a few calls).
#[macro_export]
macro_rules! entry {
    ($run:path) => {
        #[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
        #[no_mangle]
        pub extern "C" fn main(
            _argc: ::core::ffi::c_int,
            _argv: *const *const ::core::ffi::c_char,
        ) -> ::core::ffi::c_int {
            $crate::start();
            let code = $run();
            $crate::finish();
            ::core::ffi::c_int::from(code)
        }

        #[cfg(not(all(target_os = "linux", target_env = "gnu", not(test))))]
        fn main() -> ::std::process::ExitCode {
            ::std::process::ExitCode::from($run())
        }
    };
}

/// What std's runtime start does that the client relies on, for
/// [`entry!`]: standard descriptors that are closed are opened on
/// `/dev/null` (else the daemon's socket could become stdout and receive
/// the token meant for it), and `SIGPIPE` is ignored (a closed stdout is an
/// error to handle, `token get x | head -c0`; children get it back at its
/// default, as std resets it when it spawns).
#[doc(hidden)]
pub fn start() {
    platform::start();
}

/// Flushes stdout, as std does after `main` returns.
#[doc(hidden)]
pub fn finish() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Entry points for the `cargo fuzz` targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// The git credential helper's reading of what git writes on its stdin.
    pub fn git_credential_input(data: &[u8]) -> Vec<(String, String)> {
        crate::cmd::credential::read_attributes(data)
    }
}

/// Runs the client with the process's arguments; the binary is a shim over
/// this. Returns the exit code.
pub fn main() -> u8 {
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
pub fn docker_credential_main() -> u8 {
    cmd::docker_credential(&helper_args())
}

/// `cargo-credential-token --cargo-plugin`: cargo's credential provider.
pub fn cargo_credential_main() -> u8 {
    cmd::cargo_credential(&helper_args())
}

/// `git-credential-token ACTION`: git runs it as `git-credential-token get`.
pub fn git_credential_main() -> u8 {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.insert(0, "credential".into());
    run(args)
}

fn run(args: Vec<std::ffi::OsString>) -> u8 {
    match cli::parse(args).and_then(cmd::run) {
        Ok(code) => code,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}
