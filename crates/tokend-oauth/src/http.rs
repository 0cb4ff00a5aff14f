//! The only place that touches the network.
//!
//! Flows build a [`FormRequest`] with pure functions and parse a
//! [`RawResponse`] with pure functions; [`Http`] just carries one to the
//! provider and brings the other back. That keeps every OAuth decision
//! unit-testable without sockets, and keeps the transport rules (no
//! redirects, timeouts, a size cap) in one place.

use std::time::Duration;

use url::Url;
use zeroize::Zeroize;

use crate::error::{loggable_url, Error};

/// How long to wait for a TCP/TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take, response body included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Responses larger than this are refused: no OAuth answer is that big, and a
/// misbehaving endpoint must not make the daemon buffer without bound.
pub const MAX_BODY: usize = 1024 * 1024;

const USER_AGENT: &str = concat!("tokend/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A request ready to send: for `Post` the form is sent as an
/// `application/x-www-form-urlencoded` body; for `Get` it must be empty.
///
/// Header and form values may hold secrets (client secret, refresh token,
/// code), so `Debug` shows only names and dropping zeroizes the values.
#[derive(Clone)]
pub struct FormRequest {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl FormRequest {
    pub fn post(url: Url) -> FormRequest {
        FormRequest {
            method: Method::Post,
            url,
            headers: vec![("Accept".into(), "application/json".into())],
            form: Vec::new(),
        }
    }

    pub fn get(url: Url) -> FormRequest {
        FormRequest {
            method: Method::Get,
            url,
            headers: vec![("Accept".into(), "application/json".into())],
            form: Vec::new(),
        }
    }

    pub fn param(&mut self, name: &str, value: &str) {
        self.form.push((name.to_owned(), value.to_owned()));
    }

    pub fn header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// The first form value named `name`.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first header named `name`, case-insensitively.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The urlencoded body.
    pub fn body(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.form.iter())
            .finish()
    }
}

impl std::fmt::Debug for FormRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        let form: Vec<&str> = self.form.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("FormRequest")
            .field("method", &self.method)
            .field("url", &loggable_url(&self.url))
            .field("headers", &headers)
            .field("form", &form)
            .finish()
    }
}

impl Drop for FormRequest {
    fn drop(&mut self) {
        for (_, v) in self.headers.iter_mut().chain(self.form.iter_mut()) {
            v.zeroize();
        }
    }
}

/// What came back, uninterpreted.
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// The `Location` header, kept so a refused redirect can be reported.
    pub location: Option<String>,
    /// `DPoP-Nonce` (RFC 9449 §8): the nonce the server wants in proofs.
    pub dpop_nonce: Option<String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body of a token response is all secrets.
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RawResponse {
    fn drop(&mut self) {
        self.body.zeroize();
    }
}

/// Appends `chunk` to a body that may hold secrets. Where `Vec` would grow
/// by reallocating and free the old buffer as it was, the old buffer is
/// wiped once copied: no copy of a token is left behind in freed memory.
fn push_wiped(body: &mut Vec<u8>, chunk: &[u8]) {
    let needed = body.len() + chunk.len();
    if needed > body.capacity() {
        let mut grown =
            Vec::with_capacity(needed.max(body.capacity() * 2).min(MAX_BODY).max(needed));
        grown.extend_from_slice(body);
        body.zeroize();
        *body = grown;
    }
    body.extend_from_slice(chunk);
}

/// Wipes a chunk the HTTP library handed over once copied, where this is
/// its only owner (a chunk that shares its block with the library's read
/// buffer is the library's to reuse, and is left as it is). Returns the
/// wiped bytes for tests to look at.
fn wipe_if_owned(chunk: bytes::Bytes) -> Option<bytes::BytesMut> {
    let mut owned = chunk.try_into_mut().ok()?;
    owned[..].zeroize();
    Some(owned)
}

/// An HTTP client that never follows redirects: a token request that gets
/// redirected would replay credentials to wherever the redirect points.
/// A stand-in for the network, for tests that run flows in-process: it is
/// handed each request and answers it (after any delay it likes).
pub type Script = std::sync::Arc<
    dyn Fn(
            &FormRequest,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<RawResponse, Error>> + Send>,
        > + Send
        + Sync,
>;

#[derive(Clone)]
pub struct Http {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Reqwest(std::sync::Arc<Lazy>),
    Scripted(Script),
}

/// The reqwest client, built at the first request: a daemon whose tokens
/// all come from the store never reads the system's root certificates.
/// Reading them is file I/O, so it runs on a blocking thread, not on the
/// runtime's workers.
struct Lazy {
    total: Duration,
    client: tokio::sync::OnceCell<Result<reqwest::Client, String>>,
}

impl Lazy {
    async fn client(&self) -> Result<&reqwest::Client, Error> {
        let total = self.total;
        self.client
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .connect_timeout(CONNECT_TIMEOUT.min(total))
                        .timeout(total)
                        .user_agent(USER_AGENT)
                        .build()
                        .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))
                })
                .await
                .unwrap_or_else(|e| Err(format!("cannot set up the HTTP client: {e}")))
            })
            .await
            .as_ref()
            .map_err(|e| Error::Invalid(e.clone()))
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.transport {
            Transport::Reqwest(_) => "Http",
            Transport::Scripted(_) => "Http(scripted)",
        })
    }
}

impl Default for Http {
    fn default() -> Http {
        Http::new()
    }
}

impl Http {
    /// Connect timeout 10 s, total timeout 30 s.
    pub fn new() -> Http {
        Http::with_timeout(TOTAL_TIMEOUT)
    }

