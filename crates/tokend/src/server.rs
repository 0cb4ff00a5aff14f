//! The accept loop and one task per connection: peer check, line framing
//! with the size cap, requests answered in order, an idle timeout, and a cap
//! on connections. Nothing a client sends can take the daemon down or stall
//! another client.

use std::sync::Arc;
use std::time::Duration;

use token_proto::{decode_request, error_line, ErrorBody, ErrorCode, Frame, LineDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::daemon::Daemon;
use crate::handlers::{self, Events};
use crate::platform::{Listener, Stream};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves until a `stop` request or `shutdown` resolves.
pub async fn run(
    listener: Listener,
    daemon: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
                    tokio::spawn(async move {
                        connection(stream, ours, daemon).await;
                        drop(permit);
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

async fn connection(stream: Stream, ours: bool, daemon: Arc<Daemon>) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    if !ours {
        tracing::warn!("refused a connection from another user");
        let body = ErrorBody::new(
            ErrorCode::Forbidden,
            "this tokend belongs to another user: connections from other users are refused",
        );
        let _ = writer.write_all(&error_line(&body)).await;
        return;
    }
    let mut decoder = LineDecoder::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = Vec::new();
    loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        decoder.feed(&buf[..n], &mut frames);
        for frame in frames.drain(..) {
            let line = match frame {
                Frame::TooLong => error_line(&ErrorBody::new(
                    ErrorCode::BadRequest,
                    "request line longer than 64 KiB; it was dropped",
                )),
                Frame::Line(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
                Frame::Line(l) => match decode_request(&l) {
                    Err(e) => error_line(&e.0),
                    Ok(req) => {
                        let mut events = Events::new(&mut writer);
                        handlers::dispatch(&daemon, req, &mut events).await
                    }
                },
            };
            if writer.write_all(&line).await.is_err() {
                return;
            }
        }
    }
}
