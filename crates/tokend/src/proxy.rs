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
//!
//! What a request costs (`scripts/bench-proxy`, which also runs socat in
//! the proxy's place as the floor of any proxy on the machine): hyper
//! serves the caller and hyper's own client talks to the upstream, each
//! proxy connection owning one upstream connection (HTTP/1.1 requests on
//! a connection come one after another), made at its first request and
//! again when the upstream closes it; TLS is rustls with the roots the
//! daemon's reqwest client trusts (webpki's and the system's), set up once
//! at the first https upstream. The upstream's URL is taken apart once per
//! proxy, not per request. The token is kept up to a second between
//! requests ([`Cached`]). Connections are served on a thread of their own
//! (Unix), so a busy proxy and the daemon's socket do not queue behind each
//! other; tokens are still asked of the sites on the daemon's runtime.
//! Most of what is left is the kernel's: two reads and two writes a
//! request, each write waking the reader on the other end.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use token_proto::{DpopTarget, ErrorCode, GetRequest, LoginPolicy, TokenReply};

use crate::config::{Config, Listen, ProxyConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::listeners::{Kind, Listeners};

/// A body kept for a retry after a refresh; larger ones stream, unkept.
const KEEP_BODY: u64 = 1024 * 1024;

/// How long a proxy keeps a token between requests (see [`Cached`]).
const KEEP_TOKEN: Duration = Duration::from_secs(1);

/// Time to connect to the upstream (within the proxy's `timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
        let target = match Target::new(cfg.upstream.url(), cfg.upstream.as_str()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(proxy = %cfg.name, "cannot serve the proxy: {e}");
                return;
            }
        };
        let ctx = Arc::new(Ctx {
            daemon: Arc::downgrade(&daemon),
            cfg,
            target,
            daemon_rt: tokio::runtime::Handle::try_current().ok(),
            cached: Mutex::new(None),
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    conn = accept(&bound) => match conn {
                        Ok(Some(io)) => spawn_conn(io, ctx.clone()),
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
            // An answer goes out as soon as it is written: with Nagle, a
            // body written after its head waits for the caller's delayed
            // ACK (40 ms stalls at p99).
            let _ = stream.set_nodelay(true);
            Ok(Some(Io::Tcp(stream)))
        }
    }
}

struct Ctx {
    daemon: Weak<Daemon>,
    cfg: Arc<ProxyConfig>,
    target: Target,
    /// The daemon's runtime, where the sites are asked for tokens.
    daemon_rt: Option<tokio::runtime::Handle>,
    /// The site's token between requests, for a short while.
    cached: Mutex<Option<Cached>>,
}

/// The upstream, taken apart once: where to connect and what to send.
struct Target {
    /// `Some`: https, with this name for the certificate.
    tls: Option<rustls::pki_types::ServerName<'static>>,
    host: String,
    port: u16,
    /// The `Host` header: the upstream's host and port as written.
    authority: HeaderValue,
    /// The upstream URL's path without its trailing `/`, put before each
    /// request's path (empty for an upstream at `/`).
    prefix: String,
    /// `scheme://authority`, for the URL a DPoP proof names.
    origin: String,
}

impl Target {
    /// `url` is the upstream, as `written` in the config.
    fn new(url: &url::Url, upstream: &str) -> Result<Target, String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("upstream {upstream} names no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("upstream {upstream} names no port"))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        // `[::1]` is written with brackets, connected to and named without.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match url.scheme() {
            "https" => Some(
                rustls::pki_types::ServerName::try_from(bare.clone())
                    .map_err(|e| format!("upstream {upstream}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Target {
            tls,
            host: bare,
            port,
            authority: HeaderValue::from_str(&authority)
                .map_err(|e| format!("upstream {upstream}: {e}"))?,
            prefix: url.path().trim_end_matches('/').to_owned(),
            origin: format!("{}://{authority}", url.scheme()),
        })
    }

    /// The request's URI on the upstream (origin-form); `None`: not valid.
    fn uri(&self, asked: &Uri) -> Option<Uri> {
        let path = asked.path_and_query().map_or("/", |p| p.as_str());
        if self.prefix.is_empty() && path.starts_with('/') {
            return Uri::try_from(path).ok();
        }
        Uri::try_from(format!("{}{path}", self.prefix)).ok()
    }
}

/// The TLS setup every https upstream shares, made at the first (the
/// roots reqwest's client trusts: webpki's and the system's).
fn tls() -> Arc<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system store may hold certificates rustls cannot parse.
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            // ring's provider has the safe defaults; this is not reached.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    })
    .clone()
}

