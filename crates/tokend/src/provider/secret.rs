//! The client secret: from the daemon's environment or a command, never
//! from the config file itself.

use tokend_oauth::ClientSecret;
use zeroize::Zeroizing;

use crate::config::SecretSource;
use crate::error::SiteError;

/// The most a `client_secret_cmd` may print; its output is wiped after use.
const MAX_SECRET_OUTPUT: u64 = 64 * 1024;

/// Why a `client_secret_env` site has no secret, with the fix, when its
/// variable is not set in the daemon's environment (which is where tokend
/// started, not the shell of the `token` that asks).
pub(crate) fn missing_env_secret(site: &str, src: &SecretSource) -> Option<String> {
    let SecretSource::Env(var) = src else {
        return None;
    };
    let set = std::env::var_os(var).is_some_and(|v| !v.is_empty());
    (!set).then(|| {
        format!(
            "site {site}: needs its client secret: client_secret_env names {var}, which is not set \
             in tokend's environment (tokend reads it where it started, not where `token` runs); \
             run `token stop`, then any `token` command from a shell where {var} is set, or use \
             client_secret_cmd, or under systemd set Environment={var}=… in the unit"
        )
    })
}

/// Where the client secret comes from, for messages (never the secret).
pub(crate) fn described(src: &SecretSource) -> String {
    match src {
        SecretSource::Env(var) => format!("client_secret_env {var}"),
        SecretSource::Cmd(cmd) => format!("client_secret_cmd `{cmd}`"),
    }
}

/// Reads the client secret from the daemon's environment or a command.
pub(super) async fn resolve_secret(
    site: &str,
    src: &SecretSource,
) -> Result<ClientSecret, SiteError> {
    let cfg_err = |m: String| SiteError::Config(format!("site {site}: {m}"));
    match src {
        SecretSource::Env(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(ClientSecret::new)
            .ok_or_else(|| {
                SiteError::Config(missing_env_secret(site, src).unwrap_or_else(|| {
                    format!("site {site}: client_secret_env {var} is not readable")
                }))
            }),
        SecretSource::Cmd(cmd) => {
            let out = tokend_oauth::assertion::run_command(cmd, MAX_SECRET_OUTPUT)
                .await
                .map_err(|e| {
                    cfg_err(format!(
                        "client_secret_cmd: {}",
                        e.replace("the token", "the secret")
                    ))
                })?;
            let text = std::str::from_utf8(&out)
                .map_err(|_| cfg_err("client_secret_cmd printed non-UTF-8".to_owned()))?;
            let secret = text.trim_end_matches(['\r', '\n']).to_owned();
            if secret.is_empty() {
                return Err(cfg_err("client_secret_cmd printed nothing".to_owned()));
            }
            Ok(ClientSecret::new(secret))
        }
    }
}

/// The site's `private_key_jwt` key, from `client_key_file`: refused unless
/// the file is the user's own and private to them (the key is the whole
/// credential).
pub(crate) fn load_client_key(
    site: &str,
    path: &std::path::Path,
    kid: Option<String>,
    clock: crate::clock::Clock,
) -> Result<tokend_oauth::ClientKey, SiteError> {
    let shown = path.display();
    let cfg_err =
        |m: String| SiteError::Config(format!("site {site}: client_key_file {shown}: {m}"));
    let meta = std::fs::metadata(path).map_err(|e| {
        cfg_err(match e.kind() {
            std::io::ErrorKind::NotFound => "the file does not exist".to_owned(),
            _ => format!("cannot read it: {e}"),
        })
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(cfg_err(format!(
                "the file belongs to uid {}, not to you; a private key must be your own (copy it and `chmod 600` the copy)",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(cfg_err(format!(
                "the private key is readable by others (mode {:o}); run `chmod 600 {shown}`",
                meta.mode() & 0o777
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = &meta;
    let pem = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| cfg_err(format!("cannot read it: {e}")))?,
    );
    tokend_oauth::ClientKey::from_pem(&pem, kid, move || crate::clock::whole(clock.now()))
        .map_err(|e| cfg_err(e.to_string()))
}
