//! Token endpoint responses (RFC 6749 §5.1) and what they mean for expiry.
//!
//! Quirks handled here: `expires_in` as a number or a string, Stack
//! Exchange's `expires` and form-urlencoded body, comma-separated granted
//! scope, a missing `token_type`, and tokens that never expire.

use serde_json::Value;

use crate::error::Error;
use crate::jwt;
use crate::response::{self, str_field, Fields};
use crate::secret::{AccessToken, RefreshToken};

/// The lifetime assumed for a token whose response says nothing about it,
/// is not a JWT and was not asked for as `no_expiry`: one hour, the most
/// common lifetime in practice, so a wrong guess costs at most an early
/// refresh or one failed call that triggers a refresh.
pub const DEFAULT_LIFETIME: u64 = 3600;

/// How long the provider said the access token lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// `expires_in` (or Stack Exchange's `expires`), in seconds.
    Seconds(u64),
    /// The provider granted `no_expiry` and sent no lifetime.
    Never,
    /// The response carried no usable lifetime.
    Unknown,
}

/// A successful token response.
#[derive(Clone)]
pub struct TokenResponse {
    pub access_token: AccessToken,
    /// As the provider sent it (`Bearer` when absent, as from Stack
    /// Exchange); compare with [`TokenResponse::is_bearer`].
    pub token_type: String,
    pub lifetime: Lifetime,
    /// `None` on a refresh means "keep the refresh token you have".
    pub refresh_token: Option<RefreshToken>,
    /// The granted scope, when the response had one.
    pub scopes: Option<Vec<String>>,
    /// The OIDC ID token; a credential for some APIs, so redacted in `Debug`.
    pub id_token: Option<String>,
    /// RFC 8693 §2.2.1: what a token exchange issued
    /// (`urn:ietf:params:oauth:token-type:access_token`, …).
    pub issued_token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("lifetime", &self.lifetime)
            .field("refresh_token", &self.refresh_token)
            .field("scopes", &self.scopes)
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field("issued_token_type", &self.issued_token_type)
            .finish()
    }
}

impl TokenResponse {
    /// `token_type` is case-insensitive (RFC 6749 §5.1): `bearer` is Bearer.
    pub fn is_bearer(&self) -> bool {
        self.token_type.eq_ignore_ascii_case("bearer")
    }

    /// When the access token expires, in whole Unix seconds; `None` for never.
    ///
    /// Counted so that the provider never considers the token expired
    /// before this: `expires_in` from `sent_at`, when the token request was
    /// sent (the provider issued the token after that), less one second
    /// (providers count `exp` in whole seconds), rounded down; a JWT's own
    /// `exp` when that is earlier. With no lifetime in the response: never
    /// if `no_expiry` was requested or granted (Stack Exchange), else the
    /// JWT's `exp` if the token is a JWT, else [`DEFAULT_LIFETIME`] counted
    /// the same way.
    pub fn expires_at(&self, sent_at: f64, requested_scopes: &[String]) -> Option<u64> {
        let counted = |secs: u64| whole(sent_at + secs as f64 - 1.0);
        let exp = jwt::exp(self.access_token.expose());
        match self.lifetime {
            Lifetime::Seconds(n) => Some(exp.map_or(counted(n), |exp| exp.min(counted(n)))),
            Lifetime::Never => None,
            Lifetime::Unknown => {
                let granted = self.scopes.as_deref().unwrap_or(&[]);
                if requested_scopes
                    .iter()
                    .chain(granted)
                    .any(|s| s == "no_expiry")
                {
                    return None;
                }
                exp.or_else(|| Some(counted(DEFAULT_LIFETIME)))
            }
        }
    }
}

/// Whole Unix seconds, rounded down.
fn whole(unix: f64) -> u64 {
    unix.max(0.0) as u64
}

