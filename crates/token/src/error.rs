//! The client's error: one line on stderr, one documented exit code.

use std::fmt;
use std::io::Write;

use token_proto::ErrorBody;
use token_text::clean;

/// Characters of a daemon message shown (it may quote a config path and a provider).
const MAX_MESSAGE: usize = 2000;

/// Everything that can end a `token` command unsuccessfully.
#[derive(Debug)]
pub enum ClientError {
    /// Bad command line (exit 2); the text says what to type instead.
    Usage(String),
    /// The daemon cannot be reached or started (exit 5).
    Unreachable(String),
    /// The daemon answered with a coded error.
    Daemon(ErrorBody),
    /// Anything else (exit 1).
    Other(String),
    /// `token exec`'s COMMAND could not be run: 127 when it is not found,
    /// 126 when it cannot be executed, as shells do.
    CannotRun { code: u8, message: String },
    /// `--help` inside a subcommand: print the help, exit 0.
    Help,
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Unreachable(_) => 5,
            ClientError::Daemon(body) => body.code.exit_code(),
            ClientError::Other(_) => 1,
            ClientError::CannotRun { code, .. } => *code,
            ClientError::Help => 0,
        }
    }

    /// Prints the one error line. A failing stderr is ignored: nowhere left to say it.
    pub fn report(&self) {
        if let ClientError::Help = self {
            let _ = std::io::stdout().write_all(crate::cli::help().as_bytes());
            return;
        }
        let _ = writeln!(std::io::stderr().lock(), "token: {self}");
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Usage(m)
            | ClientError::Unreachable(m)
            | ClientError::Other(m)
            | ClientError::CannotRun { message: m, .. } => f.write_str(m),
            // The daemon's messages may quote a provider: no control characters.
            ClientError::Daemon(body) => f.write_str(&clean(&body.message, MAX_MESSAGE)),
            ClientError::Help => f.write_str("help"),
        }
    }
}
