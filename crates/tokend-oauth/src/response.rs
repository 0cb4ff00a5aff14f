//! Turning a provider's raw answer into fields or an error.
//!
//! Token, revocation and device endpoints share the same rules: JSON or a
//! urlencoded form (GitHub without `Accept`, Stack Exchange's
//! `/oauth/access_token`), an OAuth error wins over the status (GitHub sends
//! errors with HTTP 200), and anything else is a [`Error::BadResponse`] that
//! says what arrived rather than echoing it, since it might hold a secret.

use serde_json::{Map, Value};

use crate::error::Error;

pub(crate) type Fields = Map<String, Value>;

/// Provider-chosen text is kept, but not without bound: it ends up in one-line
/// error messages and logs.
const MAX_TEXT: usize = 300;

/// The fields of a successful answer, or the error it amounts to.
/// `endpoint` names the answering endpoint in a [`Error::BadResponse`].
pub(crate) fn fields(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    endpoint: &str,
) -> Result<Fields, Error> {
    let bad = |what: &str| Error::BadResponse {
        status,
        what: what.to_owned(),
        endpoint: endpoint.to_owned(),
    };
    if (300..400).contains(&status) {
        return Err(bad("a redirect, which tokend does not follow"));
    }
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let looks_html = ct.contains("html") || trimmed.starts_with('<');
    let map = if trimmed.is_empty() {
        return Err(bad("an empty body"));
    } else if ct.contains("json") || trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(bad("JSON that is not an object")),
            Err(_) if looks_html => return Err(bad("an HTML page")),
            Err(_) => return Err(bad("a body that is not JSON")),
        }
    } else if looks_html {
        return Err(bad("an HTML page"));
    } else if ct.contains("x-www-form-urlencoded") || looks_like_form(trimmed) {
        url::form_urlencoded::parse(trimmed.trim_end().as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    } else {
        return Err(bad("a body that is neither JSON nor a form"));
    };
    if let Some(error) = provider_error(status, &map) {
        return Err(error);
    }
    if !(200..300).contains(&status) {
        return Err(bad("a body that holds no OAuth error"));
    }
    Ok(map)
}

/// Plain text such as `access_token=x&expires=86399`: one line of `k=v`
/// pairs. Providers that send it often label it `text/plain`.
fn looks_like_form(text: &str) -> bool {
    let line = text.trim_end();
    !line.is_empty()
        && !line.contains(char::is_whitespace)
        && line.split('&').all(|pair| pair.contains('='))
}

/// The OAuth error in a response, in any of the shapes providers use:
/// RFC 6749 `{error, error_description, error_uri}`, Stack Exchange's
/// `{"error": {"type", "message"}}` and its API's `{error_id, error_name,
/// error_message}`.
pub(crate) fn provider_error(status: u16, map: &Fields) -> Option<Error> {
    let provider = |error: String, description: Option<&str>, uri: Option<&str>| Error::Provider {
        status,
        error: clip(&error),
        description: description.map(clip),
        uri: uri.map(clip),
    };
    match map.get("error") {
        Some(Value::String(error)) if !error.is_empty() => {
            return Some(provider(
                error.clone(),
                str_field(map, "error_description"),
                str_field(map, "error_uri"),
            ))
        }
        Some(Value::Object(inner)) => {
            let error = str_field(inner, "type").unwrap_or("error").to_owned();
            return Some(provider(error, str_field(inner, "message"), None));
        }
        _ => {}
    }
    if map.contains_key("error_id") || map.contains_key("error_name") {
        let error = match (map.get("error_name"), map.get("error_id")) {
            (Some(Value::String(name)), _) => name.clone(),
            (_, Some(id)) => id.to_string(),
            _ => "error".to_owned(),
        };
        return Some(provider(error, str_field(map, "error_message"), None));
    }
    None
}

pub(crate) fn str_field<'a>(map: &'a Fields, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Provider text reaches logs and terminals: no control characters, clipped.
pub(crate) fn clip(text: &str) -> String {
    token_text::clean(text, MAX_TEXT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(status: u16, ct: Option<&str>, body: &str) -> Result<Fields, Error> {
        fields(status, ct, body.as_bytes(), "the token endpoint")
    }

    #[test]
    fn rfc6749_error() {
        let err = parse(
            400,
            Some("application/json"),
            r#"{"error":"invalid_client","error_description":"client authentication failed","error_uri":"https://x/doc"}"#,
        )
        .unwrap_err();
        let Error::Provider {
            status,
            error,
            description,
            uri,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*status, error.as_str()), (400, "invalid_client"));
        assert_eq!(description.as_deref(), Some("client authentication failed"));
        assert_eq!(uri.as_deref(), Some("https://x/doc"));
    }

    #[test]
    fn stack_exchange_error_shapes() {
        let err = parse(
            400,
            Some("application/json"),
            r#"{"error":{"type":"invalid_request","message":"bad code"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "provider said invalid_request: bad code");
        let err = parse(
            400,
            Some("application/json; charset=utf-8"),
            r#"{"error_id":403,"error_name":"access_denied","error_message":"no"}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "provider said access_denied: no");
        let err = parse(400, None, r#"{"error_id":502}"#).unwrap_err();
        assert_eq!(err.to_string(), "provider said 502");
    }

    #[test]
    fn error_with_status_200_is_an_error() {
        let err = parse(
            200,
            Some("application/json"),
            r#"{"error":"bad_verification_code"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Provider { status: 200, .. }),
            "{err:?}"
        );
        let err = parse(
            200,
            Some("application/x-www-form-urlencoded"),
            "error=bad_verification_code&error_description=The+code",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider said bad_verification_code: The code"
        );
    }

    #[test]
    fn garbage_says_what_arrived() {
        let what = |status, ct, body| match parse(status, ct, body).unwrap_err() {
            Error::BadResponse {
                what, status: s, ..
            } => {
                assert_eq!(s, status);
                what
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            what(502, Some("text/html"), "<html>Bad Gateway</html>"),
            "an HTML page"
        );
        assert_eq!(
            what(200, None, "<!DOCTYPE html><p>login</p>"),
            "an HTML page"
        );
        assert_eq!(
            what(200, Some("application/json"), "{not json"),
            "a body that is not JSON"
        );
        assert_eq!(
            what(200, Some("application/json"), "[1]"),
            "JSON that is not an object"
        );
        assert_eq!(
            what(500, Some("application/json"), "{}"),
            "a body that holds no OAuth error"
        );
        assert_eq!(what(200, None, ""), "an empty body");
        assert_eq!(
            what(200, Some("text/plain"), "hello world"),
            "a body that is neither JSON nor a form"
        );
        assert_eq!(
            what(302, None, ""),
            "a redirect, which tokend does not follow"
        );
        let err = parse(502, Some("text/html"), "<html>secret-ish</html>").unwrap_err();
        assert!(!err.to_string().contains("secret-ish"));
        assert!(err.is_transient());
    }

    #[test]
    fn long_descriptions_are_clipped() {
        let body = format!(
            r#"{{"error":"x","error_description":"{}"}}"#,
            "a".repeat(5000)
        );
        let err = parse(400, None, &body).unwrap_err();
        assert!(err.to_string().len() < 400);
    }

    #[test]
    fn control_characters_in_descriptions_are_dropped() {
        let body = r#"{"error":"x[31m","error_description":"line
]0;pwned"}"#;
        let text = parse(400, None, body).unwrap_err().to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}
