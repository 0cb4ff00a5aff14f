//! `token get SITE`: the token (and a DPoP proof when asked) in the format asked.

use serde_json::{json, Value};
use token_proto::{
    DpopTarget, ErrorCode, GetRequest, LoginPolicy, LookupReply, LookupRequest, Op,
    ServedTokenReply, TokenKind, TokenReply,
};

use super::{events::show_event, from_reply, print, warn};
use crate::cli::{Format, GetArgs};
use crate::conn::Conn;
use crate::{browser, ClientError};

pub fn run(args: GetArgs) -> Result<u8, ClientError> {
    let reply = get(&args)?;
    print(&render(&reply, args.format))
}

pub(crate) fn get(args: &GetArgs) -> Result<TokenReply, ClientError> {
    match &args.url {
        // The daemon's URL map picks the site; no site: exit 2 naming the URL.
        Some(url) => get_served(
            args,
            LookupRequest {
                url: Some(url.clone()),
                ..Default::default()
            },
        )
        .map(|(_, token)| token),
        None => {
            let reply: TokenReply =
                from_reply(Conn::request(Op::Get(get_request(args)), show_event)?)?;
            checked(args, &args.site, reply)
        }
    }
}

/// A `get` by URL: the token of the site that serves `at.url`, and that
/// site with how its token is sent, in one request. A daemon from before
/// `get` took a `url` is asked as it was: `lookup` (`at`, which may carry
/// git's `protocol` and `host` for still older ones), then `get`.
pub(crate) fn get_served(
    args: &GetArgs,
    at: LookupRequest,
) -> Result<(LookupReply, TokenReply), ClientError> {
    let op = Op::Get(GetRequest {
        site: String::new(),
        url: at.url.clone(),
        ..get_request(args)
    });
    match Conn::request(op, show_event) {
        Ok(v) => {
            let reply: ServedTokenReply = from_reply(v)?;
            let ServedTokenReply { token, served } = reply;
            let token = checked(args, &served.site, token)?;
            Ok((served, token))
        }
        Err(ClientError::Daemon(body))
            if body.code == ErrorCode::BadRequest
                && body.message.contains("missing field `site`") =>
        {
            let served: LookupReply = from_reply(Conn::request(Op::Lookup(at), show_event)?)?;
            let by_site = GetArgs {
                site: served.site.clone(),
                url: None,
                ..args.clone()
            };
            get(&by_site).map(|token| (served, token))
        }
        Err(e) => Err(e),
    }
}

fn get_request(args: &GetArgs) -> GetRequest {
    let login = if args.no_login || !browser::caller_can_log_in() {
        LoginPolicy::Never
    } else {
        LoginPolicy::Auto
    };
    GetRequest {
        site: args.site.clone(),
        url: None,
        min_ttl: args.min_ttl,
        scopes: args.scopes.clone(),
        login,
        no_browser: browser::no_browser_here(),
        dpop: args.dpop.clone().map(|(method, url)| DpopTarget {
            method,
            url,
            nonce: args.dpop_nonce.clone(),
        }),
        token: args.id_token.then_some(TokenKind::IdToken),
        purpose: args.purpose,
        interactive: args
            .interactive
            .unwrap_or_else(crate::browser::person_at_terminal),
    }
}

/// The reply, once it is what was asked for, and its warnings shown.
fn checked(args: &GetArgs, site: &str, reply: TokenReply) -> Result<TokenReply, ClientError> {
    if args.dpop.is_some() && reply.dpop_proof.is_none() {
        return Err(ClientError::Other(format!(
            "site {site}: tokend sent no DPoP proof (it predates --dpop); restart it with `token stop`"
        )));
    }
    warn(&reply);
    if args.id_token && reply.token != Some(TokenKind::IdToken) {
        // A daemon from before --id-token ignores the field and would hand
        // out the access token in its place.
        return Err(ClientError::Other(format!(
            "site {site}: the running tokend does not serve ID tokens; restart it with `token stop` so this version's starts"
        )));
    }
    Ok(reply)
}

/// With a DPoP proof, raw is two lines (the token, then the proof) and
/// header two headers; json carries it as `dpop_proof`.
fn render(reply: &TokenReply, format: Format) -> String {
    let proof = reply.dpop_proof.as_deref();
    match format {
        Format::Raw => match proof {
            Some(p) => format!("{}\n{p}\n", reply.access_token),
            None => format!("{}\n", reply.access_token),
        },
        Format::Header => {
            // A DPoP-bound token goes with the DPoP scheme (RFC 9449 §7.1).
            let scheme = if reply.token_type.eq_ignore_ascii_case("dpop") {
                "DPoP"
            } else {
                "Bearer"
            };
            let mut out = format!("Authorization: {scheme} {}\n", reply.access_token);
            if let Some(p) = proof {
                out.push_str(&format!("DPoP: {p}\n"));
            }
            out
        }
        Format::Json if reply.token == Some(TokenKind::IdToken) => format!(
            "{}\n",
            json!({
                "id_token": reply.access_token,
                "expires_at": reply.expires_at,
                "scopes": reply.scopes,
                "api_key": reply.api_key,
            })
        ),
        Format::Json => {
            let mut v = json!({
                "access_token": reply.access_token,
                "token_type": reply.token_type,
                "expires_at": reply.expires_at,
                "scopes": reply.scopes,
                "api_key": reply.api_key,
            });
            if let Some(p) = proof {
                v["dpop_proof"] = Value::String(p.to_owned());
            }
            format!("{v}\n")
        }
    }
}
