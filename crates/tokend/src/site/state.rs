//! What a site holds in memory, and the pure decisions on it: whether a
//! token serves a caller, when refresh-ahead is due, what `status` shows.
//! Only the site's actor owns a [`TokenState`].

use std::collections::BTreeMap;

use token_proto::{SiteState, SiteStatus, TokenReply};
use tokend_oauth::{AccessToken, RefreshToken, TokenResponse};

use super::idtoken::HeldId;
use crate::clock::whole;
use crate::config::{Grant, SiteConfig};
use crate::refresh::{self, Backoff, Expiring};

impl Grant {
    /// Whether a new access token can be had without the user: client
    /// credentials always, the other grants only with a refresh token.
    pub(crate) fn renews_alone(self, has_refresh_token: bool) -> bool {
        self == Grant::ClientCredentials || has_refresh_token
    }
}

/// The shortest time between two refreshes ahead of the same site.
const MIN_RENEWAL_GAP: f64 = 1.0;

/// An access token in hand.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    pub token: AccessToken,
    pub token_type: String,
    /// Unix seconds (fractional); `None`: never expires.
    pub expires_at: Option<f64>,
    pub obtained_at: f64,
    /// The scopes it carries.
    pub scopes: Vec<String>,
    /// Fixed per token, so re-planning its refresh gives the same time.
    pub jitter: f64,
    /// The provider was asked for this token by a caller whose `min_ttl` it
    /// did not meet: asking again before it is due gives no better one.
    pub fell_short: bool,
}

impl Expiring for Current {
    fn remaining(&self, now: f64) -> f64 {
        self.expires_at.map_or(f64::INFINITY, |at| at - now)
    }

    fn lifetime(&self) -> f64 {
        self.expires_at
            .map_or(f64::INFINITY, |at| (at - self.obtained_at).max(0.0))
    }
}

impl Current {
    /// A token from a token response just received; `token_type` is
    /// compared case-insensitively and handed out as `Bearer` when it is one.
    pub(crate) fn obtained(resp: &TokenResponse, requested: &[String], now: f64) -> Current {
        let expires_at = match resp.lifetime {
            tokend_oauth::Lifetime::Seconds(n) => Some(now + n as f64),
            _ => resp.expires_at(whole(now), requested).map(|at| at as f64),
        };
        Current {
            token: resp.access_token.clone(),
            token_type: if resp.is_bearer() {
                "Bearer".to_owned()
            } else {
                resp.token_type.clone()
            },
            expires_at,
            obtained_at: now,
            scopes: resp.scopes.clone().unwrap_or_else(|| requested.to_vec()),
            jitter: refresh::jitter(),
            fell_short: false,
        }
    }

    /// A `min_ttl` no token from this provider can meet, and this token is
    /// the freshest it gave for such a request: asking again is pointless
    /// until the token is due anyway.
    pub(crate) fn best_there_is(
        &self,
        now: f64,
        min_ttl: Option<u64>,
        refresh_before: Option<u64>,
    ) -> bool {
        let Some(m) = min_ttl else { return false };
        self.fell_short && m as f64 >= self.lifetime() && self.serves(now, None, refresh_before)
    }

    /// What a caller receives.
    pub(crate) fn reply(&self, api_key: Option<String>, warning: Option<String>) -> TokenReply {
        TokenReply {
            access_token: self.token.expose().to_owned(),
            token_type: self.token_type.clone(),
            expires_at: self.expires_at.map(whole),
            scopes: self.scopes.clone(),
            api_key,
            warning,
            dpop_proof: None,
            token: None,
        }
    }

    /// The warning for a caller whose `min_ttl` this token does not meet.
    pub(crate) fn short_warning(&self, site: &str, now: f64, min_ttl: u64) -> String {
        format!(
            "site {site}: the provider issues tokens valid for {}s, less than the --min-ttl of {min_ttl}s; this one expires in {}s",
            whole(self.lifetime().min(1e12)),
            whole(self.remaining(now).min(1e12)),
        )
    }
}

