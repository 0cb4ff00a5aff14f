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
//!
//! A busy connection gets a thread of its own (Unix; `server_thread.rs`).
//! The daemon is one event-loop thread, which makes one fresh request
//! (the CLI's `get`) fastest; but on it each request of a persistent
//! caller costs an `epoll_wait`, the read, the write and a read that finds
//! nothing, and many such callers share one core. After
//! `PROMOTE_AFTER` requests answered at once (a plain `get` from the site's
//! published answer), a connection is handed to a thread that serves it
//! with blocking reads and writes, where the kernel wakes exactly that
//! thread when its caller writes. 32 is far above what one CLI process
//! sends (one request, then it closes), so a `token get` never pays for
//! a thread, and low enough that a helper or a load loop is promoted within
//! its first milliseconds. At most `MAX_THREADS` (8) such threads a socket
//! (the daemon's and each `[share]` socket's): more connections than
//! cores gain nothing from more threads, and the rest stay on the event
//! loop as before. Anything the thread does not answer at once (a `get`
//! the actor must answer, a `status`, a bad line…) hands the connection
//! back to its task with what it has read, in order; the task answers it
//! and may promote the connection again after `PROMOTE_AFTER` more.
//! The limits, the eviction and a `stop` reach a promoted connection as
//! they reach the others (its task shuts its socket down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// Requests answered at once after which a connection gets a thread of
/// its own (see the module doc): far above a CLI's one request.
const PROMOTE_AFTER: u64 = 32;
/// Connection threads at once, a socket: about the cores a caller's load
/// can use; further busy connections stay on the event loop.
const MAX_THREADS: usize = 8;

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
    /// Requests answered at once (since it connected or last came back
    /// from its thread) after which a connection gets a thread of its own.
    pub promote_after: u64,
    /// Connection threads at once (0: none).
    pub max_threads: usize,
}

impl Limits {
    pub(crate) const DAEMON: Limits = Limits {
        max_connections: MAX_CONNECTIONS,
        idle_timeout: IDLE_TIMEOUT,
        line_timeout: LINE_TIMEOUT,
        promote_after: PROMOTE_AFTER,
        max_threads: MAX_THREADS,
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
    /// When the idle marks count from.
    epoch: std::time::Instant,
    /// Connection threads running now (see [`Registry::thread_slot`]).
    threads: Arc<AtomicUsize>,
    max_threads: usize,
}

#[derive(Debug)]
struct Entry {
    idle: Arc<Idle>,
    close: Arc<Notify>,
}

/// Since when a connection has been idle, or that it is busy (a request
/// being handled: a `get` waiting on a login). Set by the connection's
/// task or thread without taking the registry's lock; read by an eviction.
/// Alone on its cache lines: a connection thread writes it twice a
/// request, and two connections' cells on one line would bounce it
/// between the cores their threads run on.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Idle {
    /// Nanoseconds from the registry's epoch; [`Idle::BUSY`] while busy.
    since: AtomicU64,
    epoch: std::time::Instant,
}

impl Idle {
    const BUSY: u64 = u64::MAX;

    pub(crate) fn busy(&self) {
        self.since.store(Idle::BUSY, Ordering::Relaxed);
    }

    pub(crate) fn idle(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(Idle::BUSY - 1);
        self.since.store(now.min(Idle::BUSY - 1), Ordering::Relaxed);
    }

    /// `None` while busy.
    fn since(&self) -> Option<u64> {
        Some(self.since.load(Ordering::Relaxed)).filter(|&t| t != Idle::BUSY)
    }
}

