//! `[proxy.NAME]`: a local listener (a 0600 Unix socket, or loopback TCP)
//! that forwards every request to the upstream with the site's fresh token
//! in place of any `Authorization` the caller sent (for a `dpop = true`
//! site: `Authorization: DPoP` and a proof for that method and URL, again
//! with the upstream's `DPoP-Nonce` when it asks for one). Bodies stream
//! both ways; hop-by-hop headers are dropped and nothing (`X-Forwarded-*`)
//! is added. An upstream 401 with `error="invalid_token"` gets one refresh
//! and one retry when the body was small enough to keep (1 MiB). Only our
//! uid is served: the Unix socket's peer uid, or (loopback TCP, Linux) the
//! connection's owner in the kernel's socket table; others are closed
//! unanswered. Proxies start, move and stop with config reloads.

use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use token_proto::{DpopTarget, ErrorCode, GetRequest, LoginPolicy, TokenReply};

use crate::config::{Listen, ProxyConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::listeners::{Kind, Listeners};

/// A body kept for a retry after a refresh; larger ones stream, unkept.
const KEEP_BODY: u64 = 1024 * 1024;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The proxies in service.
pub(crate) type Proxies = Listeners<Proxy>;

#[derive(Debug)]
pub(crate) struct Proxy;

#[derive(Debug)]
pub(crate) enum Bound {
    Unix(crate::platform::Listener),
    Tcp(tokio::net::TcpListener),
}

impl Kind for Proxy {
    type Config = ProxyConfig;
    type Bound = Bound;
    const TABLE: &'static str = "proxy";
    const KEY: &'static str = "listen";

    fn line(cfg: &ProxyConfig) -> usize {
        cfg.line
    }

    fn bind(p: &ProxyConfig) -> Result<Bound, String> {
        let bound = bind(&p.listen)?;
        tracing::info!(proxy = %p.name, site = %p.site, upstream = %p.upstream.as_str(), "proxy listening");
        Ok(bound)
    }

    fn serve(
        bound: Bound,
        cfg: Arc<ProxyConfig>,
        daemon: Arc<Daemon>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let client = match client(&cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(proxy = %cfg.name, "cannot make the proxy's HTTP client: {e}");
                return;
            }
        };
        let ctx = Arc::new(Ctx {
            daemon: Arc::downgrade(&daemon),
            cfg,
            client,
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    conn = accept(&bound) => match conn {
                        Ok(Some(io)) => {
                            let ctx = ctx.clone();
                            tokio::spawn(async move { serve_conn(io, ctx).await });
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(proxy = %ctx.cfg.name, "accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
        });
    }

    fn remove(p: &ProxyConfig) {
        if let Listen::Unix(path) = &p.listen {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(proxy = %p.name, "proxy stopped");
    }
}

/// A connection: either kind, as one stream type.
enum Io {
    Unix(crate::platform::Stream),
    Tcp(tokio::net::TcpStream),
}

/// The next connection of ours; `None`: one of another user, closed.
async fn accept(bound: &Bound) -> std::io::Result<Option<Io>> {
    match bound {
        Bound::Unix(l) => {
            let (stream, ours) = l.accept().await?;
            if !ours {
                tracing::warn!("proxy: closed a connection from another user");
                return Ok(None);
            }
            Ok(Some(Io::Unix(stream)))
        }
        Bound::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let local = stream.local_addr()?;
            if !crate::platform::loopback_peer_is_ours(local, peer) {
                tracing::warn!("proxy: closed a loopback connection of another user");
                return Ok(None);
            }
            Ok(Some(Io::Tcp(stream)))
        }
    }
}

struct Ctx {
    daemon: Weak<Daemon>,
    cfg: Arc<ProxyConfig>,
    client: reqwest::Client,
}

fn client(cfg: &ProxyConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(cfg.timeout))
        .build()
}

async fn serve_conn(io: Io, ctx: Arc<Ctx>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let builder = hyper::server::conn::http1::Builder::new();
    let result = match io {
        Io::Unix(s) => builder.serve_connection(TokioIo::new(s), service).await,
        Io::Tcp(s) => builder.serve_connection(TokioIo::new(s), service).await,
    };
    if let Err(e) = result {
        tracing::debug!("proxy connection ended: {e}");
    }
}

/// A JSON error answer: `{"error", "site", "message"}`.
fn answer(status: StatusCode, code: &str, site: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "site": site, "message": message }).to_string();
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), and those the `Connection`
/// header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let site = ctx.cfg.site.clone();
    let Some(d) = ctx.daemon.upgrade() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            &site,
            "tokend is stopping",
        );
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let base = ctx.cfg.upstream.url();
    let url = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    let Ok(url) = reqwest::Url::parse(&url) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &site,
            "the request path is not valid",
        );
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    for h in [header::HOST, header::AUTHORIZATION] {
        headers.remove(h);
    }
    headers.remove("dpop");
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (kept, mut streamed) = match length {
        // No body at all (a GET): nothing to stream, a retry is free.
        None if hyper::body::Body::is_end_stream(&body) => (Some(Bytes::new()), None),
        Some(n) if n <= KEEP_BODY => match Limited::new(body, KEEP_BODY as usize).collect().await {
            Ok(b) => (Some(b.to_bytes()), None),
            Err(_) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &site,
                    "the request body did not arrive whole",
                )
            }
        },
        _ => (None, Some(reqwest::Body::wrap(SyncBody(body)))),
    };
    let mut min_ttl = None;
    let mut nonce = None;
    let mut tries = 0;
    loop {
        tries += 1;
        let token = match token(&d, ctx, &parts.method, &url, min_ttl, nonce.clone()).await {
            Ok(t) => t,
            Err(e) => return token_error(&ctx.cfg, &e),
        };
        let mut h = headers.clone();
        if let Ok(v) =
            HeaderValue::from_str(&format!("{} {}", auth_scheme(&token), token.access_token))
        {
            h.insert(header::AUTHORIZATION, v);
        }
        if let Some(proof) = token
            .dpop_proof
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok())
        {
            h.insert("dpop", proof);
        }
        let body = match (&kept, streamed.take()) {
            (Some(b), _) => reqwest::Body::from(b.clone()),
            (None, Some(s)) => s,
            (None, None) => reqwest::Body::from(Bytes::new()),
        };
        let sent = ctx
            .client
            .request(parts.method.clone(), url.clone())
            .headers(h)
            .body(body)
            .send();
        let resp = match tokio::time::timeout(Duration::from_secs(ctx.cfg.timeout), sent).await {
            Err(_) => return timed_out(&ctx.cfg),
            Ok(Err(e)) if e.is_timeout() => return timed_out(&ctx.cfg),
            Ok(Err(e)) => {
                return answer(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    &site,
                    &format!(
                        "cannot reach {}: {}",
                        ctx.cfg.upstream.as_str(),
                        token_text::clean(&error_chain(&e), 300)
                    ),
                )
            }
            Ok(Ok(r)) => r,
        };
        let retry = tries < 3
            && resp.status() == StatusCode::UNAUTHORIZED
            && (kept.is_some() || length == Some(0));
        if retry {
            let challenge = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let asked_nonce = resp
                .headers()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if token.dpop_proof.is_some() && asked_nonce.is_some() && asked_nonce != nonce {
                nonce = asked_nonce;
                continue;
            }
            if challenge.contains("invalid_token") && min_ttl.is_none() {
                // One refresh: ask for at least the life the token in hand
                // has (counted in whole seconds, so it no longer serves),
                // which a token obtained now meets. (A token revoked within
                // a second of its issue is not renewed this way.)
                let left = token.expires_at.map_or(0, |at| {
                    at.saturating_sub(crate::clock::whole(crate::clock::Clock::System.now()))
                });
                min_ttl = Some(left);
                tracing::info!(proxy = %ctx.cfg.name, "upstream refused the token (invalid_token): refreshing once");
                continue;
            }
        }
        let status = resp.status();
        let mut back = resp.headers().clone();
        strip_hop_by_hop(&mut back);
        let body: reqwest::Body = resp.into();
        let mut out = Response::new(body.map_err(Into::into).boxed());
        *out.status_mut() = status;
        *out.headers_mut() = back;
        return out;
    }
}

