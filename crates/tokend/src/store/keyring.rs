//! The OS keyring (Secret Service on Linux, Keychain on macOS, Credential
//! Manager on Windows) through the `keyring` crate, one entry per site
//! (service `tokend`, user = site name, secret = the record as JSON).
//! The keyring API blocks, so every call runs on the blocking pool.

use super::{Record, StoreError};

const SERVICE: &str = "tokend";

#[derive(Clone, Debug, Default)]
pub struct KeyringStore;

impl KeyringStore {
    pub fn new() -> KeyringStore {
        KeyringStore
    }

    pub async fn load(&self, site: &str) -> Result<Option<Record>, StoreError> {
        let site = site.to_owned();
        let text = blocking(move || {
            let entry = keyring::Entry::new(SERVICE, &site)?;
            match entry.get_password() {
                Ok(s) => Ok(Some(s)),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        let Some(text) = text else { return Ok(None) };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Keyring(format!("the entry is not a tokend record: {e}")))
    }

    pub async fn save(&self, site: &str, record: &Record) -> Result<(), StoreError> {
        let site = site.to_owned();
        let text = serde_json::to_string(record).map_err(|e| StoreError::Keyring(e.to_string()))?;
        blocking(move || keyring::Entry::new(SERVICE, &site)?.set_password(&text)).await
    }

    pub async fn delete(&self, site: &str) -> Result<(), StoreError> {
        let site = site.to_owned();
        blocking(
            move || match keyring::Entry::new(SERVICE, &site)?.delete_credential() {
                Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(e),
            },
        )
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, keyring::Error> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Keyring(format!("keyring task failed: {e}")))?
        .map_err(|e| StoreError::Keyring(e.to_string()))
}
