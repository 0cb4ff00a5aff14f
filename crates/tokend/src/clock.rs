//! The one place that reads the wall clock. Expiry times on the wire and in
//! the store are Unix seconds; waiting and scheduling use tokio's clock so
//! tests can pause it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
#[allow(clippy::disallowed_methods)]
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
