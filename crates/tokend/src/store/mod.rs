//! Where logins persist: the OS keyring (default), a 0600 file, or memory.
//! The daemon keeps every secret it uses in memory and comes here only to
//! load a site once and to persist a change, because keyring reads cost
//! milliseconds. A keyring call has a deadline ([`DEADLINE`]): a keyring
//! waiting to be unlocked, or a Secret Service that hangs, costs a site one
//! store error, never a stalled `token status`.

mod file;
mod keyring;
mod migrate;
pub(crate) mod prune;
#[cfg(target_os = "linux")]
mod secret_service;

pub(crate) use migrate::from_previous;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokend_oauth::{AccessToken, IdToken, RefreshToken, StoredDpopKey};

use crate::config::StoreKind;

/// What is persisted for one site.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    /// `SiteConfig::identity()` when saved: a record for another provider,
    /// client or scope set is ignored on load.
    pub identity: String,
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// The access token in hand, so a daemon that starts again serves it
    /// without a provider call while it is valid (for sites without a
    /// refresh token it is the login itself).
    #[serde(default)]
    pub access_token: Option<AccessToken>,
    /// Its `token_type` (`Bearer` when absent).
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub saved_at: u64,
    /// `dpop = true` sites: the DPoP private key their tokens (the refresh
    /// token too) are bound to. Never leaves the daemon otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<StoredDpopKey>,
    /// The last validated OIDC ID token, and its `exp` (Unix s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<IdToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_expires_at: Option<u64>,
}

#[cfg(test)]
impl Record {
    /// A login as a restarted daemon finds it: a refresh token, no access token.
    pub(crate) fn refresh_only(
        identity: String,
        refresh_token: &str,
        scopes: Vec<String>,
        saved_at: u64,
    ) -> Record {
        Record {
            identity,
            refresh_token: Some(RefreshToken::new(refresh_token.into())),
            access_token: None,
            token_type: None,
            expires_at: None,
            scopes,
            saved_at,
            dpop_key: None,
            id_token: None,
            id_token_expires_at: None,
        }
    }
}

/// How long the daemon waits for one keyring call. Past it the call is
/// reported as failed (the site keeps what it holds in memory; the site's
/// next message loads again, its next change saves again) and left to
/// finish on its own thread.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the keyring failed: {source}")]
    Keyring {
        #[source]
        source: ::keyring::Error,
    },
    /// The entry is there but is not a record tokend wrote.
    #[error("the keyring failed: the entry is not a tokend record: {source}")]
    NotARecord {
        #[source]
        source: serde_json::Error,
    },
    /// A split record whose header or parts do not hold together.
    #[error("the keyring failed: {0}")]
    TornRecord(String),
    #[error("the keyring failed: {source}")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    /// A record that would need more keyring entries than a record may have.
    #[error("the keyring failed: this login ({bytes} bytes) would take {parts} keyring entries, more than the {max} a login may take; set store = \"file\" in [daemon] for this machine")]
    TooLarge {
        bytes: usize,
        parts: usize,
        max: usize,
    },
    /// The blocking thread of a keyring call panicked or was cancelled.
    #[error("the keyring failed: keyring task failed: {source}")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("the keyring did not answer within {} s (is it locked, waiting for a password?)", .0.as_secs())]
    TimedOut(Duration),
    #[error("cannot {action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid token store ({message}); move it away to start afresh")]
    Corrupt { path: PathBuf, message: String },
    #[error("TOKEND_STORE=`{0}` is not one of keyring, file, memory")]
    UnknownKind(String),
}

/// The chosen backend.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Keyring(keyring::KeyringStore),
    File(Arc<file::FileStore>),
    Memory(Arc<Mutex<HashMap<String, Record>>>),
    /// A keyring for tests of the deadline: a memory store that, once
    /// stuck, never answers.
    #[cfg(test)]
    Flaky(Arc<Flaky>),
}

#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Flaky {
    pub records: Mutex<HashMap<String, Record>>,
    pub stuck: std::sync::atomic::AtomicBool,
    /// How long each call takes to answer (a slow keyring).
    pub delay: Mutex<Duration>,
}

#[cfg(test)]
impl Flaky {
    /// Pending forever while stuck.
    async fn answer<T>(&self, f: impl FnOnce(&mut HashMap<String, Record>) -> T) -> T {
        let delay = *lock(&self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.stuck.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        f(&mut lock(&self.records))
    }
}

/// Something a caller should hear once: the store fallback. Once per
/// change of store, not per daemon start: a marker file in the state
/// directory remembers that it was told, and a start with the store asked
/// for (no fallback) removes it.
#[derive(Debug)]
pub(crate) struct Notice {
    text: String,
    told: std::sync::atomic::AtomicBool,
    /// Present while the fallback has been told (its content: the text).
    marker: PathBuf,
}

/// The marker of a told [`Notice`], in the state directory.
fn notice_marker(state_dir: &Path) -> PathBuf {
    state_dir.join("store-fallback-told")
}

impl Notice {
    /// A notice already told if an earlier daemon told this same text.
    pub(crate) fn remembered(text: String, state_dir: &Path) -> Notice {
        let marker = notice_marker(state_dir);
        let told = std::fs::read_to_string(&marker).is_ok_and(|t| t == text);
        Notice {
            text,
            told: std::sync::atomic::AtomicBool::new(told),
            marker,
        }
    }

