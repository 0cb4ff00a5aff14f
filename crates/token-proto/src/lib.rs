//! The tokend wire protocol: the single source of truth for what crosses the
//! socket between `token` (or any other program) and `tokend`.
//!
//! One JSON object per line each way, UTF-8, at most [`MAX_LINE`] bytes a line.
//! Every request carries `"v": 1` and `"op"`. A connection may carry many
//! requests, answered in order. Before its final answer, a request that starts
//! a login may receive [`Event`] lines (objects with an `"event"` key and no
//! `"ok"` key) that the caller shows to the user. See `PROTOCOL.md` at the
//! repository root for the prose version.

mod duration;
mod error;
mod frame;
mod message;
pub mod names;
mod path;
#[cfg(windows)]
pub mod windows;
mod wipe;

pub use duration::parse_duration;
pub use error::{ErrorBody, ErrorCode};
pub use frame::{Frame, LineDecoder};
pub use message::{
    decode_request, encode_line, error_line, ok_line, CargoToken, DpopTarget, Event, FileStatus,
    GetRequest, GitAuth, JwkReply, LoginMode, LoginPolicy, LoginRequest, LookupReply,
    LookupRequest, MessageReply, Op, PasteRequest, Purpose, ReloadReply, Request, RequestError,
    ServedTokenReply, ServedUrl, ServerLine, SiteRequest, SiteState, SiteStatus, StatusReply,
    StatusRequest, StopReply, TokenKind, TokenReply, UrlsReply, DEFAULT_GIT_USERNAME,
};
pub use path::{config_path, default_socket_path, home_dir, state_dir, SOCKET_ENV};
pub use wipe::{extend_wiped, wipe, Line};

/// The protocol version carried in every request's `"v"`. Bumped by hand when
/// a change would make an old daemon misread a new client or the reverse.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest request line the daemon accepts, newline excluded. Checked
/// before the line is buffered, so a client cannot make the daemon allocate more.
pub const MAX_LINE: usize = 64 * 1024;

/// The longest response line a client accepts. Answers stay under
/// [`MAX_LINE`] except `status` of a daemon with hundreds of sites
/// (about 250 bytes a site), which the client trusts its own daemon with.
pub const MAX_RESPONSE_LINE: usize = 16 * 1024 * 1024;
