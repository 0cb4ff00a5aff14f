//! A busy connection's own thread (see the server's module doc): blocking
//! reads into the thread's own buffer, the same framing, and each request
//! answered at once written back; the first frame that is not (a `get` the
//! actor must answer, any other op, a bad or too long line) hands the
//! connection back to its task, with the decoder (and any partial line)
//! and the frames not yet answered, in order.
//!
//! The limits hold as on the event loop: the socket's read timeout is the
//! idle timeout with no partial line, the rest of the line timeout within
//! one, and a timeout closes the connection. The task keeps awaiting the
//! thread; when it ends without the connection (an eviction, a `stop`, the
//! runtime shutting down) its [`Guard`] tells the thread to stop and shuts
//! the socket down, which ends a blocking read or write at once: the
//! thread answers nothing after that, and keeps nothing alive.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use token_proto::{decode_request, wipe, Frame, Line, LineDecoder, Request};
use tokio::sync::oneshot;

use super::{blank, Idle, Limits, ThreadSlot, READ_CHUNK};
use crate::config::ShareConfig;
use crate::daemon::Daemon;
use crate::handlers;
use crate::site::held::Ready;

/// A thread's stack: a request's decoding and its answer's lookup, far
/// below this.
const STACK: usize = 256 * 1024;

/// What moves with a connection between its task and its thread.
pub(super) struct Conn {
    pub decoder: LineDecoder,
    /// Frames not answered yet, in order.
    pub frames: Vec<Frame>,
    /// When the line under way is due, if one is.
    pub line_due: Option<Instant>,
}

/// What the thread serves with.
pub(super) struct Job {
    pub daemon: Arc<Daemon>,
    pub share: Option<Arc<ShareConfig>>,
    pub limits: Limits,
    pub idle: Arc<Idle>,
    /// Given back when the thread ends.
    pub slot: ThreadSlot,
}

/// How the thread ended.
pub(super) enum Ended {
    /// With a frame it does not answer: the connection, for the task.
    Back(UnixStream, Conn),
    /// The connection is closed (by the peer, a timeout, a stop, an error).
    Closed,
}

/// The task's hold on a connection its thread serves. Dropped before
/// [`Guard::disarm`] (the task ended without it), it has the thread stop
/// and shuts the socket down.
pub(super) struct Guard {
    socket: Option<UnixStream>,
    stop: Arc<AtomicBool>,
}

