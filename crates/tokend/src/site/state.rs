//! What a site holds in memory, and the pure decisions on it: whether a
//! token serves a caller, when refresh-ahead is due, what `status` shows.
//! Only the site's actor owns a [`TokenState`].

use std::collections::BTreeMap;

use token_proto::{SiteState, SiteStatus, TokenReply};
use tokend_oauth::{AccessToken, RefreshToken, TokenResponse};

use super::idtoken::HeldId;
use super::SiteError;
use super::TtlFrom;
use crate::clock::whole;
use crate::config::SiteConfig;
use crate::refresh::{self, Backoff, Expiring};

/// The shortest time between two refreshes ahead of the same site.
const MIN_RENEWAL_GAP: f64 = 1.0;

/// How old a token may be while it still counts as the best a provider
/// gives for a `min_ttl` longer than its tokens live: a tenth of its
/// lifetime, and at least this many seconds (so back-to-back callers of a
/// short-lived token share one).
const NEARLY_NEW_SECS: f64 = 2.0;

/// What the conservative expiry takes off a provider's `expires_in` at
/// most, in whole seconds: the second it subtracts and the round trip.
const CONSERVATIVE_SLACK: u64 = 2;

/// An access token in hand.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    pub token: AccessToken,
    pub token_type: String,
    /// Whole Unix seconds, as on the wire and in the store, counted
    /// conservatively ([`TokenResponse::expires_at`]); `None`: never expires.
    pub expires_at: Option<u64>,
    /// When the request that brought it was sent (Unix s, fractional).
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
        self.expires_at.map_or(f64::INFINITY, |at| at as f64 - now)
    }

    fn lifetime(&self) -> f64 {
        self.expires_at
            .map_or(f64::INFINITY, |at| (at as f64 - self.obtained_at).max(0.0))
    }
}

impl Current {
    /// A token from a token response to a request sent at `sent_at`;
    /// `token_type` is compared case-insensitively and handed out as
    /// `Bearer` when it is one.
    pub(crate) fn obtained(resp: &TokenResponse, requested: &[String], sent_at: f64) -> Current {
        Current {
            token: resp.access_token.clone(),
            token_type: if resp.is_bearer() {
                "Bearer".to_owned()
            } else {
                resp.token_type.clone()
            },
            expires_at: resp.expires_at(sent_at, requested),
            obtained_at: sent_at,
            scopes: resp.scopes.clone().unwrap_or_else(|| requested.to_vec()),
            jitter: refresh::jitter(),
            fell_short: false,
        }
    }

    /// A `min_ttl` no token from this provider can meet, and this token is
    /// the freshest it gave for such a request and still nearly as good as
    /// a new one: asking again would gain the caller next to nothing. Once
    /// it has aged more, the next such caller gets one refresh (and the
    /// best token there is, with the warning).
    ///
    /// The git helper's margin is its own, not the user's: a token that
    /// fell short of it serves git until refresh-ahead replaces it (a
    /// refresh per git command would gain git nothing it asked for).
    pub(crate) fn best_there_is(
        &self,
        now: f64,
        min_ttl: Option<u64>,
        refresh_before: Option<u64>,
        from: TtlFrom,
    ) -> bool {
        let Some(m) = min_ttl else { return false };
        let lifetime = self.lifetime();
        let fresh_enough = match from {
            TtlFrom::Caller => now - self.obtained_at <= (lifetime / 10.0).max(NEARLY_NEW_SECS),
            TtlFrom::GitHelper => true,
        };
        self.fell_short
            && m as f64 >= lifetime
            && fresh_enough
            && self.serves(now, None, refresh_before)
    }

    /// What a caller receives.
    pub(crate) fn reply(&self, api_key: Option<String>, warning: Option<String>) -> TokenReply {
        TokenReply {
            access_token: self.token.expose().to_owned(),
            token_type: self.token_type.clone(),
            expires_at: self.expires_at,
            scopes: self.scopes.clone(),
            api_key,
            warning,
            dpop_proof: None,
            token: None,
            renew_at: None,
        }
    }

