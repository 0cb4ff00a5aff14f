//! The file store: one JSON file, 0600 in a 0700 directory, replaced
//! atomically (temp file, fsync, rename, fsync the directory) so a crash at
//! any moment leaves either the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use tokio::sync::Mutex;

use super::{Record, StoreError};

/// The records by site, each as its compact JSON text (one allocation a
/// site, wiped when dropped): a thousand sites' records stay in memory, and
/// a record's fields and strings were eight allocations and about 470
/// bytes a site. A write puts the texts together; a load parses one.
type Records = BTreeMap<String, Text>;

type Text = zeroize::Zeroizing<Box<str>>;

/// `record` as compact JSON, in a buffer of its exact size (a text grown
/// by doubling would leave copies of its tokens in freed memory).
fn text(record: &Record) -> Result<Text, serde_json::Error> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, record)?;
    let mut bytes = Vec::with_capacity(count.0);
    serde_json::to_writer(&mut bytes, record)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let mut bytes = e.into_bytes();
        token_proto::wipe(&mut bytes);
        serde::ser::Error::custom("a record is not UTF-8")
    })?;
    Ok(zeroize::Zeroizing::new(text.into_boxed_str()))
}

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
        let Some(text) = self.read(&mut cache).await?.get(site) else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| self.corrupt(e))
    }

    fn corrupt(&self, e: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Changed in place, not on a copy (a thousand sites' records copied at
    /// every save is a lot of memory churn): a write that fails puts the
    /// record that was there back.
    pub(crate) async fn save(&self, site: &str, record: &Record) -> Result<(), StoreError> {
        let mut cache = self.cache.lock().await;
        let map = self.read(&mut cache).await?;
        let text = text(record).map_err(|e| self.corrupt(e))?;
        let before = map.insert(site.to_owned(), text);
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
        before: Option<Text>,
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
                Ok(bytes) => {
                    let records: BTreeMap<String, Record> =
                        serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e))?;
                    let mut map = BTreeMap::new();
                    for (site, record) in records {
                        map.insert(site, text(&record).map_err(|e| self.corrupt(e))?);
                    }
                    map
                }
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
        let size: usize = map
            .iter()
            .map(|(site, text)| site.len() + text.len() + 16)
            .sum();
        let mut bytes = Vec::with_capacity(size.max(TEXT_AT_LEAST));
        // `{ "SITE": RECORD, ... }`, a site a line.
        bytes.push(b'{');
        for (i, (site, text)) in map.iter().enumerate() {
            bytes.extend_from_slice(if i == 0 { &b"\n  "[..] } else { b",\n  " });
            serde_json::to_writer(&mut bytes, site).map_err(|e| self.corrupt(e))?;
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(if map.is_empty() { &b"}"[..] } else { b"\n}" });
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

    /// The file is one JSON object, a site a line; a file an earlier
    /// tokend wrote (pretty-printed records) loads as well.
    #[tokio::test]
    async fn the_file_is_json_a_site_a_line_and_earlier_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("tokens.json");
        let store = FileStore::new(path.clone());
        store.save("b", &record("rt-b")).await.unwrap();
        store.save("a", &record("rt-\"a\"")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("  \"a\": {"), "{text}");
        let parsed: BTreeMap<String, Record> = serde_json::from_str(&text).unwrap();
        let a = parsed["a"].refresh_token.as_ref().unwrap().expose();
        assert_eq!(a, "rt-\"a\"");

        let pretty = serde_json::to_string_pretty(&parsed).unwrap();
        std::fs::write(&path, pretty).unwrap();
        let again = FileStore::new(path);
        let b = again.load("b").await.unwrap().unwrap();
        assert_eq!(b.refresh_token.unwrap().expose(), "rt-b");
        again.delete("a").await.unwrap();
        assert!(again.load("a").await.unwrap().is_none());
        assert!(again.load("b").await.unwrap().is_some());
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
