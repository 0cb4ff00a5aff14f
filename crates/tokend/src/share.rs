//! The `[share.NAME]` sockets: each is bound as the config says and served
//! by the same accept loop as the daemon's own socket, limited to what a
//! share allows (`handlers::share`). A reload stops a removed or changed
//! share (its socket file goes at once) and binds a new or changed one; a
//! share that cannot be bound is a config error, retried at the next reload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use crate::config::{Config, ConfigError, ShareConfig};
use crate::daemon::Daemon;
use crate::platform::{self, Listener};

/// The shares in service.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set once the daemon serves (before that, bound shares wait).
    daemon: Option<Weak<Daemon>>,
    running: BTreeMap<String, Running>,
}

/// A bound share: its listener until it is served, then the switch that
/// stops its accept loop. Dropping it stops the share and removes its socket.
#[derive(Debug)]
struct Running {
    config: Arc<ShareConfig>,
    listener: Option<Listener>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    fn serve(&mut self, daemon: Arc<Daemon>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        let share = self.config.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            crate::server::run(listener, daemon, Some(share), stopped).await;
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.listener = None;
        let _ = std::fs::remove_file(&self.config.socket);
        tracing::info!(share = %self.config.name, socket = %self.config.socket.display(), "share stopped");
    }
}

impl Shares {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the shares in line with `config`; what could not be bound,
    /// as config errors (also logged).
    pub(crate) fn apply(&self, config: &Config) -> Vec<ConfigError> {
        let mut state = self.lock();
        state
            .running
            .retain(|name, r| config.shares.get(name).is_some_and(|c| *c == r.config));
        let daemon = state.daemon.as_ref().and_then(Weak::upgrade);
        let own = token_proto::default_socket_path();
        let mut errors = Vec::new();
        for (name, share) in &config.shares {
            if state.running.contains_key(name) {
                continue;
            }
            let bound = if share.socket == own {
                Err("is the daemon's own socket: a share needs a socket of its own".to_owned())
            } else {
                platform::bind_share(&share.socket, &share.uids).map_err(|e| e.to_string())
            };
            match bound {
                Ok(listener) => {
                    tracing::info!(
                        share = %name,
                        socket = %share.socket.display(),
                        sites = %share.sites.join(","),
                        uids = ?share.uids,
                        "share listening"
                    );
                    let mut running = Running {
                        config: share.clone(),
                        listener: Some(listener),
                        stop: None,
                    };
                    if let Some(d) = &daemon {
                        running.serve(d.clone());
                    }
                    state.running.insert(name.clone(), running);
                }
                Err(why) => {
                    let e = ConfigError {
                        path: config.path.clone(),
                        line: Some(share.line),
                        site: None,
                        key: Some(format!("share.{name}.socket")),
                        message: format!(
                            "cannot serve the share at {}: {why}; fix the path (tokend tries again at the next reload)",
                            share.socket.display()
                        ),
                    };
                    tracing::error!("config: {e}");
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// The daemon serves from now on: so do the shares bound so far, and
    /// those bound at later reloads.
    pub(crate) fn start(&self, daemon: &Arc<Daemon>) {
        let mut state = self.lock();
        state.daemon = Some(Arc::downgrade(daemon));
        for running in state.running.values_mut() {
            running.serve(daemon.clone());
        }
    }

    /// Stops every share and removes its socket (the daemon is exiting).
    pub(crate) fn stop_all(&self) {
        let mut state = self.lock();
        state.daemon = None;
        state.running.clear();
    }
}
