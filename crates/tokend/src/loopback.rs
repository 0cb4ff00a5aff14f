//! The loopback redirect listener of a browser login (RFC 8252): bound once
//! on 127.0.0.1 (a random port unless the site's redirect_uri fixes one; both
//! 127.0.0.1 and ::1 on one port for `localhost`, so no other user can take
//! the other address), hands the first callback with the login's own `state`
//! to the login, answers the browser with the login's outcome, and closes
//! when the login ends.
//!
//! Anyone on the machine can connect to a loopback port. On Linux only
//! connections from processes of our own uid are admitted (the kernel's
//! socket table says who owns the other end); any other is closed
//! unanswered. A request on another path, or without the login's `state` (a
//! forged `error=` among them), is answered and ignored: it neither takes the
//! one slot nor ends the login. A connection must send its request head
//! within a few seconds, and at most 16 are open at once (a new one closes
//! the oldest).
//!
//! The browser is not given the authorization URL itself (its `state`, PKCE
//! challenge and nonce would sit on the opener's command line, which other
//! users can read): each caller shown the login gets a one-time
//! `/start/<nonce>` link on this listener that redirects there. A second use
//! of a link ends the login loudly, so a racer who used it first cannot
//! quietly take the login over.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
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

/// At most this many connections are open at once; a new one closes the
/// one open longest, so a flood of idle sockets holds few descriptors and
/// cannot keep the browser's callback out.
const MAX_CONNECTIONS: usize = 16;

/// One callback: its query string and where to send the page for the browser.
#[derive(Debug)]
pub(crate) struct Callback {
    pub query: String,
    pub reply: oneshot::Sender<Page>,
}

/// What reaches the login through the listener.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// The callback with the login's `state`.
    Callback(Callback),
    /// The one-time start link was opened a second time: someone else may
    /// have raced the browser to it, so the login ends.
    StartReused,
}

#[derive(Debug)]
pub(crate) struct Loopback {
    pub redirect_uri: String,
    links: Arc<StartLinks>,
    rx: mpsc::Receiver<Arrival>,
    /// The accept loops; dropping the set closes the listeners, so no
    /// callback is accepted after the login ends.
    _accepts: JoinSet<()>,
}

/// What every connection checks a request against.
#[derive(Debug)]
struct Gate {
    path: String,
    state: String,
    /// The one-time start links handed out so far: their nonces, and
    /// whether each was used. Each URL shown to a caller is its own link.
    starts: std::sync::Mutex<Vec<(String, bool)>>,
    /// Where a start link redirects: the authorization URL.
    authorize: OnceLock<String>,
    /// Set by the first request with the right `state`: the one callback.
    taken: AtomicBool,
    tx: mpsc::Sender<Arrival>,
    /// The open connections, oldest first, with what closes each.
    open: std::sync::Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    conns: std::collections::VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Gate {
    /// Registers a connection, closing the oldest when at the cap; gives
    /// its id and what tells it to close.
    fn join(&self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.conns.len() >= MAX_CONNECTIONS {
            if let Some((_, close)) = open.conns.pop_front() {
                let _ = close.send(());
            }
        }
        let id = open.next;
        open.next += 1;
        open.conns.push_back((id, tx));
        (id, rx)
    }

    fn leave(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.conns.retain(|(i, _)| *i != id);
    }
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
        // The start link names the address itself, even for `localhost`.
        let origin = format!("http://{host}:{port}");
        let (tx, rx) = mpsc::channel(1);
        let gate = Arc::new(Gate {
            path,
            state: state.to_owned(),
            starts: std::sync::Mutex::new(Vec::new()),
            authorize: OnceLock::new(),
            taken: AtomicBool::new(false),
            tx,
            open: std::sync::Mutex::new(Open::default()),
        });
        let mut accepts = JoinSet::new();
        for l in listeners {
            accepts.spawn(accept_loop(l, gate.clone()));
        }
        Ok(Loopback {
            redirect_uri,
            links: Arc::new(StartLinks { origin, gate }),
            rx,
            _accepts: accepts,
        })
    }

