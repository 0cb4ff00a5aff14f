//! The redirect callback's query string, as the loopback listener hands it
//! over, checked against a provider with and without a known issuer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend_oauth::{check_callback, Provider};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token_url) = url::Url::parse("https://issuer.example/token") else {
        return;
    };
    let mut provider = Provider::new(token_url);
    for (issuer, iss_required) in [(None, false), (Some("https://issuer.example"), true)] {
        provider.issuer = issuer.map(str::to_owned);
        provider.iss_required = iss_required;
        match check_callback(query, "expected-state", &provider) {
            Ok(code) => {
                let _ = format!("{code:?}");
            }
            Err(e) => check_shown(&e.to_string()),
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
