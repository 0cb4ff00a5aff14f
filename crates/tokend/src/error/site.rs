//! A site's internal errors, its logins' included, typed by what they mean
//! for the site (retry, wait for a config edit, ask the user); the wire code
//! is chosen once, in the conversion to [`ApiError`] at the handler edge.

use std::sync::Arc;

use token_proto::ErrorCode;

use super::ApiError;
use crate::login::Way;
use crate::provider::idtoken::IdRefusal;

#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum SiteError {
    /// The config is wrong (a missing secret, a mistyped issuer): retrying
    /// will not help until it changes.
    #[error("{0}")]
    Config(String),
    /// Discovery at the configured issuer failed in a way that does not
    /// pass (no metadata, metadata for another issuer, no S256).
    #[error("site {site}: discovery at issuer {issuer} failed: {source}; fix the config")]
    Discovery {
        site: String,
        issuer: String,
        #[source]
        source: Arc<tokend_oauth::Error>,
    },
    /// The provider failed or answered garbage: may pass, retried with backoff.
    #[error("site {site}: {source}")]
    Provider {
        site: String,
        #[source]
        source: tokend_oauth::Error,
    },
    /// The provider failed a moment ago, nothing in hand serves the caller,
    /// and tokend tries again in `retry_in` seconds, not before: the
    /// failure and when the next try is.
    #[error("{failure}; tokend tries again in {retry_in}s")]
    Retrying {
        failure: Box<SiteError>,
        retry_in: u64,
    },
    /// The provider refused the refresh token: only a login helps.
    #[error("site {site}: {source}")]
    Refused {
        site: String,
        #[source]
        source: tokend_oauth::Error,
    },
    /// The provider refused the client itself (`invalid_client`): its id,
    /// its authentication or its secret is wrong, which the config decides.
    #[error("site {site}: {source}; the provider does not accept this client: check {client}")]
    ClientRefused {
        site: String,
        /// The settings that identify the client, for the user to check.
        client: String,
        #[source]
        source: Box<tokend_oauth::Error>,
    },
    /// A login's ID token failed validation: the login fails, nothing is kept.
    #[error("{source}; the login is refused: run `{again}` to try again")]
    IdTokenRefused {
        /// The command that tries again (`token login corp`).
        again: String,
        #[source]
        source: IdRefusal,
    },
    /// A login's callback was refused (consent denied, a forged or
    /// mismatched callback): the user may try again.
    #[error("site {site}: login failed: {source}; run `{}` to try again", .way.again(site))]
    CallbackRefused {
        site: String,
        way: Way,
        #[source]
        source: tokend_oauth::CallbackError,
    },
    /// The provider refused a device login (denied, or its code expired).
    #[error(
        "site {site}: device login failed: {source}; run `token login {site} --device` to try again"
    )]
    DeviceRefused {
        site: String,
        #[source]
        source: tokend_oauth::Error,
    },
    /// A browser login's one-time start link was opened twice: another
    /// program may have raced the browser to it, so the login ended.
    #[error(
        "site {site}: login failed: its one-time login link was opened twice (another program may have raced your browser to it); run `token login {site}` to try again"
    )]
    StartReused { site: String },
    /// A paste-back login got an empty paste.
    #[error(
        "site {site}: login failed: nothing was pasted; run `token login {site} --paste` to try again"
    )]
    NothingPasted { site: String },
    /// The daemon stopped, or the site's settings changed, during a login.
    #[error(
        "site {site}: the daemon stopped or the site's settings changed during the login; run `token login {site}` again"
    )]
    LoginInterrupted { site: String },
    /// Nobody waits for the login any more (every caller went away, or a
    /// logout): not completed, which is not the provider's refusal.
    #[error("site {site}: the login was cancelled; run `token login {site}` to try again")]
    LoginCancelled { site: String },
    /// Nobody completed the login in time. Where no browser could be used,
    /// the other ways are named.
    #[error(
        "site {site}: the login was not completed in time; run `token login {site}` to try \
         again, or log in without a browser on this machine: `token login {site} --device` \
         (where the provider offers it) or `token login {site} --paste`"
    )]
    LoginTimedOut { site: String },
    /// A background caller (no terminal) during the `login_cooldown`, or
    /// while a login nobody waits for is open in the browser: it starts
    /// no login, so it opens no browser tab.
    #[error("site {site} needs a login: {why}; run `token login {site}`")]
    LoginHeld { site: String, why: String },
    /// The loopback listener of a browser login could not be opened.
    #[error("site {site}: cannot open the loopback listener for the login: {source}")]
    Listener {
        site: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The request cannot be served as asked (a scope the site lacks).
    #[error("{0}")]
    BadRequest(String),
    /// A token request's or a login's task panicked or was cancelled.
    #[error("site {site}: {what} failed: {source}")]
    TaskFailed {
        site: String,
        /// `the token request`, `the login`.
        what: &'static str,
        #[source]
        source: Arc<tokio::task::JoinError>,
    },
    /// The OS random source failed (a login's PKCE pair or `state`).
    #[error("{source}")]
    Random {
        #[source]
        source: tokend_oauth::Error,
    },
    /// A DPoP proof could not be signed.
    #[error("site {site}: cannot sign a DPoP proof: {source}")]
    Signing {
        site: String,
        #[source]
        source: tokend_oauth::Error,
    },
    /// A machine grant's subject or assertion cannot be had now (its file
    /// is missing, its command failed, the subject site is not logged in):
    /// the message names the config key or the site.
    #[error("site {site}: {message}")]
    NoSubject { site: String, message: String },
    /// The site's task went away: a bug, or a stop under way.
    #[error("{0}")]
    Internal(String),
}

