//! The one error type of the crate and how the daemon should read it.
//!
//! Every message is lower-case and user-facing. None ever holds a secret:
//! variants carry only endpoints (with query and credentials stripped), HTTP
//! statuses and what the provider chose to say about the failure.

use url::Url;

/// Something went wrong talking OAuth to a provider.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The provider answered with an OAuth error (RFC 6749 §5.2 or one of
    /// Stack Exchange's own shapes).
    #[error("provider said {error}{}{}", describe(.description), uri_hint(.uri))]
    Provider {
        status: u16,
        error: String,
        description: Option<String>,
        uri: Option<String>,
    },
    /// The provider answered something that is not a usable OAuth response.
    #[error("{endpoint} answered HTTP {status} with {what}")]
    BadResponse {
        status: u16,
        what: String,
        /// Who answered, e.g. `token endpoint https://x/token`. Parsers that do
        /// not know the URL say `the token endpoint`; the flows fill it in.
        endpoint: String,
    },
    /// A `dpop` site got a token that is not DPoP-bound (RFC 9449): refused
    /// at once, never retried or stored.
    #[error("{endpoint} answered a `{token_type}` token where a DPoP-bound one was asked for (the provider may not support DPoP for this grant)")]
    NotBound {
        token_type: String,
        endpoint: String,
    },
    #[error("timed out talking to {url}")]
    Timeout { url: String },
    /// `message` is the cause chain on one line, as shown; `source` the
    /// transport's error itself (its URL stripped: a query may hold a
    /// secret), shared by every waiter the error answers.
    #[error("could not reach {url}: {message}")]
    Network {
        url: String,
        message: String,
        #[source]
        source: Option<std::sync::Arc<reqwest::Error>>,
    },
    #[error("discovery for issuer {issuer} failed: {message}")]
    Discovery { issuer: String, message: String },
    /// A configuration-shaped problem: a missing endpoint, a secret-less
    /// `basic` client, an unparsable URL.
    #[error("{0}")]
    Invalid(String),
    /// An assertion or subject token tokend must fetch for the call (a
    /// file, a command, the CI job's token endpoint) could not be had; the
    /// message names its config key.
    #[error("{0}")]
    Assertion(String),
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

fn uri_hint(uri: &Option<String>) -> String {
    match uri {
        Some(u) if !u.is_empty() => format!(" (see {u})"),
        _ => String::new(),
    }
}

impl Error {
    /// The provider refused the grant (expired, revoked or already used refresh
    /// token or code): only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Error::Provider { error, .. } if error == "invalid_grant")
    }

    /// The provider refused the client's authentication (a wrong
    /// `client_id`, secret or authentication method).
    pub fn is_invalid_client(&self) -> bool {
        matches!(self, Error::Provider { error, .. } if error == "invalid_client")
    }

    /// Worth retrying later with backoff: 5xx, 429, timeouts, network trouble
    /// and garbage in place of a success. A 4xx that is not an OAuth error (say
    /// an HTML 404 page) is a configuration problem and retrying will not help.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Network { .. } => true,
            Error::Provider { status, error, .. } => {
                *status >= 500
                    || *status == 429
                    || error == "temporarily_unavailable"
                    || error == "server_error"
            }
            Error::BadResponse { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429 || (200..300).contains(status)
            }
            Error::Discovery { .. }
            | Error::Invalid(_)
            | Error::Assertion(_)
            | Error::NotBound { .. } => false,
        }
    }

    /// Name the endpoint that produced a [`Error::BadResponse`] or
    /// [`Error::NotBound`]; other
    /// variants pass through unchanged.
    pub(crate) fn at(self, endpoint: String) -> Error {
        match self {
            Error::BadResponse { status, what, .. } => Error::BadResponse {
                status,
                what,
                endpoint,
            },
            Error::NotBound { token_type, .. } => Error::NotBound {
                token_type,
                endpoint,
            },
            other => other,
        }
    }
}

/// A URL fit for an error message or a log line: no credentials, no query, no
/// fragment, since any of those may carry a secret.
pub(crate) fn loggable_url(url: &Url) -> String {
    let mut clean = url.clone();
    // Both setters only fail for cannot-be-a-base URLs, which carry no
    // credentials to strip anyway.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.set_fragment(None);
    clean.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn provider_display() {
        let e = Error::Provider {
            status: 401,
            error: "invalid_client".into(),
            description: Some("client authentication failed".into()),
            uri: None,
        };
        assert_eq!(
            e.to_string(),
            "provider said invalid_client: client authentication failed"
        );
        assert!(!e.is_transient());
        assert!(!e.is_invalid_grant());
    }

    #[test]
    fn transient_and_invalid_grant() {
        let grant = Error::Provider {
            status: 400,
            error: "invalid_grant".into(),
            description: None,
            uri: None,
        };
        assert!(grant.is_invalid_grant());
        assert!(!grant.is_transient());
        assert_eq!(grant.to_string(), "provider said invalid_grant");
        let bad = |status| Error::BadResponse {
            status,
            what: "an HTML page".into(),
            endpoint: "token endpoint http://x/token".into(),
        };
        assert!(bad(502).is_transient());
        assert!(bad(200).is_transient());
        assert!(!bad(404).is_transient());
        assert_eq!(
            bad(502).to_string(),
            "token endpoint http://x/token answered HTTP 502 with an HTML page"
        );
        assert!(Error::Timeout { url: "u".into() }.is_transient());
        assert_eq!(
            Error::Timeout {
                url: "http://x/token".into()
            }
            .to_string(),
            "timed out talking to http://x/token"
        );
        assert!(!Error::Invalid("no".into()).is_transient());
    }

    #[test]
    fn loggable_url_strips_secrets() {
        let url = Url::parse("https://user:pw@x.example/token?key=secret#frag").unwrap();
        assert_eq!(loggable_url(&url), "https://x.example/token");
    }
}
