//! Checking the redirect back from the browser: the authorization code
//! callback (with `state` and RFC 9207 `iss`) and the legacy implicit flow's
//! fragment. Input may be a full URL, a bare query or a fragment, since in
//! paste mode the user pastes whatever their browser shows.

use crate::pkce::constant_time_eq;
use crate::provider::Provider;
use crate::response::Fields;
use crate::secret::AuthCode;
use crate::token::{self, TokenResponse};

/// Why a callback was refused. Messages hold no code, token or state.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackError {
    #[error("the provider refused the login: {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the callback's state does not match this login; start the login again")]
    StateMismatch,
    #[error("the callback came from issuer {got}, not {expected}; refusing it as a possible mix-up attack")]
    IssMismatch { expected: String, got: String },
    #[error("the provider promised an iss parameter but the callback has none; refusing it")]
    IssMissing,
    #[error("the callback has no authorization code")]
    NoCode,
    #[error("the callback has {what}")]
    BadToken { what: &'static str },
    /// RFC 6749 §3.1: parameters must not be repeated.
    #[error("the callback repeats the {param} parameter; refusing it")]
    Duplicate { param: String },
}

/// Check a code callback and return its code. Checks run in this order:
/// an `error` parameter, `state` (constant time), `iss`, the code itself.
/// `iss` is compared only when the provider's issuer is known.
pub fn check_callback(
    query: &str,
    expected_state: &str,
    provider: &Provider,
) -> Result<AuthCode, CallbackError> {
    let params = Params::parse(query, false)?;
    params.check_error_and_state(expected_state)?;
    match (params.get("iss"), provider.issuer.as_deref()) {
        (Some(got), Some(expected)) if got != expected => {
            return Err(CallbackError::IssMismatch {
                expected: expected.to_owned(),
                // Anyone can send the callback: shown only cleaned and clipped.
                got: crate::response::clip(got),
            });
        }
        (None, _) if provider.iss_required => return Err(CallbackError::IssMissing),
        _ => {}
    }
    params
        .get("code")
        .filter(|c| !c.is_empty())
        .map(|c| AuthCode::new(c.to_owned()))
        .ok_or(CallbackError::NoCode)
}

/// Check an implicit-flow redirect (`#access_token=...&state=...`) and
/// return its token. There is never a refresh token in this flow.
pub fn parse_implicit_fragment(
    url_or_fragment: &str,
    expected_state: &str,
) -> Result<TokenResponse, CallbackError> {
    let params = Params::parse(url_or_fragment, true)?;
    params.check_error_and_state(expected_state)?;
    let fields: Fields = params
        .0
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut token = token::from_fields(&fields).map_err(|what| CallbackError::BadToken { what })?;
    token.refresh_token = None;
    Ok(token)
}

struct Params(Vec<(String, String)>);

