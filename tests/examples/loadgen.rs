//! Throughput of the daemon's request path (`scripts/bench` runs it):
//! CONNS persistent connections to a tokend socket, each sending
//! `{"v":1,"op":"get","site":SITE,"login":"never"}` and reading the answer,
//! one request at a time, as fast as it can, for SECONDS. Prints one line:
//! `gets/s N cpu_us N client_cpu_us N user_us N`: the rate, the server's CPU
//! time (user + system, from /proc) per get in microseconds, this process's
//! (the callers') CPU per get, and the server's user-space part alone; the daemon's pid comes from its `status`
//! answer. CPU per get minds the machine's load less than the rate does.
//!
//! `loadgen --echo CONNS SECONDS` measures a reference instead: a bare std
//! server (a thread per connection) that answers each line with a
//! token-shaped line, in a child process on a Unix socket in a temp
//! directory. It is the floor for any server that reads a line and writes
//! one: what is left between the two is the daemon's own work.
//! `--echo-loop` is the floor for the daemon's event loop: the same
//! answers from one thread, a tokio `current_thread` event loop with a task
//! per connection (the daemon's event loop, one thread for a single
//! request's latency; a busy connection of the daemon's gets a thread of its
//! own, as the std server gives each).
//!
//! `--idle` measures what a separate CLI process sees of the daemon instead:
//! N times, after IDLE_MS of quiet, a fresh connection, one `get`, closed;
//! prints the round trip's median and 90th percentile in microseconds,
//! `idle_us p50 N p90 N` (against the echo server with `--echo`).
//!
//!   loadgen SOCKET SITE CONNS SECONDS
//!   loadgen --echo CONNS SECONDS
//!   loadgen --echo-loop CONNS SECONDS
//!   loadgen --idle SOCKET SITE N IDLE_MS
//!   loadgen --idle --echo N IDLE_MS
//!   loadgen --idle --echo-loop N IDLE_MS
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What the echo server answers: the size and shape of a real `get` reply.
const REPLY: &str = concat!(
    r#"{"ok":true,"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoib3BlbmlkIHJlYWQifQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl","#,
    r#""token_type":"Bearer","expires_at":1767225600,"scopes":["openid","read"],"api_key":null}"#,
    "\n"
);

const USAGE: &str = "loadgen SOCKET SITE CONNS SECONDS | loadgen --echo[-loop] CONNS SECONDS \
    | loadgen --idle SOCKET SITE N IDLE_MS | loadgen --idle --echo[-loop] N IDLE_MS";

/// The hidden mode a floor's child process runs: `--serve std|loop SOCKET`.
const SERVE: &str = "--serve";

/// Whom to ask, and what: `--echo A B` (this process's echo server) or
/// `SOCKET SITE A B`; A and B are the mode's two numbers, named `names`.
struct Target {
    /// Holds the echo server's socket.
    _dir: Option<tempfile::TempDir>,
    /// The echo server's process, killed when done.
    server: Option<Child>,
    socket: std::path::PathBuf,
    /// A `get` of the site, one line.
    request: String,
}

