//! A site's internal errors, typed by what they mean for the site (retry,
//! wait for a config edit, ask the user); the wire code is chosen once, in
//! the conversion to [`ApiError`] at the handler edge.

use token_proto::ErrorCode;

use crate::error::ApiError;

#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum SiteError {
    /// The config is wrong (a missing secret, a mistyped issuer): retrying
    /// will not help until it changes.
    #[error("{0}")]
    Config(String),
    /// The provider failed or answered garbage: may pass, retried with backoff.
    #[error("site {site}: {source}")]
    Provider {
        site: String,
        #[source]
        source: tokend_oauth::Error,
    },
    /// The provider refused the refresh token: only a login helps.
    #[error("site {site}: {source}")]
    Refused {
        site: String,
        #[source]
        source: tokend_oauth::Error,
    },
    /// A login's ID token failed validation: the login fails, nothing is kept.
    #[error("{0}")]
    IdTokenRefused(String),
    /// The request cannot be served as asked (a scope the site lacks).
    #[error("{0}")]
    BadRequest(String),
    /// The site's task failed or went away: a bug, or a stop under way.
    #[error("{0}")]
    Internal(String),
}

impl SiteError {
    pub(crate) fn config(site: &str, message: impl std::fmt::Display) -> SiteError {
        SiteError::Config(format!("site {site}: {message}; fix the config"))
    }
}

impl From<SiteError> for ApiError {
    fn from(e: SiteError) -> ApiError {
        match e {
            SiteError::Config(message) => ApiError::new(ErrorCode::ConfigError, message),
            SiteError::Provider { site, source } | SiteError::Refused { site, source } => {
                ApiError::provider(&site, &source)
            }
            SiteError::BadRequest(message) => ApiError::new(ErrorCode::BadRequest, message),
            SiteError::IdTokenRefused(message) => ApiError::new(ErrorCode::LoginFailed, message),
            SiteError::Internal(message) => ApiError::internal(message),
        }
    }
}
