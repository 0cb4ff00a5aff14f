//! `login`: consent now, even if the site has a valid token.

use std::sync::Arc;

use token_proto::{LoginRequest, TokenReply};

use super::Events;
use crate::daemon::Daemon;
use crate::error::ApiError;

pub async fn login(
    d: &Arc<Daemon>,
    req: LoginRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    d.site(&req.site)?.login(d, req.mode, events).await
}
