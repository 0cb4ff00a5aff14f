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
//! - Read buffers exist only while a connection has bytes to read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_proto::{decode_request, error_line, wipe, ErrorBody, ErrorCode, Frame, LineDecoder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::daemon::Daemon;
use crate::handlers::{self, Events};
use crate::platform::{Listener, Stream};

/// Connections served at once before the longest-idle one is closed.
const MAX_CONNECTIONS: usize = 512;
/// Connections at once, busy ones included; more wait in the kernel's backlog.
const HARD_LIMIT: usize = 2 * MAX_CONNECTIONS;
/// A connection with nothing in flight is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request line (and the first one after connecting) must arrive whole
/// within this time.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read at a time; allocated only while reading.
const READ_CHUNK: usize = 16 * 1024;

/// The open connections, and which has been idle the longest.
#[derive(Debug, Default)]
struct Registry {
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
        if conns.len() >= MAX_CONNECTIONS {
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

/// Serves until a `stop` request or `shutdown` resolves.
pub(crate) async fn run(
    listener: Listener,
    daemon: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(HARD_LIMIT));
    let registry = Arc::new(Registry::default());
    let mut stop = daemon.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
            _ = stop.wait_for(|s| *s) => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, ours)) => {
                    let daemon = daemon.clone();
                    let registry = registry.clone();
                    tokio::spawn(async move {
                        let (id, close) = registry.join();
                        tokio::select! {
                            () = connection(stream, ours, daemon.clone(), &registry, id) => {}
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
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    tracing::info!("shutting down");
}

/// Reads what is there, into a buffer that lives only for this read.
/// `Ok(None)`: the peer closed.
async fn read_some(stream: &Stream) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        stream.readable().await?;
        let mut buf = vec![0u8; READ_CHUNK];
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn connection(
    mut stream: Stream,
    ours: bool,
    daemon: Arc<Daemon>,
    registry: &Registry,
    id: u64,
) {
    if !ours {
        tracing::warn!("refused a connection from another user");
        let body = ErrorBody::new(
            ErrorCode::Forbidden,
            "this tokend belongs to another user: connections from other users are refused",
        );
        let _ = stream.write_all(&error_line(&body)).await;
        return;
    }
    let mut decoder = LineDecoder::default();
    let mut frames = Vec::new();
    // The first line is due soon after connecting; later ones soon after
    // their first byte.
    let mut line_due = Some(Instant::now() + LINE_TIMEOUT);
    loop {
        let deadline = line_due.unwrap_or_else(|| Instant::now() + IDLE_TIMEOUT);
        let mut data = match tokio::time::timeout_at(deadline, read_some(&stream)).await {
            Ok(Ok(Some(data))) => data,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
        };
        decoder.feed(&data, &mut frames);
        // It may hold a pasted token: wiped (the decoder's buffer and the
        // lines it gives are wiped by the decoder).
        wipe(&mut data);
        drop(data);
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
                        handlers::dispatch(&daemon, req, &mut events).await
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
            Some(Instant::now() + LINE_TIMEOUT)
        } else {
            line_due
        };
    }
}
