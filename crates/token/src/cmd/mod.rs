//! The client's commands: each builds one request, relays events, prints the answer.

//! One file a command; this one dispatches and holds what they share.

mod cargo;
mod completions;
pub(crate) mod credential;
mod docker;
mod events;
mod exec;
mod get;
mod jwk;
mod kube;
mod login;
mod logout;
mod reload;
mod served;
mod status;
mod stop;

use std::io::Write;

use serde_json::Value;
use token_proto::TokenReply;

use crate::cli::{help, Command};
use crate::ClientError;
use token_text::clean;

pub use cargo::run as cargo_credential;
pub use docker::run as docker_credential;

pub fn run(cmd: Command) -> Result<u8, ClientError> {
    match cmd {
        Command::Help => print(&help()),
        Command::Version => print(&format!("token {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Get(args) => get::run(args),
        Command::Exec {
            get: args,
            var,
            argv,
        } => exec::run(args, var, argv),
        Command::Kube { get: args } => kube::run(args),
        Command::Credential { action } => credential::run(&action),
        Command::Completions { shell } => completions::run(shell),
        Command::Sites => completions::sites(),
        Command::Login { site, mode } => login::run(site, mode),
        Command::Logout { site } => logout::run(site),
        Command::Jwk { site } => jwk::run(site),
        Command::Status { site, json } => status::run(site, json),
        Command::Reload => reload::run(),
        Command::Stop => stop::run(),
    }
}

/// The daemon's warnings about a token (shorter-lived than asked, not
/// persisted, scopes narrower than configured), one a line on stderr.
fn warn(reply: &TokenReply) {
    for w in reply.warning.iter().flat_map(|w| w.lines()) {
        eprintln!("token: warning: {}", clean(w, 2000));
    }
}

fn from_reply<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v)
        .map_err(|e| ClientError::Other(format!("tokend sent an answer this token does not understand: {e}; restart it with `token stop`")))
}

/// Writes to stdout; a closed pipe (`token get x | head -c0`) is not an error.
fn print(s: &str) -> Result<u8, ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(ClientError::Other(format!("cannot write to stdout: {e}"))),
    }
}
