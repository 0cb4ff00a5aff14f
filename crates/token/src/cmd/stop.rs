//! `token stop`: the daemon exits (never started for this).

use token_proto::Op;

use super::events::show_event;
use crate::conn::Conn;
use crate::ClientError;

pub fn run() -> Result<u8, ClientError> {
    Conn::open_no_start()?.call(Op::Stop, show_event)?;
    Ok(0)
}
