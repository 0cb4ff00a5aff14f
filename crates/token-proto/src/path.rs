//! Where the daemon's socket lives when `TOKEND_SOCKET` does not say.

use std::path::PathBuf;

/// The environment variable that overrides the socket path (pipe name on Windows).
pub const SOCKET_ENV: &str = "TOKEND_SOCKET";

/// The socket path both sides agree on: `$TOKEND_SOCKET`, else
/// `$XDG_RUNTIME_DIR/tokend/tokend.sock`, else a per-user directory under the
/// temp dir (`$TMPDIR` is already per-user on macOS; elsewhere
/// `/tmp/tokend-UID`, whose ownership and mode the daemon checks).
/// On Windows: `\\.\pipe\tokend-USERNAME`.
///
/// `uid` is the caller's real uid (unused on Windows).
pub fn default_socket_path(uid: u32) -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    platform_default(uid)
}

#[cfg(unix)]
fn platform_default(uid: u32) -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("tokend").join("tokend.sock");
    }
    if cfg!(target_os = "macos") {
        if let Some(dir) = std::env::var_os("TMPDIR").filter(|p| !p.is_empty()) {
            return PathBuf::from(dir).join("tokend").join("tokend.sock");
        }
    }
    PathBuf::from(format!("/tmp/tokend-{uid}")).join("tokend.sock")
}

#[cfg(windows)]
fn platform_default(_uid: u32) -> PathBuf {
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".to_owned());
    PathBuf::from(format!(r"\\.\pipe\tokend-{user}"))
}

#[cfg(not(any(unix, windows)))]
compile_error!("tokend supports Unix-like systems and Windows only");
