//! Where the daemon finds its config and keeps its state, per platform,
//! without a directories crate: the XDG variables on Linux and the BSDs,
//! `~/Library/Application Support` on macOS, `%APPDATA%`/`%LOCALAPPDATA%` on Windows.

use std::path::PathBuf;

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> PathBuf {
    env_dir("HOME")
        .or_else(|| env_dir("USERPROFILE"))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$TOKEND_CONFIG`, else the platform config dir's `tokend/config.toml`.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TOKEND_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let base = if cfg!(windows) {
        env_dir("APPDATA").unwrap_or_else(home)
    } else if cfg!(target_os = "macos") {
        home().join("Library").join("Application Support")
    } else {
        env_dir("XDG_CONFIG_HOME").unwrap_or_else(|| home().join(".config"))
    };
    base.join("tokend").join("config.toml")
}

/// The platform state dir's `tokend/`: the file store and the log of an
/// autostarted daemon live here.
pub fn state_dir() -> PathBuf {
    let base = if cfg!(windows) {
        env_dir("LOCALAPPDATA").unwrap_or_else(home)
    } else if cfg!(target_os = "macos") {
        home().join("Library").join("Application Support")
    } else {
        env_dir("XDG_STATE_HOME").unwrap_or_else(|| home().join(".local").join("state"))
    };
    base.join("tokend")
}
