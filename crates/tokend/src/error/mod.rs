//! Errors that cross the socket: a code from the closed set and a message
//! that is lower-case, names the site, holds no secret and says what to do.

use token_proto::{ErrorBody, ErrorCode};

mod site;

pub(crate) use site::SiteError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub(crate) fn login_required(site: &str, why: &str) -> ApiError {
        ApiError::new(
            ErrorCode::LoginRequired,
            format!("site {site} needs a login{why}: run `token login {site}`"),
        )
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
