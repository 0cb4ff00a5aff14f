//! Request, response and event types, and their one-line JSON encoding.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorBody, ErrorCode, PROTOCOL_VERSION};

/// One request line: `{"v":1,"op":"get",...}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    pub fn new(op: Op) -> Self {
        Request {
            v: PROTOCOL_VERSION,
            op,
        }
    }

    /// A rendering safe for logs (requests hold no secrets today, but the
    /// daemon logs through this so that stays a decision made here).
    pub fn log_safe(&self) -> String {
        // Names come from the client: no control characters (they could
        // forge log lines), and bounded.
        let line = match &self.op {
            Op::Get(g) => match &g.url {
                Some(url) => format!("get --url {}", without_password(url)),
                None => format!("get {}", g.site),
            },
            Op::Login(l) => format!("login {}", l.site),
            Op::Logout(s) => format!("logout {}", s.site),
            Op::Status(s) => format!("status {}", s.site.as_deref().unwrap_or("*")),
            Op::Paste(p) => format!("paste {}", p.site),
            Op::Lookup(l) => match &l.url {
                Some(url) => format!("lookup {}", without_password(url)),
                None => format!("lookup {}://{}", l.protocol, l.host),
            },
            Op::Urls => "urls".to_owned(),
            Op::Jwk(s) => format!("jwk {}", s.site),
            Op::Reload => "reload".to_owned(),
            Op::Stop => "stop".to_owned(),
        };
        token_text::clean(&line, 200)
    }
}

/// `url` with the password of its user info (`https://u:PASSWORD@host/`)
/// left out, for logs.
fn without_password(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority = &url[start..];
    let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
    match authority
        .rfind('@')
        .and_then(|at| authority[..at].find(':').map(|c| (c, at)))
    {
        Some((colon, at)) => format!(
            "{}{}:***{}",
            &url[..start],
            &authority[..colon],
            &url[start + at..]
        )
        .into(),
        None => url.into(),
    }
}

/// What a request asks for; the `"op"` field selects the variant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Get(GetRequest),
    Login(LoginRequest),
    Logout(SiteRequest),
    Status(StatusRequest),
    /// Hands a pending paste-back login what the user pasted.
    Paste(PasteRequest),
    /// Which site serves this URL (or git remote): the sites' `urls` and
    /// `hosts`, through the one URL matcher.
    Lookup(LookupRequest),
    /// The public key a site signs with (its `private_key_jwt` key, else
    /// its DPoP key), to register at the provider. Answer: [`JwkReply`].
    Jwk(SiteRequest),
    /// Every URL prefix the sites serve: [`UrlsReply`].
    Urls,
    Reload,
    Stop,
}

/// `lookup`: the site that serves a URL. `url` is a full URL
/// (`https://git.example.com/team-a/repo.git`, with `alice@` when the URL
/// carries a user name) or a scheme-less `host[:port][/path]` (what docker
/// sends), matched as `https://` (and `http://` for a loopback host). Without
/// `url`, `protocol` and `host` are git's credential attributes (`https`,
/// `host` or `host:port`), as older clients send them; with `url` they are
/// ignored. Only `https` is served, plain `http` only on a loopback host.
/// Answer: [`LookupReply`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LookupRequest {
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The answer to `lookup`: which site serves the URL, and how git, docker
/// and cargo should send its token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReply {
    pub site: String,
    #[serde(default)]
    pub git_auth: GitAuth,
    /// The user name sent beside the token with [`GitAuth::Basic`] (and
    /// docker's `Username`).
    #[serde(default = "default_git_username")]
    pub username: String,
    /// How cargo's `Authorization` carries the token.
    #[serde(default)]
    pub cargo_token: CargoToken,
}

/// How `cargo-credential-token` hands cargo the token (site key `cargo_token`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CargoToken {
    /// `Bearer TOKEN`.
    #[default]
    Bearer,
    /// The bare token, for registries that want it so.
    Raw,
}

/// The answer to `urls`: every URL prefix a site serves, `hosts` entries
/// written as their `https://HOST[:PORT]/` URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlsReply {
    pub urls: Vec<ServedUrl>,
}

/// One prefix of [`UrlsReply`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedUrl {
    /// Normalized: lower-case host, punycode, default port left out, a path
    /// ending in `/`.
    pub url: String,
    pub site: String,
    /// The site's user name (default `oauth2`).
    #[serde(default = "default_git_username")]
    pub username: String,
}

/// The user name git sends with an OAuth token when the site names none:
/// GitLab, Gitea and Azure DevOps document `oauth2`; GitHub accepts any.
pub const DEFAULT_GIT_USERNAME: &str = "oauth2";

fn default_git_username() -> String {
    DEFAULT_GIT_USERNAME.to_owned()
}

