//! How the refresh-ahead scheduler sees a site: when its next refresh is
//! due, and one refresh attempt under the single flight.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use token_proto::ErrorCode;
use tokio::sync::Notify;

use super::{lock, Call, Site};
use crate::config::Grant;
use crate::refresh::{self, Attempt};
use token_proto::now_unix;

impl refresh::Target for Site {
    fn plan(&self) -> Option<Duration> {
        if !self.loaded.initialized() {
            return None;
        }
        let cfg = self.config();
        let st = lock(&self.state);
        let renewable = st.refresh.is_some() || cfg.grant == Grant::ClientCredentials;
        if !renewable {
            return None;
        }
        let now = now_unix();
        let Some(cur) = st.access.as_ref() else {
            // A refresh token but no access token (just loaded after a
            // restart): renew now.
            return st.refresh.is_some().then_some(Duration::ZERO);
        };
        let expires_at = cur.expires_at?;
        if cfg.grant == Grant::ClientCredentials
            && self.last_used.load(Ordering::Relaxed) < cur.obtained_at
        {
            // Not used since it was fetched: let it lapse; the next get fetches.
            return None;
        }
        Some(Duration::from_secs(refresh::refresh_delay(
            cur.obtained_at,
            expires_at,
            now,
            cfg.refresh_before,
            cur.jitter,
        )))
    }

    fn planned(&self, wait: Option<Duration>) {
        lock(&self.state).next_refresh = wait.map(|w| now_unix() + w.as_secs());
    }

    fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    async fn refresh(&self) -> Attempt {
        let Some(d) = self.daemon.get().and_then(Weak::upgrade) else {
            return Attempt::Stop;
        };
        let _flight = self.flight.lock().await;
        // A caller may have refreshed while we waited for the flight.
        if self.plan().is_none_or(|w| w > Duration::from_secs(1)) {
            return Attempt::Done;
        }
        tracing::debug!(site = %self.name, "refreshing ahead of expiry");
        // `failed()` has set when to try again.
        let wait = || {
            let at = lock(&self.state).retry_after.unwrap_or(0);
            Duration::from_secs(at.saturating_sub(now_unix()).max(1))
        };
        match self.token_call(&d).await {
            Ok(Call::Got(())) => Attempt::Done,
            Ok(Call::NeedLogin) => Attempt::Stop,
            Ok(Call::Failed(_)) => Attempt::Retry { wait: wait() },
            Err(e) if e.code == ErrorCode::ProviderError => Attempt::Retry { wait: wait() },
            Err(e) => {
                // A config problem (a missing secret): retrying will not help
                // until the config changes, which wakes us.
                lock(&self.state).last_error = Some(e.message);
                Attempt::Stop
            }
        }
    }
}
