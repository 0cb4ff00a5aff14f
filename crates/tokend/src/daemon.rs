//! The daemon's shared state: the config, the per-site token state, the
//! store, the HTTP client and the discovery cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use token_proto::{ErrorCode, ReloadReply};
use tokend_oauth::{Http, Provider};

use crate::config::Config;
use crate::error::ApiError;
use crate::site::Site;
use crate::store::Store;

/// How long a login waits for the user unless `TOKEND_LOGIN_TIMEOUT` says otherwise.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Daemon {
    pub config_path: PathBuf,
    config: RwLock<Arc<Config>>,
    sites: Mutex<HashMap<String, Arc<Site>>>,
    pub store: Store,
    pub http: Http,
    /// Discovery results by issuer; an issuer's metadata rarely changes and
    /// a restart or a config change clears it.
    providers: tokio::sync::Mutex<HashMap<String, Provider>>,
    pub login_timeout: Duration,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Set by `start`: sites added by a reload start their refresh task with it.
    me: std::sync::OnceLock<std::sync::Weak<Daemon>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Daemon {
    pub fn new(config_path: PathBuf, store: Store, http: Http) -> Daemon {
        let login_timeout = std::env::var("TOKEND_LOGIN_TIMEOUT")
            .ok()
            .and_then(|s| crate::config::parse_duration(&s))
            .map_or(DEFAULT_LOGIN_TIMEOUT, Duration::from_secs);
        let daemon = Daemon {
            config: RwLock::new(Arc::new(Config::default())),
            config_path,
            sites: Mutex::default(),
            store,
            http,
            providers: tokio::sync::Mutex::default(),
            login_timeout,
            shutdown: tokio::sync::watch::channel(false).0,
            me: std::sync::OnceLock::new(),
        };
        daemon.reload();
        daemon
    }

    /// Starts the background work: each site's refresh-ahead task.
    pub fn start(self: &Arc<Self>) {
        if self.me.set(Arc::downgrade(self)).is_ok() {
            for site in self.sites() {
                site.start_refresh_task(self);
            }
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The runtime state of a configured site, or why there is none.
    pub fn site(&self, name: &str) -> Result<Arc<Site>, ApiError> {
        if let Some(site) = lock(&self.sites).get(name) {
            return Ok(site.clone());
        }
        let config = self.config();
        if let Some(msg) = config.site_error(name) {
            return Err(ApiError::new(ErrorCode::ConfigError, msg));
        }
        let known: Vec<&str> = config.sites.keys().map(String::as_str).collect();
        let hint = if known.is_empty() {
            format!("add a [site.{name}] table to {}", config.path.display())
        } else {
            format!(
                "the configured sites are {}; or add [site.{name}] to {}",
                known.join(", "),
                config.path.display()
            )
        };
        Err(ApiError::new(
            ErrorCode::UnknownSite,
            format!("no site named {name}: {hint}"),
        ))
    }

    pub fn sites(&self) -> Vec<Arc<Site>> {
        let mut v: Vec<Arc<Site>> = lock(&self.sites).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Re-reads the config file. A file that does not parse at all keeps the
    /// previous config running; a changed site keeps its login unless its
    /// provider, client or scopes changed.
    pub fn reload(&self) -> ReloadReply {
        let new = Config::load(&self.config_path);
        let whole_file_broken = new.sites.is_empty()
            && new.broken.is_empty()
            && new.errors.iter().any(|e| e.line.is_some());
        let old = self.config();
        let kept_previous = whole_file_broken && !old.sites.is_empty();
        let new = if kept_previous {
            for e in &new.errors {
                tracing::error!("config not reloaded, keeping the previous one: {e}");
            }
            let mut kept = (*old).clone();
            kept.errors = new.errors.clone();
            kept.broken.clear();
            kept
        } else {
            let mut new = new;
            for e in &new.errors {
                tracing::warn!("config: {e}");
            }
            // A site that an edit broke keeps running as it was; the error
            // stays visible in the log and in `status`.
            for name in new.broken.keys().cloned().collect::<Vec<_>>() {
                if let Some(previous) = old.sites.get(&name) {
                    tracing::warn!(site = %name, "keeping the previous settings of this site until the config is fixed");
                    new.sites.insert(name.clone(), previous.clone());
                }
            }
            new
        };
        {
            let mut sites = lock(&self.sites);
            sites.retain(|name, site| {
                let keep = new
                    .sites
                    .get(name)
                    .is_some_and(|c| c.identity() == site.config().identity());
                if !keep {
                    site.retire();
                    tracing::info!(site = %name, "site removed or changed provider, client or scopes: its login is dropped");
                }
                keep
            });
            for (name, cfg) in &new.sites {
                match sites.get(name) {
                    Some(site) => site.set_config(cfg.clone()),
                    None => {
                        tracing::info!(site = %name, "site configured");
                        let site = Arc::new(Site::new(cfg.clone()));
                        if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
                            site.start_refresh_task(&me);
                        }
                        sites.insert(name.clone(), site);
                    }
                }
            }
        }
        let reply = ReloadReply {
            sites: new.sites.len(),
            config_errors: new.errors.iter().map(ToString::to_string).collect(),
            kept_previous,
        };
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
        reply
    }

    /// [`Daemon::reload`] off the async workers (it reads the file).
    pub async fn reload_async(self: &Arc<Self>) -> ReloadReply {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.reload()).await {
            Ok(reply) => reply,
            Err(e) => ReloadReply {
                sites: self.config().sites.len(),
                config_errors: vec![format!("the reload failed: {e}")],
                kept_previous: true,
            },
        }
    }

    /// Discovery, once per issuer.
    pub async fn discover(&self, issuer: &str) -> Result<Provider, tokend_oauth::Error> {
        let mut cache = self.providers.lock().await;
        if let Some(p) = cache.get(issuer) {
            return Ok(p.clone());
        }
        let p = tokend_oauth::discover(&self.http, issuer).await?;
        cache.insert(issuer.to_owned(), p.clone());
        Ok(p)
    }

    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