/// How git sends the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitAuth {
    /// `username` + the token as password (HTTP Basic): what forges accept
    /// for OAuth tokens, and what git replays on every request of a push.
    #[default]
    Basic,
    /// `authtype=Bearer` (git 2.46+), for servers that accept only Bearer.
    /// git does not send it on the probe request of a push larger than
    /// `http.postBuffer`, so such pushes need that buffer raised.
    Bearer,
}

/// `paste`: the final redirect URL (or the bare code) of a paste-back login,
/// sent on a second connection while the first waits for the login.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PasteRequest {
    pub site: String,
    pub input: String,
}

impl std::fmt::Debug for PasteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasteRequest")
            .field("site", &self.site)
            .field("input", &"[redacted]")
            .finish()
    }
}

/// `get`: a valid access token for a site, named by `site` or found by
/// `url` through the URL map (exactly one of the two).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// In place of `site`: the URL the token is for, matched as `lookup`'s
    /// `url` is; the answer is a [`ServedTokenReply`] (the token and the
    /// site that serves the URL), so a helper needs one request, not two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds the token must stay valid; the daemon refreshes first otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ttl: Option<u64>,
    /// A subset of the site's scopes (down-scoped token); empty: the site's scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub login: LoginPolicy,
    /// The caller has no browser (over SSH, no display): a login this `get`
    /// starts uses the device flow where the provider offers it, else
    /// paste-back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_browser: bool,
    /// `--dpop METHOD URL`: also a DPoP proof (RFC 9449) for this request,
    /// signed by the daemon with the site's key. Only for `dpop = true` sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop: Option<DpopTarget>,
    /// Which token: absent means the access token, unless `purpose` says
    /// otherwise through the site's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenKind>,
    /// What the caller wants the token for, when that matters to the site's
    /// config (`kube` applies the site's `kube_token` when `token` is
    /// absent) or to its warnings (`git`: `min_ttl` is the git helper's own
    /// margin, not an option the user gave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// Whether a person is at the caller (a terminal on its stdin or
    /// stderr; kubectl's `interactive`). Absent: true, as older clients
    /// behaved. After a login that went unanswered, a non-interactive
    /// caller starts none for the `login_cooldown` (`login_required` at once).
    #[serde(default = "yes")]
    pub interactive: bool,
}

fn yes() -> bool {
    true
}

impl Default for GetRequest {
    fn default() -> Self {
        GetRequest {
            site: String::new(),
            url: None,
            min_ttl: None,
            scopes: Vec::new(),
            login: LoginPolicy::Auto,
            no_browser: false,
            dpop: None,
            token: None,
            purpose: None,
            interactive: true,
        }
    }
}

/// The request a DPoP proof is made for: its method and URL (the proof's
/// `htm` and `htu`; query and fragment are left out of `htu`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpopTarget {
    pub method: String,
    pub url: String,
    /// The `DPoP-Nonce` the resource server answered with (RFC 9449 §9),
    /// for the proof's `nonce` claim; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Which of a site's tokens a `get` asks for (and a reply carries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// The OAuth access token.
    #[default]
    AccessToken,
    /// The site's validated OpenID Connect ID token (a JWT).
    IdToken,
}

/// What a `get`'s token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A Kubernetes `ExecCredential` (`token kube`).
    Kube,
    /// The git credential helper (`token credential get`).
    Git,
    /// A purpose this build does not know: treated as none.
    #[serde(other)]
    Other,
}

/// Whether a `get` may start a login when the site needs consent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginPolicy {
    /// The caller can show a URL to a person (a terminal, a desktop, `BROWSER`).
    #[default]
    Auto,
    /// Fail with `login_required` instead.
    Never,
}

/// `login`: run consent now, even if the site has a valid token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoginRequest {
    pub site: String,
    #[serde(default)]
    pub mode: LoginMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginMode {
    /// Authorization code + PKCE through a browser and a loopback redirect.
    #[default]
    Browser,
    /// RFC 8628 device authorization.
    Device,
    /// The user pastes the final redirect URL (or the code) back.
    Paste,
    /// No browser where the caller is: device where the provider offers
    /// it, else paste-back.
    NoBrowser,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SiteRequest {
    pub site: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// The answer to `get` and `login`.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct TokenReply {
    pub access_token: String,
    pub token_type: String,
    /// Unix seconds; `None`: never expires.
    pub expires_at: Option<u64>,
    /// When the daemon plans to renew this token ahead of its expiry (Unix
    /// s); `None`: no renewal planned (no refresh token, never expires).
    /// A cache of the token (cargo's `expiration`) should end by then.
    #[serde(default)]
    pub renew_at: Option<u64>,
    pub scopes: Vec<String>,
    /// Stack Exchange's API key, sent by callers as `key` beside the token.
    pub api_key: Option<String>,
    /// Something the user should know about this token, for stderr: the
    /// provider issues tokens shorter than the `min_ttl` asked for, say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The DPoP proof asked for with `dpop` in the `get`: for that one
    /// request, bound to this token (`ath`), valid for a few minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_proof: Option<String>,
    /// Set when the reply carries another token than the access token: with
    /// `id_token`, `access_token` holds the ID token (as RFC 8693 replies
    /// carry any issued token there), `token_type` is `N_A` and
    /// `expires_at` is the ID token's `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenKind>,
}

impl Drop for TokenReply {
    /// The token is a secret: its bytes are overwritten before the memory is freed.
    fn drop(&mut self) {
        crate::wipe(&mut std::mem::take(&mut self.access_token).into_bytes());
    }
}

impl std::fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReply")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("warning", &self.warning)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The answer to a `get` by `url`: the token, and beside it (as `served`)
/// the site the URL map chose and how the helper sends its token, as
/// `lookup` answers them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServedTokenReply {
    #[serde(flatten)]
    pub token: TokenReply,
    pub served: LookupReply,
}