    /// The warning for a caller whose `min_ttl` this token does not meet,
    /// in the words of whoever set it. The git helper's margin is not the
    /// user's to change: it says nothing when the provider's tokens are as
    /// long as the margin (a fresh one is the best there is), counting the
    /// second or two the conservative expiry takes off what the provider
    /// said (a provider's 60-s tokens are 58-59 s here).
    pub(crate) fn short_warning(
        &self,
        site: &str,
        now: f64,
        min_ttl: u64,
        from: TtlFrom,
    ) -> Option<String> {
        let lifetime = whole(self.lifetime().min(1e12));
        let left = whole(self.remaining(now).min(1e12));
        let than = if lifetime < min_ttl {
            "less than"
        } else {
            "no more than"
        };
        match from {
            TtlFrom::Caller => Some(format!(
                "site {site}: the provider issues tokens valid for {lifetime}s, {than} the --min-ttl of {min_ttl}s; this one expires in {left}s"
            )),
            TtlFrom::GitHelper if lifetime + CONSERVATIVE_SLACK >= min_ttl => None,
            TtlFrom::GitHelper => Some(format!(
                "site {site}: the provider issues tokens valid for {lifetime}s, less than the {min_ttl}s the git credential helper wants left on a token for git; git gets them anyway (this one expires in {left}s), so a git command that runs longer may be refused halfway"
            )),
        }
    }
}

/// A site's tokens and their bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct TokenState {
    /// Until when (Unix s) a login that went unanswered keeps
    /// non-interactive callers from starting another (`login_cooldown`).
    pub cooldown_until: Option<f64>,
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
    /// The failure that set `retry_after`. Boxed: rare, and a parked site
    /// (most of a thousand) should not carry its space.
    pub failure: Option<Box<SiteError>>,
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
    /// The login brought no refresh token although the site asked for one
    /// (`offline_access`): said to its caller, and in `status`.
    pub no_refresh: Option<String>,
    /// The validated ID token of the login or the last refresh that sent one.
    /// Boxed: most sites hold none, and a parked site keeps its state.
    pub id_token: Option<Box<HeldId>>,
    /// The `sub` of the login's first ID token: every later one (a refresh
    /// brings a new one) must name the same user (OIDC Core §12.2).
    pub subject: Option<String>,
    /// A caller asked for the ID token since the daemon started: refresh-ahead
    /// then keeps it fresh too.
    pub id_asked: bool,
    /// The git helper was told that the provider's tokens are shorter than
    /// its margin (once per site and daemon: git runs the helper for every
    /// command).
    pub told_git_short: bool,
}