/// A place among the connection threads, given back when dropped (by the
/// thread, as it ends).
#[derive(Debug)]
pub(crate) struct ThreadSlot(Arc<AtomicUsize>);

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// Registers a connection; at the cap, closes the longest-idle one.
    fn join(&self) -> (u64, Arc<Notify>, Arc<Idle>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let idle = Arc::new(Idle {
            since: AtomicU64::new(0),
            epoch: self.epoch,
        });
        idle.idle();
        let Ok(mut conns) = self.conns.lock() else {
            return (id, close, idle);
        };
        if conns.len() >= self.max {
            let victim = conns
                .iter()
                .filter_map(|(id, e)| e.idle.since().map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id);
            if let Some(entry) = victim.and_then(|v| conns.remove(&v)) {
                entry.close.notify_one();
            }
        }
        conns.insert(
            id,
            Entry {
                idle: idle.clone(),
                close: close.clone(),
            },
        );
        (id, close, idle)
    }

    fn leave(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
    }

    /// A place for one more connection thread, unless `max_threads` run.
    fn thread_slot(&self) -> Option<ThreadSlot> {
        self.threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_threads).then_some(n + 1)
            })
            .ok()
            .map(|_| ThreadSlot(self.threads.clone()))
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
    run_with(
        listener,
        daemon,
        share,
        shutdown,
        Limits::DAEMON,
        Arc::default(),
    )
    .await;
}

