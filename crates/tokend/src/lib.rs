//! tokend, the daemon: owns the OAuth tokens of every configured site,
//! refreshes them, and serves them over a local socket to `token` and any
//! program that speaks the line protocol (see `PROTOCOL.md`).
//!
//! The library is the binary's [`main`]; its only other public item is the
//! [`config`] parser, for the fuzz targets.

#![warn(unreachable_pub)]

mod clock;
pub mod config;
mod daemon;
mod deps;
mod discovery;
mod error;
mod files;
mod handlers;
#[cfg(test)]
mod kit;
mod listeners;
mod login;
mod loopback;
mod paths;
mod platform;
mod provider;
mod proxy;
mod refresh;
mod server;
mod share;
mod site;
mod sites;
mod store;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use platform::BindError;

const HELP: &str = "\
tokend — keeps OAuth access tokens fresh and serves them to `token` over a local socket

USAGE:
    tokend            run in the foreground (systemd, launchd, tests, or by hand)
    tokend --help | --version

`token` starts tokend by itself when none answers, so you rarely run it by hand.
Under systemd, tokend.socket passes the socket in (LISTEN_FDS).

CONFIG:
    A [daemon] table in the config file sets store, log, login_timeout and
    login_cooldown (default 15m: after a login goes unanswered, callers
    without a terminal get `login required` at once instead of a new
    browser tab) whoever starts tokend; the environment variables below win.
    Edits to log, login_timeout and login_cooldown apply at once, to store
    at the next start.

ENVIRONMENT:
    TOKEND_CONFIG   config file (default: the platform config dir, tokend/config.toml)
    TOKEND_SOCKET   socket path (default: $XDG_RUNTIME_DIR/tokend/tokend.sock, else
                    tokend.sock in the state dir, ~/.local/state/tokend)
    TOKEND_STORE    keyring (default; the file store when no keyring answers) |
                    file | memory
    TOKEND_LOG      log filter, e.g. info, debug, tokend=trace (or RUST_LOG)
    TOKEND_LOG_FILE log to this file (0600; a leading ~/ is your home) instead
                    of stderr; an autostarted tokend logs to tokend.log in the
                    state dir
";

/// Runs the daemon with the process's arguments; the binary is a shim over this.
pub fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => {
            let _ = std::io::stdout().write_all(HELP.as_bytes());
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            let _ = writeln!(std::io::stdout(), "tokend {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("tokend: unexpected argument `{other}` (see `tokend --help`)");
            return ExitCode::from(2);
        }
        None => {}
    }
    if let Some(message) = homeless() {
        eprintln!("tokend: {message}");
        return ExitCode::FAILURE;
    }
    platform::harden_process();
    platform::memory::tune();
    // The daemon's own settings come from the config's [daemon] table
    // (environment variables win), whoever started it. The file is read
    // once: the sites in it are served as they are (an edit from now on
    // is a reload: `seen` tells whether one came before the watcher).
    let config_path = paths::config_path();
    let seen = watch::Seen::now(&config_path);
    let config = config::Config::load(&config_path);
    init_logging(config.daemon.log.as_deref());
    // One thread runs every task: the work is waiting on the network, and a
    // request crosses the accept loop, its connection's task and the site's
    // actor, which on one thread are task switches, not wake-ups of parked
    // threads (a warm `get` paid ~0.2 ms of those with two workers).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        // Store and keyring calls run on blocking threads: a burst of them
        // (a thousand sites asked one after another) leaves its threads,
        // and their stacks, for 10 s by default.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, seen))
}

/// Without `$HOME` the config and state paths would be made from `.`: the
/// daemon would read a config, and keep tokens, wherever it was started.
/// That is refused, naming what to set.
fn homeless() -> Option<String> {
    let home = token_proto::home_dir();
    if home.is_absolute() {
        return None;
    }
    let config =
        std::env::var_os("TOKEND_CONFIG").is_none() && paths::config_path().starts_with(&home);
    let state = paths::state_dir().starts_with(&home);
    (config || state).then(|| {
        "HOME is not set (or not an absolute path), so there is no place for the config and the \
         tokens but the current directory; set HOME (or XDG_CONFIG_HOME and XDG_STATE_HOME)"
            .to_owned()
    })
}

fn init_logging(configured: Option<&str>) {
    let text = env_log_filter().unwrap_or_else(|| configured.unwrap_or("info").to_owned());
    let (filter, bad) = log_filter(&text);
    let _ = LOG_FILTER_TEXT.set(std::sync::Mutex::new(text));
    let builder = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE);
    // TOKEND_LOG_FILE (launchd's plist sets it), else for an autostarted
    // daemon, which has no terminal: a private log file instead of stderr.
    let file = match std::env::var_os("TOKEND_LOG_FILE").filter(|f| !f.is_empty()) {
        Some(f) => {
            let path = expand_home(std::path::Path::new(&f));
            path.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| platform::open_private_log(&path))
                .ok()
                .map(|file| (file, path))
        }
        None if std::env::var_os("TOKEND_AUTOSTARTED").is_some() => {
            let dir = paths::state_dir();
            let path = dir.join("tokend.log");
            platform::create_private_dir(&dir)
                .and_then(|()| platform::open_private_log(&path))
                .ok()
                .map(|file| (file, path))
        }
        None => None,
    };
    if let Some((file, path)) = file {
        let _ = LOG_DESTINATION.set(path.display().to_string());
        let log = builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .finish();
        set_global_log(log, filter);
    } else {
        use std::io::IsTerminal;
        let log = builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .finish();
        set_global_log(log, filter);
    }
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
    }
}