/// Parse a token endpoint's answer: JSON or `application/x-www-form-urlencoded`.
/// An error body is an error whatever the status; a body without
/// `access_token` is a [`Error::BadResponse`].
pub fn parse_token_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenResponse, Error> {
    let fields = response::fields(status, content_type, body, "the token endpoint")?;
    from_fields(&fields).map_err(|what| Error::BadResponse {
        status,
        what: what.into(),
        endpoint: "the token endpoint".into(),
    })
}

/// A token response from already-decoded fields (also used for the implicit
/// flow's fragment and device polls). Refused, with what was wrong: no
/// access token, a token with characters no token may hold (they would
/// reach HTTP headers, git's credential protocol and terminals), or a token
/// type other than Bearer and DPoP (the only ones tokend can present).
pub(crate) fn from_fields(fields: &Fields) -> Result<TokenResponse, &'static str> {
    let access = str_field(fields, "access_token").ok_or("a response without access_token")?;
    if !is_token_text(access) {
        return Err("an access_token with characters outside RFC 6749's VSCHAR set");
    }
    let refresh = str_field(fields, "refresh_token");
    if refresh.is_some_and(|r| !is_token_text(r)) {
        return Err("a refresh_token with characters outside RFC 6749's VSCHAR set");
    }
    let id_token = str_field(fields, "id_token");
    if id_token.is_some_and(|t| !is_token_text(t)) {
        return Err("an id_token with characters no JWT holds");
    }
    let token_type = str_field(fields, "token_type").unwrap_or("Bearer");
    if !token_type.eq_ignore_ascii_case("bearer") && !token_type.eq_ignore_ascii_case("dpop") {
        return Err("a token_type other than Bearer or DPoP");
    }
    let access_token = AccessToken::new(access.to_owned());
    let scopes = fields.get("scope").and_then(split_scope);
    let lifetime =
        match seconds(fields.get("expires_in")).or_else(|| seconds(fields.get("expires"))) {
            Some(n) => Lifetime::Seconds(n),
            None if scopes
                .as_ref()
                .is_some_and(|s| s.iter().any(|s| s == "no_expiry")) =>
            {
                Lifetime::Never
            }
            None => Lifetime::Unknown,
        };
    Ok(TokenResponse {
        access_token,
        token_type: token_type.to_owned(),
        lifetime,
        refresh_token: refresh.map(|s| RefreshToken::new(s.to_owned())),
        scopes,
        id_token: id_token.map(str::to_owned),
        issued_token_type: str_field(fields, "issued_token_type")
            .filter(|t| is_scope_text(t))
            .map(str::to_owned),
    })
}

