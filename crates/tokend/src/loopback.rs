//! The loopback redirect listener of a browser login (RFC 8252): bound once
//! on 127.0.0.1 (a random port unless the site's redirect_uri fixes one; both
//! 127.0.0.1 and ::1 on one port for `localhost`, so no other user can take
//! the other address), hands the first callback with the login's own `state`
//! to the login, answers the browser with the login's outcome, and closes
//! when the login ends.
//!
//! Anyone on the machine can connect to a loopback port. A request on
//! another path, or without the login's `state` (a forged `error=` among
//! them), is answered and ignored: it neither takes the one slot nor ends the
//! login. A connection must send its request head within a few seconds.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// What the browser is shown once the login knows how it went.
#[derive(Debug)]
pub(crate) enum Page {
    Done(String),
    Failed(String),
}

/// How long a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// One callback: its query string and where to send the page for the browser.
#[derive(Debug)]
pub(crate) struct Callback {
    pub query: String,
    pub reply: oneshot::Sender<Page>,
}

#[derive(Debug)]
pub(crate) struct Loopback {
    pub redirect_uri: String,
    rx: mpsc::Receiver<Callback>,
    /// The accept loops; dropping the set closes the listeners, so no
    /// callback is accepted after the login ends.
    _accepts: JoinSet<()>,
}

/// What every connection checks a request against.
#[derive(Debug)]
struct Gate {
    path: String,
    state: String,
    /// Set by the first request with the right `state`: the one callback.
    taken: AtomicBool,
    tx: mpsc::Sender<Callback>,
}

/// Is this redirect URI one we can listen on ourselves?
pub(crate) fn is_loopback(uri: &url::Url) -> bool {
    uri.scheme() == "http"
        && match uri.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        }
}

impl Loopback {
    /// Binds the listener for the login whose `state` is given.
    /// `configured`: the site's loopback redirect_uri, whose host, port (0 or
    /// none = random) and path are honoured.
    pub(crate) async fn bind(
        configured: Option<&url::Url>,
        state: &str,
    ) -> std::io::Result<Loopback> {
        let (host, port, path) = match configured {
            Some(u) => (
                match u.host() {
                    Some(url::Host::Ipv6(_)) => "[::1]",
                    _ => "127.0.0.1",
                },
                u.port().unwrap_or(0),
                u.path().to_owned(),
            ),
            None => ("127.0.0.1", 0, "/callback".to_owned()),
        };
        let localhost = configured.and_then(|u| u.host_str()) == Some("localhost");
        let (listeners, port) = bind_addresses(host, port, localhost).await?;
        let shown_host = if localhost { "localhost" } else { host };
        let redirect_uri = format!("http://{shown_host}:{port}{path}");
        let (tx, rx) = mpsc::channel(1);
        let gate = Arc::new(Gate {
            path,
            state: state.to_owned(),
            taken: AtomicBool::new(false),
            tx,
        });
        let mut accepts = JoinSet::new();
        for l in listeners {
            accepts.spawn(accept_loop(l, gate.clone()));
        }
        Ok(Loopback {
            redirect_uri,
            rx,
            _accepts: accepts,
        })
    }

    /// The first callback on the redirect path with the login's `state`.
    pub(crate) async fn next(&mut self) -> Option<Callback> {
        self.rx.recv().await
    }
}

/// Binds `host:port`; for `localhost` also `[::1]` on the same port, since a
/// browser may resolve `localhost` to either and another user must not be
/// able to take the address we left free. A random port that is taken on
/// ::1 is tried again; a machine without IPv6 gets 127.0.0.1 alone.
async fn bind_addresses(
    host: &str,
    port: u16,
    localhost: bool,
) -> std::io::Result<(Vec<TcpListener>, u16)> {
    let mut last = None;
    for _ in 0..8 {
        let first = TcpListener::bind(format!("{host}:{port}")).await?;
        let bound = first.local_addr()?.port();
        if !localhost {
            return Ok((vec![first], bound));
        }
        match TcpListener::bind(format!("[::1]:{bound}")).await {
            Ok(second) => return Ok((vec![first, second], bound)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Ok((vec![first], bound))
            }
            Err(e) if port == 0 && e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port on both loopback addresses")))
}

async fn accept_loop(listener: TcpListener, gate: Arc<Gate>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let gate = gate.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let gate = gate.clone();
                async move { Ok::<_, Infallible>(handle(req, &gate).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // The one real callback waits for the login's outcome (up to 60 s);
            // nothing else may hold a task for long.
            let _ = tokio::time::timeout(Duration::from_secs(90), conn).await;
        });
    }
}

/// The `state` parameter of a query string.
fn state_of(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
}

async fn handle(req: Request<Incoming>, gate: &Gate) -> Response<Full<Bytes>> {
    if req.uri().path() != gate.path {
        return page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This is tokend's login listener.",
        );
    }
    let query = req.uri().query().unwrap_or("");
    let ours = state_of(query)
        .is_some_and(|s| tokend_oauth::constant_time_eq(s.as_bytes(), gate.state.as_bytes()));
    if !ours {
        tracing::debug!("loopback: ignored a request without the login's state");
        return page(
            StatusCode::BAD_REQUEST,
            "Not this login",
            "This request does not carry the state of tokend's pending login, so it was ignored.",
        );
    }
    if gate.taken.swap(true, Ordering::SeqCst) {
        return page(
            StatusCode::CONFLICT,
            "Already handled",
            "This login has already received its answer. You can close this tab.",
        );
    }
    let (reply, outcome) = oneshot::channel();
    let callback = Callback {
        query: query.to_owned(),
        reply,
    };
    if gate.tx.send(callback).await.is_err() {
        return page(
            StatusCode::GONE,
            "Login over",
            "This login is no longer waiting. Run `token login` again.",
        );
    }
    match tokio::time::timeout(Duration::from_secs(60), outcome).await {
        Ok(Ok(Page::Done(site))) => page(
            StatusCode::OK,
            "Logged in",
            &format!("tokend is logged in to site {site}. You can close this tab."),
        ),
        Ok(Ok(Page::Failed(why))) => page(StatusCode::BAD_REQUEST, "Login failed", &why),
        _ => page(
            StatusCode::GATEWAY_TIMEOUT,
            "Login state unknown",
            "tokend did not finish the login in time; check `token status`.",
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tokend: {t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;color:#222}}</style>\
         </head><body><h1>{t}</h1><p>{b}</p></body></html>",
        t = escape(title),
        b = escape(body)
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    resp
}
