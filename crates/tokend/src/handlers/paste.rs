//! `paste`: what the user pasted for a pending paste-back login.

use std::sync::Arc;

use token_proto::{ErrorCode, MessageReply, PasteRequest};

use crate::daemon::Daemon;
use crate::error::ApiError;

pub(super) async fn paste(d: &Arc<Daemon>, req: PasteRequest) -> Result<MessageReply, ApiError> {
    let site = d.site(&req.site)?;
    let sender = site.paste_sender().await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "site {} has no paste-back login waiting: run `token login {} --paste`",
                req.site, req.site
            ),
        )
    })?;
    sender.send(req.input).await.map_err(|_| {
        ApiError::new(
            ErrorCode::LoginFailed,
            format!(
                "site {}: the login stopped waiting for the paste; run `token login {} --paste`",
                req.site, req.site
            ),
        )
    })?;
    Ok(MessageReply {
        message: "received".to_owned(),
    })
}
