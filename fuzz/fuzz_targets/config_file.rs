//! The config file: TOML text into sites (presets applied, values checked)
//! and per-site errors with line numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
        let _ = site.identity();
        let _ = site.effective_client_auth();
        let _ = format!("{site:?}");
        assert!(config.site_error(name).is_none());
    }
    for name in config.broken.keys() {
        assert!(config.site_error(name).is_some());
    }
});
