//! `status`: every site's state, for people (`token status`) and scripts (`--json`).

use std::sync::Arc;

use token_proto::{SiteStatus, StatusReply};

use crate::daemon::Daemon;
use crate::error::ApiError;

/// Sites loaded from the store at once for a `status`.
const LOAD_AT_ONCE: usize = 8;

pub async fn status(d: &Arc<Daemon>, only: Option<&str>) -> Result<StatusReply, ApiError> {
    let config = d.config();
    let sites = match only {
        Some(name) => vec![d.site(name)?],
        None => d.sites(),
    };
    // Loading is what makes the answer true after a restart (a store failure
    // shows as the site's error). Keyring reads cost milliseconds each, so a
    // few sites load at a time.
    let slots = Arc::new(tokio::sync::Semaphore::new(LOAD_AT_ONCE));
    let mut loading = tokio::task::JoinSet::new();
    for site in sites.iter().filter(|s| !s.is_loaded()) {
        let (site, d, slots) = (site.clone(), d.clone(), slots.clone());
        loading.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let _ = site.ensure_loaded(&d).await;
        });
    }
    while loading.join_next().await.is_some() {}
    let mut out: Vec<SiteStatus> = sites.iter().map(|s| s.status()).collect();
    if only.is_none() {
        for (name, err) in &config.broken {
            if let Some(running) = out.iter_mut().find(|s| &s.site == name) {
                // An edit broke it; the previous settings still run.
                running.last_error = Some(format!(
                    "the config edit is invalid, running the previous settings: {err}"
                ));
                continue;
            }
            out.push(SiteStatus {
                site: name.clone(),
                state: "error".to_owned(),
                last_error: Some(err.to_string()),
                ..Default::default()
            });
        }
        out.sort_by(|a, b| a.site.cmp(&b.site));
    }
    Ok(StatusReply {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        config: config.path.display().to_string(),
        config_errors: config.errors.iter().map(ToString::to_string).collect(),
        sites: out,
    })
}
