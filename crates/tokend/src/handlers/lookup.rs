//! `lookup`: which site serves a git remote, from the sites' `hosts` lists
//! (for `token credential`, the git credential helper), and how git should
//! send the token. The rules that keep a token on its own remote are in
//! [`crate::config::Remote`].

use std::sync::Arc;

use token_proto::{ErrorCode, LookupReply, LookupRequest, DEFAULT_GIT_USERNAME};

use crate::config::{Refusal, Remote};
use crate::daemon::Daemon;
use crate::error::ApiError;

pub(super) fn lookup(d: &Arc<Daemon>, req: &LookupRequest) -> Result<LookupReply, ApiError> {
    let config = d.config();
    let remote = Remote::new(&req.protocol, &req.host).map_err(|r| {
        let message = match r {
            Refusal::Insecure { protocol, host } => format!(
                "no token for {protocol}://{host}: tokens go only to https remotes \
                 (plain http only on a loopback host); use the https URL of the remote"
            ),
            Refusal::BadHost(host) => format!("`{host}` is not a host or host:port"),
        };
        ApiError::new(ErrorCode::UnknownSite, message)
    })?;
    let found = config
        .sites
        .values()
        .find(|s| s.hosts.iter().any(|h| remote.matches(h)));
    match found {
        Some(site) => Ok(LookupReply {
            site: site.name.clone(),
            git_auth: site.git_auth,
            username: site
                .username
                .clone()
                .unwrap_or_else(|| DEFAULT_GIT_USERNAME.to_owned()),
        }),
        None => Err(ApiError::new(
            ErrorCode::UnknownSite,
            format!(
                "no site lists {}://{} in `hosts`: add hosts = [\"{}\"] to the site that serves it in {}",
                req.protocol,
                req.host,
                remote.as_entry(),
                config.path.display()
            ),
        )),
    }
}