    /// The text, the first time only.
    pub(crate) fn take(&self) -> Option<String> {
        if self.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        // Best effort: at worst the next daemon tells it again. Written off
        // the runtime: this is a caller's `get`.
        let (marker, text) = (self.marker.clone(), self.text.clone());
        let write = move || {
            if let Err(e) = std::fs::write(&marker, &text) {
                tracing::debug!("cannot write {}: {e}", marker.display());
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
        Some(self.text.clone())
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// The store in use, and why it is not the one asked for (if it is not).
#[derive(Debug)]
pub(crate) struct Chosen {
    pub store: Store,
    /// Set when no keyring was reachable and logins go to the file store.
    pub fallback: Option<String>,
}

impl Store {
    /// `TOKEND_STORE`, else the config's `[daemon] store`, else the keyring,
    /// or the 0600 file store when no keyring is reachable (headless Linux,
    /// containers, WSL, CI) and nobody asked for the keyring by name. An
    /// explicit `keyring` keeps failing loudly instead.
    pub(crate) async fn choose(
        configured: Option<StoreKind>,
        state_dir: &Path,
    ) -> Result<Chosen, StoreError> {
        let from_env = std::env::var("TOKEND_STORE").ok().filter(|s| !s.is_empty());
        let explicit = match from_env {
            Some(s) => Some(StoreKind::parse(&s).ok_or(StoreError::UnknownKind(s))?),
            None => configured,
        };
        let file = || {
            Store::File(Arc::new(file::FileStore::new(
                state_dir.join("tokens.json"),
            )))
        };
        let keyring = || Store::Keyring(keyring::KeyringStore::of_state_dir(state_dir));
        let chosen = |store| {
            // The store asked for: a later fallback is news again.
            let _ = std::fs::remove_file(notice_marker(state_dir));
            Chosen {
                store,
                fallback: None,
            }
        };
        Ok(match explicit {
            Some(StoreKind::Keyring) => chosen(keyring()),
            Some(StoreKind::File) => chosen(file()),
            Some(StoreKind::Memory) => chosen(Store::Memory(Arc::default())),
            None => match keyring::reachable().await {
                Ok(()) => chosen(keyring()),
                Err(why) => Chosen {
                    store: file(),
                    fallback: Some(format!(
                        "no keyring is reachable ({why}), so logins are kept in {} (readable only by you); \
                         set store = \"file\" in [daemon] to make that the choice, or start a Secret Service",
                        state_dir.join("tokens.json").display()
                    )),
                },
            },
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Keyring(_) => "keyring",
            Store::File(_) => "file",
            Store::Memory(_) => "memory",
            #[cfg(test)]
            Store::Flaky(_) => "keyring",
        }
    }

    pub(crate) async fn load(&self, site: &str) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Keyring(k) => in_time(k.load(site)).await,
            Store::File(f) => f.load(site).await,
            Store::Memory(m) => Ok(lock(m).get(site).cloned()),
            #[cfg(test)]
            Store::Flaky(f) => in_time(f.answer(|m| Ok(m.get(site).cloned()))).await,
        }
    }

    /// Durable when it returns: the file is fsynced and renamed, the keyring
    /// has answered.
    pub(crate) async fn save(&self, site: &str, record: &Record) -> Result<(), StoreError> {
        match self {
            Store::Keyring(k) => in_time(k.save(site, record)).await,
            Store::File(f) => f.save(site, record).await,
            Store::Memory(m) => {
                lock(m).insert(site.to_owned(), record.clone());
                Ok(())
            }
            #[cfg(test)]
            Store::Flaky(f) => {
                in_time(f.answer(|m| {
                    m.insert(site.to_owned(), record.clone());
                    Ok(())
                }))
                .await
            }
        }
    }

    pub(crate) async fn delete(&self, site: &str) -> Result<(), StoreError> {
        match self {
            Store::Keyring(k) => in_time(k.delete(site)).await,
            Store::File(f) => f.delete(site).await,
            Store::Memory(m) => {
                lock(m).remove(site);
                Ok(())
            }
            #[cfg(test)]
            Store::Flaky(f) => {
                in_time(f.answer(|m| {
                    m.remove(site);
                    Ok(())
                }))
                .await
            }
        }
    }
}

/// A keyring call, or [`StoreError::TimedOut`] past [`DEADLINE`]. The file
/// store gets none: its writes are a local disk's, and one cut off between
/// its cache and its rename would leave the two apart.
async fn in_time<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap_or(Err(StoreError::TimedOut(DEADLINE)))
}

/// A poisoned lock only means another thread panicked mid-update of a plain
/// map; the map itself is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
