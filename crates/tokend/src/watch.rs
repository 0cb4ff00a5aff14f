//! Hot reload: the config file is watched (its directory, since editors
//! replace files by renaming) and re-read shortly after it changes, so adding,
//! removing or editing a site needs no restart and no `token reload`.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::daemon::Daemon;

/// Editors write in bursts (truncate, write, rename): wait this long after
/// the last event before reloading.
const SETTLE: Duration = Duration::from_millis(150);

/// Starts watching; the returned watcher must be kept alive.
pub(crate) fn spawn(d: &Arc<Daemon>) -> Option<notify::RecommendedWatcher> {
    let path = d.config_path.clone();
    let dir = path.parent()?.to_owned();
    let name = path.file_name()?.to_owned();
    // The config holds no secrets: its directory is made if missing (so it
    // can be watched before the first config is written), never re-moded.
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(
            "cannot watch {}: {e}; use `token reload` after edits",
            dir.display()
        );
        return None;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event.paths.iter().any(|p| p.file_name() == Some(&name));
            if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                // Full channel: a reload is already due.
                let _ = tx.try_send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the config file: {e}; use `token reload` after edits");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {}: {e}; use `token reload` after edits",
            dir.display()
        );
        return None;
    }
    let d = Arc::downgrade(d);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst settle, then take what arrived meanwhile too.
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            let Some(d) = d.upgrade() else { return };
            let reply = d.reload_async().await;
            tracing::info!(
                sites = reply.sites,
                errors = reply.config_errors.len(),
                "config file changed: reloaded"
            );
        }
    });
    Some(watcher)
}
