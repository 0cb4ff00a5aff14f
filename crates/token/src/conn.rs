//! One connection to the daemon: connect (starting tokend if none answers),
//! send a request line, relay event lines, return the final answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use token_proto::{
    default_socket_path, encode_line, ErrorCode, Event, Frame, Line, LineDecoder, Op, Request,
    ServerLine,
};

use crate::platform::{self, Stream};
use crate::ClientError;

/// How long a started daemon may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    decoder: LineDecoder,
    frames: std::collections::VecDeque<Frame>,
}

fn unreachable(path: &Path, what: impl std::fmt::Display) -> ClientError {
    ClientError::Unreachable(format!("cannot reach tokend at {}: {what}", path.display()))
}

impl Conn {
    /// Connects to the daemon, starting one when none answers (unless
    /// `TOKEND_NO_AUTOSTART=1`).
    pub fn open() -> Result<Conn, ClientError> {
        Self::connect(true)
    }

    /// Opens a connection and sends one request. A daemon that speaks another
    /// protocol version (left running across an upgrade) is stopped and a
    /// matching one started, once, as rbw does with its agent.
    pub fn request(
        op: Op,
        mut on_event: impl FnMut(&Event) -> Result<(), ClientError>,
    ) -> Result<Value, ClientError> {
        let line = encode_line(&Request::new(op));
        let mut conn = Conn::open()?;
        match conn.call_line(&line, &mut on_event) {
            Err(ClientError::Daemon(body))
                if body.code == ErrorCode::VersionMismatch && autostart_allowed() =>
            {
                let path = default_socket_path();
                eprintln!(
                    "token: the running tokend speaks another protocol version; restarting it"
                );
                // `stop` is understood at every version.
                let _ = conn.call(Op::Stop, |_| Ok(()));
                drop(conn);
                let deadline = std::time::Instant::now() + START_TIMEOUT;
                while platform::connect(&path).is_ok() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Conn::open()?.call_line(&line, on_event)
            }
            other => other,
        }
    }

    /// Connects without starting a daemon (for `token stop`).
    pub fn open_no_start() -> Result<Conn, ClientError> {
        Self::connect(false)
    }

    fn connect(may_start: bool) -> Result<Conn, ClientError> {
        let path = default_socket_path();
        // Both checks come before anything is sent, and a failed one never
        // leads to starting a daemon over somebody else's socket.
        let not_ours = |m: String| {
            ClientError::Unreachable(format!("not using tokend at {}: {m}", path.display()))
        };
        platform::check_socket_dir(&path).map_err(not_ours)?;
        let stream = match platform::connect(&path) {
            Ok(s) => s,
            Err(e) if platform::is_not_running(&e) => {
                if !may_start {
                    return Err(unreachable(&path, "no tokend is running"));
                }
                if !autostart_allowed() {
                    return Err(unreachable(
                        &path,
                        format_args!(
                            "{e}; start `tokend` (or, for a share socket, the daemon that shares it), \
                             or unset TOKEND_NO_AUTOSTART"
                        ),
                    ));
                }
                start_daemon(&path)?
            }
            Err(e) => return Err(unreachable(&path, e)),
        };
        platform::check_peer(&stream).map_err(not_ours)?;
        Ok(Conn {
            stream,
            decoder: LineDecoder::new(token_proto::MAX_RESPONSE_LINE),
            frames: Default::default(),
        })
    }

    /// Sends one request; `on_event` sees each event line before the answer.
    pub fn call(
        &mut self,
        op: Op,
        on_event: impl FnMut(&Event) -> Result<(), ClientError>,
    ) -> Result<Value, ClientError> {
        self.call_line(&encode_line(&Request::new(op)), on_event)
    }

    /// [`Conn::call`] with the request line already encoded.
    fn call_line(
        &mut self,
        line: &[u8],
        mut on_event: impl FnMut(&Event) -> Result<(), ClientError>,
    ) -> Result<Value, ClientError> {
        if let Err(e) = self.stream.write_all(line) {
            // A daemon that refuses us (another user's) answers before it
            // reads: its reason may already be waiting on the socket.
            let mut none = None;
            return match self.read_line(&mut none).map(|l| ServerLine::decode(&l)) {
                Ok(Ok(ServerLine::Err(body))) => Err(ClientError::Daemon(body)),
                _ => Err(ClientError::Unreachable(format!(
                    "lost the connection to tokend: {e}"
                ))),
            };
        }
        let mut countdown: Option<Countdown> = None;
        loop {
            let line = self.read_line(&mut countdown);
            if let Some(c) = countdown.as_mut() {
                c.clear();
            }
            match ServerLine::decode(&line?).map_err(ClientError::Other)? {
                ServerLine::Event(ev) => {
                    on_event(&ev)?;
                    countdown = Countdown::for_event(&ev);
                    if countdown.is_some() {
                        platform::set_read_timeout(&self.stream, Some(Duration::from_secs(1)));
                    }
                }
                ServerLine::Ok(v) => return Ok(v),
                ServerLine::Err(body) => return Err(ClientError::Daemon(body)),
            }
        }
    }

