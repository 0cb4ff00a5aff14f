//! `token exec SITE -- COMMAND`: COMMAND run with the token in its environment.

use std::ffi::OsString;

use crate::cli::GetArgs;
use crate::{platform, ClientError};

pub fn run(args: GetArgs, var: String, argv: Vec<OsString>) -> Result<u8, ClientError> {
    let reply = super::get::get(&args)?;
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| ClientError::Usage("`token exec` needs a COMMAND".to_owned()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest).env(var, &reply.access_token);
    if let Some(proof) = &reply.dpop_proof {
        cmd.env("DPOP", proof);
    }
    platform::exec(cmd).map_err(|e| ClientError::CannotRun {
        code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        message: format!("could not run `{}`: {e}", program.to_string_lossy()),
    })
}