impl Target {
    fn parse<A: std::str::FromStr, B: std::str::FromStr>(
        args: &[String],
        names: &str,
    ) -> Result<(Target, A, B), ExitCode> {
        let (dir, socket, site, a, b) = match args {
            [flag, a, b] if flag == "--echo" || flag == "--echo-loop" => {
                let dir = tempfile::tempdir().unwrap();
                let socket = dir.path().join("echo.sock");
                let kind = if flag == "--echo" { "std" } else { "loop" };
                let child = Command::new(std::env::current_exe().unwrap())
                    .args([SERVE, kind])
                    .arg(&socket)
                    .spawn()
                    .unwrap();
                // Until it accepts: the socket's file is there from its
                // bind, a moment before its listen (a connect in between
                // is refused).
                while UnixStream::connect(&socket).is_err() {
                    thread::sleep(Duration::from_millis(5));
                }
                (Some((dir, child)), socket, "echo", a, b)
            }
            [socket, site, a, b] => (None, socket.into(), site.as_str(), a, b),
            _ => {
                eprintln!("usage: {USAGE}");
                return Err(ExitCode::from(2));
            }
        };
        let (Ok(a), Ok(b)) = (a.parse::<A>(), b.parse::<B>()) else {
            eprintln!("loadgen: {names} must be numbers");
            return Err(ExitCode::from(2));
        };
        let request =
            format!("{{\"v\":1,\"op\":\"get\",\"site\":\"{site}\",\"login\":\"never\"}}\n");
        let (dir, server) = dir.unzip();
        Ok((
            Target {
                _dir: dir,
                server,
                socket,
                request,
            },
            a,
            b,
        ))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.server {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--idle") => return idle(&args[1..]),
        Some(SERVE) => {
            match &args[1..] {
                [kind, socket] if kind == "std" => std_server(Path::new(socket)),
                [kind, socket] if kind == "loop" => loop_server(Path::new(socket)),
                _ => eprintln!("usage: loadgen {SERVE} std|loop SOCKET"),
            }
            return ExitCode::from(2);
        }
        _ => {}
    }
    let (target, conns, seconds) = match Target::parse::<usize, f64>(&args, "CONNS and SECONDS") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Target {
        socket, request, ..
    } = &target;
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..conns)
        .map(|_| {
            let (socket, request) = (socket.clone(), request.clone());
            let (done, count) = (done.clone(), count.clone());
            thread::spawn(move || caller(&socket, &request, &done, &count))
        })
        .collect();
    // Warm up, then count over the window only.
    thread::sleep(Duration::from_millis(300));
    let server = match &target.server {
        Some(child) => Some(child.id()),
        None => daemon_pid(socket),
    };
    let cpu = |pid: Option<u32>| pid.and_then(|p| cpu_us(&format!("/proc/{p}/stat")));
    let (server_before, self_before) = (cpu(server), cpu_us("/proc/self/stat"));
    let start_count = count.load(Relaxed);
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    let n = count.load(Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    let (server_after, self_after) = (cpu(server), cpu_us("/proc/self/stat"));
    done.store(true, Relaxed);
    let mut failed = false;
    for c in callers {
        if let Err(e) = c.join().unwrap() {
            eprintln!("loadgen: {e}");
            failed = true;
        }
    }
    let per_get = |pick: fn((u64, u64)) -> u64, before: Option<_>, after: Option<_>| match (
        before.map(pick),
        after.map(pick),
    ) {
        (Some(b), Some(a)) if n > 0 => format!("{:.2}", (a - b) as f64 / n as f64),
        _ => "-".to_owned(),
    };
    let (all, user): (fn(_) -> _, fn(_) -> _) = (|(a, _)| a, |(_, u)| u);
    println!(
        "gets/s {:.0} cpu_us {} client_cpu_us {} user_us {}",
        n as f64 / elapsed,
        per_get(all, server_before, server_after),
        per_get(all, self_before, self_after),
        per_get(user, server_before, server_after)
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn caller(
    socket: &Path,
    request: &str,
    done: &AtomicBool,
    count: &AtomicU64,
) -> Result<(), String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !done.load(Relaxed) {
        writer
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with(r#"{"ok":true"#) {
            return Err(format!("not a token: {}", line.trim_end()));
        }
        count.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// A process's CPU time so far, (user + system, user), in microseconds, from
/// its `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn cpu_us(stat: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name (field 2) may hold spaces: count from its `)`.
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some((
        (utime + stime) * 1_000_000 / ticks,
        utime * 1_000_000 / ticks,
    ))
}

/// The daemon's pid, from its `status` answer.
fn daemon_pid(socket: &Path) -> Option<u32> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.write_all(b"{\"v\":1,\"op\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let answer: serde_json::Value = serde_json::from_str(&line).ok()?;
    u32::try_from(answer.get("pid")?.as_u64()?).ok()
}

/// The thread-per-connection floor: std, blocking reads and writes.
fn std_server(socket: &Path) {
    let listener = UnixListener::bind(socket).unwrap();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if writer.write_all(REPLY.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        });
    }
}

/// The one-thread floor: a tokio `current_thread` loop, a task per
/// connection, as the daemon is built.
fn loop_server(socket: &Path) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut reader = tokio::io::BufReader::new(reader);
                let mut line = Vec::new();
                while reader
                    .read_until(b'\n', &mut line)
                    .await
                    .is_ok_and(|n| n > 0)
                {
                    if writer.write_all(REPLY.as_bytes()).await.is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// `--idle`: fresh connections after a quiet spell, one `get` each.
fn idle(args: &[String]) -> ExitCode {
    let (target, n, idle_ms) = match Target::parse::<usize, u64>(args, "N and IDLE_MS") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Target {
        socket, request, ..
    } = &target;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        thread::sleep(Duration::from_millis(idle_ms));
        let start = Instant::now();
        let stream = match UnixStream::connect(socket) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("loadgen: {}: {e}", socket.display());
                return ExitCode::FAILURE;
            }
        };
        let mut writer = stream.try_clone().unwrap();
        let mut line = String::new();
        if writer.write_all(request.as_bytes()).is_err()
            || BufReader::new(stream).read_line(&mut line).is_err()
            || !line.starts_with(r#"{"ok":true"#)
        {
            eprintln!("loadgen: not a token: {}", line.trim_end());
            return ExitCode::FAILURE;
        }
        times.push(start.elapsed().as_micros());
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!("idle_us p50 {} p90 {}", at(0.5), at(0.9));
    ExitCode::SUCCESS
}
