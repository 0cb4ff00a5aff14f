//! What a site's actor (and a login it runs) is given: everything it
//! talks to, one set for the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokend_oauth::Http;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::discovery::Discovery;
use crate::store::Store;

/// What a site's actor is given at spawn: everything it talks to.
#[derive(Clone, Debug)]
pub(crate) struct Deps {
    pub store: Store,
    pub http: Http,
    pub discovery: Arc<Discovery>,
    pub clock: Clock,
    pub login_timeout: LoginTimeout,
    /// `login_cooldown`: after a login that went unanswered, how long
    /// non-interactive callers start none (same live cell as the timeout).
    pub login_cooldown: LoginTimeout,
    /// Store loads at once across sites (keyring reads cost milliseconds).
    pub load_slots: Arc<Semaphore>,
    /// The store fallback, told to the first caller (and always in `status`).
    pub store_notice: Option<Arc<crate::store::Notice>>,
    /// The providers' signing keys, for ID tokens: one cache for the daemon.
    pub keys: Arc<tokend_oauth::KeyCache>,
    /// The daemon's sites by name (a token exchange's `subject_site` is
    /// asked through it): the registry's own directory, shared.
    pub sites: crate::sites::Directory,
}

/// How long a login waits for the user: the daemon's one setting, which a
/// config reload may change while sites hold it.
#[derive(Clone, Debug)]
pub(crate) struct LoginTimeout(Arc<std::sync::atomic::AtomicU64>);

impl LoginTimeout {
    pub(crate) fn new(t: Duration) -> LoginTimeout {
        LoginTimeout(Arc::new(t.as_secs().into()))
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_secs(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets it for the logins that start from now on; whether it changed.
    pub(crate) fn set(&self, t: Duration) -> bool {
        self.0
            .swap(t.as_secs(), std::sync::atomic::Ordering::Relaxed)
            != t.as_secs()
    }
}
