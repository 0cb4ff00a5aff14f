//! A fast loopback HTTP/1.1 upstream for `scripts/bench-proxy`: a thread per
//! connection, keep-alive, every request answered `200` with a small body
//! (`401` when it carries no `Authorization`, so a bench through the proxy
//! shows the token went in). Request bodies (`Content-Length`) are read and
//! dropped. Prints `port N` once it listens.
//!
//!   httpd [PORT]     (0 or none: any free port)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{\"ok\":true,\"bench\":\"httpd\"}";
const NO_TOKEN: &[u8] = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    println!("port {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || serve(stream));
    }
}

fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line and headers, up to the blank line.
        let (mut length, mut authorized, mut any) = (0usize, false, false);
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if any {
                    break;
                }
                continue;
            }
            any = true;
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("authorization:") {
                authorized = true;
            }
        }
        if length > 0
            && std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink()).is_err()
        {
            return;
        }
        let answer = if authorized { OK } else { NO_TOKEN };
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}
