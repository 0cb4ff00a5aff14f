//! The daemon's shared state: the config, the sites (`crate::sites`), the
//! store, the HTTP client and the discovery cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use token_proto::{names, ErrorCode, ReloadReply};
use tokend_oauth::Http;

use crate::clock::Clock;
use crate::config::StoreKind;
use crate::config::{Config, SiteConfig};
use crate::error::ApiError;
use crate::site::{Deps, LoginTimeout, SiteHandle};
use crate::sites::{Sites, Status};
use crate::store::prune::{Removed, PRUNE_AFTER};
use crate::store::Store;

/// How long a login waits for the user unless `TOKEND_LOGIN_TIMEOUT` says otherwise.
pub(crate) const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a login waits: `TOKEND_LOGIN_TIMEOUT`, else the `[daemon]`
/// table's `configured` (seconds), else the default.
fn effective_login_timeout(configured: Option<u64>) -> Duration {
    std::env::var("TOKEND_LOGIN_TIMEOUT")
        .ok()
        .and_then(|s| crate::config::parse_duration(&s))
        .or(configured)
        .map_or(DEFAULT_LOGIN_TIMEOUT, Duration::from_secs)
}

/// `[daemon] login_cooldown` unless set.
pub(crate) const DEFAULT_LOGIN_COOLDOWN: Duration = Duration::from_secs(15 * 60);

fn effective_login_cooldown(configured: Option<u64>) -> Duration {
    configured.map_or(DEFAULT_LOGIN_COOLDOWN, Duration::from_secs)
}

/// Sites loading their login from the store at once.
const LOAD_AT_ONCE: usize = 8;

#[derive(Debug)]
pub(crate) struct Daemon {
    pub config_path: PathBuf,
    config: RwLock<Arc<Config>>,
    sites: Sites,
    shutdown: tokio::sync::watch::Sender<bool>,
    trimmer: crate::platform::memory::Trimmer,
    /// The `[daemon] store` the daemon started with (the store in use is
    /// chosen once: a change waits for the next start).
    started_store: Option<StoreKind>,
    /// What this start moved from the previous store, if the store changed.
    pub store_moved: Option<String>,
    /// The `[share.NAME]` sockets.
    shares: crate::share::Shares,
    /// The `[proxy.NAME]` listeners.
    proxies: crate::proxy::Proxies,
    /// Removed sites whose logins are still in the store.
    removed: Removed,
    /// Whether [`Daemon::install`] notes removed sites: not the start's
    /// (noted after "ready", [`Daemon::note_removed_at_start`]).
    built: AtomicBool,
    /// Whether the start's config was noted in the removed-sites book.
    start_noted: AtomicBool,
    /// Told when a reload removes a site (its grace may be none).
    prune_wake: tokio::sync::Notify,
}

impl Daemon {
    /// A daemon serving `config` (read from `config_path`, which later
    /// reloads read again): call from within the tokio runtime.
    /// `login_timeout`: the `[daemon]` table's, in seconds
    /// (`TOKEND_LOGIN_TIMEOUT` wins over it).
    pub(crate) fn new(
        config_path: PathBuf,
        config: Config,
        store: crate::store::Chosen,
        http: Http,
        login_timeout: Option<u64>,
    ) -> Daemon {
        let login_timeout = LoginTimeout::new(effective_login_timeout(login_timeout));
        let login_cooldown =
            LoginTimeout::new(effective_login_cooldown(config.daemon.login_cooldown));
        Daemon::build(
            config_path,
            config,
            Deps {
                store: store.store,
                store_notice: store.fallback.map(|f| {
                    Arc::new(crate::store::Notice::remembered(
                        f,
                        &crate::paths::state_dir(),
                    ))
                }),
                http,
                discovery: Arc::default(),
                clock: Clock::System,
                login_timeout,
                login_cooldown,
                load_slots: Arc::new(tokio::sync::Semaphore::new(LOAD_AT_ONCE)),
                keys: Arc::default(),
                sites: Default::default(),
            },
            Removed::open(Some(crate::paths::state_dir().join("removed-sites.json"))),
        )
    }

