//! The accept loop and one task per connection: peer check, line framing
//! with the size cap, requests answered in order, and limits that keep the
//! daemon serving through a flood: nothing a client sends (or fails to
//! send) can take the daemon down or stall another client.
//!
//! - A line must arrive whole within `LINE_TIMEOUT` of its first byte (the
//!   first line within that time of connecting); a connection with nothing
//!   in flight is closed after `IDLE_TIMEOUT`.
//! - At `MAX_CONNECTIONS`, a new connection closes the one that has been
//!   idle longest, so idle sockets cannot lock real callers out; only when
//!   every connection is busy does a new one wait in the kernel's backlog.
//! - No connection keeps a read buffer: bytes are read into one buffer per
//!   thread, shared by every connection, and fed to the connection's line
//!   decoder at once (which keeps only an unfinished line).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_proto::{decode_request, error_line, wipe, ErrorBody, ErrorCode, Frame, LineDecoder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::config::ShareConfig;
use crate::daemon::Daemon;
use crate::handlers::{self, Events};
use crate::platform::{Listener, Stream};

/// Connections served at once before the longest-idle one is closed.
const MAX_CONNECTIONS: usize = 512;
/// A connection with nothing in flight is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request line (and the first one after connecting) must arrive whole
/// within this time.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's limits: [`Limits::DAEMON`] in the daemon; the in-process
/// tests (`crate::kit`) shorten them so timeouts and eviction show in
/// milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once before the longest-idle one is closed;
    /// twice as many at once, busy ones included, and more wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub line_timeout: Duration,
}

impl Limits {
    pub(crate) const DAEMON: Limits = Limits {
        max_connections: MAX_CONNECTIONS,
        idle_timeout: IDLE_TIMEOUT,
        line_timeout: LINE_TIMEOUT,
    };
}

/// Bytes read at a time, into the thread's one read buffer.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer of the connections this thread serves: used between
    /// a read and feeding its bytes to a decoder, with no await between.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The open connections, and which has been idle the longest.
#[derive(Debug)]
struct Registry {
    max: usize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// `None` while a request is being handled (a `get` waiting on a login).
    idle_since: Option<Instant>,
    close: Arc<Notify>,
}

impl Registry {
    /// Registers a connection; at the cap, closes the longest-idle one.
    fn join(&self) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let Ok(mut conns) = self.conns.lock() else {
            return (id, close);
        };
        if conns.len() >= self.max {
            let victim = conns
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id);
            if let Some(entry) = victim.and_then(|v| conns.remove(&v)) {
                entry.close.notify_one();
            }
        }
        conns.insert(
            id,
            Entry {
                idle_since: Some(Instant::now()),
                close: close.clone(),
            },
        );
        (id, close)
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Ok(mut conns) = self.conns.lock() {
            if let Some(e) = conns.get_mut(&id) {
                e.idle_since = idle.then(Instant::now);
            }
        }
    }

    fn leave(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
    }
}

/// Serves until a `stop` request or `shutdown` resolves. With `share`, a
/// `[share]` socket: only what that share allows (see `handlers::share`).
pub(crate) async fn run(
    listener: Listener,
    daemon: Arc<Daemon>,
    share: Option<Arc<ShareConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    run_with(listener, daemon, share, shutdown, Limits::DAEMON).await;
}

/// [`run`] within `limits`.
pub(crate) async fn run_with(
    listener: Listener,
    daemon: Arc<Daemon>,
    share: Option<Arc<ShareConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(2 * limits.max_connections));
    let registry = Arc::new(Registry {
        max: limits.max_connections,
        next_id: AtomicU64::new(0),
        conns: Mutex::default(),
    });
    let mut stop = daemon.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
            () = stopped(&mut stop) => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, ours)) => {
                    let daemon = daemon.clone();
                    let registry = registry.clone();
                    let share = share.clone();
                    tokio::spawn(async move {
                        let (id, close) = registry.join();
                        let conn = connection(stream, ours, daemon.clone(), share, &registry, id, limits);
                        tokio::select! {
                            () = conn => {}
                            () = close.notified() => tracing::debug!("closed the longest-idle connection"),
                        }
                        registry.leave(id);
                        drop(permit);
                        daemon.trimmer().worked();
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
            () = stopped(&mut stop) => break,
        }
    }
    if share.is_none() {
        tracing::info!("shutting down");
    }
}

