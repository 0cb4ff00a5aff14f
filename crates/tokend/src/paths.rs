//! Where the daemon finds its config and keeps its state, per platform,
//! without a directories crate: the XDG variables on Linux and the BSDs,
//! `~/Library/Application Support` on macOS, `%APPDATA%`/`%LOCALAPPDATA%` on
//! Windows. The rules live in token-proto, so the client finds the same
//! places (the socket in the state dir without `$XDG_RUNTIME_DIR`).

pub(crate) use token_proto::{config_path, state_dir};
