//! `token login SITE`: consent now, through the browser, a device code or a paste.

use token_proto::{LoginMode, LoginRequest, Op, TokenReply};

use super::{events::show_event, from_reply, warn};
use crate::conn::Conn;
use crate::time::{human_duration, now_unix};
use crate::{browser, ClientError};

pub fn run(site: String, mode: LoginMode) -> Result<u8, ClientError> {
    let mode = if mode == LoginMode::Browser && browser::no_browser_here() {
        LoginMode::NoBrowser
    } else {
        mode
    };
    let v = Conn::request(
        Op::Login(LoginRequest {
            site: site.clone(),
            mode,
        }),
        show_event,
    )?;
    let reply: TokenReply = from_reply(v)?;
    warn(&reply);
    let valid = reply.expires_at.map_or("does not expire".to_owned(), |at| {
        format!(
            "valid for {}",
            human_duration(at as i64 - now_unix() as i64)
        )
    });
    eprintln!("token: logged in to site {site}; the token is {valid}");
    Ok(0)
}
