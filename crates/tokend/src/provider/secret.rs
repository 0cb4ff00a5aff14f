//! The client secret: from the daemon's environment or a command, never
//! from the config file itself.

use std::sync::Arc;

use tokend_oauth::ClientSecret;
use tokio::io::AsyncReadExt;
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
            let mut command = if cfg!(windows) {
                let mut c = tokio::process::Command::new("cmd");
                c.arg("/C").arg(cmd);
                c
            } else {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(cmd);
                c
            };
            command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let run = async {
                let mut child = command.spawn()?;
                let mut out = Vec::new();
                if let Some(stdout) = child.stdout.take() {
                    // One byte past the cap tells a command that prints too much.
                    stdout
                        .take(MAX_SECRET_OUTPUT + 1)
                        .read_to_end(&mut out)
                        .await?;
                }
                let status = child.wait().await?;
                Ok::<_, std::io::Error>((status, Zeroizing::new(out)))
            };
            let (status, out) = tokio::time::timeout(std::time::Duration::from_secs(30), run)
                .await
                .map_err(|_| cfg_err("client_secret_cmd did not finish in 30 s".to_owned()))?
                .map_err(|source| SiteError::SecretCmd {
                    site: site.to_owned(),
                    source: Arc::new(source),
                })?;
            if !status.success() {
                return Err(cfg_err(format!("client_secret_cmd failed ({status})")));
            }
            if out.len() as u64 > MAX_SECRET_OUTPUT {
                return Err(cfg_err(
                    "client_secret_cmd printed more than 64 KiB; it must print only the secret"
                        .to_owned(),
                ));
            }
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
