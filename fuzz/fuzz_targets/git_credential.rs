//! The git credential helper's input: `key=value` lines from git on stdin,
//! up to a blank line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (key, value) in token::fuzzing::git_credential_input(data) {
        assert!(!key.contains('='), "key {key:?}");
        assert!(!key.contains('\n') && !value.contains('\n'));
    }
});