/// A site's tokens and their bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct TokenState {
    pub access: Option<Current>,
    pub refresh: Option<RefreshToken>,
    /// The scopes of the login (those granted, else those configured).
    pub scopes: Vec<String>,
    /// Down-scoped access tokens by their sorted scope set.
    pub narrowed: BTreeMap<Vec<String>, Current>,
    pub last_refresh: Option<f64>,
    pub last_error: Option<String>,
    /// After a failure that may pass: no token-endpoint call before this
    /// (Unix s) while the current token is still valid.
    pub retry_after: Option<f64>,
    pub backoff: Backoff,
    /// A config problem stopped refresh-ahead until the config changes.
    pub stalled: bool,
    /// When a `get` last took a token (client-credentials sites are renewed
    /// ahead only while in use).
    pub last_used: f64,
    /// Why the login in memory is not in the store (a restart would lose it).
    pub unsaved: Option<String>,
    /// The configured scopes the provider did not grant, said once to the
    /// caller of the login and always in `status`.
    pub narrower: Option<String>,
    pub tell_narrower: bool,
    /// The validated ID token of the login or the last refresh that sent one.
    pub id_token: Option<HeldId>,
    /// The `sub` of the login's first ID token: every later one (a refresh
    /// brings a new one) must name the same user (OIDC Core §12.2).
    pub subject: Option<String>,
    /// A caller asked for the ID token since the daemon started: refresh-ahead
    /// then keeps it fresh too.
    pub id_asked: bool,
}

impl TokenState {
    /// Forgets the login (memory only).
    pub(crate) fn clear(&mut self, why: Option<String>) {
        self.access = None;
        self.refresh = None;
        self.id_token = None;
        self.subject = None;
        self.narrowed.clear();
        self.scopes.clear();
        self.narrower = None;
        self.tell_narrower = false;
        self.last_error = why;
        self.retry_after = None;
        self.backoff.reset();
    }

    /// Whether the provider failed a moment ago and a retry is planned.
    pub(crate) fn backing_off(&self, now: f64) -> bool {
        self.retry_after.is_some_and(|t| t > now)
    }

    /// Records a failure that may pass, and when to try again.
    pub(crate) fn failed(&mut self, message: String, now: f64) {
        let remaining = self
            .access
            .as_ref()
            .map(|c| c.remaining(now))
            .filter(|r| *r > 0.0 && r.is_finite())
            .map(whole);
        let wait = self.backoff.next(remaining, refresh::jitter());
        self.retry_after = Some(now + wait.as_secs_f64());
        self.last_error = Some(message);
    }

    /// When refresh-ahead should next renew the site's own token (Unix s).
    pub(crate) fn next_refresh(&self, cfg: &SiteConfig, now: f64) -> Option<f64> {
        if self.stalled || !cfg.grant.renews_alone(self.refresh.is_some()) {
            return None;
        }
        if let Some(at) = self.retry_after {
            return Some(at);
        }
        let Some(cur) = self.access.as_ref() else {
            // A refresh token but no access token (just loaded after a
            // restart): renew now. A client-credentials site fetches on use.
            return self.refresh.is_some().then_some(now);
        };
        let expires_at = cur.expires_at?;
        if cfg.grant == Grant::ClientCredentials && self.last_used < cur.obtained_at {
            // Not used since it was fetched: let it lapse; the next get fetches.
            return None;
        }
        let mut at =
            refresh::refresh_at(cur.obtained_at, expires_at, cfg.refresh_before, cur.jitter);
        if let Some(id) = self.id_token_to_renew(cfg, cur) {
            // The earlier of the two expiries.
            let id_at = refresh::refresh_at(
                id.obtained_at,
                id.expires_at as f64,
                cfg.refresh_before,
                cur.jitter,
            );
            at = at.min(id_at);
        }
        // A provider that issues (nearly) expired tokens is not asked again
        // and again without pause.
        Some(at.max(cur.obtained_at + MIN_RENEWAL_GAP))
    }

