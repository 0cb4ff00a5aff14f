#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
//! `git-credential-token get|store|erase`: `token credential` under the name
//! git looks for when `credential.helper = token`.
token::entry!(token::git_credential_main);
