//! What the helpers of other tools (docker's, cargo's) share: the token of
//! the site that serves a URL (the daemon's URL map, one `get` by `url`), and
//! reading what the tool writes on stdin without trusting its size.

use std::io::{BufRead, Read};

use token_proto::{CargoToken, ErrorCode, LookupReply, LookupRequest, Op, TokenReply, UrlsReply};

use super::from_reply;
use crate::cli::GetArgs;
use crate::conn::Conn;
use crate::ClientError;

/// The site that serves a URL, as `lookup` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    pub site: String,
    /// The user name sent beside the token (docker's `Username`).
    pub username: String,
    /// `cargo_token = "raw"`: cargo gets the bare token, not `Bearer …`.
    pub cargo_raw: bool,
}

impl From<LookupReply> for Served {
    fn from(how: LookupReply) -> Served {
        Served {
            site: how.site,
            username: how.username,
            cargo_raw: how.cargo_token == CargoToken::Raw,
        }
    }
}

/// A token valid for at least `min_ttl` seconds of the site whose
/// `urls`/`hosts` serve `url` (a URL, or `host[:port][/path]` as docker
/// sends it), and that site: one `get` by `url`. `None` when no site does.
pub(crate) fn token_for(
    url: &str,
    min_ttl: u64,
) -> Result<Option<(Served, TokenReply)>, ClientError> {
    let args = GetArgs {
        min_ttl: Some(min_ttl),
        ..GetArgs::plain(String::new(), None)
    };
    let at = LookupRequest {
        url: Some(url.to_owned()),
        ..Default::default()
    };
    match super::get::get_served(&args, at) {
        Ok((how, token)) => Ok(Some((how.into(), token))),
        Err(ClientError::Daemon(body)) if body.code == ErrorCode::UnknownSite => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every https URL prefix the sites serve, with the user name of each (`urls`).
pub(crate) fn served_urls() -> Result<Vec<(String, String)>, ClientError> {
    let reply: UrlsReply = from_reply(Conn::request(Op::Urls, |_| Ok(()))?)?;
    Ok(reply
        .urls
        .into_iter()
        .map(|u| (u.url, u.username))
        .collect())
}

/// Whether this error means "no token to be had without a person": the
/// tool should go on as it does when a helper has no credentials.
pub(crate) fn means_not_found(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable(_) => true,
        ClientError::Daemon(body) => matches!(
            body.code,
            // bad_request: a URL the daemon cannot read is served by no site.
            ErrorCode::LoginRequired
                | ErrorCode::LoginFailed
                | ErrorCode::UnknownSite
                | ErrorCode::BadRequest
        ),
        _ => false,
    }
}

/// One line of at most `max` bytes (without its `\n`), or `None` at EOF. A
/// longer line is read to its end and dropped: `Err(its length)`.
pub(crate) fn read_line_capped(
    input: &mut impl BufRead,
    max: usize,
) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (len, len > max) {
                (0, _) => None,
                (n, true) => Some(Err(n)),
                (_, false) => Some(Ok(line)),
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        len = len.saturating_add(chunk.len());
        if len <= max {
            line.extend_from_slice(chunk);
        }
        let used = done.unwrap_or(chunk.len());
        input.consume(used);
        if done.is_some() {
            return Ok(Some(if len > max { Err(len) } else { Ok(line) }));
        }
    }
}

/// Reads and drops the rest of `input` (what `store` is given).
pub(crate) fn discard(input: impl Read) {
    let _ = std::io::copy(&mut { input }, &mut std::io::sink());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_and_the_rest_is_read() {
        let mut input = &b"short\nthis one is too long\nlast"[..];
        assert_eq!(
            read_line_capped(&mut input, 8).unwrap(),
            Some(Ok(b"short".to_vec()))
        );
        assert_eq!(read_line_capped(&mut input, 8).unwrap(), Some(Err(20)));
        assert_eq!(
            read_line_capped(&mut input, 8).unwrap(),
            Some(Ok(b"last".to_vec()))
        );
        assert_eq!(read_line_capped(&mut input, 8).unwrap(), None);
    }

    #[test]
    fn a_long_line_across_buffers_is_refused() {
        let big = vec![b'x'; 1 << 20];
        let mut input = std::io::BufReader::with_capacity(1000, &big[..]);
        assert_eq!(
            read_line_capped(&mut input, 4096).unwrap(),
            Some(Err(1 << 20))
        );
        assert_eq!(read_line_capped(&mut input, 4096).unwrap(), None);
    }

    #[test]
    fn the_lookup_answer_names_the_site_and_how_cargo_wants_it() {
        let how: LookupReply =
            serde_json::from_str(r#"{"site":"reg","username":"bob","cargo_token":"raw"}"#).unwrap();
        assert_eq!(
            Served::from(how),
            Served {
                site: "reg".into(),
                username: "bob".into(),
                cargo_raw: true
            }
        );
        let how: LookupReply = serde_json::from_str(r#"{"site":"reg"}"#).unwrap();
        let s = Served::from(how);
        assert_eq!((s.username.as_str(), s.cargo_raw), ("oauth2", false));
    }
}