/// A token as RFC 6749 allows one (Appendix A: `1*VSCHAR`), less the space,
/// which would split an `Authorization` header: visible ASCII only. Stack
/// Exchange's `))`-ended tokens pass; a newline never does.
fn is_token_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// A scope token as RFC 6749 §3.3 allows (NQCHAR: visible ASCII but `"`
/// and `\\`); others are dropped, so no provider text with control
/// characters reaches `token status` or a terminal.
fn is_scope_text(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// A positive number of seconds, sent as a JSON number or a string. Zero is
/// treated as absent: some providers send it for tokens that do not expire,
/// and taking it literally would refresh in a tight loop.
pub(crate) fn seconds(value: Option<&Value>) -> Option<u64> {
    let n = match value? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    (n > 0).then_some(n)
}

/// Granted scope: RFC 6749 says space-separated, some providers use commas
/// (Stack Exchange, GitHub) and a few send a JSON array.
fn split_scope(value: &Value) -> Option<Vec<String>> {
    let scopes: Vec<String> = match value {
        Value::String(s) => s
            .split([' ', ','])
            .filter(|s| !s.is_empty() && is_scope_text(s))
            .map(str::to_owned)
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty() && is_scope_text(s))
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    Some(scopes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");
    const NOW: u64 = 1_700_000_000;
    /// When a token request was sent: a fraction into second NOW.
    const SENT: f64 = 1_700_000_000.7;

    fn ok(body: &str) -> TokenResponse {
        parse_token_response(200, JSON, body.as_bytes()).unwrap()
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn full_response() {
        let t = ok(
            r#"{"access_token":"at","token_type":"Bearer","expires_in":3599,"refresh_token":"rt","scope":"read write","id_token":"idt"}"#,
        );
        assert_eq!(t.access_token.expose(), "at");
        assert_eq!(t.refresh_token.as_ref().unwrap().expose(), "rt");
        assert_eq!(t.lifetime, Lifetime::Seconds(3599));
        assert_eq!(t.expires_at(SENT, &[]), Some(NOW + 3598));
        assert_eq!(t.scopes, Some(scopes(&["read", "write"])));
        assert_eq!(t.id_token.as_deref(), Some("idt"));
        assert!(t.is_bearer());
    }

    #[test]
    fn expires_in_as_string() {
        let t = ok(r#"{"access_token":"at","token_type":"bearer","expires_in":"3600"}"#);
        assert_eq!(t.lifetime, Lifetime::Seconds(3600));
        assert!(t.is_bearer());
        assert_eq!(t.token_type, "bearer");
    }

    #[test]
    fn token_type_is_case_insensitive_and_kept() {
        assert!(ok(r#"{"access_token":"a","token_type":"BEARER"}"#).is_bearer());
        let dpop = ok(r#"{"access_token":"a","token_type":"dpop"}"#);
        assert!(!dpop.is_bearer());
        let err = parse_token_response(200, JSON, br#"{"access_token":"a","token_type":"mac"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("Bearer or DPoP"), "{err}");
        assert_eq!(dpop.token_type, "dpop");
        assert!(ok(r#"{"access_token":"a"}"#).is_bearer());
    }

    /// A newline in a token would inject attributes into git's credential
    /// output (`password=…\nurl=…`) or headers: refused, as are spaces and
    /// non-ASCII; Stack Exchange's `))` tokens pass. Scopes with control
    /// characters are dropped.
    #[test]
    fn tokens_outside_vschar_are_refused_and_scopes_cleaned() {
        for bad in [
            r#"{"access_token":"at\nurl=https://evil.example","token_type":"Bearer"}"#,
            r#"{"access_token":"a t"}"#,
            r#"{"access_token":"é"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":"at","refresh_token":"rt\r\nx"}"#,
            r#"{"access_token":"at","id_token":"a.b\n.c"}"#,
        ] {
            let err = parse_token_response(200, JSON, bad.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("answered HTTP 200 with a"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            ok(r#"{"access_token":"Ab1_-.~+/=))"}"#)
                .access_token
                .expose(),
            "Ab1_-.~+/=))"
        );
        let t = ok(r#"{"access_token":"a","scope":"read \u001b[31mred write"}"#);
        assert_eq!(t.scopes, Some(scopes(&["read", "write"])));
    }

    #[test]
    fn stack_exchange_expires_json_and_form() {
        let t = ok(r#"{"access_token":"at","expires":86399}"#);
        assert_eq!(t.lifetime, Lifetime::Seconds(86399));
        let t = parse_token_response(
            200,
            Some("application/x-www-form-urlencoded"),
            b"access_token=a%2Fb%28c&expires=86399",
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "a/b(c");
        assert_eq!(t.lifetime, Lifetime::Seconds(86399));
        // Stack Exchange labels the form text/plain.
        let t = parse_token_response(200, Some("text/plain"), b"access_token=xyz&expires=10\n")
            .unwrap();
        assert_eq!(t.lifetime, Lifetime::Seconds(10));
        assert!(t.refresh_token.is_none());
    }

    #[test]
    fn no_lifetime_and_no_expiry() {
        let t = ok(r#"{"access_token":"at"}"#);
        assert_eq!(t.lifetime, Lifetime::Unknown);
        assert_eq!(
            t.expires_at(SENT, &scopes(&["write_access", "no_expiry"])),
            None
        );
        let t = ok(r#"{"access_token":"at","scope":"write_access,no_expiry"}"#);
        assert_eq!(t.lifetime, Lifetime::Never);
        assert_eq!(t.expires_at(SENT, &[]), None);
    }

    #[test]
    fn no_lifetime_jwt_exp() {
        let token = jwt::fake(r#"{"exp":1700000500}"#);
        let t = ok(&format!(r#"{{"access_token":"{token}"}}"#));
        assert_eq!(t.expires_at(SENT, &[]), Some(1_700_000_500));
    }

    #[test]
    fn no_lifetime_default() {
        let t = ok(r#"{"access_token":"opaque","expires_in":0}"#);
        assert_eq!(t.lifetime, Lifetime::Unknown);
        assert_eq!(
            t.expires_at(SENT, &scopes(&["read"])),
            Some(NOW + DEFAULT_LIFETIME - 1)
        );
    }

    #[test]
    fn expiry_counts_from_the_request_less_a_second_and_takes_an_earlier_jwt_exp() {
        // Sent at .7, 20 s: the provider's whole-second `exp` is at least
        // NOW + 20, and NOW + 19 is the last whole second before it.
        let t = ok(r#"{"access_token":"opaque","expires_in":20}"#);
        assert_eq!(t.expires_at(SENT, &[]), Some(NOW + 19));
        assert_eq!(t.expires_at(NOW as f64, &[]), Some(NOW + 19));
        // A JWT whose own `exp` is earlier than the response says: its `exp`.
        let early = jwt::fake(r#"{"exp":1700000010}"#);
        let t = ok(&format!(r#"{{"access_token":"{early}","expires_in":20}}"#));
        assert_eq!(t.expires_at(SENT, &[]), Some(NOW + 10));
        // Later: the counted expiry.
        let late = jwt::fake(r#"{"exp":1700000060}"#);
        let t = ok(&format!(r#"{{"access_token":"{late}","expires_in":20}}"#));
        assert_eq!(t.expires_at(SENT, &[]), Some(NOW + 19));
    }

    #[test]
    fn granted_scope_narrower_or_comma_separated() {
        let t = ok(r#"{"access_token":"a","scope":"read"}"#);
        assert_eq!(t.scopes, Some(scopes(&["read"])));
        let t = ok(r#"{"access_token":"a","scope":"repo,gist, user"}"#);
        assert_eq!(t.scopes, Some(scopes(&["repo", "gist", "user"])));
        let t = ok(r#"{"access_token":"a","scope":["x","y"]}"#);
        assert_eq!(t.scopes, Some(scopes(&["x", "y"])));
        assert_eq!(ok(r#"{"access_token":"a"}"#).scopes, None);
    }

    #[test]
    fn missing_refresh_token_is_none() {
        let t = ok(r#"{"access_token":"a","expires_in":60}"#);
        assert!(t.refresh_token.is_none());
        let t = ok(r#"{"access_token":"a","refresh_token":""}"#);
        assert!(t.refresh_token.is_none());
    }

    #[test]
    fn missing_access_token_is_bad_response() {
        let err = parse_token_response(200, JSON, br#"{"token_type":"Bearer"}"#).unwrap_err();
        assert!(
            matches!(err, Error::BadResponse { status: 200, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the token endpoint answered HTTP 200 with a response without access_token"
        );
    }

    #[test]
    fn error_shapes_and_garbage() {
        let err = parse_token_response(
            400,
            JSON,
            br#"{"error":"invalid_grant","error_description":"expired"}"#,
        )
        .unwrap_err();
        assert!(err.is_invalid_grant());
        let err = parse_token_response(
            400,
            JSON,
            br#"{"error":{"type":"invalid_grant","message":"m"}}"#,
        )
        .unwrap_err();
        assert!(err.is_invalid_grant());
        let err = parse_token_response(503, Some("text/html"), b"<html>down</html>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the token endpoint answered HTTP 503 with an HTML page"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn debug_redacts_everything_secret() {
        let t = ok(
            r#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET","id_token":"ID-SECRET"}"#,
        );
        let shown = format!("{t:?}");
        for secret in ["AT-SECRET", "RT-SECRET", "ID-SECRET"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