/// One proxy connection's upstream connection: requests on a proxy
/// connection come one after another (HTTP/1.1), so each owns one
/// upstream connection, made at its first request and again when the
/// upstream closed it.
struct Upstream {
    sender: SendRequest<Outgoing>,
    task: tokio::task::AbortHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why there is no upstream connection: the message for the 502.
async fn connect(t: &Target) -> Result<Upstream, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()))?
    .map_err(|e| error_chain(&e))?;
    let _ = tcp.set_nodelay(true);
    let (sender, task) = match &t.tls {
        None => handshake(tcp).await?,
        Some(name) => {
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls()).connect(name.clone(), tcp),
            )
            .await
            .map_err(|_| format!("no TLS handshake within {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| error_chain(&e))?;
            handshake(tls).await?
        }
    };
    Ok(Upstream { sender, task })
}

async fn handshake<S>(io: S) -> Result<(SendRequest<Outgoing>, tokio::task::AbortHandle), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| error_chain(&e))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("proxy: upstream connection ended: {e}");
        }
    });
    Ok((sender, task.abort_handle()))
}

/// The thread proxy connections are served on (Unix): a busy proxy
/// neither waits on the daemon's socket and sites nor stalls them. Tokens
/// are still asked of the sites on the daemon's runtime.
#[cfg(unix)]
fn proxy_runtime() -> Option<&'static tokio::runtime::Handle> {
    static RT: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| tracing::error!("proxy: cannot start its runtime: {e}"))
            .ok()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| tracing::error!("proxy: cannot start its thread: {e}"))
            .ok()?;
        Some(handle)
    })
    .as_ref()
}

fn spawn_conn(io: Io, ctx: Arc<Ctx>) {
    #[cfg(unix)]
    if let Some(rt) = proxy_runtime() {
        // Moved over as a plain socket: it then wakes that thread's reactor.
        let std = match io {
            Io::Unix(s) => s.into_std().map(Std::Unix),
            Io::Tcp(s) => s.into_std().map(Std::Tcp),
        };
        match std {
            Ok(std) => {
                rt.spawn(async move {
                    let io = match std {
                        Std::Unix(s) => tokio::net::UnixStream::from_std(s).map(Io::Unix),
                        Std::Tcp(s) => tokio::net::TcpStream::from_std(s).map(Io::Tcp),
                    };
                    match io {
                        Ok(io) => serve_conn(io, ctx).await,
                        Err(e) => tracing::warn!("proxy: cannot serve a connection: {e}"),
                    }
                });
            }
            Err(e) => tracing::warn!("proxy: cannot serve a connection: {e}"),
        }
        return;
    }
    tokio::spawn(async move { serve_conn(io, ctx).await });
}

#[cfg(unix)]
enum Std {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

async fn serve_conn(io: Io, ctx: Arc<Ctx>) {
    let upstream: Arc<Mutex<Option<Upstream>>> = Arc::new(Mutex::new(None));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, &upstream, req).await) }
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
fn answer(status: StatusCode, code: &str, site: &str, message: &str) -> Response<Answer> {
    let body = serde_json::json!({ "error": code, "site": site, "message": message }).to_string();
    let mut r = Response::new(Answer::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), and those the `Connection`
/// header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    const HOP_BY_HOP: [HeaderName; 9] = [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    // Most requests and answers have none: one look at the few names
    // there are costs less than hashing nine that are not.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.into_iter().chain(HOP_BY_HOP) {
        h.remove(n);
    }
}

const DPOP: HeaderName = HeaderName::from_static("dpop");

