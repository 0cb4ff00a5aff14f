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
//!   loadgen SOCKET SITE CONNS SECONDS
//!   loadgen --echo CONNS SECONDS
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir;
    let (socket, site, conns, seconds) = match args.as_slice() {
        [flag, conns, seconds] if flag == "--echo" => {
            dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("echo.sock");
            echo_server(&socket);
            (socket, "echo".to_owned(), conns, seconds)
        }
        [socket, site, conns, seconds] => (socket.into(), site.clone(), conns, seconds),
        _ => {
            eprintln!("usage: loadgen SOCKET SITE CONNS SECONDS | loadgen --echo CONNS SECONDS");
            return ExitCode::from(2);
        }
    };
    let (Ok(conns), Ok(seconds)) = (conns.parse::<usize>(), seconds.parse::<f64>()) else {
        eprintln!("loadgen: CONNS and SECONDS must be numbers");
        return ExitCode::from(2);
    };
    let request = format!("{{\"v\":1,\"op\":\"get\",\"site\":\"{site}\",\"login\":\"never\"}}\n");
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
