//! Where the daemon's socket lives when `TOKEND_SOCKET` does not say.

use std::path::PathBuf;

/// The environment variable that overrides the socket path (pipe name on Windows).
pub const SOCKET_ENV: &str = "TOKEND_SOCKET";

/// The socket path both sides agree on: `$TOKEND_SOCKET`, else
/// `$XDG_RUNTIME_DIR/tokend/tokend.sock`, else `tokend.sock` in the private
/// state directory ([`state_dir`]; on macOS the per-user `$TMPDIR` first).
/// Never a directory in a shared place such as `/tmp`, which another user
/// could create first.
/// On Windows: `\\.\pipe\tokend-SID`, named after the user's SID (pipe
/// names are global: a user name could be taken by someone else first; a
/// SID that cannot be read leaves `tokend-`, and `TOKEND_SOCKET` must say).
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    platform_default()
}

#[cfg(unix)]
fn platform_default() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("tokend").join("tokend.sock");
    }
    if cfg!(target_os = "macos") {
        if let Some(dir) = std::env::var_os("TMPDIR").filter(|p| !p.is_empty()) {
            return PathBuf::from(dir).join("tokend").join("tokend.sock");
        }
    }
    state_dir().join("tokend.sock")
}

#[cfg(windows)]
fn platform_default() -> PathBuf {
    let sid = crate::windows::current_user_sid().unwrap_or_default();
    PathBuf::from(format!(r"\\.\pipe\tokend-{sid}"))
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// The user's home directory (`$HOME`, `%USERPROFILE%`).
pub fn home_dir() -> PathBuf {
    env_dir("HOME")
        .or_else(|| env_dir("USERPROFILE"))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The platform state dir's `tokend/` (`$XDG_STATE_HOME/tokend`, else
/// `~/.local/state/tokend`; `~/Library/Application Support/tokend` on macOS;
/// `%LOCALAPPDATA%\tokend` on Windows): the daemon keeps it private (0700)
/// and holds its lock, the file store, its log and, without
/// `$XDG_RUNTIME_DIR`, its socket there.
pub fn state_dir() -> PathBuf {
    let base = if cfg!(windows) {
        env_dir("LOCALAPPDATA").unwrap_or_else(home_dir)
    } else if cfg!(target_os = "macos") {
        home_dir().join("Library").join("Application Support")
    } else {
        env_dir("XDG_STATE_HOME").unwrap_or_else(|| home_dir().join(".local").join("state"))
    };
    base.join("tokend")
}

/// `$TOKEND_CONFIG`, else the platform config dir's `tokend/config.toml`
/// (`$XDG_CONFIG_HOME`, `~/Library/Application Support`, `%APPDATA%`).
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TOKEND_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let base = if cfg!(windows) {
        env_dir("APPDATA").unwrap_or_else(home_dir)
    } else if cfg!(target_os = "macos") {
        home_dir().join("Library").join("Application Support")
    } else {
        env_dir("XDG_CONFIG_HOME").unwrap_or_else(|| home_dir().join(".config"))
    };
    base.join("tokend").join("config.toml")
}

#[cfg(not(any(unix, windows)))]
compile_error!("tokend supports Unix-like systems and Windows only");
