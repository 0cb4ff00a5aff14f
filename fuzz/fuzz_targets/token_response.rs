//! Token endpoint answers, error bodies included, as JSON or a form, and the
//! device endpoint's answers, which share the same parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend_oauth::device::{parse_device_authorization, parse_device_poll};
use tokend_oauth::{parse_token_response, RawResponse};

const STATUSES: [u16; 8] = [200, 201, 302, 400, 401, 403, 429, 500];
const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
    Some("text/html"),
    Some("APPLICATION/JSON"),
    Some("application/octet-stream"),
];

fuzz_target!(|data: &[u8]| {
    // First byte: status and content type; the rest is the body.
    let Some((&knob, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(knob & 7)];
    let content_type = CONTENT_TYPES[usize::from((knob >> 3) & 7)];
    match parse_token_response(status, content_type, body) {
        Ok(token) => {
            let _ = token.is_bearer();
            let requested = ["no_expiry".to_owned()];
            for now in [0.0, 1_700_000_000.0, 1e300, f64::NAN] {
                let _ = token.expires_at(now, &[]);
                let _ = token.expires_at(now, &requested);
            }
            let _ = format!("{token:?}");
        }
        Err(e) => check_shown(&e.to_string()),
    }
    let raw = RawResponse {
        status,
        content_type: content_type.map(str::to_owned),
        location: None,
        dpop_nonce: None,
        body: body.to_vec(),
    };
    if let Err(e) = parse_device_authorization(&raw) {
        check_shown(&e.to_string());
    }
    if let Err(e) = parse_device_poll(&raw) {
        check_shown(&e.to_string());
    }
});

/// Text from a provider or a callback reaches logs and terminals only
/// without control characters and clipped (issue 7).
fn check_shown(message: &str) {
    assert!(
        !message.chars().any(char::is_control),
        "control characters in {message:?}"
    );
    assert!(message.chars().count() <= 1000, "unclipped: {message:?}");
}
