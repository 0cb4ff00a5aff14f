//! One handler per request op, and the dispatch from a decoded request to
//! the response line.

mod get;
mod jwk;
mod login;
mod logout;
mod lookup;
mod paste;
pub(crate) mod share;
mod status;

#[cfg(unix)]
pub(crate) use get::Kept;
pub(crate) use logout::forget_removed;

use std::sync::Arc;

use serde::Serialize;
use token_proto::{encode_line, error_line, ok_line, Event, GetRequest, Op, Request};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::ShareConfig;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::held::Ready;

/// Where a handler sends event lines before its answer.
pub(crate) struct Events<'a> {
    w: &'a mut (dyn AsyncWrite + Unpin + Send),
}

impl std::fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl<'a> Events<'a> {
    pub(crate) fn new(w: &'a mut (dyn AsyncWrite + Unpin + Send)) -> Events<'a> {
        Events { w }
    }

    /// Best effort: a caller that went away does not stop the work it started.
    pub(crate) async fn send(&mut self, event: &Event) {
        let _ = self.w.write_all(&encode_line(event)).await;
        let _ = self.w.flush().await;
    }

    /// Whether the caller has closed its connection, found by an empty
    /// write (which fails with a broken pipe once the peer is gone, and
    /// sends nothing otherwise). For a caller waiting on a login, which
    /// sends nothing more while it waits.
    #[cfg(unix)]
    pub(crate) async fn caller_gone(&mut self) -> bool {
        self.w.write(&[]).await.is_err()
    }

    /// On Windows an empty write could reach the client as an empty read
    /// (end of file): a caller's absence shows only when its answer is sent.
    #[cfg(not(unix))]
    pub(crate) async fn caller_gone(&mut self) -> bool {
        false
    }
}

fn answer<T: Serialize>(r: Result<T, ApiError>) -> Vec<u8> {
    match r {
        Ok(v) => ok_line(&v),
        Err(e) => error_line(&e.body()),
    }
}

/// A `get` for a caller with no terminal to show events on (a request
/// through a `[proxy]`).
pub(crate) async fn token_for(
    d: &Arc<Daemon>,
    req: token_proto::GetRequest,
) -> Result<token_proto::TokenReply, ApiError> {
    if let Some(ready) = get::fast(d, &req) {
        return Ok(ready.reply().clone());
    }
    let mut sink = tokio::io::sink();
    let mut events = Events::new(&mut sink);
    get::get(d, req, &mut events).await
}

/// The one place that decides whether a `get` is answered at once, with
/// the site's published answer (`site::held`) and nothing awaited: a plain
/// `get` the fast path serves, and on a share socket (`share`) only of a
/// site the share lists. `None`: the site's actor answers ([`dispatch`],
/// [`share::dispatch`]).
fn at_once(d: &Daemon, share: Option<&ShareConfig>, g: &GetRequest) -> Option<Arc<Ready>> {
    if share.is_some_and(|s| !s.serves(&g.site)) {
        return None;
    }
    get::fast(d, g)
}

/// [`at_once`] for a decoded request, logged as [`dispatch`] and
/// [`share::dispatch`] log theirs. The server asks it first, on its
/// connection tasks and its connection threads alike, and writes the
/// answer's line as it is; `None`: the request goes to `dispatch`.
pub(crate) fn answer_at_once(
    d: &Daemon,
    share: Option<&ShareConfig>,
    req: &Request,
) -> Option<Arc<Ready>> {
    let Op::Get(g) = &req.op else {
        return None;
    };
    let ready = at_once(d, share, g)?;
    match share {
        None => tracing::debug!(request = %req.log_safe(), "request"),
        Some(s) => {
            tracing::debug!(share = %s.name, request = %req.log_safe(), "request on a share");
        }
    }
    Some(ready)
}

/// [`answer_at_once`] for a connection thread, from what it `kept` of the
/// same request before (`get::Kept`): the answer is borrowed, not counted.
#[cfg(unix)]
pub(crate) fn answer_kept<'k>(
    d: &Daemon,
    share: Option<&ShareConfig>,
    req: &Request,
    kept: &'k mut Kept,
) -> Option<&'k Ready> {
    let Op::Get(g) = &req.op else {
        return None;
    };
    if share.is_some_and(|s| !s.serves(&g.site)) {
        return None;
    }
    let ready = get::fast_kept(d, g, kept)?;
    match share {
        None => tracing::debug!(request = %req.log_safe(), "request"),
        Some(s) => {
            tracing::debug!(share = %s.name, request = %req.log_safe(), "request on a share");
        }
    }
    Some(ready)
}

/// Runs one request and returns its answer line.
pub(crate) async fn dispatch(d: &Arc<Daemon>, req: Request, events: &mut Events<'_>) -> Vec<u8> {
    tracing::debug!(request = %req.log_safe(), "request");
    match req.op {
        Op::Get(g) if g.url.is_some() => answer(get::get_by_url(d, g, events).await),
        Op::Get(g) => match at_once(d, None, &g) {
            Some(ready) => ready.line().to_vec(),
            None => answer(get::get(d, g, events).await),
        },
        Op::Login(l) => answer(login::login(d, l, events).await),
        Op::Logout(s) => answer(logout::logout(d, &s.site).await),
        Op::Status(s) => answer(status::status(d, s.site.as_deref()).await),
        Op::Paste(p) => answer(paste::paste(d, p).await),
        Op::Lookup(l) => answer(lookup::lookup(d, &l)),
        Op::Jwk(s) => answer(jwk::jwk(d, &s.site).await),
        Op::Urls => answer(Ok::<_, ApiError>(lookup::urls(d))),
        Op::Reload => answer(Ok::<_, ApiError>(d.reload_async().await)),
        Op::Stop => {
            tracing::info!("stop requested by a client");
            d.request_shutdown();
            answer(Ok::<_, ApiError>(token_proto::StopReply {}))
        }
    }
}

#[cfg(test)]
mod fast_tests;
#[cfg(all(test, unix))]
mod tests;
#[cfg(all(test, unix))]
mod waiting_tests;
