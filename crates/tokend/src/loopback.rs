//! The loopback redirect listener of a browser login (RFC 8252): bound once
//! on 127.0.0.1 (a random port unless the site's redirect_uri fixes one),
//! hands the first callback on its path to the login, answers the browser
//! with the login's outcome, and closes when the login ends.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the browser is shown once the login knows how it went.
#[derive(Debug)]
pub enum Page {
    Done(String),
    Failed(String),
}

/// One callback: its query string and where to send the page for the browser.
#[derive(Debug)]
pub struct Callback {
    pub query: String,
    pub reply: oneshot::Sender<Page>,
}

#[derive(Debug)]
pub struct Loopback {
    pub redirect_uri: String,
    rx: mpsc::Receiver<Callback>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Loopback {
    fn drop(&mut self) {
        // Closing the listener: no callback is accepted after the login ends.
        self.task.abort();
    }
}

/// Is this redirect URI one we can listen on ourselves?
pub fn is_loopback(uri: &url::Url) -> bool {
    uri.scheme() == "http"
        && matches!(
            uri.host(),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback()
        )
        || uri.scheme() == "http"
            && matches!(uri.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || uri.scheme() == "http" && uri.host_str() == Some("localhost")
}

impl Loopback {
    /// Binds the listener. `configured`: the site's loopback redirect_uri,
    /// whose host, port (0 or none = random) and path are honoured.
    pub async fn bind(configured: Option<&url::Url>) -> std::io::Result<Loopback> {
        let (host, port, path) = match configured {
            Some(u) => (
                match u.host() {
                    Some(url::Host::Ipv6(_)) => "[::1]".to_owned(),
                    _ => "127.0.0.1".to_owned(),
                },
                u.port().unwrap_or(0),
                u.path().to_owned(),
            ),
            None => ("127.0.0.1".to_owned(), 0, "/callback".to_owned()),
        };
        let listener = TcpListener::bind(format!("{host}:{port}")).await?;
        let port = listener.local_addr()?.port();
        let shown_host = match configured.and_then(|u| u.host_str()) {
            Some("localhost") => "localhost".to_owned(),
            _ => host,
        };
        let redirect_uri = format!("http://{shown_host}:{port}{path}");
        let (tx, rx) = mpsc::channel(1);
        let taken = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept_loop(listener, path, tx, taken));
        Ok(Loopback {
            redirect_uri,
            rx,
            task,
        })
    }

    /// The first callback on the redirect path.
    pub async fn next(&mut self) -> Option<Callback> {
        self.rx.recv().await
    }
}

async fn accept_loop(
    listener: TcpListener,
    path: String,
    tx: mpsc::Sender<Callback>,
    taken: Arc<AtomicBool>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (path, tx, taken) = (path.clone(), tx.clone(), taken.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (path, tx, taken) = (path.clone(), tx.clone(), taken.clone());
                async move { Ok::<_, Infallible>(handle(req, &path, &tx, &taken).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // A browser that never finishes its request must not hold a task forever.
            let _ = tokio::time::timeout(Duration::from_secs(120), conn).await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    path: &str,
    tx: &mpsc::Sender<Callback>,
    taken: &AtomicBool,
) -> Response<Full<Bytes>> {
    if req.uri().path() != path {
        return page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This is tokend's login listener.",
        );
    }
    if taken.swap(true, Ordering::SeqCst) {
        return page(
            StatusCode::CONFLICT,
            "Already handled",
            "This login has already received its answer. You can close this tab.",
        );
    }
    let (reply, outcome) = oneshot::channel();
    let callback = Callback {
        query: req.uri().query().unwrap_or("").to_owned(),
        reply,
    };
    if tx.send(callback).await.is_err() {
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
