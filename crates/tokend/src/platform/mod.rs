//! Per-OS pieces of the daemon behind one interface: private directories and
//! files, the listening socket (Unix socket or named pipe) and the peer check.

#[cfg(not(any(unix, windows)))]
compile_error!("tokend supports Unix-like systems and Windows only");

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
mod os;

pub(crate) mod memory;
#[cfg(target_os = "linux")]
mod procnet;

#[cfg(all(test, unix))]
pub(crate) use os::bind_for_tests;
#[cfg(windows)]
pub(crate) use os::write_local_credential;
pub(crate) use os::{
    bind, bind_share, create_private_dir, create_private_file, from_activation, harden_process,
    lock_state, loopback_peer_is_ours, open_private_log, opened_writable_by_others, sync_dir,
    writable_by_others, BindError, Listener, StateLock, Stream,
};

/// Who holds the state lock: what a second daemon tells its user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: String,
    pub socket: String,
}

impl Holder {
    /// What a daemon writes into the lock file it holds.
    fn record(socket: &str) -> String {
        format!("{}\n{socket}\n", std::process::id())
    }

    /// A lock file's text, read back to be shown: two lines, clipped.
    fn parse(text: &str) -> Holder {
        let mut lines = text.lines().map(|l| token_text::clean(l, 300));
        Holder {
            pid: lines
                .next()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "?".to_owned()),
            socket: lines
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "an unknown socket".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Holder;

    #[test]
    fn the_lock_file_names_its_holder() {
        let back = Holder::parse(&Holder::record("/run/user/1/tokend/tokend.sock"));
        assert_eq!(back.pid, std::process::id().to_string());
        assert_eq!(back.socket, "/run/user/1/tokend/tokend.sock");
        assert_eq!(
            Holder::parse("\x1b[2J"),
            Holder {
                pid: "[2J".into(),
                socket: "an unknown socket".into()
            }
        );
    }
}
