//! The `[share.NAME]` sockets: each is bound as the config says and served
//! by the same accept loop as the daemon's own socket, limited to what a
//! share allows (`handlers::share`); kept in line with the config by
//! [`crate::listeners`].

use std::sync::Arc;

use crate::config::ShareConfig;
use crate::daemon::Daemon;
use crate::listeners::{Kind, Listeners};
use crate::platform::{self, Listener};

/// The shares in service.
pub(crate) type Shares = Listeners<Share>;

#[derive(Debug)]
pub(crate) struct Share;

impl Kind for Share {
    type Config = ShareConfig;
    type Bound = Listener;
    const TABLE: &'static str = "share";
    const KEY: &'static str = "socket";

    fn line(cfg: &ShareConfig) -> usize {
        cfg.line
    }

    fn bind(share: &ShareConfig) -> Result<Listener, String> {
        if share.socket == token_proto::default_socket_path() {
            return Err(
                "it is the daemon's own socket: a share needs a socket of its own".to_owned(),
            );
        }
        let l = platform::bind_share(&share.socket, &share.uids).map_err(|e| e.to_string())?;
        tracing::info!(
            share = %share.name,
            socket = %share.socket.display(),
            sites = %share.sites.join(","),
            uids = ?share.uids,
            "share listening"
        );
        Ok(l)
    }

    fn serve(
        listener: Listener,
        share: Arc<ShareConfig>,
        daemon: Arc<Daemon>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        tokio::spawn(async move {
            let stopped = async {
                let _ = stop.await;
            };
            crate::server::run(listener, daemon, Some(share), stopped).await;
        });
    }

    fn remove(share: &ShareConfig) {
        let _ = std::fs::remove_file(&share.socket);
        tracing::info!(share = %share.name, socket = %share.socket.display(), "share stopped");
    }
}