/// [`run`] within `limits`; `threads` counts the connection threads
/// running (the tests read it).
pub(crate) async fn run_with(
    listener: Listener,
    daemon: Arc<Daemon>,
    share: Option<Arc<ShareConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
    limits: Limits,
    threads: Arc<AtomicUsize>,
) {
    let slots = Arc::new(Semaphore::new(2 * limits.max_connections));
    let registry = Arc::new(Registry {
        max: limits.max_connections,
        next_id: AtomicU64::new(0),
        conns: Mutex::default(),
        epoch: std::time::Instant::now(),
        threads,
        max_threads: limits.max_threads,
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
                        let (id, close, idle) = registry.join();
                        let conn = Connection {
                            daemon: daemon.clone(),
                            share,
                            registry: &registry,
                            idle,
                            limits,
                        };
                        tokio::select! {
                            () = conn.serve(stream, ours) => {}
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

/// What a frame is answered with, when nothing need be awaited.
enum Quick {
    /// A blank line: skipped, not answered.
    Blank,
    /// The site's published answer (write its line).
    Ready(Arc<crate::site::held::Ready>),
    /// A line too long, or one that does not decode: its error line.
    Error(Vec<u8>),
    /// A request the handlers must run.
    Dispatch(token_proto::Request),
}

/// A blank line is skipped, not answered.
fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// How `frame` is answered (what is answered at once, as the connection's
/// thread answers it: `handlers::answer_at_once`).
fn quick(d: &Daemon, share: Option<&ShareConfig>, frame: &Frame) -> Quick {
    match frame {
        Frame::TooLong => Quick::Error(error_line(&ErrorBody::new(
            ErrorCode::BadRequest,
            "request line longer than 64 KiB; it was dropped",
        ))),
        Frame::Line(l) if blank(l) => Quick::Blank,
        Frame::Line(l) => match decode_request(l) {
            Err(e) => Quick::Error(error_line(&e.0)),
            Ok(req) => match handlers::answer_at_once(d, share, &req) {
                Some(ready) => Quick::Ready(ready),
                None => Quick::Dispatch(req),
            },
        },
    }
}

/// One connection's task: what it serves with.
struct Connection<'a> {
    daemon: Arc<Daemon>,
    share: Option<Arc<ShareConfig>>,
    registry: &'a Registry,
    idle: Arc<Idle>,
    limits: Limits,
}

impl Connection<'_> {
    async fn serve(self, mut stream: Stream, ours: bool) {
        if !ours {
            refuse(&mut stream, self.share.as_deref()).await;
            return;
        }
        let limits = self.limits;
        let mut decoder = LineDecoder::default();
        let mut frames = Vec::new();
        // The first line is due soon after connecting; later ones soon after
        // their first byte.
        let mut line_due = Some(Instant::now() + limits.line_timeout);
        // Requests answered at once since it connected (or came back from
        // its thread).
        let mut at_once: u64 = 0;
        // One timer for the connection's life, moved on each pass: a later
        // deadline only updates it (no timer-wheel work per request).
        let expired = tokio::time::sleep_until(Instant::now() + limits.line_timeout);
        tokio::pin!(expired);
        loop {
            // Frames handed back by the connection's thread are answered
            // before anything more is read.
            if frames.is_empty() {
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
            }
            let completed = !frames.is_empty();
            if completed {
                self.idle.busy();
            }
            for frame in frames.drain(..) {
                let share = self.share.as_deref();
                let mut line = match quick(&self.daemon, share, &frame) {
                    Quick::Blank => continue,
                    Quick::Ready(ready) => {
                        at_once += 1;
                        // The site's own line (it wipes it when dropped).
                        if stream.write_all(ready.line()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Quick::Error(line) => line,
                    Quick::Dispatch(req) => {
                        let mut events = Events::new(&mut stream);
                        match share {
                            None => handlers::dispatch(&self.daemon, req, &mut events).await,
                            Some(s) => {
                                handlers::share::dispatch(&self.daemon, s, req, &mut events).await
                            }
                        }
                    }
                };
                let written = stream.write_all(&line).await;
                // An answer holds a token.
                wipe(&mut line);
                if written.is_err() {
                    return;
                }
            }
            self.idle.idle();
            line_due = if !decoder.is_mid_line() {
                None
            } else if completed || line_due.is_none() {
                // A new line has begun: it is due from now.
                Some(Instant::now() + limits.line_timeout)
            } else {
                line_due
            };
            if let Some(slot) = self.thread_for(at_once) {
                #[cfg(unix)]
                {
                    let held = thread::Conn {
                        decoder,
                        frames,
                        line_due: line_due.map(Instant::into_std),
                    };
                    let Some((back, conn)) = self.promote(stream, held, slot).await else {
                        return;
                    };
                    stream = back;
                    decoder = conn.decoder;
                    frames = conn.frames;
                    line_due = conn.line_due.map(Instant::from_std);
                    at_once = 0;
                }
                #[cfg(not(unix))]
                drop(slot);
            }
        }
    }

    /// A place among the connection threads, for a connection that has
    /// answered `at_once` requests at once since it connected (or came
    /// back from its thread). Never on Windows: a named pipe stays on the
    /// event loop.
    fn thread_for(&self, at_once: u64) -> Option<ThreadSlot> {
        if !cfg!(unix) || at_once < self.limits.promote_after {
            return None;
        }
        self.registry.thread_slot()
    }

    /// Serves the connection on a thread of its own until the thread hands
    /// it back (`Some`) or it is closed (`None`): by the peer, a timeout,
    /// a `stop`, or (when this future is dropped) an eviction.
    #[cfg(unix)]
    async fn promote(
        &self,
        stream: Stream,
        conn: thread::Conn,
        slot: ThreadSlot,
    ) -> Option<(Stream, thread::Conn)> {
        let mut stop = self.daemon.shutdown_signal();
        let std = stream.into_std().ok()?;
        let job = thread::Job {
            daemon: self.daemon.clone(),
            share: self.share.clone(),
            limits: self.limits,
            idle: self.idle.clone(),
            slot,
        };
        let (std, conn) = match thread::start(std, conn, job) {
            Ok((guard, back)) => {
                let ended = tokio::select! {
                    ended = back => ended.ok()?,
                    () = stopped(&mut stop) => return None,
                };
                let (std, conn) = guard.disarm(ended)?;
                std.set_nonblocking(true).ok()?;
                (std, conn)
            }
            Err(kept) => kept?,
        };
        Some((Stream::from_std(std).ok()?, conn))
    }
}

/// Tells a peer of another uid why it is refused.
async fn refuse(stream: &mut Stream, share: Option<&ShareConfig>) {
    let message = match share {
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
}

#[cfg(unix)]
#[path = "server_thread.rs"]
mod thread;

#[cfg(all(test, unix))]
#[path = "server_tests.rs"]
mod tests;
