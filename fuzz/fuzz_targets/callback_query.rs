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
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
