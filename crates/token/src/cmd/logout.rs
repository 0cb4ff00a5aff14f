//! `token logout SITE`: revoke at the provider where possible, forget here.

use serde_json::Value;
use token_proto::{Op, SiteRequest};

use super::events::show_event;
use crate::conn::Conn;
use crate::ClientError;

pub fn run(site: String) -> Result<u8, ClientError> {
    let v = Conn::request(Op::Logout(SiteRequest { site }), show_event)?;
    if let Some(msg) = v.get("message").and_then(Value::as_str) {
        eprintln!("token: {msg}");
    }
    Ok(0)
}