    /// The ID token refresh-ahead also keeps fresh: when the site serves ID
    /// tokens (`kube_token = "id_token"`, or one was asked for) and the
    /// provider renews them on refresh (this one came with the access token
    /// in hand; after a refresh without one, only a login renews it).
    fn id_token_to_renew(&self, cfg: &SiteConfig, cur: &Current) -> Option<&HeldId> {
        let serves = self.id_asked || cfg.kube_token == token_proto::TokenKind::IdToken;
        self.id_token
            .as_ref()
            .filter(|id| serves && id.obtained_at >= cur.obtained_at)
    }

    /// The site's line in `status`.
    pub(crate) fn status(&self, view: StatusView<'_>) -> SiteStatus {
        let valid = self
            .access
            .as_ref()
            .is_some_and(|c| c.remaining(view.now) > 0.0);
        let state = if view.login_pending {
            SiteState::LoginPending
        } else if view.refreshing {
            SiteState::Refreshing
        } else if !view.loaded {
            SiteState::NotLoaded
        } else if valid {
            SiteState::Ready
        } else if self.last_error.is_some() {
            SiteState::Error
        } else if view.cfg.grant.renews_alone(self.refresh.is_some()) {
            // Expired, but renewable without the user.
            SiteState::Ready
        } else {
            SiteState::LoginRequired
        };
        SiteStatus {
            site: view.cfg.name.clone(),
            state: state.as_str().to_owned(),
            expires_at: self.access.as_ref().and_then(|c| c.expires_at).map(whole),
            scopes: self.scopes.clone(),
            has_access_token: self.access.is_some(),
            has_refresh_token: self.refresh.is_some(),
            last_refresh: self.last_refresh.map(whole),
            next_refresh: self.next_refresh(view.cfg, view.now).map(whole),
            last_error: self.last_error.clone(),
            notes: self.unsaved.iter().chain(&self.narrower).cloned().collect(),
        }
    }
}

/// What `status` needs beside the tokens.
#[derive(Debug)]
pub(crate) struct StatusView<'a> {
    pub cfg: &'a SiteConfig,
    pub now: f64,
    pub loaded: bool,
    pub login_pending: bool,
    pub refreshing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(expires_in: Option<f64>, age: f64) -> (Current, f64) {
        let now = 1_000_000.0;
        (
            Current {
                token: AccessToken::new("t".into()),
                token_type: "Bearer".into(),
                expires_at: expires_in.map(|e| now - age + e),
                obtained_at: now - age,
                scopes: Vec::new(),
                jitter: 0.5,
                fell_short: false,
            },
            now,
        )
    }

    #[test]
    fn a_token_serves_until_the_margin() {
        let (c, now) = current(Some(3600.0), 0.0);
        assert!(c.serves(now, None, None));
        assert!(c.serves(now, Some(3000), None));
        assert!(!c.serves(now, Some(3600), None));
        let (c, now) = current(Some(3600.0), 3575.0);
        assert!(!c.serves(now, None, None), "less than 30 s left");
        // A 20 s token is served while refresh-ahead (at ~7.3 s left) renews it.
        let (c, now) = current(Some(20.0), 13.0);
        assert!(c.serves(now, None, None));
        let (c, now) = current(None, 99999.0);
        assert!(c.serves(now, Some(1 << 40), None));
    }

    #[test]
    fn an_unmeetable_min_ttl_is_served_by_the_freshest_token() {
        let (mut c, now) = current(Some(3600.0), 10.0);
        assert!(!c.best_there_is(now, Some(7200), None), "not asked for yet");
        c.fell_short = true;
        assert!(c.best_there_is(now, Some(7200), None));
        assert!(
            !c.best_there_is(now, Some(3595), None),
            "a fresh token would meet it"
        );
        assert!(!c.best_there_is(now, None, None));
    }
}