async fn handle(
    ctx: &Ctx,
    upstream: &Mutex<Option<Upstream>>,
    req: Request<Incoming>,
) -> Response<Answer> {
    let site = &ctx.cfg.site;
    let Some(d) = ctx.daemon.upgrade() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            site,
            "tokend is stopping",
        );
    };
    let (parts, body) = req.into_parts();
    let Some(uri) = ctx.target.uri(&parts.uri) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "bad_request",
            site,
            "the request path is not valid",
        );
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(DPOP);
    headers.insert(header::HOST, ctx.target.authority.clone());
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (kept, mut streamed) = match length {
        // No body at all (a GET): nothing to stream, a retry is free.
        None if body.is_end_stream() => (Some(Bytes::new()), None),
        Some(n) if n <= KEEP_BODY => match Limited::new(body, KEEP_BODY as usize).collect().await {
            Ok(b) => (Some(b.to_bytes()), None),
            Err(_) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    site,
                    "the request body did not arrive whole",
                )
            }
        },
        _ => (None, Some(body)),
    };
    let mut up = lock(upstream).take();
    let mut min_ttl = None;
    let mut nonce = None;
    let mut tries = 0;
    loop {
        tries += 1;
        let auth = match ctx
            .token(&d, &parts.method, &uri, min_ttl, nonce.clone())
            .await
        {
            Ok(t) => t,
            Err(e) => {
                // The upstream connection is still good for the next one.
                *lock(upstream) = up;
                return token_error(&ctx.cfg, &e);
            }
        };
        let body = match (&kept, streamed.take()) {
            (Some(b), _) => Outgoing::Kept(Some(b.clone())),
            (None, Some(s)) => Outgoing::Stream(s),
            (None, None) => Outgoing::Kept(None),
        };
        let mut out = Request::new(body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri.clone();
        *out.headers_mut() = if kept.is_some() {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        out.headers_mut()
            .insert(header::AUTHORIZATION, auth.authorization.clone());
        if let Some(proof) = auth.proof {
            out.headers_mut().insert(DPOP, proof);
        }
        let timeout = Duration::from_secs(ctx.cfg.timeout);
        let resp = match tokio::time::timeout(timeout, send(&ctx.target, &mut up, out)).await {
            Err(_) => return timed_out(&ctx.cfg),
            Ok(Err(why)) => {
                return answer(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    site,
                    &format!(
                        "cannot reach {}: {}",
                        ctx.cfg.upstream.as_str(),
                        token_text::clean(&why, 300)
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
            if auth.dpop && asked_nonce.is_some() && asked_nonce != nonce {
                nonce = asked_nonce;
                continue;
            }
            if challenge.contains("invalid_token") && min_ttl.is_none() {
                // One refresh: ask for at least the life the token in hand
                // has (counted in whole seconds, so it no longer serves),
                // which a token obtained now meets. (A token revoked within
                // a second of its issue is not renewed this way.)
                let left = auth.expires_at.map_or(0, |at| {
                    at.saturating_sub(crate::clock::whole(crate::clock::Clock::System.now()))
                });
                min_ttl = Some(left);
                tracing::info!(proxy = %ctx.cfg.name, "upstream refused the token (invalid_token): refreshing once");
                continue;
            }
        }
        // The connection serves the next request once this body is read.
        *lock(upstream) = up;
        let (mut back, body) = resp.into_parts();
        strip_hop_by_hop(&mut back.headers);
        return Response::from_parts(back, Answer::Upstream(Upstream::body(body, timeout)));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends `req` on the connection in `up`, or on a new one when there is
/// none or the upstream closed it (also when it closed just as the
/// request was to go: a request not sent yet is sent again, once).
async fn send(
    target: &Target,
    up: &mut Option<Upstream>,
    mut req: Request<Outgoing>,
) -> Result<Response<Incoming>, String> {
    let mut fresh = false;
    loop {
        let ready = match up {
            Some(u) => u.sender.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            *up = Some(connect(target).await?);
            fresh = true;
        }
        let Some(u) = up.as_mut() else {
            continue;
        };
        match u.sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(mut e) => {
                *up = None;
                match e.take_message() {
                    Some(again) if !fresh => req = again,
                    _ => return Err(error_chain(e.error())),
                }
            }
        }
    }
}

/// 504: the upstream did not answer within the proxy's `timeout`.
fn timed_out(cfg: &ProxyConfig) -> Response<Answer> {
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

/// What a request carries from the site: its `Authorization`, and for a
/// DPoP site the proof for this request.
struct Auth {
    authorization: HeaderValue,
    proof: Option<HeaderValue>,
    expires_at: Option<u64>,
    dpop: bool,
}

/// A token kept between requests. Asking the site's actor for every
/// request cost more than hyper's work on it, so a proxy keeps the
/// `Authorization` it was given for at most [`KEEP_TOKEN`] (1 s), and
/// never past the site's planned renewal (`renew_at`) or the token's
/// expiry: a refresh, a logout or a reload (a new config) reaches the
/// proxy within a second, and a token the upstream refuses is asked for
/// anew at once (the retry after `invalid_token` bypasses this). DPoP
/// sites are not kept: each request needs a proof of its own, which only
/// the site can sign.
struct Cached {
    authorization: HeaderValue,
    expires_at: Option<u64>,
    until: Instant,
    /// The config it was asked under: a reload ends it. (Weak: a kept
    /// token does not keep an old config's sites; its allocation, held,
    /// is not reused for a later config.)
    config: Weak<Config>,
}

impl Ctx {
    async fn token(
        &self,
        d: &Arc<Daemon>,
        method: &hyper::Method,
        uri: &Uri,
        min_ttl: Option<u64>,
        nonce: Option<String>,
    ) -> Result<Auth, ApiError> {
        let config = d.config();
        let dpop = config.sites.get(&self.cfg.site).is_some_and(|s| s.dpop);
        if !dpop && min_ttl.is_none() {
            let cached = lock(&self.cached);
            if let Some(c) = cached.as_ref() {
                if Instant::now() < c.until && std::ptr::eq(c.config.as_ptr(), Arc::as_ptr(&config))
                {
                    return Ok(Auth {
                        authorization: c.authorization.clone(),
                        proof: None,
                        expires_at: c.expires_at,
                        dpop,
                    });
                }
            }
        }
        let req = GetRequest {
            site: self.cfg.site.clone(),
            min_ttl,
            login: if self.cfg.login {
                LoginPolicy::Auto
            } else {
                LoginPolicy::Never
            },
            dpop: dpop.then(|| DpopTarget {
                method: method.as_str().to_owned(),
                url: format!("{}{uri}", self.target.origin),
                nonce,
            }),
            ..Default::default()
        };
        let token = match &self.daemon_rt {
            Some(rt) if tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() != rt.id()) => {
                let d = d.clone();
                rt.spawn(async move { crate::handlers::token_for(&d, req).await })
                    .await
                    .map_err(|_| ApiError::internal("the site's task ended"))??
            }
            _ => crate::handlers::token_for(d, req).await?,
        };
        let mut authorization =
            HeaderValue::from_str(&format!("{} {}", auth_scheme(&token), token.access_token))
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::Internal,
                        "the site's token cannot be sent in a header",
                    )
                })?;
        authorization.set_sensitive(true);
        let proof = token
            .dpop_proof
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok());
        if !dpop {
            let now = crate::clock::whole(crate::clock::Clock::System.now());
            let left = token
                .renew_at
                .or(token.expires_at)
                .map_or(KEEP_TOKEN.as_secs(), |at| at.saturating_sub(now));
            *lock(&self.cached) = (left > 0).then(|| Cached {
                authorization: authorization.clone(),
                expires_at: token.expires_at,
                until: Instant::now() + KEEP_TOKEN.min(Duration::from_secs(left)),
                config: Arc::downgrade(&config),
            });
        }
        Ok(Auth {
            authorization,
            proof,
            expires_at: token.expires_at,
            dpop,
        })
    }
}

fn token_error(cfg: &ProxyConfig, e: &ApiError) -> Response<Answer> {
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

/// A request's body on its way up: kept (for a retry) or streamed.
enum Outgoing {
    Kept(Option<Bytes>),
    Stream(Incoming),
}

impl hyper::body::Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Outgoing::Kept(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Outgoing::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Kept(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Outgoing::Stream(s) => s.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Kept(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Outgoing::Stream(s) => s.size_hint(),
        }
    }
}

/// An answer on its way back: the proxy's own, or the upstream's.
enum Answer {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// The upstream's body, with the proxy's `timeout` between its bytes.
/// The timer is made only when a read has to wait: a body that is there
/// at once (most) costs none.
struct UpstreamBody {
    body: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl Upstream {
    fn body(body: Incoming, timeout: Duration) -> UpstreamBody {
        UpstreamBody {
            body,
            timeout,
            timer: None,
            armed: false,
        }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let up = match self.get_mut() {
            Answer::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Answer::Upstream(up) => up,
        };
        match Pin::new(&mut up.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                up.armed = false;
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let deadline = tokio::time::Instant::now() + up.timeout;
        let timer = up
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !up.armed {
            timer.as_mut().reset(deadline);
            up.armed = true;
        }
        match std::future::Future::poll(timer.as_mut(), cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the upstream sent nothing for {}s (the proxy's timeout)",
                up.timeout.as_secs()
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Full(b) => b.is_none(),
            Answer::Upstream(up) => up.body.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Answer::Upstream(up) => up.body.size_hint(),
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target(upstream: &str) -> Target {
        Target::new(&url::Url::parse(upstream).unwrap(), upstream).unwrap()
    }

    #[test]
    fn the_upstream_is_taken_apart_once() {
        let t = target("https://api.example.com/v1/");
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        assert!(t.tls.is_some());
        assert_eq!(t.authority, "api.example.com");
        assert_eq!(t.origin, "https://api.example.com");
        let asked: Uri = "/users?page=2".parse().unwrap();
        assert_eq!(t.uri(&asked).unwrap(), "/v1/users?page=2");

        let t = target("http://[::1]:8080");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert!(t.tls.is_none());
        assert_eq!(t.authority, "[::1]:8080");
        // A caller that asks in absolute form gets its path sent.
        let asked: Uri = "http://proxy/me".parse().unwrap();
        assert_eq!(t.uri(&asked).unwrap(), "/me");
    }

    #[test]
    fn hop_by_hop_headers_go_and_others_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::ACCEPT]);

        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }
}
