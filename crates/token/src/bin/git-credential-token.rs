//! `git-credential-token get|store|erase`: `token credential` under the name
//! git looks for when `credential.helper = token`.
fn main() -> std::process::ExitCode {
    token::git_credential_main()
}
