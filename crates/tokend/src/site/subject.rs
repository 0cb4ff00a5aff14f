//! A token-exchange subject from another site (`subject_site`): its access
//! or ID token, refreshed first when it would not outlive the call.

use token_proto::TokenKind;
use tokend_oauth::Assertion;

use super::{Deps, Served, SiteError, TtlFrom};

/// How long the subject token must still live when it is sent: a provider
/// refuses an expired subject, and the exchange takes a moment.
const SUBJECT_MIN_TTL: u64 = 30;

/// The subject site's token of `kind`, for `site`'s exchange: refreshed
/// first by that site when it would not outlive the call; never a login
/// (the exchange has no user to ask).
pub(crate) async fn token(
    deps: &Deps,
    site: &str,
    subject: &str,
    kind: TokenKind,
) -> Result<Assertion, SiteError> {
    let missing = |why: String| SiteError::NoSubject {
        site: site.to_owned(),
        message: format!("its subject_site {subject} {why}"),
    };
    if subject == site {
        return Err(missing("is the site itself".to_owned()));
    }
    let handle = deps
        .sites
        .get(subject)
        .ok_or_else(|| missing("is not a configured site".to_owned()))?;
    let served = match kind {
        TokenKind::AccessToken => {
            handle
                .get_for(Vec::new(), Some(SUBJECT_MIN_TTL), TtlFrom::Caller)
                .await
        }
        TokenKind::IdToken => handle.get_id_token(Some(SUBJECT_MIN_TTL)).await,
    };
    match served {
        Ok(Served::Token(t)) => Ok(Assertion::new(t.access_token.clone())),
        Ok(Served::NeedLogin) => Err(missing(format!(
            "is not logged in: run `token login {subject}`"
        ))),
        Err(e) => Err(missing(format!("has no token: {e}"))),
    }
}
