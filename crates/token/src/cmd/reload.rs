//! `token reload`: the daemon reads its config file again now.

use token_proto::{Op, ReloadReply};

use super::{events::show_event, from_reply};
use crate::conn::Conn;
use crate::ClientError;
use token_text::clean;

pub fn run() -> Result<u8, ClientError> {
    let v = Conn::request(Op::Reload, show_event)?;
    let reply: ReloadReply = from_reply(v)?;
    for e in &reply.config_errors {
        eprintln!("token: {}", clean(e, 2000));
    }
    if reply.kept_previous {
        eprintln!(
            "token: tokend kept its previous settings ({} site(s)) until the config file is there and parses",
            reply.sites
        );
    } else {
        eprintln!("token: tokend reloaded its config: {} site(s)", reply.sites);
    }
    Ok(if reply.config_errors.is_empty() { 0 } else { 2 })
}
