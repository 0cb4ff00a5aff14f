//! `cargo-credential-token --cargo-plugin`: cargo's credential provider for
//! `credential-provider = ["cargo-credential-token"]`.
fn main() -> std::process::ExitCode {
    token::cargo_credential_main()
}
