//! The extra listeners the config asks for (`[share.NAME]` sockets,
//! `[proxy.NAME]` listeners), kept in line with it: a reload stops a
//! removed or changed one (its socket file goes at once, so a successor at
//! the same path is not unlinked later) and binds a new or changed one; one
//! that cannot be bound is a config error, retried at the next reload.
//! Bound ones wait until the daemon serves ([`Listeners::start`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use crate::config::ConfigError;
use crate::daemon::Daemon;

/// One kind of listener.
pub(crate) trait Kind {
    type Config: PartialEq + std::fmt::Debug + Send + Sync + 'static;
    type Bound: std::fmt::Debug + Send + 'static;
    /// The config table's name: `share`, `proxy`.
    const TABLE: &'static str;
    /// The key a bind error is said of.
    const KEY: &'static str;
    /// The line of the config table, for errors.
    fn line(cfg: &Self::Config) -> usize;
    fn bind(cfg: &Self::Config) -> Result<Self::Bound, String>;
    /// Serves until `stop` resolves.
    fn serve(
        bound: Self::Bound,
        cfg: Arc<Self::Config>,
        daemon: Arc<Daemon>,
        stop: tokio::sync::oneshot::Receiver<()>,
    );
    /// Removes what `bind` left on disk (a socket file).
    fn remove(cfg: &Self::Config);
}

#[derive(Debug)]
pub(crate) struct Listeners<K: Kind> {
    state: Mutex<State<K>>,
}

impl<K: Kind> Default for Listeners<K> {
    fn default() -> Self {
        Listeners {
            state: Mutex::new(State {
                daemon: None,
                running: BTreeMap::new(),
            }),
        }
    }
}

#[derive(Debug)]
struct State<K: Kind> {
    daemon: Option<Weak<Daemon>>,
    running: BTreeMap<String, Running<K>>,
}

#[derive(Debug)]
struct Running<K: Kind> {
    config: Arc<K::Config>,
    bound: Option<K::Bound>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<K: Kind> Running<K> {
    fn serve(&mut self, daemon: Arc<Daemon>) {
        if let Some(bound) = self.bound.take() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.stop = Some(tx);
            K::serve(bound, self.config.clone(), daemon, rx);
        }
    }
}

impl<K: Kind> Drop for Running<K> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.bound = None;
        K::remove(&self.config);
    }
}

impl<K: Kind> Listeners<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the listeners in line with `wanted` (of the config at
    /// `path`); what could not be bound, as config errors (also logged).
    pub(crate) fn apply(
        &self,
        path: &Path,
        wanted: &BTreeMap<String, Arc<K::Config>>,
    ) -> Vec<ConfigError> {
        let mut state = self.lock();
        state
            .running
            .retain(|name, r| wanted.get(name).is_some_and(|c| *c == r.config));
        let daemon = state.daemon.as_ref().and_then(Weak::upgrade);
        let mut errors = Vec::new();
        for (name, cfg) in wanted {
            if state.running.contains_key(name) {
                continue;
            }
            match K::bind(cfg) {
                Ok(bound) => {
                    let mut running = Running::<K> {
                        config: cfg.clone(),
                        bound: Some(bound),
                        stop: None,
                    };
                    if let Some(d) = &daemon {
                        running.serve(d.clone());
                    }
                    state.running.insert(name.clone(), running);
                }
                Err(why) => {
                    let e = ConfigError {
                        path: path.to_owned(),
                        line: Some(K::line(cfg)),
                        site: None,
                        key: Some(format!("{}.{name}.{}", K::TABLE, K::KEY)),
                        message: format!(
                            "cannot listen: {why}; fix it (tokend tries again at the next reload)"
                        ),
                    };
                    tracing::error!("config: {e}");
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// The daemon serves from now on: so do the listeners bound so far,
    /// and those bound at later reloads.
    pub(crate) fn start(&self, daemon: &Arc<Daemon>) {
        let mut state = self.lock();
        state.daemon = Some(Arc::downgrade(daemon));
        for running in state.running.values_mut() {
            running.serve(daemon.clone());
        }
    }

    /// Stops every listener and removes its socket (the daemon is exiting).
    pub(crate) fn stop_all(&self) {
        let mut state = self.lock();
        state.daemon = None;
        state.running.clear();
    }
}
