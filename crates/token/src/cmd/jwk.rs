//! `token jwk SITE`: the site's public key as a JWK set on stdout, to
//! register at the provider (a `private_key_jwt` client's key, else the
//! DPoP key). The private key never leaves the daemon.

use serde_json::Value;
use token_proto::{Op, SiteRequest};

use super::events::show_event;
use crate::conn::Conn;
use crate::ClientError;

pub fn run(site: String) -> Result<u8, ClientError> {
    let v = Conn::request(Op::Jwk(SiteRequest { site }), show_event)?;
    let keys = v.get("keys").cloned().unwrap_or(Value::Array(Vec::new()));
    let set = serde_json::json!({ "keys": keys });
    println!(
        "{}",
        serde_json::to_string_pretty(&set).unwrap_or_else(|_| set.to_string())
    );
    Ok(0)
}