/// The answer to `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusReply {
    pub version: String,
    pub pid: u32,
    pub config: String,
    /// Problems with the config file as a whole or with single sites.
    #[serde(default)]
    pub config_errors: Vec<String>,
    /// The store in use: `keyring`, `file` or `memory`.
    #[serde(default)]
    pub store: String,
    /// What to know about the store, if anything: why it is not the keyring
    /// that was the default, the logins this start moved from the previous
    /// store, a `[daemon] store` edit that waits for the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_note: Option<String>,
    /// Where the daemon logs: a file path, or `stderr`.
    #[serde(default)]
    pub log: String,
    pub sites: Vec<SiteStatus>,
}

/// What a site is doing, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteState {
    /// A valid token in hand, or one renewable without the user.
    Ready,
    /// A token call is under way.
    Refreshing,
    /// Only a login helps.
    LoginRequired,
    /// A login waits for the user.
    LoginPending,
    /// The last attempt failed; `last_error` says why.
    Error,
    /// The login has not been read from the store yet.
    NotLoaded,
    /// A state this build does not know (a newer daemon).
    #[serde(other)]
    Unknown,
}

impl SiteState {
    /// The wire name (`login_required`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SiteState::Ready => "ready",
            SiteState::Refreshing => "refreshing",
            SiteState::LoginRequired => "login_required",
            SiteState::LoginPending => "login_pending",
            SiteState::Error => "error",
            SiteState::NotLoaded => "not_loaded",
            SiteState::Unknown => "unknown",
        }
    }

    /// The state a wire name stands for ([`SiteState::Unknown`] for any other).
    pub fn parse(name: &str) -> SiteState {
        serde_json::from_value(Value::String(name.to_owned())).unwrap_or(SiteState::Unknown)
    }
}

/// One site in `status`. Field meanings are documented in `PROTOCOL.md`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SiteStatus {
    pub site: String,
    /// A [`SiteState`] by its wire name (see [`SiteStatus::site_state`]).
    pub state: String,
    pub expires_at: Option<u64>,
    pub scopes: Vec<String>,
    /// Whether an access token is in hand (`expires_at: null` with one means
    /// it never expires).
    #[serde(default)]
    pub has_access_token: bool,
    pub has_refresh_token: bool,
    pub last_refresh: Option<u64>,
    pub next_refresh: Option<u64>,
    pub last_error: Option<String>,
    /// Until when (Unix s) a login that went unanswered keeps background
    /// (non-interactive) callers from starting another (`login_cooldown`);
    /// absent when none is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_cooldown_until: Option<u64>,
    /// What the user should know that is not an error: the login is not
    /// persisted, the provider granted fewer scopes than configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The site's `[[site.NAME.file]]` token files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileStatus>,
}

/// A token file the daemon keeps fresh, in `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStatus {
    pub path: String,
    /// `raw`, `header`, `json` or `id_token`.
    pub format: String,
    /// When the current token was written there (Unix s); `None`: not (yet).
    pub written_at: Option<u64>,
    /// Why the last write failed (it is retried).
    pub error: Option<String>,
}

impl SiteStatus {
    /// The site's state, typed.
    pub fn site_state(&self) -> SiteState {
        SiteState::parse(&self.state)
    }
}

/// The answer to `logout` and `paste`: what happened, for the user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReply {
    pub message: String,
}

/// The answer to `jwk`: a JWK set (RFC 7517 §5) of public keys only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JwkReply {
    pub keys: Vec<Value>,
}

/// The answer to `stop`, sent before the daemon exits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReply {}

/// The answer to `reload`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReloadReply {
    pub sites: usize,
    pub config_errors: Vec<String>,
    /// The file does not parse, so the daemon kept serving its previous
    /// settings (`sites` counts those).
    #[serde(default)]
    pub kept_previous: bool,
}

