//! Per-OS pieces of the client behind one interface: connecting to the
//! daemon's socket or pipe, detaching a spawned daemon, replacing the process.

#[cfg(not(any(unix, windows)))]
compile_error!("tokend supports Unix-like systems and Windows only");

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
mod os;

pub use os::{
    check_peer, check_socket_dir, connect, detach, exec, exit_on_interrupt, in_git_push,
    is_not_running, set_read_timeout, start, Stream,
};
