//! A provider's discovery metadata document, and the discovery URLs derived
//! from an issuer. Input: an optional `issuer\n` line, then the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend_oauth::discovery::{discovery_urls, parse_metadata};
use tokend_oauth::tls_or_loopback;

const DEFAULT_ISSUER: &str = "https://issuer.example";

fuzz_target!(|data: &[u8]| {
    let (issuer, body) = match data.iter().position(|&b| b == b'\n') {
        Some(nl) if !data.starts_with(b"{") => match std::str::from_utf8(&data[..nl]) {
            Ok(issuer) => (issuer, &data[nl + 1..]),
            Err(_) => return,
        },
        _ => (DEFAULT_ISSUER, data),
    };
    if let Ok(urls) = discovery_urls(issuer) {
        assert_eq!(urls.len(), 2);
    }
    match parse_metadata(issuer, body) {
        Ok(provider) => {
            assert_eq!(provider.issuer.as_deref(), Some(issuer));
            // Tokens, codes and secrets go to these: TLS or loopback only.
            let endpoints = [
                Some(&provider.token_url),
                provider.authorize_url.as_ref(),
                provider.revoke_url.as_ref(),
                provider.device_url.as_ref(),
            ];
            for url in endpoints.into_iter().flatten() {
                assert!(tls_or_loopback(url), "{url} accepted");
            }
            let _ = format!("{provider:?}");
        }
        // The configured issuer is the user's; the rest is the provider's.
        Err(e) if issuer.is_empty() => check_shown(&e.to_string()),
        Err(e) => check_shown(&e.to_string().replace(issuer, "ISSUER")),
    }
});

/// Text from a provider or a callback reaches logs and terminals only
/// without control characters and clipped (issue 7).
fn check_shown(message: &str) {
    assert!(
        !message.chars().any(char::is_control),
        "control characters in {message:?}"
    );
    assert!(message.chars().count() <= 2000, "unclipped: {message:?}");
}