/// A line the daemon sends before the final answer, for the user to see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A browser login is waiting for the user at `url`. Only the caller that
    /// started the login gets `open_browser: true`, so one browser opens.
    LoginUrl {
        site: String,
        url: String,
        open_browser: bool,
        /// Seconds before the pending login gives up.
        timeout: u64,
    },
    /// A device login is waiting: the user enters `user_code` at `verification_uri`.
    DeviceCode {
        site: String,
        user_code: String,
        verification_uri: String,
        verification_uri_complete: Option<String>,
        timeout: u64,
        /// The complete verification URL as a QR code in Unicode half blocks,
        /// for the client to show on a terminal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qr: Option<String>,
    },
    /// A paste-back login: the user opens `url`, approves, and pastes the URL
    /// the browser ends on (or the code) back; the client sends it as a
    /// `paste` request on a second connection. Only the caller that started
    /// the login gets `paste: true`.
    PasteUrl {
        site: String,
        url: String,
        paste: bool,
        timeout: u64,
    },
    #[serde(other)]
    Unknown,
}

/// A line from the daemon, as the client sees it.
#[derive(Debug)]
pub enum ServerLine {
    Event(Event),
    Ok(Value),
    Err(ErrorBody),
}

impl ServerLine {
    pub fn decode(line: &[u8]) -> Result<ServerLine, String> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| format!("daemon sent a bad line: {e}"))?;
        if value.get("event").is_some() {
            let event = serde_json::from_value(value).unwrap_or(Event::Unknown);
            return Ok(ServerLine::Event(event));
        }
        match value.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(ServerLine::Ok(value)),
            Some(false) => {
                let body = value
                    .get("error")
                    .cloned()
                    .and_then(|e| serde_json::from_value(e).ok())
                    .unwrap_or_else(|| {
                        ErrorBody::new(ErrorCode::Unknown, "daemon sent an error without a body")
                    });
                Ok(ServerLine::Err(body))
            }
            None => Err("daemon sent a line with neither `ok` nor `event`".to_owned()),
        }
    }
}

/// Why a request line could not be decoded; answered as an error line.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestError(pub ErrorBody);

/// Decodes one request line. The version is checked before the op, so a newer
/// client with an op this daemon does not know hears `version_mismatch`.
///
/// A well-formed line is read straight into its op's struct (`decode_fast`);
/// anything else goes the general way (`decode_slow`), which words every
/// error answer.
pub fn decode_request(line: &[u8]) -> Result<Request, RequestError> {
    let req = match decode_fast(line) {
        Some(req) => req,
        None => decode_slow(line)?,
    };
    if let Op::Get(g) = &req.op {
        let bad = |m: &str| RequestError(ErrorBody::new(ErrorCode::BadRequest, m));
        match (g.site.is_empty(), g.url.is_some()) {
            (false, false) | (true, true) => {}
            (true, false) => {
                return Err(bad(
                    "a `get` names its `site` (or gives a `url` for the URL map to match)",
                ))
            }
            (false, true) => return Err(bad(
                "a `get` gives either `site` or `url`, not both: drop `site` to let the URL map choose",
            )),
        }
    }
    Ok(req)
}

/// A request line's `v` and `op`, the rest skipped unparsed.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default)]
    v: Option<u64>,
    #[serde(borrow, default)]
    op: Option<std::borrow::Cow<'a, str>>,
}

/// The common case without a `serde_json::Value`: one scan for `v` and `op`,
/// one straight into the op's struct (which skips `v` and `op` as fields it
/// does not know). `None` for anything unusual (bad JSON, another version,
/// an unknown op, a field of the wrong type, a repeated key), which
/// [`decode_slow`] then answers exactly as it always has.
fn decode_fast(line: &[u8]) -> Option<Request> {
    fn body<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Option<T> {
        serde_json::from_slice(line).ok()
    }
    let head: Head<'_> = serde_json::from_slice(line).ok()?;
    let op = head.op?;
    // `stop` is understood at every version (see decode_slow).
    if op == "stop" {
        return Some(Request::new(Op::Stop));
    }
    if head.v != Some(u64::from(PROTOCOL_VERSION)) {
        return None;
    }
    let op = match &*op {
        "get" => Op::Get(body(line)?),
        "login" => Op::Login(body(line)?),
        "logout" => Op::Logout(body(line)?),
        "status" => Op::Status(body(line)?),
        "paste" => Op::Paste(body(line)?),
        "lookup" => Op::Lookup(body(line)?),
        "jwk" => Op::Jwk(body(line)?),
        "urls" => Op::Urls,
        "reload" => Op::Reload,
        _ => return None,
    };
    Some(Request::new(op))
}