impl Params {
    /// The parameters of a URL, query or fragment. A full URL contributes its
    /// query, or its fragment when `prefer_fragment` or the query is empty.
    fn parse(input: &str, prefer_fragment: bool) -> Result<Params, CallbackError> {
        let input = input.trim();
        let (before_hash, fragment) = match input.split_once('#') {
            Some((before, fragment)) => (before, Some(fragment)),
            None => (input, None),
        };
        let query = match before_hash.split_once('?') {
            Some((_, query)) => Some(query),
            // A bare `code=...&state=...` (no URL, no `?`).
            None if !before_hash.contains("://") && before_hash.contains('=') => Some(before_hash),
            None => None,
        };
        let chosen = match (
            query.filter(|q| !q.is_empty()),
            fragment.filter(|f| !f.is_empty()),
        ) {
            (Some(_), Some(f)) if prefer_fragment => f,
            (Some(q), _) => q,
            (None, Some(f)) => f,
            (None, None) => "",
        };
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(chosen.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            let repeated = pairs[..i].iter().any(|(k, _)| k == name);
            if repeated
                && matches!(
                    name.as_str(),
                    "code" | "state" | "iss" | "access_token" | "error"
                )
            {
                return Err(CallbackError::Duplicate {
                    param: name.clone(),
                });
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `state` first: an `error=` without the login's own `state` could come
    /// from any page or process, and must not end the login.
    fn check_error_and_state(&self, expected_state: &str) -> Result<(), CallbackError> {
        match self.get("state") {
            Some(state) if constant_time_eq(state.as_bytes(), expected_state.as_bytes()) => {}
            _ => return Err(CallbackError::StateMismatch),
        }
        if let Some(error) = self.get("error") {
            return Err(CallbackError::Denied {
                error: crate::response::clip(error),
                description: self.get("error_description").map(crate::response::clip),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::token::Lifetime;
    use url::Url;

    fn provider(issuer: Option<&str>, iss_required: bool) -> Provider {
        let mut p = Provider::new(Url::parse("https://as.example/token").unwrap());
        p.issuer = issuer.map(str::to_owned);
        p.iss_required = iss_required;
        p
    }

    #[test]
    fn accepts_url_query_and_fragment_forms() {
        let p = provider(None, false);
        for input in [
            "http://127.0.0.1:4321/callback?code=abc%2F1&state=s1",
            "?code=abc%2F1&state=s1",
            "code=abc%2F1&state=s1",
            "  https://x/login_success#code=abc%2F1&state=s1\n",
            "https://x/cb?code=abc%2F1&state=s1#",
        ] {
            let code = check_callback(input, "s1", &p).unwrap();
            assert_eq!(code.expose(), "abc/1", "{input}");
        }
    }

    #[test]
    fn an_error_counts_only_with_the_right_state() {
        for forged in [
            "?error=access_denied&error_description=User+said+no&state=WRONG",
            "?error=access_denied",
        ] {
            assert_eq!(
                check_callback(forged, "s1", &provider(None, true)).unwrap_err(),
                CallbackError::StateMismatch,
                "{forged}"
            );
        }
        let err = check_callback(
            "?error=access_denied&error_description=User+said+no&state=s1",
            "s1",
            &provider(None, true),
        )
        .unwrap_err();
        assert_eq!(
            err,
            CallbackError::Denied {
                error: "access_denied".into(),
                description: Some("User said no".into())
            }
        );
        assert_eq!(
            err.to_string(),
            "the provider refused the login: access_denied: User said no"
        );
    }

    #[test]
    fn state_checks() {
        let p = provider(None, false);
        assert_eq!(
            check_callback("?code=c&state=s2", "s1", &p).unwrap_err(),
            CallbackError::StateMismatch
        );
        assert_eq!(
            check_callback("?code=c", "s1", &p).unwrap_err(),
            CallbackError::StateMismatch
        );
        assert_eq!(
            check_callback("?code=c&state=", "s1", &p).unwrap_err(),
            CallbackError::StateMismatch
        );
        assert_eq!(
            check_callback("?code=c&state=s1&state=s1", "s1", &p).unwrap_err(),
            CallbackError::Duplicate {
                param: "state".into()
            }
        );
    }

    #[test]
    fn iss_checks() {
        let p = provider(Some("https://as.example"), true);
        assert!(check_callback("?code=c&state=s&iss=https%3A%2F%2Fas.example", "s", &p).is_ok());
        assert_eq!(
            check_callback("?code=c&state=s&iss=https%3A%2F%2Fevil.example", "s", &p).unwrap_err(),
            CallbackError::IssMismatch {
                expected: "https://as.example".into(),
                got: "https://evil.example".into()
            }
        );
        assert_eq!(
            check_callback("?code=c&state=s", "s", &p).unwrap_err(),
            CallbackError::IssMissing
        );
        // Not required: absent is fine, but a wrong one is still refused.
        let p = provider(Some("https://as.example"), false);
        assert!(check_callback("?code=c&state=s", "s", &p).is_ok());
        assert!(matches!(
            check_callback("?code=c&state=s&iss=x", "s", &p),
            Err(CallbackError::IssMismatch { .. })
        ));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/callback_query.rs): a forged
    /// `iss` reached the message, and so logs, with its control characters.
    #[test]
    fn a_forged_iss_is_shown_without_control_characters() {
        let p = provider(Some("https://as.example"), true);
        let long = "x".repeat(5000);
        let query = format!("?code=c&state=s&iss=h:tps%\0\0\0U2A%2F%1b[2J%0d{long}");
        let text = check_callback(&query, "s", &p).unwrap_err().to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.len() < 1000, "{text}");
    }

    #[test]
    fn no_code() {
        let p = provider(None, false);
        assert_eq!(
            check_callback("?state=s", "s", &p).unwrap_err(),
            CallbackError::NoCode
        );
        assert_eq!(
            check_callback("?state=s&code=", "s", &p).unwrap_err(),
            CallbackError::NoCode
        );
        assert_eq!(
            check_callback("http://127.0.0.1/cb", "s", &p).unwrap_err(),
            CallbackError::StateMismatch
        );
    }

    #[test]
    fn implicit_fragment() {
        let token = parse_implicit_fragment(
            "https://stackexchange.com/oauth/login_success#access_token=AT%28x&expires=86400&state=s",
            "s",
        )
        .unwrap();
        assert_eq!(token.access_token.expose(), "AT(x");
        assert_eq!(token.lifetime, Lifetime::Seconds(86400));
        assert!(token.refresh_token.is_none());
        let token = parse_implicit_fragment(
            "#access_token=a&token_type=bearer&expires_in=60&scope=x+y&state=s",
            "s",
        )
        .unwrap();
        assert!(token.is_bearer());
        assert_eq!(token.scopes, Some(vec!["x".to_string(), "y".to_string()]));
        assert_eq!(
            parse_implicit_fragment("#access_token=a&state=t", "s").unwrap_err(),
            CallbackError::StateMismatch
        );
        assert_eq!(
            parse_implicit_fragment("#state=s", "s").unwrap_err(),
            CallbackError::BadToken {
                what: "a response without access_token"
            }
        );
        assert!(matches!(
            parse_implicit_fragment("#access_token=a%0Aurl%3Dx&state=s", "s"),
            Err(CallbackError::BadToken { .. })
        ));
        assert!(matches!(
            parse_implicit_fragment("https://x/cb#error=access_denied&state=s", "s"),
            Err(CallbackError::Denied { .. })
        ));
    }

    #[test]
    fn errors_hold_no_secrets() {
        let p = provider(Some("https://as.example"), false);
        let err = check_callback("?code=SECRETCODE&state=SECRETSTATE&iss=x", "s", &p).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}
