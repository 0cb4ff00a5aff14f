//! Per-OS pieces of the daemon behind one interface: private directories and
//! files, the listening socket (Unix socket or named pipe) and the peer check.

#[cfg(not(any(unix, windows)))]
compile_error!("tokend supports Unix-like systems and Windows only");

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
mod os;

pub use os::{
    bind, create_private_dir, create_private_file, from_activation, harden_process, lock_state,
    open_private_log, sync_dir, user_key, writable_by_others, BindError, Holder, Listener,
    StateLock, Stream,
};