    /// A daemon whose sites get `deps` (tests give a scripted HTTP and
    /// tokio's clock), and which keeps its list of removed sites in memory.
    #[cfg(test)]
    pub(crate) fn with_deps(config_path: PathBuf, config: Config, deps: Deps) -> Daemon {
        Daemon::build(config_path, config, deps, Removed::open(None))
    }

    fn build(config_path: PathBuf, config: Config, deps: Deps, removed: Removed) -> Daemon {
        let daemon = Daemon {
            removed,
            built: AtomicBool::new(false),
            start_noted: AtomicBool::new(false),
            prune_wake: tokio::sync::Notify::new(),
            started_store: config.daemon.store,
            store_moved: None,
            config: RwLock::new(Arc::new(Config::default())),
            config_path,
            sites: Sites::new(Arc::new(deps)),
            shutdown: tokio::sync::watch::channel(false).0,
            trimmer: crate::platform::memory::Trimmer::default(),
            shares: crate::share::Shares::default(),
            proxies: crate::proxy::Proxies::default(),
        };
        daemon.install(config);
        daemon.built.store(true, Ordering::Release);
        daemon
    }

    /// Notes the start's config in the removed-sites book (a site gone
    /// from it since the last daemon is removed from now on), after
    /// "ready": reading and comparing a thousand names is no part of a
    /// cold get. A reload that comes first notes it before its own.
    pub(crate) fn note_removed_at_start(&self) {
        if self.start_noted.swap(true, Ordering::AcqRel) {
            return;
        }
        let now = crate::clock::whole(self.deps().clock.now());
        if self.removed.note(&Config::default(), &self.config(), now) {
            self.prune_wake.notify_one();
        }
    }

    /// Removed sites whose logins are still in the store.
    pub(crate) fn removed(&self) -> &Removed {
        &self.removed
    }

    /// Forgets (revokes where it can, deletes) the stored logins of sites
    /// removed from the config longer than `[daemon] prune_after` ago.
    pub(crate) async fn prune_removed(self: &Arc<Self>) {
        let after = self
            .config()
            .daemon
            .prune_after
            .map_or(PRUNE_AFTER, Duration::from_secs);
        let now = crate::clock::whole(self.deps().clock.now());
        for (name, config) in self.removed.due(now, after) {
            if let Err(e) = crate::handlers::forget_removed(self, &name, config).await {
                tracing::warn!(site = %name, "cannot prune the stored login of this removed site: {e}");
            }
        }
    }

