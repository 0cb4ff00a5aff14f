//! [`serve`]: the real server on a Unix socket in a temp dir, and a raw
//! line client.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::{logged_in, site, Provider};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::server::Limits;
use crate::site::Deps;
use crate::store::Store;

/// Limits short enough for tests to see them, long enough that a test's
/// own requests never meet them.
pub(crate) const TEST_LIMITS: Limits = Limits {
    max_connections: 16,
    idle_timeout: Duration::from_millis(800),
    line_timeout: Duration::from_millis(500),
    // As the daemon has them: a test that wants connection threads sooner
    // sets its own.
    promote_after: Limits::DAEMON.promote_after,
    max_threads: Limits::DAEMON.max_threads,
};

/// A running server and what a test looks at.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub provider: Arc<Provider>,
    pub store: Store,
    task: tokio::task::JoinHandle<()>,
    threads: Arc<AtomicUsize>,
}

/// The real server over `config` within [`TEST_LIMITS`]; the sites named
/// in `logged_in` hold a login (see [`logged_in`]).
pub(crate) fn serve(config: &str, logged_in: &[&str]) -> Server {
    serve_with(config, logged_in, TEST_LIMITS)
}

/// [`serve`] within `limits`.
pub(crate) fn serve_with(config: &str, logged: &[&str], limits: Limits) -> Server {
    serve_share_with(config, logged, limits, None)
}

/// [`serve_with`], the socket serving as the config's `[share.NAME]`
/// (`share`) when one is named.
pub(crate) fn serve_share_with(
    config: &str,
    logged: &[&str],
    limits: Limits,
    share: Option<&str>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let parsed = Config::load(&path);
    let store = logged_in(&parsed, logged);
    let provider = Provider::new(3600, Duration::ZERO);
    let deps = Deps::scripted(provider.http(), store.clone());
    let daemon = Arc::new(Daemon::with_deps(path, parsed, deps));
    let socket = dir.path().join("tokend.sock");
    let share = share.map(|name| daemon.config().shares[name].clone());
    let listener = crate::platform::bind_for_tests(&socket).unwrap();
    let threads = Arc::<AtomicUsize>::default();
    let task = tokio::spawn(crate::server::run_with(
        listener,
        daemon.clone(),
        share,
        std::future::pending(),
        limits,
        threads.clone(),
    ));
    Server {
        dir,
        socket,
        provider,
        store,
        task,
        threads,
    }
}

impl Server {
    /// A new connection.
    pub(crate) async fn connect(&self) -> Client {
        let (r, w) = UnixStream::connect(&self.socket)
            .await
            .unwrap()
            .into_split();
        Client {
            r: BufReader::new(r),
            w,
        }
    }

    /// One request on a connection of its own: its answer (events skipped).
    pub(crate) async fn ask(&self, request: &str) -> Value {
        self.connect().await.ask(request).await
    }

    /// Rewrites the config file (a `reload` reads it).
    pub(crate) fn write_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("config.toml"), config).unwrap();
    }

    /// `name`'s state as `status` says it.
    pub(crate) async fn state(&self, name: &str) -> String {
        let answer = self.ask(&status(name)).await;
        answer["sites"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 5 s) until `name`'s state is `want`.
    pub(crate) async fn becomes(&self, name: &str, want: &str) {
        for _ in 0..100 {
            if self.state(name).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("site {name} stayed {}, not {want}", self.state(name).await);
    }

    /// Connection threads running now.
    pub(crate) fn threads(&self) -> usize {
        self.threads.load(Ordering::SeqCst)
    }

    /// Whether the server task has ended (after a `stop`).
    pub(crate) async fn ended(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a client waits for a line before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// A raw client: lines out, lines in, as the wire carries them.
pub(crate) struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    /// Sends `bytes` as they are (no newline added).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// Sends one line (its newline added).
    pub(crate) async fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes).await;
    }

    /// The next line, `None` once the server has closed the connection.
    pub(crate) async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let read = tokio::time::timeout(PATIENCE, self.r.read_line(&mut line))
            .await
            .expect("no line from the server");
        match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }

    /// The next line as JSON.
    pub(crate) async fn value(&mut self) -> Value {
        let line = self.line().await.expect("the server closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The answer to what was sent: the next line that is not an event.
    pub(crate) async fn answer(&mut self) -> Value {
        loop {
            let v = self.value().await;
            if v.get("event").is_none() {
                return v;
            }
        }
    }

    /// Sends `request` and returns its answer (events skipped).
    pub(crate) async fn ask(&mut self, request: &str) -> Value {
        self.send(request).await;
        self.answer().await
    }

    /// Whether the server closes the connection within `within`, with
    /// nothing more sent.
    pub(crate) async fn closed_within(&mut self, within: Duration) -> bool {
        let mut line = String::new();
        match tokio::time::timeout(within, self.r.read_line(&mut line)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) => panic!("the server sent a line: {line}"),
            Err(_) => false,
        }
    }

    /// Ends what this client sends (a half-close): the server reads the
    /// end of the stream, and can still write.
    pub(crate) async fn finish_sending(&mut self) {
        self.w.shutdown().await.unwrap();
    }

    /// Closes the connection.
    pub(crate) fn close(self) {}
}

/// `corp` logged in, `fresh` not (both as [`site`] writes them).
pub(crate) fn corp_and_fresh() -> Server {
    serve(&(site("corp") + &site("fresh")), &["corp"])
}

/// A `get` of `site`'s token, a login allowed.
pub(crate) fn get(site: &str) -> String {
    format!(r#"{{"v":1,"op":"get","site":"{site}"}}"#)
}

/// A `status` of `site`.
pub(crate) fn status(site: &str) -> String {
    format!(r#"{{"v":1,"op":"status","site":"{site}"}}"#)
}

/// Fails the test unless `answer` is an `ok` one.
pub(crate) fn ok(answer: &Value) {
    assert_eq!(answer["ok"], true, "{answer}");
}

/// An error answer's code (`None` for an `ok` answer).
pub(crate) fn code(answer: &Value) -> Option<&str> {
    answer["error"]["code"].as_str()
}

/// An error answer's message.
pub(crate) fn message(answer: &Value) -> &str {
    answer["error"]["message"].as_str().unwrap_or_default()
}
