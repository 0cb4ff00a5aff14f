//! Throughput of the daemon's request path (`scripts/bench` runs it):
//! CONNS persistent connections to a tokend socket, each sending
//! `{"v":1,"op":"get","site":SITE,"login":"never"}` and reading the answer,
//! one request at a time, as fast as it can, for SECONDS. Prints one line:
//! `gets/s N`.
//!
//! `loadgen --echo CONNS SECONDS` measures the reference instead: a bare std
//! server in this process (a thread per connection) that answers each line
//! with a token-shaped line, on a Unix socket in a temp directory. It is the
//! floor for any server that reads a line and writes one: what is left
//! between the two is the daemon's own work.
//!
//! `--idle` measures what a separate CLI process sees of the daemon instead:
//! N times, after IDLE_MS of quiet, a fresh connection, one `get`, closed;
//! prints the round trip's median and 90th percentile in microseconds,
//! `idle_us p50 N p90 N` (against the echo server with `--echo`).
//!
//!   loadgen SOCKET SITE CONNS SECONDS
//!   loadgen --echo CONNS SECONDS
//!   loadgen --idle SOCKET SITE N IDLE_MS
//!   loadgen --idle --echo N IDLE_MS
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
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

const USAGE: &str = "loadgen SOCKET SITE CONNS SECONDS | loadgen --echo CONNS SECONDS \
    | loadgen --idle SOCKET SITE N IDLE_MS | loadgen --idle --echo N IDLE_MS";

/// Whom to ask, and what: `--echo A B` (this process's echo server) or
/// `SOCKET SITE A B`; A and B are the mode's two numbers, named `names`.
struct Target {
    /// Holds the echo server's socket.
    _dir: Option<tempfile::TempDir>,
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
            [flag, a, b] if flag == "--echo" => {
                let dir = tempfile::tempdir().unwrap();
                let socket = dir.path().join("echo.sock");
                echo_server(&socket);
                (Some(dir), socket, "echo", a, b)
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
        Ok((
            Target {
                _dir: dir,
                socket,
                request,
            },
            a,
            b,
        ))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--idle") {
        return idle(&args[1..]);
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
    let start_count = count.load(Relaxed);
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    let n = count.load(Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, Relaxed);
    let mut failed = false;
    for c in callers {
        if let Err(e) = c.join().unwrap() {
            eprintln!("loadgen: {e}");
            failed = true;
        }
    }
    println!("gets/s {:.0}", n as f64 / elapsed);
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

fn echo_server(socket: &Path) {
    let listener = UnixListener::bind(socket).unwrap();
    thread::spawn(move || {
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
