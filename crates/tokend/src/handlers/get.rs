//! `get`: a valid token from the site (in hand, or from the one token call
//! under way), or (when the caller allows it) a login that the caller
//! waits for; with `dpop`, also a proof for the caller's request. A `get`
//! by `url` is the site the URL map picks, then the same path.

use std::sync::Arc;

use token_proto::{
    GetRequest, LoginMode, LoginPolicy, Purpose, ServedTokenReply, TokenKind, TokenReply,
};

use super::Events;
use crate::config::SiteConfig;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::held::Ready;
use crate::site::{proof, Served, SiteHandle, TtlFrom};
use tokend_oauth::AccessToken;

/// `get` with `url` (the decoder lets no request give both or neither):
/// one request where a helper made two (`lookup`, then `get`).
pub(super) async fn get_by_url(
    d: &Arc<Daemon>,
    mut req: GetRequest,
    events: &mut Events<'_>,
) -> Result<ServedTokenReply, ApiError> {
    let served = super::lookup::site_for_get(d, &mut req)?;
    // Now a get by site (the URL taken out): the fast path may answer it.
    if let Some(ready) = fast(d, &req) {
        return Ok(ServedTokenReply {
            token: ready.reply().clone(),
            served,
        });
    }
    let token = get(d, req, events).await?;
    Ok(ServedTokenReply { token, served })
}

/// The site's published answer (`site::held`) when `req` is a plain `get`
/// it serves now: the site's own access token, no scopes, no proof, no ID
/// token, and the token has the caller's `min_ttl` (or the serve margin)
/// left. `None`: the actor answers (see [`get`]).
pub(super) fn fast(d: &Daemon, req: &GetRequest) -> Option<Arc<Ready>> {
    // Every field, so a new one is decided here.
    let GetRequest {
        site,
        min_ttl,
        scopes,
        login: _,
        no_browser: _,
        dpop,
        token: _,
        purpose: _,
        interactive: _,
        url,
    } = req;
    // A get by URL answers with the site that serves it: the actor's path.
    if url.is_some() || !scopes.is_empty() || dpop.is_some() {
        return None;
    }
    let deps = d.deps();
    let (settings, held) = deps.sites.held(site)?;
    if wants_id_token(&settings, req) {
        return None;
    }
    held.serve(&settings, deps.clock.now(), *min_ttl)
}

/// What a connection thread keeps of the plain `get` it answers again and
/// again (a helper, a load loop): the site's settings, its cell and the
/// answer read from it, with the counts of changes they were read at.
/// While neither count moved, [`fast_kept`] answers from here: two
/// counters read, no lock taken and no reference counted, so the threads
/// of callers on two cores write no line they share.
#[cfg(unix)]
#[derive(Debug, Default)]
pub(crate) struct Kept(Option<KeptAnswer>);

#[cfg(unix)]
#[derive(Debug)]
struct KeptAnswer {
    directory: u64,
    settings: Arc<SiteConfig>,
    held: Arc<crate::site::held::Held>,
    version: u64,
    ready: Arc<Ready>,
}

/// [`fast`], answered from `kept` while it holds what the site publishes
/// (and read into it when not). `kept` is for this one request: a caller
/// whose request changes starts a new one.
#[cfg(unix)]
pub(super) fn fast_kept<'k>(d: &Daemon, req: &GetRequest, kept: &'k mut Kept) -> Option<&'k Ready> {
    let deps = d.deps();
    let now = deps.clock.now();
    let directory = deps.sites.changes();
    let fresh = kept
        .0
        .as_ref()
        .is_some_and(|k| k.directory == directory && k.held.version() == k.version);
    if !fresh {
        kept.0 = None;
        // The checks of `fast`, once for what is kept.
        if req.url.is_some() || !req.scopes.is_empty() || req.dpop.is_some() {
            return None;
        }
        let (settings, held) = deps.sites.held(&req.site)?;
        if wants_id_token(&settings, req) {
            return None;
        }
        let (ready, version) = held.current_and_version();
        kept.0 = Some(KeptAnswer {
            directory,
            settings,
            held,
            version,
            ready: ready?,
        });
    }
    let k = kept.0.as_ref()?;
    k.ready
        .serves(&k.settings, now, req.min_ttl)
        .then_some(&*k.ready)
}

