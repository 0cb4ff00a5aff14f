//! A provider's discovery metadata document, and the discovery URLs derived
//! from an issuer. Input: an optional `issuer\n` line, then the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend_oauth::discovery::{discovery_urls, parse_metadata};

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
            let _ = format!("{provider:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