impl Guard {
    /// The thread's end, taken by the task: the connection when it came
    /// back.
    pub(super) fn disarm(mut self, ended: Ended) -> Option<(UnixStream, Conn)> {
        self.socket = None;
        match ended {
            Ended::Back(stream, conn) => Some((stream, conn)),
            Ended::Closed => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            self.stop.store(true, Ordering::Release);
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// A connection whose thread could not start, for its task (`None`: it
/// could not be kept either, and is closed).
pub(super) type Kept = Option<(UnixStream, Conn)>;

/// Starts a thread serving `stream` (a blocking one from now on). `Err`:
/// no thread could start, and the connection (nonblocking again) stays
/// with the task, if it could be kept.
pub(super) fn start(
    stream: UnixStream,
    conn: Conn,
    job: Job,
) -> Result<(Guard, oneshot::Receiver<Ended>), Kept> {
    let clone = match stream.try_clone() {
        Ok(c) => c,
        Err(_) => return Err(Some((stream, conn))),
    };
    if stream.set_nonblocking(false).is_err() {
        return Err(Some((stream, conn)));
    }
    let guard = Guard {
        socket: Some(clone),
        stop: Arc::default(),
    };
    let (tell, told) = oneshot::channel();
    let stop = guard.stop.clone();
    // Handed over through a cell, so the task keeps the connection when
    // the thread cannot start.
    let cell = Arc::new(Mutex::new(Some((stream, conn))));
    let given = cell.clone();
    let started = std::thread::Builder::new()
        .name("tokend-conn".to_owned())
        .stack_size(STACK)
        .spawn(move || {
            let taken = given.lock().ok().and_then(|mut g| g.take());
            let Some((stream, conn)) = taken else {
                return;
            };
            let ended = serve(stream, conn, &job, &stop);
            // Given back first: once the task has the connection, this
            // thread counts no more.
            drop(job.slot);
            // The task may be gone (evicted): the connection closes here.
            let _ = tell.send(ended);
        });
    if let Err(e) = started {
        tracing::warn!(
            "could not start a connection thread ({e}): the connection stays on the event loop"
        );
        // Not shut down: the task serves it on.
        let _ = guard.disarm(Ended::Closed);
        let kept = cell.lock().ok().and_then(|mut g| g.take());
        return Err(kept.filter(|(stream, _)| stream.set_nonblocking(true).is_ok()));
    }
    Ok((guard, told))
}

/// Serves until a frame that is not answered at once, the peer's end, a
/// timeout or a stop.
fn serve(mut stream: UnixStream, mut conn: Conn, job: &Job, stop: &AtomicBool) -> Ended {
    let limits = job.limits;
    let share = job.share.as_deref();
    let mut buf = vec![0; READ_CHUNK];
    // The socket's read timeout as set: one call while the wait is the
    // idle timeout, one a read within a line.
    let mut timeout: Option<Duration> = None;
    let mut last = None;
    // Whether the caller asked again soon after its last answer. Never on
    // one core (a quota or an affinity of one CPU): there the caller runs
    // only once this thread sleeps, and looking first is waste.
    let mut quick = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let spins = quick;
    loop {
        let wait = match conn.line_due {
            None => limits.idle_timeout,
            Some(due) => due.saturating_duration_since(Instant::now()),
        };
        // A zero read timeout would mean none: a line past due closes now.
        if wait.is_zero() {
            return Ended::Closed;
        }
        if timeout != Some(wait) {
            if stream.set_read_timeout(Some(wait)).is_err() {
                return Ended::Closed;
            }
            timeout = Some(wait);
        }
        // A caller that asks again at once is read without sleeping: its
        // line is looked for a few times first (see `spin`); one that
        // keeps us waiting stops that until it is quick again.
        let spun = if conn.line_due.is_none() && quick {
            spin(&stream, &mut buf)
        } else {
            None
        };
        let read = match spun {
            Some(read) => read,
            None => {
                let asleep = Instant::now();
                let read = stream.read(&mut buf);
                quick = spins && asleep.elapsed() < QUICK;
                read
            }
        };
        let n = match read {
            Ok(0) => return Ended::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // The read timeout (WouldBlock, TimedOut) closes, as the
            // event loop's timer does; so does any other error.
            Err(_) => return Ended::Closed,
        };
        if stop.load(Ordering::Acquire) {
            wipe(&mut buf[..n]);
            return Ended::Closed;
        }
        conn.decoder.feed(&buf[..n], &mut conn.frames);
        // It may hold a pasted token (the decoder wipes its own copies).
        wipe(&mut buf[..n]);
        let completed = !conn.frames.is_empty();
        if completed {
            job.idle.busy();
        }
        let mut answered = 0;
        for frame in &conn.frames {
            let ready = match frame {
                Frame::Line(l) if blank(l) => None,
                Frame::Line(l) => match at_once(&job.daemon, share, l, &mut last) {
                    Some(ready) => Some(ready),
                    None => break,
                },
                Frame::TooLong => break,
            };
            if let Some(ready) = ready {
                if stream.write_all(ready.line()).is_err() {
                    return Ended::Closed;
                }
            }
            answered += 1;
        }
        if answered < conn.frames.len() {
            // The task answers the rest, in order (busy until it has).
            conn.frames.drain(..answered);
            let _ = stream.set_read_timeout(None);
            return Ended::Back(stream, conn);
        }
        conn.frames.clear();
        job.idle.idle();
        conn.line_due = if !conn.decoder.is_mid_line() {
            None
        } else if completed || conn.line_due.is_none() {
            // A new line has begun: it is due from now.
            Some(Instant::now() + limits.line_timeout)
        } else {
            conn.line_due
        };
    }
}

/// How many times a connection thread looks for its caller's next line,
/// yielding between looks, before it sleeps in a read. A caller in a loop
/// (a helper, a load test) writes its next line within microseconds of
/// its answer: found without sleeping, it costs no wake-up, which is most
/// of a request's cost when the caller runs on the other core (`scripts/
/// bench` load: 0.4-0.7x the bare std server's gets without it, about
/// 0.7x with). Each look is one `recv` that does not wait.
const SPIN: u32 = 50;

/// A caller whose line came within this long of the thread falling asleep
/// is quick: its next line is looked for before sleeping again. A slower
/// one costs one round of looks, then none until it is quick again. On a
/// single core the thread never looks (`scripts/bench`'s one-core rows:
/// 0.94x the std server without looking, 0.79x with).
const QUICK: Duration = Duration::from_micros(200);

/// The caller's next bytes if they come within [`SPIN`] looks (`Some(Ok(0))`:
/// it closed), `None` if not.
fn spin(stream: &UnixStream, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    use std::os::fd::AsRawFd;
    for _ in 0..SPIN {
        // SAFETY: the socket is open for as long as `stream` is, and the
        // kernel writes at most `buf.len()` bytes into `buf`.
        let got = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if let Ok(n) = usize::try_from(got) {
            return Some(Ok(n));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::Interrupted => std::thread::yield_now(),
            _ => return Some(Err(e)),
        }
    }
    None
}

/// The answer `line` gets at once (`handlers::answer_kept`), if any.
/// `last` keeps the last line so answered, its request and what was kept
/// of its answer: a caller that asks the same again (a load loop, a
/// helper) is not decoded again, and is answered from what was kept while
/// the site publishes the same.
fn at_once<'l>(
    d: &Daemon,
    share: Option<&ShareConfig>,
    line: &[u8],
    last: &'l mut Option<(Line, Request, handlers::Kept)>,
) -> Option<&'l Ready> {
    if last.as_ref().is_none_or(|(seen, _, _)| **seen != *line) {
        let req = decode_request(line).ok()?;
        *last = Some((Line::new(line.to_vec()), req, handlers::Kept::default()));
    }
    let (_, req, kept) = last.as_mut()?;
    handlers::answer_kept(d, share, req, kept)
}
