//! Discovery results (RFC 8414 / OIDC), cached per issuer. Each issuer has
//! its own cell, so a slow issuer delays only the sites that use it; the
//! map's lock is held only to find the cell, never across the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokend_oauth::{Http, Provider};
use tokio::sync::OnceCell;

#[derive(Debug, Default)]
pub(crate) struct Discovery {
    cells: Mutex<HashMap<String, Arc<OnceCell<Arc<Provider>>>>>,
}

impl Discovery {
    /// The issuer's metadata: cached, or fetched once by the first caller
    /// while later callers for the same issuer wait for it. A failure is
    /// not cached.
    pub(crate) async fn provider(
        &self,
        http: &Http,
        issuer: &str,
    ) -> Result<Arc<Provider>, tokend_oauth::Error> {
        let cell = self.lock().entry(issuer.to_owned()).or_default().clone();
        cell.get_or_try_init(|| async { tokend_oauth::discover(http, issuer).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// Drops what is known about `issuer` (its site's config changed); gives
    /// the key set URL it had, for the key cache to forget too.
    pub(crate) fn forget(&self, issuer: &str) -> Option<url::Url> {
        let cell = self.lock().remove(issuer)?;
        cell.get().and_then(|p| p.jwks_url.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Arc<Provider>>>>> {
        self.cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
