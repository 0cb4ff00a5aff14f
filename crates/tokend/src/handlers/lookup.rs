//! `lookup`: which site serves a URL (for `token credential`, git's helper,
//! `token get --url`, and the docker and cargo helpers), and how the token
//! should be sent; `urls`: every prefix served, for `docker-credential-token
//! list`. The rules that keep a token on its own URL are in
//! [`crate::config::urls`].

use std::sync::Arc;

use token_proto::{
    ErrorCode, LookupReply, LookupRequest, ServedUrl, UrlsReply, DEFAULT_GIT_USERNAME,
};

use crate::config::urls::{self, Miss, Target};
use crate::config::{Refusal, Remote, SiteConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// The URL asked about: `url`, else git's `protocol` and `host` (older
/// clients), through the same matcher.
fn target(req: &LookupRequest) -> Result<Target, ApiError> {
    let refused = |message: String| ApiError::new(ErrorCode::UnknownSite, message);
    if let Some(url) = &req.url {
        return Target::parse(url).map_err(|r| refused(r.to_string()));
    }
    // The old shape keeps its old checks and words.
    Remote::new(&req.protocol, &req.host).map_err(|r| {
        refused(match r {
            Refusal::Insecure { protocol, host } => format!(
                "no token for {protocol}://{host}: tokens go only to https remotes \
                 (plain http only on a loopback host); use the https URL of the remote"
            ),
            Refusal::BadHost(host) => format!("`{host}` is not a host or host:port"),
        })
    })?;
    Target::parse(&format!("{}://{}/", req.protocol, req.host)).map_err(|r| refused(r.to_string()))
}

fn username(site: &SiteConfig) -> String {
    site.username
        .clone()
        .unwrap_or_else(|| DEFAULT_GIT_USERNAME.to_owned())
}

pub(super) fn lookup(d: &Arc<Daemon>, req: &LookupRequest) -> Result<LookupReply, ApiError> {
    let config = d.config();
    let target = target(req)?;
    match urls::find(config.sites.values().map(|s| &**s), &target) {
        Ok(site) => Ok(LookupReply {
            site: site.name.clone(),
            git_auth: site.git_auth,
            username: username(site),
            cargo_token: site.cargo_token,
        }),
        Err(Miss::Unserved) => Err(ApiError::new(
            ErrorCode::UnknownSite,
            format!(
                "no site serves {}: add it to the `urls` (or `hosts`) of the site that serves it \
                 in {}, e.g. urls = [\"{}\"]",
                target.shown(),
                config.path.display(),
                target.as_prefix(),
            ),
        )),
        Err(Miss::Ambiguous {
            first,
            second,
            prefix,
        }) => Err(ApiError::new(
            ErrorCode::ConfigError,
            format!(
                "sites {first} and {second} both serve {} (prefix {prefix}) in {}: give one a \
                 longer `urls` prefix, or give them different `username`s and put the user \
                 name in the URL (https://USER@host/…)",
                target.shown(),
                config.path.display(),
            ),
        )),
    }
}

/// Every served `https` prefix with its site, in site order.
pub(super) fn urls(d: &Arc<Daemon>) -> UrlsReply {
    let config = d.config();
    let mut out = Vec::new();
    for site in config.sites.values() {
        let mut seen = Vec::new();
        for prefix in site.served.iter().filter(|p| p.is_https()) {
            let url = prefix.to_string();
            if !seen.contains(&url) {
                seen.push(url.clone());
                out.push(ServedUrl {
                    url,
                    site: site.name.clone(),
                    username: username(site),
                });
            }
        }
    }
    UrlsReply { urls: out }
}
