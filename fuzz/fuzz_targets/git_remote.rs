//! The daemon's side of the git credential input: a `lookup` request's
//! `protocol` and `host` (as git sent them) matched against `hosts` entries.
//! Input: `protocol\nhost\nentry`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::config::{GitHost, Remote};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let protocol = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or_default();
    let entry = parts.next().unwrap_or_default();
    let parsed = GitHost::parse(entry);
    match Remote::new(protocol, host) {
        Ok(remote) => {
            assert!(
                protocol == "https" || protocol == "http",
                "a token for protocol {protocol:?}"
            );
            let written = remote.as_entry();
            // The hint an error gives must name this very remote.
            if let Ok(hint) = GitHost::parse(&written) {
                assert!(remote.matches(&hint), "hint {written:?} for {host:?}");
            }
            if let Ok(entry) = parsed {
                let _ = remote.matches(&entry);
            }
        }
        Err(refusal) => {
            let _ = format!("{refusal:?}");
        }
    }
});