    /// A client with another total timeout (the connect timeout stays 10 s,
    /// or `total` if that is shorter). It is set up at the first request,
    /// which fails if that cannot be done.
    pub fn with_timeout(total: Duration) -> Http {
        Http {
            transport: Transport::Reqwest(std::sync::Arc::new(Lazy {
                total,
                client: tokio::sync::OnceCell::new(),
            })),
        }
    }

    /// An `Http` that never touches the network: `script` answers every request.
    pub fn scripted(script: Script) -> Http {
        Http {
            transport: Transport::Scripted(script),
        }
    }

    /// Send one request and read the whole response (up to [`MAX_BODY`]).
    pub async fn send(&self, request: &FormRequest) -> Result<RawResponse, Error> {
        let client = match &self.transport {
            Transport::Reqwest(lazy) => lazy.client().await?,
            Transport::Scripted(script) => return script(request).await,
        };
        let url = loggable_url(&request.url);
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = client.request(method, request.url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if request.method == Method::Post {
            builder = builder
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(request.body());
        }
        let mut response = builder.send().await.map_err(|e| transport_error(e, &url))?;
        let status = response.status().as_u16();
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let location = header(reqwest::header::LOCATION);
        let dpop_nonce = header(reqwest::header::HeaderName::from_static("dpop-nonce"));
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(e, &url))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                body.zeroize();
                return Err(Error::BadResponse {
                    status,
                    what: "a body larger than 1 MiB".into(),
                    endpoint: url,
                });
            }
            push_wiped(&mut body, &chunk);
            wipe_if_owned(chunk);
        }
        Ok(RawResponse {
            status,
            content_type,
            location,
            dpop_nonce,
            body,
        })
    }
}

fn transport_error(error: reqwest::Error, url: &str) -> Error {
    if error.is_timeout() {
        return Error::Timeout {
            url: url.to_owned(),
        };
    }
    if error.is_builder() {
        return Error::Invalid(format!(
            "cannot build a request to {url}: {}",
            chain(&error)
        ));
    }
    Error::Network {
        url: url.to_owned(),
        message: chain(&error),
        source: Some(std::sync::Arc::new(error.without_url())),
    }
}

/// The error and its causes on one line, without the URL reqwest would add
/// (which may carry a query; the caller names a clean one).
fn chain(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    let text = match parts.is_empty() {
        true => error_kind(error).to_owned(),
        false => format!("{}: {}", error_kind(error), parts.join(": ")),
    };
    // rustls's words for "the first bytes back were not a TLS record".
    if text.contains("InvalidContentType") {
        return "the server answered in plain HTTP, not TLS: the URL says https, but that \
                host and port speak http (check the scheme and port of `issuer` or the endpoint)"
            .to_owned();
    }
    text
}

fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else if error.is_request() {
        "sending the request failed"
    } else {
        "the HTTP exchange failed"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testserver::{closed_port, serve};

    #[test]
    fn a_chunk_owned_here_is_wiped_and_a_shared_one_left_alone() {
        let chunk = bytes::Bytes::from(b"{\"refresh_token\":\"rt\"}".to_vec());
        let wiped = wipe_if_owned(chunk).unwrap();
        assert!(!wiped.is_empty() && wiped.iter().all(|&b| b == 0));
        let shared = bytes::Bytes::from(b"secret".to_vec());
        let library = shared.clone();
        assert!(wipe_if_owned(shared).is_none());
        assert_eq!(&library[..], b"secret");
    }

    #[test]
    fn a_growing_body_keeps_every_byte_in_order() {
        let mut body = Vec::new();
        let mut want = Vec::new();
        for i in 0..200u8 {
            let chunk = vec![i; usize::from(i) + 1];
            push_wiped(&mut body, &chunk);
            want.extend_from_slice(&chunk);
        }
        assert_eq!(body, want);
        assert!(body.capacity() <= MAX_BODY);
    }

    #[test]
    fn debug_hides_values() {
        let mut req = FormRequest::post(Url::parse("http://x/token?k=v").unwrap());
        req.param("client_secret", "s3cret");
        req.header("Authorization", "Basic c2VjcmV0");
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
        assert!(shown.contains("client_secret"));
        let raw = RawResponse {
            status: 200,
            content_type: None,
            location: None,
            dpop_nonce: None,
            body: b"{\"access_token\":\"tok\"}".to_vec(),
        };
        assert!(!format!("{raw:?}").contains("tok\""));
    }

    #[tokio::test]
    async fn timeout_becomes_timeout() {
        let server = serve(vec![None]).await;
        let http = Http::with_timeout(Duration::from_millis(300));
        let req = FormRequest::post(server.url("/token"));
        let err = http.send(&req).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn refused_connection_becomes_network() {
        let port = closed_port().await;
        let http = Http::with_timeout(Duration::from_secs(5));
        let url = Url::parse(&format!("http://127.0.0.1:{port}/token")).unwrap();
        let err = http.send(&FormRequest::post(url)).await.unwrap_err();
        assert!(matches!(err, Error::Network { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with("could not reach http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_names_the_tls_mismatch() {
        // A plain HTTP server answers a TLS hello as the garbage it is.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let url = Url::parse(&format!("https://127.0.0.1:{port}/token")).unwrap();
        let http = Http::with_timeout(Duration::from_secs(5));
        let err = http.send(&FormRequest::post(url)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("plain HTTP, not TLS"), "{text}");
        assert!(!text.contains("InvalidContentType"), "{text}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let server = serve(vec![
            Some("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".into()),
            Some("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".into()),
        ])
        .await;
        let http = Http::new();
        let raw = http
            .send(&FormRequest::post(server.url("/token")))
            .await
            .unwrap();
        assert_eq!(raw.status, 302);
        assert_eq!(raw.location.as_deref(), Some("/elsewhere"));
        let seen = server.requests().await;
        assert_eq!(seen.len(), 1, "{seen:?}");
    }
}