    /// The next line from the daemon (wiped when dropped: an answer may
    /// hold a token).
    fn read_line(&mut self, countdown: &mut Option<Countdown>) -> Result<Line, ClientError> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.frames.pop_front() {
                Some(Frame::Line(l)) => return Ok(l),
                Some(Frame::TooLong) => {
                    return Err(ClientError::Other(
                        "tokend sent a line longer than 16 MiB".to_owned(),
                    ))
                }
                None => {}
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e)
                    if countdown.is_some()
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    if let Some(c) = countdown.as_mut() {
                        c.tick();
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ClientError::Unreachable(format!(
                        "lost the connection to tokend: {e}"
                    )))
                }
            };
            if n == 0 {
                return Err(ClientError::Unreachable(
                    "tokend closed the connection before answering; see its log".to_owned(),
                ));
            }
            let mut out = Vec::new();
            self.decoder.feed(&chunk[..n], &mut out);
            token_proto::wipe(&mut chunk[..n]);
            self.frames.extend(out);
        }
    }
}

/// `TOKEND_NO_AUTOSTART=1` forbids starting (or restarting) a daemon; so
/// does `TOKEND_DAEMON_UID` (the socket is another user's, not ours to start).
fn autostart_allowed() -> bool {
    std::env::var_os("TOKEND_NO_AUTOSTART").is_none_or(|v| v != "1")
        && std::env::var_os("TOKEND_DAEMON_UID").is_none_or(|v| v.is_empty())
}

/// While a caller waits for a login on a terminal: one status line on
/// stderr, rewritten each second, that says what it waits for and how long.
#[derive(Debug)]
struct Countdown {
    site: String,
    deadline: std::time::Instant,
    shown: bool,
}

impl Countdown {
    fn for_event(ev: &Event) -> Option<Countdown> {
        use std::io::IsTerminal;
        let (site, timeout) = match ev {
            Event::LoginUrl { site, timeout, .. }
            | Event::DeviceCode { site, timeout, .. }
            | Event::PasteUrl {
                site,
                timeout,
                paste: false,
                ..
            } => (site, *timeout),
            Event::PasteUrl { .. } => return None,
            Event::Unknown => return None,
        };
        std::io::stderr().is_terminal().then(|| Countdown {
            site: site.clone(),
            deadline: std::time::Instant::now() + Duration::from_secs(timeout),
            shown: false,
        })
    }

    fn tick(&mut self) {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .as_secs();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[Ktoken: waiting for the login to site {} to finish: {}:{:02} left (Ctrl-C cancels)",
            self.site,
            left / 60,
            left % 60
        );
        let _ = err.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

/// The `tokend` beside this executable, else `tokend` from `PATH`.
fn daemon_program() -> PathBuf {
    let name = if cfg!(windows) {
        "tokend.exe"
    } else {
        "tokend"
    };
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Starts a daemon and waits until it says it listens (a `ready` line on its
/// stdout), so there is no blind sleep. If it exits without saying so,
/// another daemon won the race for the socket: connect to that one.
fn start_daemon(path: &Path) -> Result<Stream, ClientError> {
    let program = daemon_program();
    let mut cmd = Command::new(&program);
    // A daemon outlives the caller: it must not keep the caller's directory
    // busy, so it runs from the root, with the paths it is given made absolute.
    let root = match std::env::var("SystemDrive") {
        Ok(drive) if cfg!(windows) => PathBuf::from(format!("{drive}\\")),
        _ => PathBuf::from("/"),
    };
    if let Ok(cwd) = std::env::current_dir() {
        cmd.current_dir(&root);
        cmd.env("TOKEND_SOCKET", cwd.join(path));
        if let Some(config) = std::env::var_os("TOKEND_CONFIG").filter(|c| !c.is_empty()) {
            cmd.env("TOKEND_CONFIG", cwd.join(config));
        }
    }
    cmd.env("TOKEND_NOTIFY_READY", "1")
        .env("TOKEND_AUTOSTARTED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    platform::detach(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        unreachable(
            path,
            format_args!(
                "no daemon answers and `{}` could not be started: {e}; install tokend next to token or on PATH",
                program.display()
            ),
        )
    })?;
    let stdout = child.stdout.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) if line.trim() == "ready" => {}
        // It refused to serve, and said why (another tokend owns the store).
        Ok(line) if line.starts_with("error: ") => {
            let _ = child.wait();
            return Err(ClientError::Unreachable(format!(
                "tokend: {}",
                line.trim_end().trim_start_matches("error: ")
            )));
        }
        Ok(_) => {
            // Exited without `ready`: it either lost the race to a daemon that
            // is starting (give that one the same time to bind) or failed.
            let status = child.wait().ok();
            let deadline = std::time::Instant::now() + START_TIMEOUT;
            let mut pause = Duration::from_millis(5);
            while std::time::Instant::now() < deadline {
                if let Ok(s) = platform::connect(path) {
                    return Ok(s);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            let how = status.map_or("it failed".to_owned(), |s| format!("it exited ({s})"));
            return Err(unreachable(
                path,
                format_args!(
                    "started `{}` but {how}; run `tokend` by hand to see why",
                    program.display()
                ),
            ));
        }
        Err(_) => {
            return Err(unreachable(
                path,
                format_args!(
                    "started `{}` but it did not become ready in 10 s",
                    program.display()
                ),
            ))
        }
    }
    platform::connect(path).map_err(|e| unreachable(path, e))
}
