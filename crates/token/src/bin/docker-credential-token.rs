#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
//! `docker-credential-token get|list|store|erase`: the docker credential
//! helper that docker, podman and skopeo run for
//! `"credHelpers": {"registry.example.com": "token"}`.
token::entry!(token::docker_credential_main);
