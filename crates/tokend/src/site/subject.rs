//! A token-exchange subject from another site (`subject_site`): its access
//! or ID token, refreshed first when it would not outlive the call.

use token_proto::TokenKind;
use tokend_oauth::Assertion;

use super::{Deps, SiteError};

/// The subject site's token of `kind`, for `site`'s exchange.
pub(crate) async fn token(
    _deps: &Deps,
    site: &str,
    subject: &str,
    _kind: TokenKind,
) -> Result<Assertion, SiteError> {
    Err(SiteError::NoSubject {
        site: site.to_owned(),
        message: format!("subject_site {subject} cannot be asked yet"),
    })
}