/// Logs through `log` from now on, filtered by `filter`, which a config
/// reload may replace (`[daemon] log`).
fn set_global_log<S>(log: S, filter: tracing_subscriber::filter::Targets)
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = LOG_FILTER.set(Box::new(move |f| {
        let _ = handle.reload(f);
    }));
    let _ = tracing::subscriber::set_global_default(log.with(filter));
}

/// `TOKEND_LOG`, else `RUST_LOG`: these win over `[daemon] log`.
fn env_log_filter() -> Option<String> {
    std::env::var("TOKEND_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
}

/// Replaces the log filter in force (set once, by `init_logging`).
type SetFilter = Box<dyn Fn(tracing_subscriber::filter::Targets) + Send + Sync>;
static LOG_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();
/// The text of the filter in force.
static LOG_FILTER_TEXT: std::sync::OnceLock<std::sync::Mutex<String>> = std::sync::OnceLock::new();

/// A config reload's `[daemon] log` (`None`: the default, info), applied at
/// once unless `TOKEND_LOG`/`RUST_LOG` decide.
pub(crate) fn set_log_filter(configured: Option<&str>) {
    let (Some(set), Some(text)) = (LOG_FILTER.get(), LOG_FILTER_TEXT.get()) else {
        return;
    };
    if env_log_filter().is_some() {
        return;
    }
    let wanted = configured.unwrap_or("info");
    let mut in_force = text
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *in_force == wanted {
        return;
    }
    let (filter, bad) = log_filter(wanted);
    set(filter);
    *in_force = wanted.to_owned();
    drop(in_force);
    match bad {
        Some(bad) => tracing::warn!("config: {bad}"),
        None => tracing::info!("config: logging with the filter {wanted:?} from now on (log)"),
    }
}

/// The log filter `text` says: `info`, `debug`, `tokend=debug,warn` (levels
/// per target); one that does not parse logs at `info`, and says why.
/// (Not tracing's EnvFilter: its regex engine would be much of the code a
/// starting daemon touches, for span filters nobody needs here.)
fn log_filter(text: &str) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::Targets;
    match text.parse::<Targets>() {
        Ok(targets) => (targets, None),
        Err(e) => (
            Targets::new().with_default(tracing::Level::INFO),
            Some(format!(
                "the log filter {text:?} is not valid ({e}); logging at info"
            )),
        ),
    }
}

/// Where the log goes (a file), for `status`; stderr when unset.
static LOG_DESTINATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Where this daemon logs: the log file's path, or `stderr`.
pub(crate) fn log_destination() -> String {
    LOG_DESTINATION
        .get()
        .cloned()
        .unwrap_or_else(|| "stderr".to_owned())
}

/// `~/x` → `$HOME/x` (launchd passes paths unexpanded).
fn expand_home(path: &std::path::Path) -> std::path::PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => token_proto::home_dir().join(rest),
        Err(_) => path.to_owned(),
    }
}

