//! `docker-credential-token get|list|store|erase`: the docker credential
//! helper that docker, podman and skopeo run for
//! `"credHelpers": {"registry.example.com": "token"}`.
fn main() -> std::process::ExitCode {
    token::docker_credential_main()
}