pub(super) async fn get(
    d: &Arc<Daemon>,
    req: GetRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    // The settings installed with the site decide, not the daemon's copy
    // of the config (a reload replaces that after the sites).
    let (site, settings) = d.site_with_settings(&req.site)?;
    // A proof that cannot be made is refused before any token call or login.
    let target = match &req.dpop {
        Some(t) => Some(proof::check(&settings, t)?),
        None => None,
    };
    let mut token = token(&site, &settings, req, events).await?;
    if let Some((method, url, nonce)) = target {
        if !token.token_type.eq_ignore_ascii_case("dpop") {
            return Err(ApiError::internal(format!(
                "site {}: the token in hand is a {} token, not DPoP-bound; run `token login {}`",
                site.name(),
                token.token_type,
                site.name()
            )));
        }
        let bound = AccessToken::new(token.access_token.clone());
        token.dpop_proof = Some(site.proof(method, url, bound, nonce).await?);
    }
    Ok(token)
}

async fn token(
    site: &SiteHandle,
    settings: &SiteConfig,
    req: GetRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    if wants_id_token(settings, &req) {
        return get_id_token(site, req, events).await;
    }
    let from = match req.purpose {
        Some(Purpose::Git) => TtlFrom::GitHelper,
        Some(Purpose::Kube | Purpose::Other) | None => TtlFrom::Caller,
    };
    if let Served::Token(t) = site.get_for(req.scopes.clone(), req.min_ttl, from).await? {
        return Ok(t);
    }
    if req.login == LoginPolicy::Never {
        return Err(ApiError::login_required(&req.site, ""));
    }
    let token = super::login::wait(
        site.login_as(login_mode(&req), req.interactive).await?,
        &req.site,
        events,
    )
    .await?;
    if req.scopes.is_empty() {
        return Ok(token);
    }
    // A down-scoped token, now that there is a login to narrow.
    match site.get_for(req.scopes, req.min_ttl, from).await? {
        Served::Token(t) => Ok(t),
        Served::NeedLogin => Err(ApiError::internal(format!(
            "site {}: no token after the login",
            req.site
        ))),
    }
}

/// How a login this `get` starts runs: without a browser where the caller
/// has none (device flow, else paste-back).
fn login_mode(req: &GetRequest) -> LoginMode {
    if req.no_browser {
        LoginMode::NoBrowser
    } else {
        LoginMode::Browser
    }
}

/// Whether the caller gets the ID token: it asked for it, or it asked on
/// behalf of `token kube` and the site says `kube_token = "id_token"` (the
/// client cannot read the config, so the daemon applies that key).
fn wants_id_token(settings: &SiteConfig, req: &GetRequest) -> bool {
    match req.token {
        Some(kind) => kind == TokenKind::IdToken,
        None if req.purpose == Some(Purpose::Kube) => settings.kube_token == TokenKind::IdToken,
        None => false,
    }
}

/// The site's validated ID token, after a login when only a login brings one.
async fn get_id_token(
    site: &SiteHandle,
    req: GetRequest,
    events: &mut Events<'_>,
) -> Result<TokenReply, ApiError> {
    let not_with = if !req.scopes.is_empty() {
        Some("an ID token is not down-scoped: drop --scope")
    } else if req.dpop.is_some() {
        Some("an ID token is not DPoP-bound: drop --dpop")
    } else {
        None
    };
    if let Some(why) = not_with {
        return Err(ApiError::new(
            token_proto::ErrorCode::BadRequest,
            format!("site {}: {why} with --id-token", req.site),
        ));
    }
    if let Served::Token(t) = site.get_id_token(req.min_ttl).await? {
        return Ok(t);
    }
    if req.login == LoginPolicy::Never {
        return Err(ApiError::login_required(&req.site, ""));
    }
    super::login::wait(
        site.login_as(login_mode(&req), req.interactive).await?,
        &req.site,
        events,
    )
    .await?;
    match site.get_id_token(req.min_ttl).await? {
        Served::Token(t) => Ok(t),
        Served::NeedLogin => Err(ApiError::new(
            token_proto::ErrorCode::ProviderError,
            format!(
                "site {}: the login brought no valid ID token (`token status {}` says why); check that the provider issues ID tokens for `openid`",
                req.site, req.site
            ),
        )),
    }
}