/// The state lock, waiting briefly for a daemon that is on its way out
/// (`token stop` followed at once by a command that starts a new one).
async fn lock_state_soon(
    socket: &str,
) -> Result<platform::StateLock, Result<platform::Holder, std::io::Error>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match platform::lock_state(&paths::state_dir(), socket) {
            Err(Ok(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Says why this daemon will not serve: on stderr, and to the `token` that
/// started it (which waits for a line on stdout) so the caller sees it too.
fn refuse(why: &str) {
    eprintln!("tokend: {why}");
    if std::env::var_os("TOKEND_NOTIFY_READY").is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "error: {why}").and_then(|()| out.flush());
    }
}

async fn run(config: config::Config, seen: watch::Seen) -> ExitCode {
    // SIGTERM and SIGINT are caught from here on, before anyone can know
    // this daemon (its socket, its "ready"): a signal sent while the
    // handler is being installed is lost (signal-hook-registry runs no
    // default action in that window), and a `kill` right after "ready"
    // once fell in it (about one in 300 starts).
    let shutdown = shutdown_signal();
    let settings = config.daemon.clone();
    let listener = match platform::from_activation() {
        Ok(Some(l)) => l,
        Ok(None) => {
            let path = token_proto::default_socket_path();
            match platform::bind(&path) {
                Ok(l) => l,
                Err(BindError::AlreadyRunning(p)) => {
                    eprintln!(
                        "tokend: another tokend is already serving {}; nothing to do",
                        p.display()
                    );
                    return ExitCode::SUCCESS;
                }
                Err(e) => {
                    refuse(&e.to_string());
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            refuse(&format!("cannot use the socket passed by systemd: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // One daemon per user and store, whatever socket each one serves.
    let _state_lock = match lock_state_soon(&listener.describe()).await {
        Ok(lock) => lock,
        Err(holder) => {
            let why = match holder {
                Ok(h) => format!(
                    "another tokend (pid {}) already owns this user's tokens in {}, serving {}: \
                     use that one (TOKEND_SOCKET={}); two daemons on one store would undo \
                     each other's refresh-token rotations",
                    h.pid,
                    paths::state_dir().display(),
                    h.socket,
                    h.socket
                ),
                Err(e) => format!(
                    "cannot lock the state directory {}: {e}",
                    paths::state_dir().display()
                ),
            };
            refuse(&why);
            return ExitCode::FAILURE;
        }
    };
    let store = match store::Store::choose(settings.store, &paths::state_dir()).await {
        Ok(chosen) => {
            if let Some(why) = &chosen.fallback {
                tracing::warn!("{why}");
            }
            chosen
        }
        Err(e) => {
            refuse(&e.to_string());
            return ExitCode::from(2);
        }
    };
    // TOKEND_HTTP_TIMEOUT (seconds or "30s"): the whole-request timeout for
    // provider calls; tests shorten it to exercise timeouts quickly.
    let http_timeout = std::env::var("TOKEND_HTTP_TIMEOUT")
        .ok()
        .and_then(|s| config::parse_duration(&s))
        .map(|secs| std::time::Duration::from_secs(secs.max(1)));
    let http = match http_timeout {
        Some(t) => tokend_oauth::Http::with_timeout(t),
        None => tokend_oauth::Http::new(),
    };
    let grace = http_timeout.unwrap_or(tokend_oauth::http::TOTAL_TIMEOUT)
        + std::time::Duration::from_secs(5);
    // A store other than the last start's: its logins come along.
    let sites = config.sites.keys().chain(config.broken.keys());
    let moved =
        store::from_previous(&paths::state_dir(), &store.store, sites.map(String::as_str)).await;
    if let Some(moved) = &moved {
        tracing::warn!("{moved}");
    }
    let mut daemon = daemon::Daemon::new(
        paths::config_path(),
        config,
        store,
        http,
        settings.login_timeout,
    );
    daemon.store_moved = moved;
    let daemon = Arc::new(daemon);
    // What parsing the config freed goes back once the start's burst is
    // over, as after any burst (trimming now, before the first `get`, would
    // hold the allocator's one arena while that `get` is served).
    daemon.trimmer().worked();
    tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.trimmer().run().await }
    });
    tokio::spawn(daemon.clone().prune_removed_forever());
    tracing::info!(
        socket = %listener.describe(),
        config = %daemon.config_path.display(),
        store = daemon.store().name(),
        "tokend {} ready",
        env!("CARGO_PKG_VERSION")
    );
    if std::env::var_os("TOKEND_NOTIFY_READY").is_some() {
        // The `token` that started us waits for this line instead of sleeping.
        let mut out = std::io::stdout();
        let _ = out.write_all(b"ready\n").and_then(|()| out.flush());
    }
    // The config watcher (an inotify thread) is set up beside the first
    // requests, on a blocking thread; it reloads at once if the file
    // changed since it was read.
    tokio::task::spawn_blocking({
        let daemon = daemon.clone();
        move || {
            daemon.note_removed_at_start();
            watch::spawn(&daemon, seen);
        }
    });
    daemon.start_shares();
    server::run(listener, daemon.clone(), None, shutdown).await;
    daemon.stop_shares();
    // A token call under way may be about to persist a rotated refresh
    // token: each site lets it land (up to the HTTP timeout) and ends.
    daemon.stop_sites(grace).await;
    ExitCode::SUCCESS
}

/// The first SIGTERM or SIGINT: caught from the call on (not from the
/// first poll), so none sent in between is lost.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
            }
            _ => std::future::pending().await,
        }
    }
}

#[cfg(windows)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let ctrl_c = tokio::signal::windows::ctrl_c();
    async move {
        match ctrl_c {
            Ok(mut ctrl_c) => {
                ctrl_c.recv().await;
                tracing::info!("Ctrl-C");
            }
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tracing::level_filters::LevelFilter;

    #[test]
    fn log_filters_are_levels_per_target() {
        let (f, bad) = super::log_filter("tokend=debug,warn");
        assert!(bad.is_none());
        assert!(f.would_enable("tokend::site", &tracing::Level::DEBUG));
        assert!(!f.would_enable("hyper", &tracing::Level::INFO));
        assert!(f.would_enable("hyper", &tracing::Level::WARN));
        let (f, bad) = super::log_filter("debug");
        assert!(bad.is_none());
        assert_eq!(f.default_level(), Some(LevelFilter::DEBUG));

        let (f, bad) = super::log_filter("tokend=loud");
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
        assert!(bad.unwrap().contains("\"tokend=loud\" is not valid"));
    }
}