/// Resolves once a `stop` request came. Unlike `wait_for`'s guard, its
/// `()` keeps [`run`]'s future `Send`, so it can be spawned (the tests do).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Reads what is there and feeds it to `decoder`, which adds the lines it
/// completes to `frames`. `Ok(None)`: the peer closed.
async fn read_some(
    stream: &Stream,
    decoder: &mut LineDecoder,
    frames: &mut Vec<Frame>,
) -> std::io::Result<Option<()>> {
    loop {
        stream.readable().await?;
        let read = READ_BUF.with_borrow_mut(|buf| -> std::io::Result<usize> {
            if buf.len() < READ_CHUNK {
                buf.resize(READ_CHUNK, 0);
            }
            let n = stream.try_read(buf)?;
            decoder.feed(&buf[..n], frames);
            // It may hold a pasted token: wiped (the decoder's buffer and
            // the lines it gives are wiped by the decoder).
            wipe(&mut buf[..n]);
            Ok(n)
        });
        match read {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn connection(
    mut stream: Stream,
    ours: bool,
    daemon: Arc<Daemon>,
    share: Option<Arc<ShareConfig>>,
    registry: &Registry,
    id: u64,
    limits: Limits,
) {
    if !ours {
        let message = match &share {
            None => {
                tracing::warn!("refused a connection from another user");
                "this tokend belongs to another user: connections from other users are refused"
                    .to_owned()
            }
            Some(s) => {
                tracing::warn!(share = %s.name, "refused a connection from a uid the share does not list");
                format!(
                    "this share ({}) admits only its owner and the uids in its `uids`: \
                     connections from other users are refused",
                    s.name
                )
            }
        };
        let body = ErrorBody::new(ErrorCode::Forbidden, message);
        let _ = stream.write_all(&error_line(&body)).await;
        return;
    }
    let mut decoder = LineDecoder::default();
    let mut frames = Vec::new();
    // The first line is due soon after connecting; later ones soon after
    // their first byte.
    let mut line_due = Some(Instant::now() + limits.line_timeout);
    // One timer for the connection's life, moved on each pass: a later
    // deadline only updates it (no timer-wheel work per request).
    let expired = tokio::time::sleep_until(Instant::now() + limits.line_timeout);
    tokio::pin!(expired);
    loop {
        let deadline = line_due.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        expired.as_mut().reset(deadline);
        tokio::select! {
            biased;
            read = read_some(&stream, &mut decoder, &mut frames) => match read {
                Ok(Some(())) => {}
                Ok(None) | Err(_) => return,
            },
            () = &mut expired => return,
        }
        let completed = !frames.is_empty();
        if completed {
            registry.set_idle(id, false);
        }
        for frame in frames.drain(..) {
            let mut line = match frame {
                Frame::TooLong => error_line(&ErrorBody::new(
                    ErrorCode::BadRequest,
                    "request line longer than 64 KiB; it was dropped",
                )),
                Frame::Line(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
                Frame::Line(l) => match decode_request(&l) {
                    Err(e) => error_line(&e.0),
                    Ok(req) => {
                        let mut events = Events::new(&mut stream);
                        match &share {
                            None => handlers::dispatch(&daemon, req, &mut events).await,
                            Some(s) => {
                                handlers::share::dispatch(&daemon, s, req, &mut events).await
                            }
                        }
                    }
                },
            };
            let written = stream.write_all(&line).await;
            // An answer holds a token.
            wipe(&mut line);
            if written.is_err() {
                return;
            }
        }
        registry.set_idle(id, true);
        line_due = if !decoder.is_mid_line() {
            None
        } else if completed || line_due.is_none() {
            // A new line has begun: it is due from now.
            Some(Instant::now() + limits.line_timeout)
        } else {
            line_due
        };
    }
}

#[cfg(all(test, unix))]
#[path = "server_tests.rs"]
mod tests;
