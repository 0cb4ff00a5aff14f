//! The closed set of error codes that cross the socket, and the client exit
//! code each one maps to.

use serde::{Deserialize, Serialize};

/// Why a request failed. The set is closed and documented in `PROTOCOL.md`;
/// a code this build does not know decodes to [`ErrorCode::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line was not JSON, too long, or missing a field.
    BadRequest,
    /// The request's `v` is not [`crate::PROTOCOL_VERSION`].
    VersionMismatch,
    /// No site of that name in the config.
    UnknownSite,
    /// The config file, or this site's table in it, is invalid.
    ConfigError,
    /// The site needs the user's consent and the caller did not allow a login.
    LoginRequired,
    /// A login ran and failed (denied, forged callback, a refused exchange).
    LoginFailed,
    /// A login did not complete: nobody approved it in time, or it was
    /// cancelled. Not the provider's refusal: try again, perhaps another way.
    LoginIncomplete,
    /// The provider refused or could not be reached.
    ProviderError,
    /// The peer is not the user who owns the daemon.
    Forbidden,
    /// A bug or an unexpected local failure (store, I/O).
    Internal,
    /// A code from a newer daemon.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The `token` exit code documented in DESIGN.md for this error.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnknownSite | ErrorCode::ConfigError => 2,
            ErrorCode::LoginRequired => 3,
            ErrorCode::LoginFailed | ErrorCode::ProviderError => 4,
            ErrorCode::VersionMismatch | ErrorCode::Forbidden => 5,
            ErrorCode::LoginIncomplete => 6,
            ErrorCode::Internal | ErrorCode::Unknown => 1,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::UnknownSite => "unknown_site",
            ErrorCode::ConfigError => "config_error",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::LoginFailed => "login_failed",
            ErrorCode::LoginIncomplete => "login_incomplete",
            ErrorCode::ProviderError => "provider_error",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// The `"error"` object of a failed response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Lower-case, names the site, ends with what to do next, never holds a secret.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_decode_to_unknown() {
        let body: ErrorBody = serde_json::from_str(r#"{"code":"quota_exceeded","message":"m"}"#)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(body.code, ErrorCode::Unknown);
        assert_eq!(body.code.exit_code(), 1);
    }

    #[test]
    fn wire_names_round_trip() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::VersionMismatch,
            ErrorCode::UnknownSite,
            ErrorCode::ConfigError,
            ErrorCode::LoginRequired,
            ErrorCode::LoginFailed,
            ErrorCode::ProviderError,
            ErrorCode::Forbidden,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
