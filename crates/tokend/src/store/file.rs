//! The file store: one JSON file, 0600 in a 0700 directory, replaced
//! atomically (temp file, fsync, rename, fsync the directory) so a crash at
//! any moment leaves either the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use tokio::sync::Mutex;

use super::{Record, StoreError};

/// The records by site. Boxed: a tree node holds eleven entries, most of
/// them unused, and a thousand sites' records stay in memory.
type Records = BTreeMap<String, Box<Record>>;

#[derive(Debug)]
pub(crate) struct FileStore {
    path: PathBuf,
    /// The file's content once read; writes go through this lock so two
    /// saves never interleave.
    cache: Mutex<Option<Records>>,
}

impl FileStore {
    pub(crate) fn new(path: PathBuf) -> FileStore {
        FileStore {
            path,
            cache: Mutex::new(None),
        }
    }

    pub(crate) async fn load(&self, site: &str) -> Result<Option<Record>, StoreError> {
        let mut cache = self.cache.lock().await;
        Ok(self
            .read(&mut cache)
            .await?
            .get(site)
            .map(|r| (**r).clone()))
    }

    /// Changed in place, not on a copy (a thousand sites' records copied at
    /// every save is a lot of memory churn): a write that fails puts the
    /// record that was there back.
    pub(crate) async fn save(&self, site: &str, record: &Record) -> Result<(), StoreError> {
        let mut cache = self.cache.lock().await;
        let map = self.read(&mut cache).await?;
        let before = map.insert(site.to_owned(), Box::new(record.clone()));
        self.write_or_undo(map, site, before).await
    }

    pub(crate) async fn delete(&self, site: &str) -> Result<(), StoreError> {
        let mut cache = self.cache.lock().await;
        let map = self.read(&mut cache).await?;
        match map.remove(site) {
            Some(before) => self.write_or_undo(map, site, Some(before)).await,
            None => Ok(()),
        }
    }

    /// Writes `map`; if that fails, `site` gets its `before` record back,
    /// so the cache stays what the file holds.
    async fn write_or_undo(
        &self,
        map: &mut Records,
        site: &str,
        before: Option<Box<Record>>,
    ) -> Result<(), StoreError> {
        let written = self.write(map).await;
        if written.is_err() {
            match before {
                Some(record) => map.insert(site.to_owned(), record),
                None => map.remove(site),
            };
        }
        written
    }

    async fn read<'a>(
        &self,
        cache: &'a mut Option<Records>,
    ) -> Result<&'a mut Records, StoreError> {
        if cache.is_none() {
            let map = match tokio::fs::read(&self.path)
                .await
                .map(zeroize::Zeroizing::new)
            {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(source) => {
                    return Err(StoreError::File {
                        action: "read",
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            *cache = Some(map);
        }
        Ok(cache.get_or_insert_with(BTreeMap::new))
    }

    async fn write(&self, map: &Records) -> Result<(), StoreError> {
        // One buffer, sized up front past the allocator's mmap threshold:
        // a text grown by doubling leaves its smaller copies (refresh
        // tokens in them) in freed heap, and holes among the sites'
        // long-lived memory (about 1 KiB a site at 1000 sites).
        let mut bytes = Vec::with_capacity((map.len() * 1024).max(TEXT_AT_LEAST));
        serde_json::to_writer_pretty(&mut bytes, map).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        // The file's text holds every refresh token: wiped once written.
        let bytes = zeroize::Zeroizing::new(bytes);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StoreError::File {
                action: "write",
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?
    }
}

/// The smallest buffer the file's text is written into: above the
/// daemon's mmap threshold (`platform::memory`), so it is mapped and
/// unmapped whole, never carved from the heap.
const TEXT_AT_LEAST: usize = 128 * 1024;

pub(super) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |action: &'static str, p: &std::path::Path| {
        let p = p.to_owned();
        move |source| StoreError::File {
            action,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    crate::platform::create_private_dir(dir).map_err(err("create", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("tokens"),
        std::process::id()
    ));
    // A temp file a crash left behind (or anything planted at its name,
    // a symlink included) goes first: the temp file is always a new one.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err("remove", &tmp)(e)),
        _ => {}
    }
    let mut file = crate::platform::create_private_file(&tmp).map_err(err("create", &tmp))?;
    file.write_all(bytes).map_err(err("write", &tmp))?;
    file.sync_all().map_err(err("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err("replace", path))?;
    crate::platform::sync_dir(dir).map_err(err("sync", dir))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(rt: &str) -> Record {
        Record::refresh_only("i".into(), rt, vec![], 1)
    }

    #[tokio::test]
    async fn saves_survive_a_new_store_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("tokens.json");
        let store = FileStore::new(path.clone());
        store.save("a", &record("rt-a")).await.unwrap();
        store.save("b", &record("rt-b")).await.unwrap();
        store.delete("b").await.unwrap();

        let again = FileStore::new(path.clone());
        let a = again.load("a").await.unwrap().unwrap();
        assert_eq!(a.refresh_token.unwrap().expose(), "rt-a");
        assert!(again.load("b").await.unwrap().is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[tokio::test]
    async fn a_write_that_fails_leaves_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let path = state.join("tokens.json");
        let store = FileStore::new(path.clone());
        store.save("a", &record("rt-a")).await.unwrap();
        // The directory turns into a file: every write now fails.
        std::fs::rename(&state, dir.path().join("moved")).unwrap();
        std::fs::write(&state, "").unwrap();
        store.save("a", &record("rt-new")).await.unwrap_err();
        store.save("b", &record("rt-b")).await.unwrap_err();
        store.delete("a").await.unwrap_err();
        let a = store.load("a").await.unwrap().unwrap();
        assert_eq!(a.refresh_token.unwrap().expose(), "rt-a");
        assert!(store.load("b").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = FileStore::new(path).load("a").await.unwrap_err();
        assert!(err.to_string().contains("not a valid token store"));
    }
}
