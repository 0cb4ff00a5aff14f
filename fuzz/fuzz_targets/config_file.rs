//! The config file: TOML text into sites (presets applied, values checked)
//! and per-site errors with line numbers; the fast read of the common
//! document (config/fast.rs) agrees with the TOML parser wherever it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::config::{Config, WrittenUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The common document's fast read agrees with the TOML parser.
    tokend::config::check_fast_read(text);
    let config = Config::parse(std::path::Path::new("config.toml"), text);
    for e in &config.errors {
        let _ = e.to_string();
        if let Some(line) = e.line {
            assert!(
                line >= 1 && line <= text.lines().count() + 1,
                "line {line} in {e}"
            );
        }
    }
    for (name, site) in &config.sites {
        // Presets fill in URLs after the config's own were checked: every
        // endpoint a site ends up with still goes over TLS (or to loopback),
        // and a URL kept as written is the one it was parsed from.
        let written = [
            &site.issuer,
            &site.token_url,
            &site.redirect_uri,
            &site.rare.base_url,
        ];
        for w in written.into_iter().flatten() {
            assert_eq!(
                url::Url::parse(w.as_str()).as_ref(),
                Ok(w.url()),
                "site {name}: {w:?}"
            );
        }
        let urls = written.into_iter().flatten().map(WrittenUrl::url).chain(
            [
                &site.authorize_url,
                &site.revoke_url,
                &site.device_url,
                &site.rare.api_base,
            ]
            .into_iter()
            .filter_map(|u| u.as_deref()),
        );
        for url in urls {
            assert!(
                tokend_oauth::tls_or_loopback(url),
                "site {name}: {url:?} accepted"
            );
        }
        let _ = site.identity();
        let _ = site.effective_client_auth();
        let _ = format!("{site:?}");
        assert!(config.site_error(name).is_none());
    }
    for name in config.broken.keys() {
        assert!(config.site_error(name).is_some());
    }
});
