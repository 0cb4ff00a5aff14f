//! Linux: the Secret Service over one D-Bus connection, kept open for the
//! daemon's life. The `keyring` crate connects (a D-Bus connection and a
//! Diffie-Hellman session) on every call; at a thousand sites that costs
//! memory and milliseconds per call. Entries are the ones the crate
//! writes and reads (attributes `service`, `username`, `target = default`,
//! `application = rust-keyring`; the same label), so a login saved by an
//! earlier tokend is found, and the other way round.
//!
//! Calls block (zbus's blocking API): they run on the blocking pool, as
//! every keyring call does (see `super::keyring`). A connection that
//! failed is dropped and made again at the next call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secret_service::blocking::{Item, SecretService};
use secret_service::{EncryptionType, Error};

/// The connection, made at the first call.
static CONNECTION: Mutex<Option<Arc<SecretService<'static>>>> = Mutex::new(None);

/// What `keyring` 3 labels an entry with.
const KEYRING_VERSION: &str = "3.6.3";

fn failure(e: impl std::error::Error + Send + Sync + 'static) -> keyring::Error {
    keyring::Error::PlatformFailure(Box::new(e))
}

#[derive(Debug, thiserror::Error)]
enum Odd {
    #[error("{0} keyring entries match service `{1}`, user `{2}`; remove all but one (seahorse, or `secret-tool`)")]
    Ambiguous(usize, String, String),
    #[error("the keyring entry of service `{0}`, user `{1}` is not UTF-8 text")]
    NotText(String, String),
}

/// Runs `f` over the connection (made if there is none).
fn with<T>(
    f: impl FnOnce(&SecretService<'static>) -> Result<T, Error>,
) -> Result<T, keyring::Error> {
    let ss = {
        let mut conn = super::lock(&CONNECTION);
        match &*conn {
            Some(ss) => ss.clone(),
            None => {
                let ss = Arc::new(SecretService::connect(EncryptionType::Dh).map_err(failure)?);
                *conn = Some(ss.clone());
                ss
            }
        }
    };
    f(&ss).map_err(|e| {
        if matches!(e, Error::Zbus(_) | Error::ZbusFdo(_) | Error::Unavailable) {
            // Maybe the connection itself: the next call makes a new one.
            let mut conn = super::lock(&CONNECTION);
            if conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &ss)) {
                *conn = None;
            }
        }
        failure(e)
    })
}

fn search<'a>(
    ss: &'a SecretService<'static>,
    service: &str,
    user: &str,
) -> Result<(Vec<Item<'a>>, bool), Error> {
    let found = ss.search_items(HashMap::from([
        ("service", service),
        ("username", user),
        ("target", "default"),
    ]))?;
    let locked = !found.locked.is_empty();
    let mut items = found.unlocked;
    items.extend(found.locked);
    Ok((items, locked))
}

/// The entry's secret, `None` when there is none.
pub(super) fn get(service: &str, user: &str) -> Result<Option<String>, keyring::Error> {
    let bytes = with(|ss| {
        let (items, locked) = search(ss, service, user)?;
        match items.as_slice() {
            [] => Ok(Ok(None)),
            [item] => {
                if locked {
                    ss.unlock_all(&[item])?;
                }
                item.get_secret().map(|s| Ok(Some(s)))
            }
            more => Ok(Err(more.len())),
        }
    })?;
    match bytes {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => String::from_utf8(bytes).map(Some).map_err(|e| {
            let mut bytes = e.into_bytes();
            token_proto::wipe(&mut bytes);
            failure(Odd::NotText(service.to_owned(), user.to_owned()))
        }),
        Err(n) => Err(failure(Odd::Ambiguous(
            n,
            service.to_owned(),
            user.to_owned(),
        ))),
    }
}

/// Sets the entry's secret, making the entry if there is none.
pub(super) fn set(service: &str, user: &str, text: &str) -> Result<(), keyring::Error> {
    let ambiguous = with(|ss| {
        let (items, locked) = search(ss, service, user)?;
        match items.as_slice() {
            [item] => {
                if locked {
                    ss.unlock_all(&[item])?;
                }
                item.set_secret(text.as_bytes(), "text/plain")
                    .map(|()| None)
            }
            [] => {
                let collection = ss.get_default_collection()?;
                if collection.is_locked()? {
                    collection.unlock()?;
                }
                let label = format!("{user}@{service}:default (keyring v{KEYRING_VERSION})");
                let attributes = HashMap::from([
                    ("service", service),
                    ("username", user),
                    ("target", "default"),
                    ("application", "rust-keyring"),
                ]);
                collection
                    .create_item(&label, attributes, text.as_bytes(), true, "text/plain")
                    .map(|_| None)
            }
            more => Ok(Some(more.len())),
        }
    })?;
    match ambiguous {
        None => Ok(()),
        Some(n) => Err(failure(Odd::Ambiguous(
            n,
            service.to_owned(),
            user.to_owned(),
        ))),
    }
}

/// Deletes the entry (every match), if there is one.
pub(super) fn remove(service: &str, user: &str) -> Result<(), keyring::Error> {
    with(|ss| {
        let (items, locked) = search(ss, service, user)?;
        if locked {
            let all: Vec<&Item> = items.iter().collect();
            ss.unlock_all(&all)?;
        }
        items.iter().try_for_each(Item::delete)
    })
}
