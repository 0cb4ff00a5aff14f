//! Hot reload: the config file is watched (its directory, since editors
//! replace files by renaming) and re-read shortly after it changes, so adding,
//! removing or editing a site needs no restart and no `token reload`.
//!
//! The watcher starts after the daemon says it is ready (setting it up is
//! not what the first `get` waits for). An edit that lands between the
//! reading of the file and the watcher's start is caught all the same: the
//! file's [`Seen`] stamp, taken before it was read, is compared with the
//! file once the watcher is in place, and a difference reloads.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};

use crate::clock::Clock;
use crate::daemon::Daemon;

/// Editors write in bursts (truncate, write, rename): wait this long after
/// the last event before reloading.
const SETTLE: Duration = Duration::from_millis(150);

/// File times tick coarsely (a few ms on Linux, 2 s on FAT): a file changed
/// this close to its reading may have changed unseen, in the same tick.
const RACY: Duration = Duration::from_secs(2);

/// What tells one version of the config file from another without reading
/// it: its length, modification time and (on Unix) inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    /// The file's stamp now; `None` when there is none (no file).
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode,
        })
    }
}

/// The config file as it was just before the daemon read it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    stamp: Option<Stamp>,
    /// When, in Unix seconds.
    at: f64,
}

impl Seen {
    /// Take this before reading the file.
    pub(crate) fn now(path: &Path) -> Seen {
        Seen {
            stamp: Stamp::of(path),
            at: Clock::System.now(),
        }
    }

    /// Whether the file may be another version than the one read, now
    /// that it stamps as `now`: another stamp, or one from so close to the
    /// reading that a change in the same tick of the clock would not show.
    fn changed(&self, now: Option<Stamp>) -> bool {
        if self.stamp != now {
            return true;
        }
        match self.stamp {
            None => false,
            Some(Stamp { modified: None, .. }) => true,
            Some(Stamp {
                modified: Some(m), ..
            }) => {
                let written = m.duration_since(UNIX_EPOCH).unwrap_or_default();
                self.at - written.as_secs_f64() < RACY.as_secs_f64()
            }
        }
    }
}

/// Starts watching for as long as the daemon runs, and reloads at once if
/// the file changed since it was `seen` (read).
pub(crate) fn spawn(d: &Arc<Daemon>, seen: Seen) {
    let path = d.config_path.clone();
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let (dir, name) = (dir.to_owned(), name.to_owned());
    // The config holds no secrets: its directory is made if missing (so it
    // can be watched before the first config is written), never re-moded.
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(
            "cannot watch {}: {e}; use `token reload` after edits",
            dir.display()
        );
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let kick = tx.clone();
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
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {}: {e}; use `token reload` after edits",
            dir.display()
        );
        return;
    }
    // From here on every change is an event; one before it shows here.
    // A file that may have changed is read again: when it holds the text
    // the daemon runs (the common case, a config written just before the
    // daemon started), there is nothing to reload.
    if seen.changed(Stamp::of(&path)) && !holds_the_text_read(d, &path) {
        let _ = kick.try_send(());
    }
    drop(kick);
    let d = Arc::downgrade(d);
    tokio::spawn(async move {
        // The watcher lives as long as this task: the daemon's life.
        let _watcher = watcher;
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
}

/// Whether the file at `path` holds the text of the config `d` runs.
fn holds_the_text_read(d: &Daemon, path: &Path) -> bool {
    let Some(hash) = d.config().text_hash else {
        return false;
    };
    std::fs::read_to_string(path).is_ok_and(|text| crate::config::text_hash(&text) == hash)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::{Seen, Stamp, RACY};
    use crate::clock::Clock;
    use crate::daemon::Daemon;
    use crate::kit::{self, Provider};
    use crate::site::Deps;

    /// `path` as if last written `ago`.
    fn written_ago(path: &std::path::Path, ago: Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let now = Duration::from_secs_f64(Clock::System.now());
        file.set_modified(UNIX_EPOCH + now - ago).unwrap();
    }

    #[test]
    fn a_file_is_read_again_when_it_changed_or_changed_too_recently_to_tell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(
            !Seen::now(&path).changed(Stamp::of(&path)),
            "no file, still none"
        );

        std::fs::write(&path, kit::site("a")).unwrap();
        written_ago(&path, RACY * 2);
        let seen = Seen::now(&path);
        assert!(!seen.changed(Stamp::of(&path)), "untouched since");

        std::fs::write(&path, kit::site("a") + &kit::site("b")).unwrap();
        written_ago(&path, RACY * 2);
        assert!(seen.changed(Stamp::of(&path)), "another length");

        // The same length, written again in what may be the same tick of
        // the file clock as the reading: it cannot be told apart, so read.
        let seen = Seen::now(&path);
        std::fs::write(&path, kit::site("a") + &kit::site("c")).unwrap();
        assert!(seen.changed(Stamp::of(&path)));
        std::fs::remove_file(&path).unwrap();
        assert!(seen.changed(Stamp::of(&path)), "gone");
    }

    /// A config written just before the daemon read it (every start by a
    /// script that writes it first) may have changed unseen; read again, it
    /// is the same text, and nothing is reloaded. An edit of the same
    /// length is told apart.
    #[tokio::test]
    async fn a_file_that_may_have_changed_is_reloaded_only_when_its_text_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, kit::site("a")).unwrap();
        let seen = Seen::now(&path);
        let config = crate::config::Config::load(&path);
        let d = Daemon::with_deps(
            path.clone(),
            config,
            Deps::scripted(
                Provider::new(3600, Duration::ZERO).http(),
                kit::logged_in(&crate::config::Config::load(&path), &["a"]),
            ),
        );
        assert!(seen.changed(Stamp::of(&path)), "too recent to tell");
        assert!(super::holds_the_text_read(&d, &path));
        std::fs::write(&path, kit::site("b")).unwrap();
        assert!(!super::holds_the_text_read(&d, &path));
    }

    /// The daemon reads its config, and the file is edited before the
    /// watcher is in place (the daemon was already ready): the edit is
    /// served all the same.
    #[tokio::test]
    async fn an_edit_before_the_watcher_starts_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, kit::site("a")).unwrap();
        written_ago(&path, RACY * 2);
        let seen = Seen::now(&path);
        let config = crate::config::Config::load(&path);
        let store = kit::logged_in(&config, &["a"]);
        let deps = Deps::scripted(Provider::new(3600, Duration::ZERO).http(), store);
        let d = Arc::new(Daemon::with_deps(path.clone(), config, deps));
        assert!(d.site("b").is_err());

        std::fs::write(&path, kit::site("a") + &kit::site("b")).unwrap();
        written_ago(&path, RACY * 2);
        let watching = tokio::task::spawn_blocking({
            let d = d.clone();
            move || super::spawn(&d, seen)
        });
        watching.await.unwrap();
        // A deadline for a reload that is due at once, not a timing check.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while d.site("b").is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the edit was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(d.site("a").is_ok());
    }
}
