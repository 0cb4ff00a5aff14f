//! What a user pastes back for a paste-back login: a full URL, a query, a
//! fragment or a bare code, taken the way the daemon's paste login does
//! (`crates/tokend/src/login/paste.rs`): trimmed, then the implicit flow's
//! fragment, or a code callback when it holds a `=`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend_oauth::{check_callback, parse_implicit_fragment, Provider};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let input = input.trim();
    if input.is_empty() {
        return;
    }
    match parse_implicit_fragment(input, "expected-state") {
        Ok(token) => {
            assert!(token.refresh_token.is_none());
            let _ = token.expires_at(1_700_000_000.0, &[]);
            let _ = format!("{token:?}");
        }
        Err(e) => check_shown(&e.to_string()),
    }
    if input.contains('=') {
        let Ok(token_url) = url::Url::parse("https://issuer.example/token") else {
            return;
        };
        let provider = Provider::new(token_url);
        if let Err(e) = check_callback(input, "expected-state", &provider) {
            check_shown(&e.to_string());
        }
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