    /// [`Daemon::prune_removed`] now and every [`PRUNE_EVERY`](crate::store::prune::PRUNE_EVERY).
    pub(crate) async fn prune_removed_forever(self: Arc<Self>) {
        loop {
            self.prune_removed().await;
            tokio::select! {
                () = tokio::time::sleep(crate::store::prune::PRUNE_EVERY) => {}
                () = self.prune_wake.notified() => {}
            }
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.deps().store
    }

    pub(crate) fn http(&self) -> &Http {
        &self.deps().http
    }

    pub(crate) fn deps(&self) -> &Deps {
        self.sites.deps()
    }

    /// The registry (tests).
    #[cfg(test)]
    pub(crate) fn sites(&self) -> &Sites {
        &self.sites
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The actor of a configured site (started now if it was not yet), or
    /// why there is none.
    pub(crate) fn site(&self, name: &str) -> Result<SiteHandle, ApiError> {
        self.site_with_settings(name).map(|(site, _)| site)
    }

    /// The actor of a configured site (as [`Daemon::site`]) and the
    /// settings installed with it, which a request decides on.
    pub(crate) fn site_with_settings(
        &self,
        name: &str,
    ) -> Result<(SiteHandle, Arc<SiteConfig>), ApiError> {
        if let Some(site) = self.sites.get_with_settings(name) {
            return Ok(site);
        }
        let config = self.config();
        if let Some(msg) = config.site_error(name) {
            return Err(ApiError::new(ErrorCode::ConfigError, msg));
        }
        let known: Vec<&str> = config.sites.keys().map(String::as_str).collect();
        let path = config.path.display();
        let hint = if !names::is_site_name(name) {
            // Not a name the config could hold: nothing to add.
            let sites = if known.is_empty() {
                "no sites are configured yet".to_owned()
            } else {
                format!("the configured sites are {}", known.join(", "))
            };
            format!("a site name holds only letters, digits, `.`, `_` and `-`; {sites}")
        } else if let Some(close) = names::closest(name, known.iter().copied()) {
            format!(
                "did you mean `{close}`? (the configured sites are {}; or add [site.{name}] to {path})",
                known.join(", ")
            )
        } else if known.is_empty() {
            format!("add a [site.{name}] table to {path}")
        } else {
            format!(
                "the configured sites are {}; or add [site.{name}] to {path}",
                known.join(", ")
            )
        };
        Err(ApiError::new(
            ErrorCode::UnknownSite,
            format!("no site named `{name}`: {hint}"),
        ))
    }

    /// Every site's line in `status`, by name (see [`Sites::statuses`]).
    pub(crate) async fn statuses(&self) -> Vec<Status> {
        self.sites.statuses().await
    }

    /// The line in `status` of a configured site, or why there is none.
    pub(crate) async fn status_of(&self, name: &str) -> Result<Status, ApiError> {
        match self.sites.status(name).await {
            Some(status) => Ok(status),
            None => self.site(name).map(Status::Ask),
        }
    }

    /// Re-reads the config file. A file that does not parse at all, or that
    /// is gone (deleted, or an editor's delete-and-rename under way), or
    /// that others could have written, keeps the previous config running; a
    /// changed site keeps its login unless its provider, client or scopes
    /// changed.
    pub(crate) fn reload(&self) -> ReloadReply {
        let reply = self.install(Config::load(&self.config_path));
        self.apply_daemon_settings();
        reply
    }

    /// The `[daemon]` table as it now reads: `login_timeout` and `log` apply
    /// from now on (the environment still wins); a `store` change is said,
    /// since it waits for the next start.
    fn apply_daemon_settings(&self) {
        let settings = self.config().daemon.clone();
        let timeout = effective_login_timeout(settings.login_timeout);
        if self.deps().login_timeout.set(timeout) {
            tracing::info!(
                "config: logins starting from now wait up to {}s (login_timeout)",
                timeout.as_secs()
            );
        }
        let cooldown = effective_login_cooldown(settings.login_cooldown);
        if self.deps().login_cooldown.set(cooldown) {
            tracing::info!(
                "config: after a login that goes unanswered, callers without a terminal start none for {}s (login_cooldown)",
                cooldown.as_secs()
            );
        }
        crate::set_log_filter(settings.log.as_deref());
        if let Some(note) = self.store_change() {
            tracing::warn!("config: {note}");
        }
    }

    /// A `[daemon] store` edited since the start, when it names another
    /// store than the one in use (`TOKEND_STORE` wins over the table).
    pub(crate) fn store_change(&self) -> Option<String> {
        if std::env::var_os("TOKEND_STORE").is_some_and(|s| !s.is_empty()) {
            return None;
        }
        let wanted = self.config().daemon.store;
        let would = wanted.unwrap_or(StoreKind::Keyring);
        let in_use = self.store().name();
        (wanted != self.started_store && would.name() != in_use).then(|| {
            format!(
                "[daemon] store = \"{}\" takes effect at the next start (`token stop`); \
                 until then logins stay in the {in_use} store",
                would.name()
            )
        })
    }

    /// Serves `new` (just read from the config file) from now on.
    fn install(&self, new: Config) -> ReloadReply {
        let whole_file_broken = new.untrusted
            || (new.sites.is_empty()
                && new.broken.is_empty()
                && new.errors.iter().any(|e| e.line.is_some()));
        let old = self.config();
        let kept_previous = (whole_file_broken || new.missing) && !old.sites.is_empty();
        let mut new = if kept_previous {
            let mut kept = (*old).clone();
            kept.errors = if new.missing {
                vec![crate::config::ConfigError::of_file(
                    &new.path,
                    format!(
                        "the config file is gone: tokend keeps running the previous settings \
                         ({} site(s)) and reads the file again as soon as it is back",
                        old.sites.len()
                    ),
                )]
            } else {
                new.errors.clone()
            };
            for e in &kept.errors {
                tracing::error!("config not reloaded, keeping the previous one: {e}");
            }
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
        self.apply(&old, &new);
        let unshared = self.shares.apply(&new.path, &new.shares);
        new.errors.extend(unshared);
        let unproxied = self.proxies.apply(&new.path, &new.proxies);
        new.errors.extend(unproxied);
        self.keep_files_fresh(&new);
        let now = crate::clock::whole(self.deps().clock.now());
        let removed_any = !kept_previous && self.built.load(Ordering::Acquire) && {
            let start = !self.start_noted.swap(true, Ordering::AcqRel)
                && self.removed.note(&Config::default(), &old, now);
            self.removed.note(&old, &new, now) || start
        };
        let reply = ReloadReply {
            sites: new.sites.len(),
            config_errors: new.errors.iter().map(ToString::to_string).collect(),
            kept_previous,
        };
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
        if removed_any {
            // With the new `prune_after` in place.
            self.prune_wake.notify_one();
        }
        reply
    }

    /// [`Daemon::reload`] off the async workers (it reads the file).
    pub(crate) async fn reload_async(self: &Arc<Self>) -> ReloadReply {
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

    /// Brings the sites in line with `new`, and has a changed issuer's
    /// discovery (and key set) fetched again.
    fn apply(&self, old: &Config, new: &Config) {
        for (name, cfg) in &old.sites {
            let changed = new.sites.get(name).is_none_or(|c| c != cfg);
            if let (true, Some(issuer)) = (changed, &cfg.issuer) {
                // Its keys go with its metadata: a changed site trusts no
                // key fetched for the old settings.
                if let Some(jwks) = self.deps().discovery.forget(issuer) {
                    self.deps().keys.forget(&jwks);
                }
            }
        }
        self.sites.apply(old, new);
    }

    /// Stops every site, letting token calls under way land and persist
    /// (up to `grace`).
    pub(crate) async fn stop_sites(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.sites.stop())
            .await
            .is_err()
        {
            tracing::warn!("a site's token call did not finish in time; stopping anyway");
        }
    }

    /// Removes the token files no longer configured, and starts each site
    /// with files, so it loads its login and keeps them fresh unasked.
    fn keep_files_fresh(&self, config: &Config) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for name in crate::files::reconcile(config) {
            if let Some((site, _)) = self.sites.get_with_settings(&name) {
                rt.spawn(async move {
                    let _ = site.status().await;
                });
            }
        }
    }

    /// Serves the `[share]` sockets (bound at each install) from now on.
    pub(crate) fn start_shares(self: &Arc<Self>) {
        self.shares.start(self);
        self.proxies.start(self);
    }

    /// Stops the `[share]` sockets and removes them: the daemon is exiting.
    pub(crate) fn stop_shares(&self) {
        self.shares.stop_all();
        self.proxies.stop_all();
    }

    /// Returns freed memory to the system once a burst of work is over.
    pub(crate) fn trimmer(&self) -> &crate::platform::memory::Trimmer {
        &self.trimmer
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
