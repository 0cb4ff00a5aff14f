//! What a `[share.NAME]` socket answers: `get` of its listed sites (and the
//! `lookup` the git, docker, cargo and kube helpers make first, answered
//! only with a listed site), `status` of those sites; every other op is
//! `forbidden`, an unlisted site `unknown_site`. Without `login = true` a
//! `get` never starts a login: it is `login_required`.

use std::sync::Arc;

use token_proto::{ErrorCode, LoginPolicy, Op, Request, StatusReply};

use super::{answer, get, lookup, status, Events};
use crate::config::ShareConfig;
use crate::daemon::Daemon;
use crate::error::ApiError;

/// Runs one request that came in on `share`'s socket.
pub(crate) async fn dispatch(
    d: &Arc<Daemon>,
    share: &ShareConfig,
    req: Request,
    events: &mut Events<'_>,
) -> Vec<u8> {
    tracing::debug!(share = %share.name, request = %req.log_safe(), "request on a share");
    match req.op {
        Op::Get(mut g) => {
            if let Err(e) = listed(share, &g.site) {
                return answer::<()>(Err(e));
            }
            if let Some(ready) = super::at_once(d, Some(share), &g) {
                return ready.line().to_vec();
            }
            if !share.login {
                g.login = LoginPolicy::Never;
            }
            let site = g.site.clone();
            answer(
                get::get(d, g, events)
                    .await
                    .map_err(|e| login_elsewhere(e, &site)),
            )
        }
        Op::Status(s) => answer(shared_status(d, share, s.site.as_deref()).await),
        Op::Lookup(l) => answer(lookup::lookup(d, &l).and_then(|r| {
            if share.serves(&r.site) {
                Ok(r)
            } else {
                let url = match &l.url {
                    Some(url) => token_text::clean(url, 200),
                    None => format!("{}://{}", l.protocol, l.host),
                };
                Err(ApiError::new(
                    ErrorCode::UnknownSite,
                    format!("no site shared on this socket serves {url}"),
                ))
            }
        })),
        // The docker helper's `list`: only what this socket shares.
        Op::Urls => {
            let mut reply = lookup::urls(d);
            reply.urls.retain(|u| share.serves(&u.site));
            answer(Ok::<_, ApiError>(reply))
        }
        other => {
            let what = Request::new(other).log_safe();
            let op = what.split(' ').next().unwrap_or("this").to_owned();
            answer::<()>(Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "`{op}` is not served on a share socket ([share.{}]): it answers only `get` and \
                     `status` of its sites; run `token {op}` on the machine that shares it",
                    share.name
                ),
            )))
        }
    }
}

/// `site` is one the share lists.
fn listed(share: &ShareConfig, site: &str) -> Result<(), ApiError> {
    if share.serves(site) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UnknownSite,
        format!(
            "no site named `{}` on this socket: it shares {}",
            token_text::clean(site, 100),
            if share.sites.is_empty() {
                "no site".to_owned()
            } else {
                share.sites.join(", ")
            }
        ),
    ))
}

/// A login cannot be run from here: say where it can.
fn login_elsewhere(e: ApiError, site: &str) -> ApiError {
    if e.code != ErrorCode::LoginRequired {
        return e;
    }
    ApiError::new(
        ErrorCode::LoginRequired,
        format!(
            "site {site} needs a login, which this share does not start: \
             run `token login {site}` on the machine that shares it"
        ),
    )
}

/// `status` of the listed sites only; the config's own errors (which may
/// name other sites) are left out.
async fn shared_status(
    d: &Arc<Daemon>,
    share: &ShareConfig,
    only: Option<&str>,
) -> Result<StatusReply, ApiError> {
    if let Some(site) = only {
        listed(share, site)?;
    }
    let mut reply = status::status(d, only).await?;
    reply.sites.retain(|s| share.serves(&s.site));
    reply.config_errors.clear();
    Ok(reply)
}