/// The general decode, through a `serde_json::Value`: the one place that
/// words a bad line's answer.
fn decode_slow(line: &[u8]) -> Result<Request, RequestError> {
    let bad = |m: String| RequestError(ErrorBody::new(ErrorCode::BadRequest, m));
    let value: Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("request is not JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(bad("request is not a JSON object".to_owned()));
    };
    // `stop` is understood at every version, so a newer client can always
    // replace an older daemon.
    if obj.get("op").and_then(Value::as_str) == Some("stop") {
        return Ok(Request::new(Op::Stop));
    }
    match obj.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(RequestError(ErrorBody::new(
                ErrorCode::VersionMismatch,
                format!(
                    "request is protocol version {v}, this tokend speaks {PROTOCOL_VERSION}: \
                     restart tokend (`token stop`) so the matching version starts"
                ),
            )))
        }
        None => return Err(bad("request has no numeric `v`".to_owned())),
    }
    serde_json::from_value(value).map_err(|e| bad(format!("bad request: {e}")))
}

/// Serializes a value as one line, newline included.
pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// `{"ok":true, ...fields of value}` as one line. `value` must serialize to an object.
pub fn ok_line<T: Serialize>(value: &T) -> Vec<u8> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"{\"ok\":true");
    if body.len() > 2 && body.first() == Some(&b'{') {
        out.push(b',');
        out.extend_from_slice(&body[1..]);
    } else {
        out.push(b'}');
    }
    out.push(b'\n');
    out
}