impl SiteError {
    pub(crate) fn config(site: &str, message: impl std::fmt::Display) -> SiteError {
        SiteError::Config(format!("site {site}: {message}; fix the config"))
    }

    /// What the user is shown (the caller, the browser's page, `status`):
    /// the error, and for a provider failure that may pass, that it is
    /// retried.
    pub(crate) fn shown(&self) -> String {
        match self {
            SiteError::Provider { source, .. } | SiteError::Refused { source, .. }
                if source.is_transient() =>
            {
                format!("{self}; tokend will retry, or try again later")
            }
            _ => self.to_string(),
        }
    }
}

impl SiteError {
    /// The wire code, chosen here once; what the site does with an error
    /// follows from it too ([`SiteError::needs_config_edit`]).
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            SiteError::Config(_) | SiteError::Discovery { .. } => ErrorCode::ConfigError,
            // A subject or assertion missing now is retried like a provider
            // fault, but the caller is told what is missing (exit 3).
            SiteError::Retrying { failure, .. }
                if matches!(**failure, SiteError::NoSubject { .. }) =>
            {
                ErrorCode::LoginRequired
            }
            SiteError::Provider { .. }
            | SiteError::Refused { .. }
            | SiteError::ClientRefused { .. }
            | SiteError::Retrying { .. } => ErrorCode::ProviderError,
            SiteError::BadRequest(_) => ErrorCode::BadRequest,
            SiteError::NoSubject { .. } => ErrorCode::LoginRequired,
            SiteError::IdTokenRefused { .. }
            | SiteError::CallbackRefused { .. }
            | SiteError::DeviceRefused { .. }
            | SiteError::NothingPasted { .. }
            | SiteError::StartReused { .. }
            | SiteError::LoginInterrupted { .. } => ErrorCode::LoginFailed,
            SiteError::LoginCancelled { .. } | SiteError::LoginTimedOut { .. } => {
                ErrorCode::LoginIncomplete
            }
            SiteError::LoginHeld { .. } => ErrorCode::LoginRequired,
            SiteError::Listener { .. }
            | SiteError::TaskFailed { .. }
            | SiteError::Random { .. }
            | SiteError::Signing { .. }
            | SiteError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Retrying will not help until the config changes.
    pub(crate) fn needs_config_edit(&self) -> bool {
        self.code() == ErrorCode::ConfigError
    }
}

impl From<SiteError> for ApiError {
    fn from(e: SiteError) -> ApiError {
        ApiError::new(e.code(), e.shown())
    }
}

#[cfg(test)]
mod tests {
    use token_proto::ErrorCode;
    use tokend_oauth::CallbackError;

    use super::SiteError;
    use crate::error::ApiError;
    use crate::login::Way;

    /// A login's end as the caller sees it: `token` exits 6 for a login
    /// nobody completed, 4 for one that was refused.
    #[test]
    fn login_errors_reach_the_caller_with_their_code_and_words() {
        let site = || "corp".to_owned();
        let cases = [
            (
                SiteError::LoginCancelled { site: site() },
                ErrorCode::LoginIncomplete,
                "site corp: the login was cancelled; run `token login corp` to try again",
            ),
            (
                SiteError::LoginTimedOut { site: site() },
                ErrorCode::LoginIncomplete,
                "site corp: the login was not completed in time; run `token login corp` to try \
                 again, or log in without a browser on this machine: `token login corp --device` \
                 (where the provider offers it) or `token login corp --paste`",
            ),
            (
                SiteError::CallbackRefused {
                    site: site(),
                    way: Way::Paste,
                    source: CallbackError::NoCode,
                },
                ErrorCode::LoginFailed,
                "site corp: login failed: the callback has no authorization code; \
                 run `token login corp --paste` to try again",
            ),
            (
                SiteError::NothingPasted { site: site() },
                ErrorCode::LoginFailed,
                "site corp: login failed: nothing was pasted; run `token login corp --paste` to try again",
            ),
            (
                SiteError::LoginInterrupted { site: site() },
                ErrorCode::LoginFailed,
                "site corp: the daemon stopped or the site's settings changed during the login; \
                 run `token login corp` again",
            ),
        ];
        for (e, code, message) in cases {
            let shown = e.shown();
            let wire = ApiError::from(e);
            assert_eq!((wire.code, wire.message.as_str()), (code, message));
            assert_eq!(shown, message);
        }
    }
}