    /// Where the start links redirect, once the URL is built; the links
    /// are what callers are shown and openers open.
    pub(crate) fn start_links(&self, authorize: &url::Url) -> Arc<StartLinks> {
        let _ = self.links.gate.authorize.set(authorize.to_string());
        self.links.clone()
    }

    /// The first callback on the redirect path with the login's `state`, or
    /// the start link's second use.
    pub(crate) async fn next(&mut self) -> Option<Arrival> {
        self.rx.recv().await
    }
}

/// Mints the one-time start links of a login: each caller shown the login
/// gets a link of its own, so none is ever opened twice in good faith.
#[derive(Debug)]
pub(crate) struct StartLinks {
    /// `http://ADDRESS:PORT` of the listener.
    origin: String,
    gate: Arc<Gate>,
}

/// A login hands out at most this many start links (callers joining it).
const MAX_START_LINKS: usize = 64;

impl StartLinks {
    /// A fresh link, or `None` when the OS random source fails or too many
    /// were handed out.
    pub(crate) fn mint(&self) -> Option<String> {
        let nonce = tokend_oauth::try_random_state().ok()?;
        let mut starts = self
            .gate
            .starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if starts.len() >= MAX_START_LINKS {
            return None;
        }
        let url = format!("{}/start/{nonce}", self.origin);
        starts.push((nonce, false));
        Some(url)
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
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("loopback: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Another user's connection is closed unanswered, before it takes a
        // place. One check at a time: a flood queues in the kernel's
        // backlog, not in tasks and descriptors of ours.
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let ours = tokio::task::spawn_blocking(move || {
            crate::platform::loopback_peer_is_ours(local, peer)
        })
        .await
        .unwrap_or(false);
        if !ours {
            tracing::debug!("loopback: closed a connection from another user's process");
            continue;
        }
        let gate = gate.clone();
        tokio::spawn(async move {
            let (id, close) = gate.join();
            let service = {
                let gate = gate.clone();
                hyper::service::service_fn(move |req: Request<Incoming>| {
                    let gate = gate.clone();
                    async move { Ok::<_, Infallible>(handle(req, &gate).await) }
                })
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // The one real callback waits for the login's outcome (up to 60 s);
            // nothing else may hold a task for long.
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_secs(90), conn) => {}
                _ = close => tracing::debug!("loopback: closed the oldest connection"),
            }
            gate.leave(id);
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
    let path = req.uri().path();
    if let Some(nonce) = path.strip_prefix("/start/") {
        return start(gate, nonce);
    }
    if path != gate.path {
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
    if gate.tx.send(Arrival::Callback(callback)).await.is_err() {
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

/// A start link: its first use redirects to the authorization URL; a
/// second ends the login (someone else had it); an unknown one is not ours.
fn start(gate: &Gate, nonce: &str) -> Response<Full<Bytes>> {
    let first_use = {
        let mut starts = gate.starts.lock().unwrap_or_else(PoisonError::into_inner);
        starts
            .iter_mut()
            .find(|(n, _)| tokend_oauth::constant_time_eq(n.as_bytes(), nonce.as_bytes()))
            .map(|(_, used)| !std::mem::replace(used, true))
    };
    let (Some(first_use), Some(authorize)) = (first_use, gate.authorize.get()) else {
        return page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This is tokend's login listener.",
        );
    };
    if !first_use {
        tracing::warn!(
            "loopback: a start link of the login was opened a second time; the login ends"
        );
        let _ = gate.tx.try_send(Arrival::StartReused);
        return page(
            StatusCode::CONFLICT,
            "Login ended",
            "This login link was already used, maybe by another program racing your browser, \
             so the login was ended. Run `token login` again.",
        );
    }
    let mut resp = page(StatusCode::SEE_OTHER, "Login", "Continue to your provider.");
    match hyper::header::HeaderValue::from_str(authorize) {
        Ok(location) => {
            resp.headers_mut().insert(hyper::header::LOCATION, location);
            resp
        }
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "The authorization URL cannot be sent to the browser.",
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