/// 504: the upstream did not answer within the proxy's `timeout`.
fn timed_out(cfg: &ProxyConfig) -> Response<Body> {
    answer(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        &cfg.site,
        &format!(
            "{} did not answer within {}s (the proxy's timeout)",
            cfg.upstream.as_str(),
            cfg.timeout
        ),
    )
}

fn auth_scheme(t: &TokenReply) -> &'static str {
    if t.token_type.eq_ignore_ascii_case("dpop") {
        "DPoP"
    } else {
        "Bearer"
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn token(
    d: &Arc<Daemon>,
    ctx: &Ctx,
    method: &hyper::Method,
    url: &reqwest::Url,
    min_ttl: Option<u64>,
    nonce: Option<String>,
) -> Result<TokenReply, ApiError> {
    let dpop = d
        .config()
        .sites
        .get(&ctx.cfg.site)
        .is_some_and(|s| s.dpop)
        .then(|| DpopTarget {
            method: method.as_str().to_owned(),
            url: url.as_str().to_owned(),
            nonce,
        });
    let req = GetRequest {
        site: ctx.cfg.site.clone(),
        min_ttl,
        login: if ctx.cfg.login {
            LoginPolicy::Auto
        } else {
            LoginPolicy::Never
        },
        dpop,
        ..Default::default()
    };
    crate::handlers::token_for(d, req).await
}

fn token_error(cfg: &ProxyConfig, e: &ApiError) -> Response<Body> {
    let site = &cfg.site;
    match e.code {
        ErrorCode::LoginRequired => answer(
            StatusCode::UNAUTHORIZED,
            "login_required",
            site,
            &format!(
                "site {site} needs a login: run `token login {site}` (the proxy [proxy.{}] starts none{})",
                cfg.name,
                if cfg.login { "" } else { " unless it says login = true" }
            ),
        ),
        _ => answer(
            StatusCode::BAD_GATEWAY,
            e.code.as_str(),
            site,
            &format!("no token for site {site}: {}", e.message),
        ),
    }
}

/// hyper's request body, made `Sync` for reqwest (it is only ever polled
/// from one task).
struct SyncBody(Incoming);

// SAFETY: `SyncBody` gives no shared access to its inner body: every use
// takes `Pin<&mut Self>`, so no two threads can touch it at once.
unsafe impl Sync for SyncBody {}

impl hyper::body::Body for SyncBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        // SAFETY: structural pinning of the only field.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        inner.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.size_hint()
    }
}

fn bind(listen: &Listen) -> Result<Bound, String> {
    match listen {
        Listen::Unix(path) => crate::platform::bind_share(path, &[])
            .map(Bound::Unix)
            .map_err(|e| e.to_string()),
        Listen::Tcp(addr) => {
            let std = std::net::TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
            std.set_nonblocking(true).map_err(|e| e.to_string())?;
            tokio::net::TcpListener::from_std(std)
                .map(Bound::Tcp)
                .map_err(|e| e.to_string())
        }
    }
}
