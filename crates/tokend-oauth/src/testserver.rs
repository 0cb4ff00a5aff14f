//! A tiny scripted HTTP responder for tests of the send path: one canned
//! response per accepted connection, every request recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use url::Url;

#[derive(Debug)]
pub(crate) struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub(crate) fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    /// Every request received so far, as raw text (head and body).
    pub(crate) async fn requests(&self) -> Vec<String> {
        self.seen.lock().await.clone()
    }
}

/// Serve `responses` in order, one per connection. `None` accepts the
/// connection, reads the request and never answers (for timeout tests).
pub(crate) async fn serve(responses: Vec<Option<String>>) -> TestServer {
    serve_with(|_| responses).await
}

/// Like [`serve`], for responses that must name the server's own base URL
/// (`http://127.0.0.1:PORT/`).
pub(crate) async fn serve_with(script: impl FnOnce(&Url) -> Vec<Option<String>>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let responses = script(&Url::parse(&format!("http://{addr}/")).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for response in responses {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let request = read_request(&mut stream).await;
            log.lock().await.push(request);
            match response {
                Some(text) => {
                    let _ = stream.write_all(text.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
                None => {
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                        drop(stream);
                    });
                }
            }
        }
    });
    TestServer { addr, seen }
}

/// A canned `200 OK` with a JSON body.
pub(crate) fn json_ok(body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// A port nothing listens on.
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn read_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}
