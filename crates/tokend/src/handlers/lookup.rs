//! `lookup`: which site serves a host, from the sites' `hosts` lists (for
//! `token credential`, the git credential helper).

use std::sync::Arc;

use serde_json::{json, Value};
use token_proto::ErrorCode;

use crate::daemon::Daemon;
use crate::error::ApiError;

pub fn lookup(d: &Arc<Daemon>, host: &str) -> Result<Value, ApiError> {
    let config = d.config();
    let wanted = host.to_ascii_lowercase();
    let bare = wanted.rsplit_once(':').map_or(wanted.as_str(), |(h, _)| h);
    let found = config.sites.values().find(|s| {
        s.hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            h == wanted || h == bare
        })
    });
    match found {
        Some(site) => Ok(json!({ "site": site.name })),
        None => Err(ApiError::new(
            ErrorCode::UnknownSite,
            format!(
                "no site lists host {host} in `hosts`: add hosts = [\"{bare}\"] to the site that serves it in {}",
                config.path.display()
            ),
        )),
    }
}