/// `{"ok":false,"error":{"code":...,"message":...}}` as one line.
pub fn error_line(error: &ErrorBody) -> Vec<u8> {
    #[derive(Serialize)]
    struct Wire<'a> {
        ok: bool,
        error: &'a ErrorBody,
    }
    encode_line(&Wire { ok: false, error })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn get_request_matches_the_documented_shape() {
        let line = br#"{"v":1,"op":"get","site":"corp","min_ttl":300,"scopes":["read:projects"],"login":"auto"}"#;
        let req = decode_request(line).unwrap();
        let Op::Get(get) = req.op else { unreachable!() };
        assert_eq!(get.site, "corp");
        assert_eq!(get.min_ttl, Some(300));
        assert_eq!(get.scopes, vec!["read:projects"]);
        assert_eq!(get.login, LoginPolicy::Auto);
    }

    #[test]
    fn id_token_requests_and_replies() {
        let req =
            decode_request(br#"{"v":1,"op":"get","site":"corp","token":"id_token"}"#).unwrap();
        let Op::Get(get) = req.op else { unreachable!() };
        assert_eq!(get.token, Some(TokenKind::IdToken));
        assert_eq!(get.purpose, None);
        let req = decode_request(br#"{"v":1,"op":"get","site":"corp","purpose":"kube"}"#).unwrap();
        let Op::Get(get) = req.op else { unreachable!() };
        assert_eq!((get.token, get.purpose), (None, Some(Purpose::Kube)));
        let req = decode_request(br#"{"v":1,"op":"get","site":"corp","purpose":"warp"}"#).unwrap();
        let Op::Get(get) = req.op else { unreachable!() };
        assert_eq!(get.purpose, Some(Purpose::Other));
        // A plain get says nothing of either.
        let line = encode_line(&Request::new(Op::Get(GetRequest {
            site: "corp".into(),
            ..Default::default()
        })));
        let text = String::from_utf8(line).unwrap();
        assert!(
            !text.contains("token") && !text.contains("purpose"),
            "{text}"
        );
        let mut reply = TokenReply::default();
        reply.token = Some(TokenKind::IdToken);
        assert!(String::from_utf8(ok_line(&reply))
            .unwrap()
            .contains(r#""token":"id_token""#));
    }

    #[test]
    fn minimal_requests_and_unknown_fields() {
        assert!(matches!(
            decode_request(br#"{"v":1,"op":"get","site":"a","future":1}"#)
                .unwrap()
                .op,
            Op::Get(_)
        ));
        assert!(matches!(
            decode_request(br#"{"v":1,"op":"status"}"#).unwrap().op,
            Op::Status(StatusRequest { site: None })
        ));
        assert!(matches!(
            decode_request(br#"{"v":1,"op":"stop"}"#).unwrap().op,
            Op::Stop
        ));
        // Any version may stop the daemon (upgrades replace it that way).
        assert!(matches!(
            decode_request(br#"{"v":7,"op":"stop"}"#).unwrap().op,
            Op::Stop
        ));
    }

    #[test]
    fn a_get_names_its_site_or_its_url_never_both() {
        let req = decode_request(br#"{"v":1,"op":"get","url":"registry.example.com"}"#).unwrap();
        let Op::Get(g) = &req.op else {
            unreachable!("{req:?}")
        };
        assert_eq!(
            (g.site.as_str(), g.url.as_deref()),
            ("", Some("registry.example.com"))
        );
        assert_eq!(req.log_safe(), "get --url registry.example.com");
        for (url, logged) in [
            (
                "https://u:hunter2@h.example/x?a=b@c",
                "https://u:***@h.example/x?a=b@c",
            ),
            ("h.example:443/p", "h.example:443/p"),
            (
                "https://alice@h.example/a:b@c",
                "https://alice@h.example/a:b@c",
            ),
        ] {
            let req = Request::new(Op::Get(GetRequest {
                url: Some(url.into()),
                ..Default::default()
            }));
            assert_eq!(req.log_safe(), format!("get --url {logged}"));
        }
        let err = |l: &[u8]| decode_request(l).unwrap_err().0;
        let both = err(br#"{"v":1,"op":"get","site":"a","url":"https://r.example/"}"#);
        assert_eq!(both.code, ErrorCode::BadRequest);
        assert!(both.message.contains("not both"), "{}", both.message);
        for neither in [
            &br#"{"v":1,"op":"get"}"#[..],
            br#"{"v":1,"op":"get","site":""}"#,
        ] {
            let e = err(neither);
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("names its `site`"), "{}", e.message);
        }
        // A client sends only the one it has.
        let line = encode_line(&Request::new(Op::Get(GetRequest {
            url: Some("https://r.example/".into()),
            ..Default::default()
        })));
        assert!(!String::from_utf8_lossy(&line).contains("\"site\""));
    }

    #[test]
    fn a_get_by_url_answers_the_token_and_its_site() {
        let line = br#"{"ok":true,"access_token":"t","token_type":"Bearer","expires_at":null,"scopes":[],"api_key":null,"served":{"site":"reg","username":"bob","cargo_token":"raw"}}"#;
        let ServerLine::Ok(v) = ServerLine::decode(line).unwrap() else {
            unreachable!("not ok")
        };
        let r: ServedTokenReply = serde_json::from_value(v).unwrap();
        assert_eq!(r.token.access_token, "t");
        assert_eq!(r.served.site, "reg");
        assert_eq!(r.served.cargo_token, CargoToken::Raw);
        assert_eq!(r.served.git_auth, GitAuth::Basic);
        let back = String::from_utf8(ok_line(&r)).unwrap();
        assert!(
            back.contains(r#""access_token":"t""#) && back.contains(r#""served":{"site":"reg""#),
            "{back}"
        );
    }

    #[test]
    fn bad_lines_get_coded_errors() {
        let code = |l: &[u8]| decode_request(l).unwrap_err().0.code;
        assert_eq!(code(b"nope"), ErrorCode::BadRequest);
        assert_eq!(code(b"[1]"), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"op":"get"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"v":2,"op":"warp"}"#), ErrorCode::VersionMismatch);
        assert_eq!(
            code(br#"{"v":2,"op":"status"}"#),
            ErrorCode::VersionMismatch
        );
        assert_eq!(code(br#"{"v":1,"op":"warp"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"v":1,"op":"get"}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn request_encoding_round_trips() {
        let req = Request::new(Op::Get(GetRequest {
            site: "corp".into(),
            ..Default::default()
        }));
        let line = encode_line(&req);
        assert_eq!(line.last(), Some(&b'\n'));
        let back = decode_request(&line[..line.len() - 1]).unwrap();
        assert!(matches!(back.op, Op::Get(g) if g.site == "corp"));
    }

    #[test]
    fn ok_lines_start_with_ok() {
        let line = ok_line(&ReloadReply::default());
        assert!(line.starts_with(b"{\"ok\":true,\"sites\":0"));
        assert_eq!(ok_line(&serde_json::json!({})), b"{\"ok\":true}\n");
        match ServerLine::decode(&line).unwrap() {
            ServerLine::Ok(v) => assert_eq!(v["sites"], 0),
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn error_and_event_lines_decode() {
        let line = error_line(&ErrorBody::new(ErrorCode::UnknownSite, "no site x"));
        match ServerLine::decode(&line).unwrap() {
            ServerLine::Err(e) => assert_eq!(e.code, ErrorCode::UnknownSite),
            other => unreachable!("{other:?}"),
        }
        let ev = encode_line(&Event::LoginUrl {
            site: "s".into(),
            url: "http://x".into(),
            open_browser: true,
            timeout: 300,
        });
        assert!(matches!(
            ServerLine::decode(&ev).unwrap(),
            ServerLine::Event(Event::LoginUrl { .. })
        ));
        assert!(matches!(
            ServerLine::decode(br#"{"event":"fireworks"}"#).unwrap(),
            ServerLine::Event(Event::Unknown)
        ));
    }

    #[test]
    fn dpop_fields_are_optional_both_ways() {
        // An older client's `get` has no `dpop`; a plain reply carries no proof.
        let old = decode_request(br#"{"v":1,"op":"get","site":"corp"}"#).unwrap();
        assert!(matches!(old.op, Op::Get(ref g) if g.dpop.is_none()));
        let line = encode_line(&Request::new(Op::Get(GetRequest {
            site: "corp".into(),
            dpop: Some(DpopTarget {
                method: "GET".into(),
                url: "https://api.example/me".into(),
                nonce: None,
            }),
            ..Default::default()
        })));
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.contains(r#""dpop":{"method":"GET","url":"https://api.example/me"}"#),
            "{text}"
        );
        let plain = serde_json::to_string(&TokenReply::default()).unwrap();
        assert!(!plain.contains("dpop_proof"), "{plain}");
        let r: TokenReply = serde_json::from_str(
            r#"{"access_token":"t","token_type":"DPoP","expires_at":null,"scopes":[],"api_key":null,"dpop_proof":"p"}"#,
        )
        .unwrap();
        assert_eq!(r.dpop_proof.as_deref(), Some("p"));
    }

    #[test]
    fn url_map_wire() {
        let req = decode_request(
            br#"{"v":1,"op":"lookup","url":"https://alice@git.example.com/team-a/x.git"}"#,
        )
        .unwrap();
        let Op::Lookup(l) = req.op else {
            unreachable!()
        };
        assert_eq!(
            l.url.as_deref(),
            Some("https://alice@git.example.com/team-a/x.git")
        );
        assert_eq!(l.host, "");
        // An older client's lookup still decodes.
        let req =
            decode_request(br#"{"v":1,"op":"lookup","protocol":"https","host":"h"}"#).unwrap();
        assert!(matches!(req.op, Op::Lookup(ref l) if l.url.is_none() && l.host == "h"));
        assert!(matches!(
            decode_request(br#"{"v":1,"op":"urls"}"#).unwrap().op,
            Op::Urls
        ));
        let reply: UrlsReply = serde_json::from_str(
            r#"{"urls":[{"url":"https://registry.example.com/","site":"reg","username":"oauth2"}]}"#,
        )
        .unwrap();
        assert_eq!(reply.urls[0].site, "reg");
        let how: LookupReply = serde_json::from_str(r#"{"site":"s"}"#).unwrap();
        assert_eq!(
            (how.cargo_token, how.username.as_str()),
            (CargoToken::Bearer, "oauth2")
        );
        let how: LookupReply = serde_json::from_str(r#"{"site":"s","cargo_token":"raw"}"#).unwrap();
        assert_eq!(how.cargo_token, CargoToken::Raw);
    }

    #[test]
    fn interactive_defaults_to_true_and_is_always_sent() {
        let old = decode_request(br#"{"v":1,"op":"get","site":"corp"}"#).unwrap();
        assert!(matches!(old.op, Op::Get(ref g) if g.interactive));
        let bg =
            decode_request(br#"{"v":1,"op":"get","site":"corp","interactive":false}"#).unwrap();
        assert!(matches!(bg.op, Op::Get(ref g) if !g.interactive));
        let line = encode_line(&Request::new(Op::Get(GetRequest {
            site: "corp".into(),
            ..Default::default()
        })));
        assert!(String::from_utf8(line)
            .unwrap()
            .contains(r#""interactive":true"#));
        let r: TokenReply = serde_json::from_str(
            r#"{"access_token":"t","token_type":"Bearer","expires_at":9,"scopes":[],"api_key":null}"#,
        )
        .unwrap();
        assert_eq!(r.renew_at, None);
    }

    #[test]
    fn log_lines_carry_no_control_characters_from_the_client() {
        let req =
            decode_request(br#"{"v":1,"op":"get","site":"corp\n2026-01-01 INFO forged line"}"#)
                .unwrap();
        let line = req.log_safe();
        assert!(!line.contains('\n'), "{line:?}");
        let long = format!(r#"{{"v":1,"op":"status","site":"{}"}}"#, "x".repeat(5000));
        assert!(decode_request(long.as_bytes()).unwrap().log_safe().len() < 300);
    }

    #[test]
    fn token_reply_debug_is_redacted() {
        let mut r = TokenReply::default();
        r.access_token = "sekrit".into();
        assert!(!format!("{r:?}").contains("sekrit"));
    }

    #[test]
    fn site_states_round_trip_by_name() {
        for state in [
            SiteState::Ready,
            SiteState::Refreshing,
            SiteState::LoginRequired,
            SiteState::LoginPending,
            SiteState::Error,
            SiteState::NotLoaded,
        ] {
            assert_eq!(SiteState::parse(state.as_str()), state);
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(Value::String(state.as_str().to_owned()))
            );
        }
        assert_eq!(SiteState::parse("hibernating"), SiteState::Unknown);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod fast_decode {
    use super::*;

    /// Lines of every op and of every odd shape, with the fuzz corpus's.
    fn lines() -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = [
            r#"{"v":1,"op":"get","site":"corp","login":"never"}"#,
            r#"{"op":"get","v":1,"site":"corp","min_ttl":300,"scopes":["a","b"],"login":"auto"}"#,
            r#"{"v":1,"op":"get","site":"c\u006frp","token":"id_token","purpose":"kube"}"#,
            r#"{"v":1,"op":"get","url":"https://h.example/x"}"#,
            r#"{"v":1,"op":"get","site":"a","url":"https://h.example/x"}"#,
            r#"{"v":1,"op":"get"}"#,
            r#"{"v":1,"op":"get","site":5}"#,
            r#"{"v":1,"op":"get","site":"a","site":"b"}"#,
            r#"{"v":1,"op":"get","site":"a","future":{"x":[1,2]}}"#,
            r#"{"v":1,"op":"get","site":"a","min_ttl":-1}"#,
            r#"{"v":1,"op":"get","site":"a","min_ttl":1.5}"#,
            r#"{"v":1,"op":"login","site":"a","mode":"device"}"#,
            r#"{"v":1,"op":"logout","site":"a"}"#,
            r#"{"v":1,"op":"logout"}"#,
            r#"{"v":1,"op":"status"}"#,
            r#"{"v":1,"op":"status","site":"a"}"#,
            r#"{"v":1,"op":"status","site":null}"#,
            r#"{"v":1,"op":"paste","site":"a","input":"https://x/?code=1"}"#,
            r#"{"v":1,"op":"lookup","protocol":"https","host":"h"}"#,
            r#"{"v":1,"op":"lookup","url":"h.example/x"}"#,
            r#"{"v":1,"op":"jwk","site":"a"}"#,
            r#"{"v":1,"op":"urls"}"#,
            r#"{"v":1,"op":"urls","x":1}"#,
            r#"{"v":1,"op":"reload"}"#,
            r#"{"v":1,"op":"stop"}"#,
            r#"{"v":9,"op":"stop"}"#,
            r#"{"op":"stop"}"#,
            r#"{"v":2,"op":"get","site":"a"}"#,
            r#"{"v":"1","op":"get","site":"a"}"#,
            r#"{"v":1.0,"op":"get","site":"a"}"#,
            r#"{"v":-1,"op":"get","site":"a"}"#,
            r#"{"op":"get","site":"a"}"#,
            r#"{"v":1}"#,
            r#"{"v":1,"op":5}"#,
            r#"{"v":1,"op":"fly"}"#,
            r#"{"v":1,"op":"Get","site":"a"}"#,
            r#"{"v":1,"op":"get","op":"stop"}"#,
            r#"{"v":1,"v":2,"op":"get","site":"a"}"#,
            r#"[1,2]"#,
            r#""get""#,
            r#"{"v":1,"op":"get","site":"a"} x"#,
            r#"{"v":1,"op":"get","site":"a""#,
            "",
        ]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
        let corpus = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/request_line"
        );
        if let Ok(dir) = std::fs::read_dir(corpus) {
            lines.extend(dir.map(|e| std::fs::read(e.unwrap().path()).unwrap()));
        }
        lines
    }

    #[test]
    fn the_fast_decode_agrees_with_the_general_one() {
        for line in lines() {
            let shown = String::from_utf8_lossy(&line).into_owned();
            if let Some(fast) = decode_fast(&line) {
                let slow = decode_slow(&line).unwrap_or_else(|e| {
                    panic!("fast took {shown}, the general decode refused: {e:?}")
                });
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{shown}");
            }
        }
        // The common lines do take the fast way.
        for line in [
            &br#"{"v":1,"op":"get","site":"corp","login":"never"}"#[..],
            br#"{"v":1,"op":"status"}"#,
            br#"{"v":7,"op":"stop"}"#,
        ] {
            assert!(decode_fast(line).is_some());
        }
    }

    /// `cargo test --release -p token-proto -- --ignored decode_speed --nocapture`:
    /// a million decodes of a plain get, the general way and the fast way.
    #[test]
    #[ignore]
    fn decode_speed() {
        let line = br#"{"v":1,"op":"get","site":"bench-new","login":"never"}"#;
        let n = 1_000_000;
        let time = |f: &dyn Fn(&[u8]) -> Result<Request, RequestError>| {
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(f(std::hint::black_box(line)).unwrap());
            }
            start.elapsed().as_nanos() as f64 / n as f64
        };
        for round in 1..=3 {
            let slow = time(&decode_slow);
            let fast = time(&decode_request);
            println!(
                "round {round}: general {slow:.0} ns, decode_request {fast:.0} ns, {:.2}×",
                fast / slow
            );
        }
    }
}
