//! A store change: the file store to the keyring, the fallback file to a
//! keyring that appeared since, or back. The daemon notes in the state
//! directory which store it used; on the first start with another one it
//! moves the logins of the configured sites over (saved in the new store,
//! then removed from the old), so changing the store asks for no login.

use std::path::Path;
use std::sync::Arc;

use super::{file::FileStore, keyring::KeyringStore, Store};
use crate::config::StoreKind;

/// The state directory's note of the store the last daemon used.
const NOTE: &str = "store";

/// Moves the logins of `sites` from the store the last start used into
/// `store`; what happened, for the log and `status`, when anything did.
/// A login that cannot be moved stays where it is and is named: the next
/// start tries again.
pub(crate) async fn from_previous(
    state_dir: &Path,
    store: &Store,
    sites: impl Iterator<Item = &str>,
) -> Option<String> {
    let now = match store {
        Store::Keyring(_) => StoreKind::Keyring,
        Store::File(_) => StoreKind::File,
        // Nothing persists there: the logins stay where they are.
        Store::Memory(_) => return None,
        #[cfg(test)]
        Store::Flaky(_) => return None,
    };
    let file = state_dir.join("tokens.json");
    let noted = std::fs::read_to_string(state_dir.join(NOTE)).ok();
    let noted = noted.as_deref().map(str::trim).and_then(StoreKind::parse);
    let before = match noted {
        Some(kind) => kind,
        // Before the note existed: a file store beside a keyring daemon is
        // the fallback of a start without a keyring.
        None if now == StoreKind::Keyring && file.is_file() => StoreKind::File,
        None => now,
    };
    let old = if before == now {
        None
    } else {
        match before {
            StoreKind::Keyring => Some(Store::Keyring(KeyringStore::of_state_dir(state_dir))),
            StoreKind::File => Some(Store::File(Arc::new(FileStore::new(file)))),
            StoreKind::Memory => None,
        }
    };
    let Some(old) = old else {
        // Noted already: nothing to write (a start of the same store).
        if noted != Some(now) {
            note(state_dir, now);
        }
        return None;
    };
    let (mut moved, mut kept, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for site in sites {
        let record = match old.load(site).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                failed.push(format!("{site} ({e})"));
                continue;
            }
        };
        match store.load(site).await {
            // A login made in the new store already is the newer one.
            Ok(Some(_)) => kept.push(site.to_owned()),
            Ok(None) => match store.save(site, &record).await {
                Ok(()) => {
                    if let Err(e) = old.delete(site).await {
                        tracing::warn!(
                            site,
                            "moved, but not removed from the {} store: {e}",
                            old.name()
                        );
                    }
                    moved.push(site.to_owned());
                }
                Err(e) => failed.push(format!("{site} ({e})")),
            },
            Err(e) => failed.push(format!("{site} ({e})")),
        }
    }
    let (from, to) = (old.name(), store.name());
    let mut said = Vec::new();
    if !moved.is_empty() {
        said.push(format!(
            "the store changed from {from} to {to}: moved the logins of {} to the {to} store",
            moved.join(", ")
        ));
    }
    if !kept.is_empty() {
        said.push(format!(
            "the logins of {} in the {from} store were left there: the {to} store has newer ones",
            kept.join(", ")
        ));
    }
    if failed.is_empty() {
        note(state_dir, now);
    } else {
        said.push(format!(
            "could not move the logins of {} from the {from} store to the {to} store; \
             they stay in the {from} store: fix that, then `token stop` (the next start tries again)",
            failed.join(", ")
        ));
    }
    (!said.is_empty()).then(|| said.join("; "))
}

/// Notes the store in use, for the next start.
fn note(state_dir: &Path, kind: StoreKind) {
    // Private like everything in the state directory.
    // Replaced whole (a new private file renamed over the old note): the
    // note of the previous store is there to be overwritten.
    if let Err(e) = super::file::write_atomically(&state_dir.join(NOTE), kind.name().as_bytes()) {
        tracing::warn!(
            "cannot note the store in use in {}: {e}",
            state_dir.display()
        );
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The note is replaced when the store changes (it was created once and
    /// never overwritten: every later start warned and tried to move again).
    #[test]
    fn the_note_follows_the_store_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let read = || std::fs::read_to_string(dir.path().join(NOTE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        note(dir.path(), StoreKind::File);
        assert_eq!(read(), "file");
        note(dir.path(), StoreKind::Keyring);
        assert_eq!(read(), "keyring");
        let modes = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(modes, 1, "no temp file left behind");
    }
}
