#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
//! `cargo-credential-token --cargo-plugin`: cargo's credential provider for
//! `credential-provider = ["cargo-credential-token"]`.
token::entry!(token::cargo_credential_main);
