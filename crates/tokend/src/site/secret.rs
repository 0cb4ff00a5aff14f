//! The client secret: from the daemon's environment or a command, never
//! from the config file itself.

use token_proto::ErrorCode;
use tokend_oauth::ClientSecret;

use crate::config::SecretSource;
use crate::error::ApiError;

/// Reads the client secret from the daemon's environment or a command.
pub(super) async fn resolve_secret(
    site: &str,
    src: &SecretSource,
) -> Result<ClientSecret, ApiError> {
    let cfg_err = |m: String| ApiError::new(ErrorCode::ConfigError, format!("site {site}: {m}"));
    match src {
        SecretSource::Env(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(ClientSecret::new)
            .ok_or_else(|| {
                cfg_err(format!(
                    "client_secret_env names {var}, which is not set in tokend's environment; set it where tokend starts, or use client_secret_cmd"
                ))
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
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(std::time::Duration::from_secs(30), command.output())
                .await
                .map_err(|_| cfg_err("client_secret_cmd did not finish in 30 s".to_owned()))?
                .map_err(|e| cfg_err(format!("client_secret_cmd could not run: {e}")))?;
            if !out.status.success() {
                return Err(cfg_err(format!("client_secret_cmd failed ({})", out.status)));
            }
            let text = String::from_utf8(out.stdout)
                .map_err(|_| cfg_err("client_secret_cmd printed non-UTF-8".to_owned()))?;
            let secret = text.trim_end_matches(['\r', '\n']).to_owned();
            if secret.is_empty() {
                return Err(cfg_err("client_secret_cmd printed nothing".to_owned()));
            }
            Ok(ClientSecret::new(secret))
        }
    }
}
