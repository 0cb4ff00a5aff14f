//! `status`: every site's state, for people (`token status`) and scripts (`--json`).

use std::sync::Arc;

use token_proto::{SiteState, SiteStatus, StatusReply};

use crate::config::Config;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::site::secret;
use crate::sites::Status;

pub(super) async fn status(d: &Arc<Daemon>, only: Option<&str>) -> Result<StatusReply, ApiError> {
    let config = d.config();
    let sites = match only {
        Some(name) => vec![d.status_of(name).await?],
        None => d.statuses().await,
    };
    // A site not started yet loads its login from the store first (a store
    // failure shows as its error), so the answer is true after a restart;
    // the sites answer at once, their loads limited daemon-wide. A parked
    // site's line is known without waking it.
    let mut asked = tokio::task::JoinSet::new();
    let mut answers = Vec::new();
    for (i, site) in sites.into_iter().enumerate() {
        match site {
            Status::Known(status) => answers.push((i, status)),
            Status::Ask(site) => {
                asked.spawn(async move { (i, site.status().await) });
            }
        }
    }
    while let Some(done) = asked.join_next().await {
        if let Ok((i, Ok(status))) = done {
            answers.push((i, status));
        }
    }
    answers.sort_by_key(|(i, _)| *i);
    let mut out: Vec<SiteStatus> = answers.into_iter().map(|(_, s)| s).collect();
    for s in &mut out {
        needs_secret(s, &config);
        if let Some(cfg) = config.sites.get(&s.site) {
            s.files = crate::files::status(&s.site, cfg);
        }
    }
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
                state: SiteState::Error.as_str().to_owned(),
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
        store: d.deps().store.name().to_owned(),
        store_note: {
            let notes: Vec<String> = (d.deps().store_notice.as_ref())
                .map(|n| n.text().to_owned())
                .into_iter()
                .chain(d.store_moved.clone())
                .chain(d.store_change())
                .collect();
            (!notes.is_empty()).then(|| notes.join("; "))
        },
        log: crate::log_destination(),
        sites: out,
    })
}

/// A site whose `client_secret_env` is not set in the daemon's environment
/// cannot make a token call: without a valid token in hand it is in error,
/// and either way its line says how to give the daemon the secret.
fn needs_secret(s: &mut SiteStatus, config: &Config) {
    let Some(why) = config
        .sites
        .get(&s.site)
        .and_then(|cfg| cfg.secret.as_ref())
        .and_then(|src| secret::missing_env_secret(&s.site, src))
    else {
        return;
    };
    let now = crate::clock::whole(crate::clock::Clock::System.now());
    let valid = s.has_access_token && s.expires_at.is_none_or(|at| at > now);
    if !valid {
        s.state = SiteState::Error.as_str().to_owned();
    }
    s.last_error = Some(why);
}