impl TokenState {
    /// Whether a short-token warning for a `min_ttl` from `from` is said now.
    pub(crate) fn say_short(&mut self, from: TtlFrom) -> bool {
        match from {
            TtlFrom::Caller => true,
            TtlFrom::GitHelper => !std::mem::replace(&mut self.told_git_short, true),
        }
    }

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
        self.no_refresh = None;
        self.last_error = why;
        self.retry_after = None;
        self.failure = None;
        self.backoff.reset();
    }

    /// Whether the provider failed a moment ago and a retry is planned.
    pub(crate) fn backing_off(&self, now: f64) -> bool {
        self.retry_after.is_some_and(|t| t > now)
    }

    /// The answer for a caller nothing in hand serves while the provider
    /// is being left alone after a failure: that failure, and when the next
    /// try is.
    pub(crate) fn retrying(&self, now: f64) -> Option<SiteError> {
        let at = self.retry_after.filter(|at| *at > now)?;
        Some(SiteError::Retrying {
            failure: self.failure.clone()?,
            retry_in: (at - now).ceil() as u64,
        })
    }

    /// Records a failure that may pass, and when to try again.
    pub(crate) fn failed(&mut self, failure: &SiteError, now: f64) {
        // The retry comes before the token drops below the outage floor,
        // or failing that, before it expires.
        let secs = |r: f64| (r > 0.0 && r.is_finite()).then(|| whole(r));
        let protect = self.access.as_ref().and_then(|c| {
            secs(c.outage_left(now))
                .filter(|s| *s > 1)
                .or_else(|| secs(c.remaining(now)))
        });
        let wait = self.backoff.next(protect, refresh::jitter());
        self.retry_after = Some(now + wait.as_secs_f64());
        self.last_error = Some(failure.to_string());
        self.failure = Some(Box::new(failure.clone()));
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
        if cfg.grant.lapses_unused()
            && self.last_used < cur.obtained_at
            && cfg.rare.files.is_empty()
        {
            // Not used since it was fetched (and no file to keep fresh):
            // let it lapse; the next get fetches.
            return None;
        }
        let mut at = refresh::refresh_at(
            cur.obtained_at,
            expires_at as f64,
            cfg.refresh_before,
            cur.jitter,
        );
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
        let serves = self.id_asked
            || cfg.kube_token == token_proto::TokenKind::IdToken
            || crate::files::wants_id_token(cfg);
        self.id_token
            .as_deref()
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
        } else if self.stalled {
            // A config problem: no login helps until the config is fixed.
            SiteState::Error
        } else if !view.cfg.grant.renews_alone(self.refresh.is_some()) {
            // Only the user can get a token now, whatever ended the last
            // try (a login that timed out, a refused refresh token): the
            // error says why.
            SiteState::LoginRequired
        } else if self.last_error.is_some() {
            SiteState::Error
        } else {
            // Expired, but renewable without the user.
            SiteState::Ready
        };
        SiteStatus {
            site: view.cfg.name.clone(),
            state: state.as_str().to_owned(),
            expires_at: self.access.as_ref().and_then(|c| c.expires_at),
            scopes: self.scopes.clone(),
            has_access_token: self.access.is_some(),
            has_refresh_token: self.refresh.is_some(),
            last_refresh: self.last_refresh.map(whole),
            next_refresh: self.next_refresh(view.cfg, view.now).map(whole),
            last_error: self.last_error.clone(),
            login_cooldown_until: self
                .cooldown_until
                .filter(|&until| until > view.now)
                .map(whole),
            notes: (self.unsaved.iter())
                .chain(&self.no_refresh)
                .chain(&self.narrower)
                .cloned()
                .collect(),
            files: Vec::new(),
        }
    }
}

/// `secs` as a person says it: `1h`, `1h30m`, `5m`, `40s`.
pub(crate) fn roughly(secs: f64) -> String {
    let s = whole(secs.max(0.0));
    // Past a minute, to the nearest one: a provider's hour is 3598 s by
    // the conservative count, and "59m" would read as some other lifetime.
    let s = if s >= 60 { (s + 30) / 60 * 60 } else { s };
    match (s / 3600, s % 3600 / 60) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
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
                expires_at: expires_in.map(|e| whole(now - age + e)),
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
    fn durations_read_as_people_say_them() {
        let said: Vec<String> = [3599.6, 3600.0, 5400.0, 300.0, 40.0]
            .into_iter()
            .map(roughly)
            .collect();
        assert_eq!(said, ["1h", "1h", "1h30m", "5m", "40s"]);
    }

    #[test]
    fn an_unmeetable_min_ttl_is_served_by_the_freshest_token() {
        let (mut c, now) = current(Some(3600.0), 10.0);
        assert!(
            !c.best_there_is(now, Some(7200), None, TtlFrom::Caller),
            "not asked for yet"
        );
        c.fell_short = true;
        assert!(c.best_there_is(now, Some(7200), None, TtlFrom::Caller));
        assert!(
            !c.best_there_is(now, Some(3595), None, TtlFrom::Caller),
            "a fresh token would meet it"
        );
        assert!(!c.best_there_is(now, None, None, TtlFrom::Caller));
        // 17 s left of a 30 s token: a fresh one is much better.
        let (mut c, now) = current(Some(30.0), 13.0);
        c.fell_short = true;
        assert!(c.serves(now, None, None));
        assert!(!c.best_there_is(now, Some(60), None, TtlFrom::Caller));
        let (mut c, now) = current(Some(30.0), 2.0);
        c.fell_short = true;
        assert!(
            c.best_there_is(now, Some(60), None, TtlFrom::Caller),
            "nearly new"
        );
        // The git helper's own margin: git is served what there is.
        let (mut c, now) = current(Some(30.0), 13.0);
        c.fell_short = true;
        assert!(c.best_there_is(now, Some(60), None, TtlFrom::GitHelper));
    }
}
