//! One `[site.NAME]` table, checked key by key so each problem carries the
//! line of the key at fault.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use token_proto::{parse_duration, CargoToken, GitAuth, TokenKind};
use toml::Value;
use url::Url;

use super::client_auth::{self, ClientAuth};
use super::git::GitHost;
use super::grant::Grant;
use super::urls::UrlPrefix;
use super::{preset, ConfigError, Key, Lines};

mod rare;
mod workload;
pub(crate) use rare::{Rare, RareKeys};
pub(crate) use workload::{Subject, Workloads};

/// How the client secret is obtained; the secret itself never sits in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SecretSource {
    /// Read from this environment variable of the daemon.
    Env(String),
    /// Printed on stdout by this shell command (`pass show corp`).
    Cmd(String),
}

/// A URL of the config as written, checked once (https, or plain http to a
/// loopback host), with its parsed form. The spelling is what counts where
/// the text is compared or sent as it is: an issuer must match the
/// provider's `issuer` and `iss` exactly, a redirect URI the registered one,
/// and [`SiteConfig::identity`] must not change across releases, while
/// [`Url`] writes `https://a.example` as `https://a.example/`. Derefs to the
/// text as written. Shared: a site has a few of these, mostly unset, and a
/// daemon may hold a thousand sites, most of them of a few issuers; one
/// config's sites share one copy of each URL (`SharedUrls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenUrl(Arc<Written>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    written: String,
    url: Url,
}

impl WrittenUrl {
    /// `s` if it is a URL the config accepts; else the config's message.
    pub(super) fn parse(s: &str) -> Result<WrittenUrl, String> {
        match Url::parse(s) {
            Ok(url) if tokend_oauth::tls_or_loopback(&url) => Ok(WrittenUrl(Arc::new(Written {
                written: s.to_owned(),
                url,
            }))),
            Ok(u) if u.scheme() == "http" => Err(format!(
                "`{s}` is plain http: tokens and codes go only over TLS; use https \
                 (plain http is allowed only for 127.0.0.1, ::1 or localhost)"
            )),
            _ => Err(format!("`{s}` is not an https URL")),
        }
    }

    /// The URL as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0.written
    }

    /// The parsed URL (serialized as [`Url`] does, which may differ from
    /// [`WrittenUrl::as_str`]).
    pub fn url(&self) -> &Url {
        &self.0.url
    }
}

impl Deref for WrittenUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0.written
    }
}

impl fmt::Display for WrittenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.written)
    }
}

/// For the URLs whose spelling does not matter.
impl From<WrittenUrl> for Url {
    fn from(u: WrittenUrl) -> Url {
        Arc::unwrap_or_clone(u.0).url
    }
}

/// For the endpoints a site rarely sets: boxed, an unset one costs a pointer.
impl From<WrittenUrl> for Box<Url> {
    fn from(u: WrittenUrl) -> Box<Url> {
        Box::new(Arc::unwrap_or_clone(u.0).url)
    }
}

/// The URLs one config's sites were given so far, by their text: a URL
/// written again (the issuer of a thousand sites) is the same [`WrittenUrl`],
/// parsed once and held once.
#[derive(Debug, Default)]
pub(super) struct SharedUrls {
    by_text: HashMap<String, WrittenUrl>,
    /// The one given last: asked for again by the next site, most often.
    last: Option<WrittenUrl>,
}

impl SharedUrls {
    /// [`WrittenUrl::parse`], or the URL parsed before from the same text.
    fn parse(&mut self, s: &str) -> Result<WrittenUrl, String> {
        if let Some(u) = self.last.as_ref().filter(|u| u.as_str() == s) {
            return Ok(u.clone());
        }
        let u = match self.by_text.get(s) {
            Some(u) => u.clone(),
            None => {
                let u = WrittenUrl::parse(s)?;
                self.by_text.insert(s.to_owned(), u.clone());
                u
            }
        };
        self.last = Some(u.clone());
        Ok(u)
    }
}

/// A valid site, as the daemon uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteConfig {
    pub(crate) name: String,
    /// As written: compared exactly with the provider's, and the identity.
    pub issuer: Option<WrittenUrl>,
    pub authorize_url: Option<Box<Url>>,
    /// As written: the identity of a site without an issuer.
    pub token_url: Option<WrittenUrl>,
    pub revoke_url: Option<Box<Url>>,
    pub device_url: Option<Box<Url>>,
    pub(crate) client_id: String,
    pub(crate) secret: Option<SecretSource>,
    /// As configured; `None` means the default (none without a secret, else basic).
    pub(crate) client_auth: Option<ClientAuth>,
    pub(crate) scopes: Vec<String>,
    pub(crate) grant: Grant,
    /// As written: sent to the provider, which compares it with the registered one.
    pub redirect_uri: Option<WrittenUrl>,
    /// Joins scopes: `" "` unless the config or the preset says otherwise.
    pub(crate) scope_separator: Cow<'static, str>,
    /// Seconds before expiry to refresh; `None`: a fraction of the lifetime.
    pub(crate) refresh_before: Option<u64>,
    /// The git remotes this site serves (`token credential`).
    pub(crate) hosts: Vec<GitHost>,
    /// What the site serves in the URL map: its `urls` prefixes, then its
    /// `hosts` as `https://HOST[:PORT]/` (and `http://` for loopback).
    pub(crate) served: Vec<UrlPrefix>,
    /// How cargo's helper sends the token: `Bearer …` unless `cargo_token = "raw"`.
    pub(crate) cargo_token: CargoToken,
    /// How git sends the token: Basic (`username` + token) unless `git_auth = "bearer"`.
    pub(crate) git_auth: GitAuth,
    /// Sender-constrained tokens (RFC 9449): a DPoP key per site, proofs on
    /// every token request, `token get --dpop` proofs for resource requests.
    pub(crate) dpop: bool,
    /// Which token `token kube` serves: the access token unless
    /// `kube_token = "id_token"` (clusters that authenticate with OIDC).
    pub(crate) kube_token: TokenKind,
    /// The rest of [`SiteConfig::identity`]: the endpoints that receive the
    /// login (or its tokens) and the client authentication, as written in
    /// the config (a preset's own endpoints follow from its other keys).
    /// Empty when none is written, so existing identities stay the same.
    pub(crate) pinned: String,
    /// Workload identity: the client key, federated assertions, the
    /// jwt-bearer assertion and the token-exchange subject.
    pub(crate) workload: Workloads,
    /// `extra_params`, `login_hint`, `username`, `api_key`, `preset` and its
    /// parameters, `api_base`, `prompt`, `file`: boxed, only when set.
    pub rare: Rare,
}

impl SiteConfig {
    /// Whether the provider is asked for an OpenID Connect ID token.
    pub(crate) fn wants_id_token(&self) -> bool {
        self.scopes.iter().any(|s| s == "openid")
    }

    /// Whether a login should bring a refresh token: `offline_access` asks
    /// for one by name, of a grant that may bring one.
    pub(crate) fn expects_refresh_token(&self) -> bool {
        self.grant
            .expects_refresh_token(self.scopes.iter().any(|s| s == "offline_access"))
    }

    /// The `prompt` of the authorization request: as configured, else
    /// `consent` for an OpenID Connect login that asks for
    /// `offline_access` (OIDC Core §11: without it, providers that follow
    /// the spec drop `offline_access` and issue no refresh token), unless
    /// `extra_params` sets one.
    pub(crate) fn effective_prompt(&self) -> Option<&str> {
        match &self.rare.prompt {
            Some(p) => Some(p.as_str()).filter(|p| !p.is_empty()),
            None if self.rare.extra_params.iter().any(|(k, _)| k == "prompt") => None,
            None => (self.wants_id_token() && self.expects_refresh_token()).then_some("consent"),
        }
    }
}

impl SiteConfig {
    /// What a stored login belongs to: a login survives a config edit unless
    /// the provider, the client or the scopes changed.
    pub fn identity(&self) -> String {
        let provider = self
            .issuer
            .as_deref()
            .or(self.token_url.as_deref())
            .unwrap_or("");
        let mut scopes = self.scopes.clone();
        scopes.sort();
        let id = format!("{provider}|{}|{}", self.client_id, scopes.join(" "));
        // A Bearer login does not become a DPoP one (or back): turning
        // `dpop` on or off asks for a new login. Unchanged for other sites.
        let id = if self.dpop { format!("{id}|dpop") } else { id };
        // A refresh token is never sent to an endpoint, or with a client
        // authentication, other than the ones it was obtained with.
        format!("{id}{}", self.pinned)
    }

    /// What [`SiteConfig::identity`] pins beyond the provider, client and
    /// scopes, from the keys as written (before a preset fills any in).
    fn pin_written(&self) -> String {
        let key = self.workload.client_key.as_ref();
        let env = match &self.secret {
            Some(SecretSource::Env(name)) => Some(name.as_str()),
            Some(SecretSource::Cmd(_)) | None => None,
        };
        // Without an issuer (or preset) the token URL is the provider itself.
        let token_url = (self.issuer.is_some() || self.rare.preset.is_some())
            .then_some(self.token_url.as_deref())
            .flatten();
        let pins = [
            ("token_url", token_url),
            ("revoke_url", self.revoke_url.as_deref().map(Url::as_str)),
            ("device_url", self.device_url.as_deref().map(Url::as_str)),
            ("api_base", self.rare.api_base.as_deref().map(Url::as_str)),
            ("client_auth", self.client_auth.map(client_auth::name)),
            (
                "client_key_file",
                key.map(|(p, _)| p.to_str().unwrap_or("?")),
            ),
            ("client_secret_env", env),
        ];
        // `|KEY=VALUE` each, in one allocation (a thousand sites keep these).
        let len = pins
            .iter()
            .filter_map(|&(k, v)| Some(k.len() + v?.len() + 2))
            .sum();
        let mut pinned = String::with_capacity(len);
        for (k, v) in pins {
            if let Some(v) = v {
                for part in ["|", k, "=", v] {
                    pinned.push_str(part);
                }
            }
        }
        pinned
    }

    /// How the client authenticates: its key or federated assertion when
    /// the site has one, else as configured (or by the preset), else the
    /// default for whether it has a secret.
    pub fn effective_client_auth(&self) -> ClientAuth {
        if self.workload.client_key.is_some() {
            return ClientAuth::PrivateKeyJwt;
        }
        if self.workload.client_assertion.is_some() {
            return ClientAuth::Assertion;
        }
        self.client_auth
            .unwrap_or_else(|| client_auth::default(self.secret.is_some()))
    }
}

/// The keys of a site table: [`KEYS`], and [`key`] to tell one (a `match`,
/// not a scan: every key of a thousand sites is looked up at each start).
macro_rules! site_keys {
    ($($k:literal,)*) => {
        const KEYS: &[&str] = &[$($k,)*];

        /// `k` as the site key it is, and whether it is a workload key.
        pub(super) fn key(k: &str) -> Option<(&'static str, bool)> {
            match k {
                $($k => Some(($k, false)),)*
                _ => workload::key(k).map(|k| (k, true)),
            }
        }
    };
}

site_keys! {
    "issuer",
    "authorize_url",
    "token_url",
    "revoke_url",
    "device_url",
    "client_id",
    "client_secret_env",
    "client_secret_cmd",
    "client_auth",
    "scopes",
    "grant",
    "redirect_uri",
    "scope_separator",
    "refresh_before",
    "extra_params",
    "hosts",
    "urls",
    "login_hint",
    "cargo_token",
    "git_auth",
    "username",
    "api_key",
    "preset",
    "subdomain",
    "base_url",
    "tenant",
    "api_base",
    "dpop",
    "kube_token",
    "prompt",
    "file",
}

/// Takes keys out of one site table, remembering where each one was.
/// Where a key is (`at`) is its byte offset in the text: the line is
/// worked out only for an error.
struct Fields<'a> {
    path: &'a Path,
    lines: &'a Lines<'a>,
    site: &'a str,
    header_at: usize,
    /// The table's keys as written, where each is, and their values until
    /// taken. A list: a site has a handful of keys, and a thousand sites
    /// are parsed before the daemon is ready.
    table: &'a mut [(Key, usize, Option<Value>)],
    /// How many values are not taken yet: once none is, a key asked for is
    /// answered without a look (most of the keys a site is asked for, the
    /// workload keys among them).
    left: usize,
    urls: &'a mut SharedUrls,
}

impl Fields<'_> {
    fn err(&self, at: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            line: Some(self.lines.of(at)),
            site: Some(self.site.to_owned()),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.string_at(key)?.map(|(_, s)| s))
    }

    /// A non-empty string, and where it is.
    fn string_at(&mut self, key: &str) -> Result<Option<(usize, String)>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((at, Value::String(s))) if !s.trim().is_empty() => Ok(Some((at, s))),
            Some((at, Value::String(_))) => Err(self.err(at, key, "must not be empty")),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!("expected a string, found {}", v.type_str()),
            )),
        }
    }

    /// The value of `key` and where it is, taken out of the table.
    fn take(&mut self, key: &str) -> Option<(usize, Value)> {
        if self.left == 0 {
            return None;
        }
        let (at, v) = self
            .table
            .iter_mut()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, at, v)| Some((*at, v.take()?)))?;
        self.left -= 1;
        Some((at, v))
    }

    /// Where `key` is (taken or not), else the table's header.
    fn at_of(&self, key: &str) -> usize {
        self.table
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or(self.header_at, |(_, at, _)| *at)
    }

    /// A [`WrittenUrl`], or a [`Url`] where the spelling does not matter.
    fn url<T: From<WrittenUrl>>(&mut self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some((at, s)) = self.string_at(key)? else {
            return Ok(None);
        };
        self.urls
            .parse(&s)
            .map(|u| Some(T::from(u)))
            .map_err(|message| self.err(at, key, message))
    }

    fn strings(&mut self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some((at, Value::Array(items))) => {
                let mut strings = Vec::with_capacity(items.len());
                for v in items {
                    match v {
                        Value::String(s) => strings.push(s),
                        other => {
                            return Err(self.err(
                                at,
                                key,
                                format!("expected a list of strings, found a {}", other.type_str()),
                            ))
                        }
                    }
                }
                // Sized to fit (a collect would reuse the larger array of
                // TOML values): a thousand sites keep these.
                Ok(strings)
            }
            // `scopes = "a b"` is a common slip; accept it, split on spaces.
            Some((_, Value::String(s))) => Ok(s.split_whitespace().map(str::to_owned).collect()),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!("expected a list of strings, found {}", v.type_str()),
            )),
        }
    }

    /// One of `options`, by name. The names are listed only in the error.
    fn choice<T: Copy, I>(&mut self, key: &str, options: I) -> Result<Option<T>, ConfigError>
    where
        I: IntoIterator<Item = (&'static str, T)>,
        I::IntoIter: Clone,
    {
        let options = options.into_iter();
        let Some((at, s)) = self.string_at(key)? else {
            return Ok(None);
        };
        options
            .clone()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| Some(v))
            .ok_or_else(|| {
                let names: Vec<String> = options.map(|(n, _)| format!("\"{n}\"")).collect();
                self.err(at, key, format!("`{s}` is not one of {}", names.join(", ")))
            })
    }

    fn duration(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((at, Value::Integer(n))) => u64::try_from(n)
                .map(Some)
                .map_err(|_| self.err(at, key, "must not be negative")),
            Some((at, Value::String(s))) => parse_duration(&s).map(Some).ok_or_else(|| {
                self.err(
                    at,
                    key,
                    format!("`{s}` is not a duration like \"90s\", \"5m\" or \"1h\""),
                )
            }),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!("expected a duration like \"5m\", found {}", v.type_str()),
            )),
        }
    }

    fn string_table(&mut self, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some((at, Value::Table(t))) => t
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(self.err(
                        at,
                        key,
                        format!("`{k}` must be a string, found {}", other.type_str()),
                    )),
                })
                .collect(),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!(
                    "expected a table like {{ audience = \"...\" }}, found {}",
                    v.type_str()
                ),
            )),
        }
    }
}

/// Closest known key, for "did you mean".
fn suggest(key: &str) -> Option<&'static str> {
    token_proto::names::closest(key, KEYS.iter().chain(workload::KEYS).copied())
}

pub(super) fn parse_site(
    path: &Path,
    lines: &Lines<'_>,
    urls: &mut SharedUrls,
    name: &str,
    header_at: usize,
    table: &mut [(Key, usize, Option<Value>)],
) -> Result<SiteConfig, ConfigError> {
    if !token_proto::names::is_site_name(name) {
        return Err(ConfigError {
            path: path.to_owned(),
            line: Some(lines.of(header_at)),
            site: Some(name.to_owned()),
            key: None,
            message: "a site name may hold only [A-Za-z0-9._-]".to_owned(),
        });
    }
    // A key the fast read knew is borrowed from the list; any other is
    // looked up. The first unknown one in order of key is the one told
    // (whatever order the table is in).
    let unknown = table
        .iter()
        .filter(|(k, _, _)| matches!(k, Key::Owned(k) if key(k).is_none()))
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(k, at, _)| (k.to_string(), *at));
    let mut f = Fields {
        path,
        lines,
        site: name,
        header_at,
        left: table.len(),
        table,
        urls,
    };
    if let Some((key, at)) = unknown {
        let hint = suggest(&key).map_or(String::new(), |s| format!("; did you mean `{s}`?"));
        return Err(f.err(at, &key, format!("unknown key{hint}")));
    }

    let secret_env = f.string("client_secret_env")?;
    let secret_cmd = f.string("client_secret_cmd")?;
    let secret = match (secret_env, secret_cmd) {
        (Some(_), Some(_)) => {
            return Err(f.err(
                header_at,
                "client_secret_cmd",
                "give client_secret_env or client_secret_cmd, not both",
            ))
        }
        (Some(v), None) => Some(SecretSource::Env(v)),
        (None, Some(c)) => Some(SecretSource::Cmd(c)),
        (None, None) => None,
    };
    let scope_separator = f.string_raw("scope_separator")?;
    let separator_given = scope_separator.is_some();
    let mut site = SiteConfig {
        name: name.to_owned(),
        issuer: f.url("issuer")?,
        authorize_url: f.url("authorize_url")?,
        token_url: f.url("token_url")?,
        revoke_url: f.url("revoke_url")?,
        device_url: f.url("device_url")?,
        client_id: f.string("client_id")?.unwrap_or_default(),
        secret,
        client_auth: f.choice(
            "client_auth",
            client_auth::all().map(|a| (client_auth::name(a), a)),
        )?,
        scopes: f.strings("scopes")?,
        grant: f
            .choice("grant", Grant::all().map(|g| (g.name(), g)))?
            .unwrap_or(Grant::DEFAULT),
        scope_separator: scope_separator.map_or(Cow::Borrowed(" "), Cow::Owned),
        redirect_uri: None,
        refresh_before: None,
        hosts: Vec::new(),
        served: Vec::new(),
        cargo_token: CargoToken::default(),
        git_auth: GitAuth::default(),
        dpop: false,
        kube_token: TokenKind::default(),
        pinned: String::new(),
        workload: Workloads::default(),
        rare: Rare::default(),
    };
    // The keys most sites leave out, in this order (which decides the error
    // told first): once every key written is taken, as for most sites by
    // now, they are left as they are, none looked up.
    if f.left > 0 {
        let mut rare = RareKeys::default();
        site.redirect_uri = f.url("redirect_uri")?;
        site.refresh_before = f.duration("refresh_before")?;
        rare.extra_params = f.string_table("extra_params")?;
        site.hosts = f.parsed_list("hosts", GitHost::parse)?;
        site.served = f.parsed_list("urls", UrlPrefix::parse)?;
        rare.login_hint = f.string("login_hint")?;
        site.cargo_token = f
            .choice(
                "cargo_token",
                [("bearer", CargoToken::Bearer), ("raw", CargoToken::Raw)],
            )?
            .unwrap_or_default();
        site.git_auth = f
            .choice(
                "git_auth",
                [("basic", GitAuth::Basic), ("bearer", GitAuth::Bearer)],
            )?
            .unwrap_or_default();
        rare.username = f.string("username")?;
        rare.api_key = f.string("api_key")?;
        rare.preset = f.string("preset")?;
        rare.subdomain = f.string("subdomain")?;
        rare.base_url = f.url("base_url")?;
        rare.tenant = f.string("tenant")?;
        rare.api_base = f.url("api_base")?;
        site.dpop = f.boolean("dpop")?.unwrap_or(false);
        site.kube_token = f
            .choice(
                "kube_token",
                [
                    ("access_token", TokenKind::AccessToken),
                    ("id_token", TokenKind::IdToken),
                ],
            )?
            .unwrap_or_default();
        rare.prompt = f.string_or_empty("prompt")?;
        rare.files = f.files("file")?;
        site.workload = Workloads::new(f.workload()?);
        site.rare = Rare::new(rare);
    }
    let from_hosts: Vec<UrlPrefix> = site.hosts.iter().flat_map(UrlPrefix::of_host).collect();
    site.served.extend(from_hosts);
    site.pinned = site.pin_written();
    preset::apply(&mut site, separator_given).map_err(|e| {
        let at = f.at_of(e.key);
        f.err(at, e.key, e.message)
    })?;
    validate(&f, site)
}

impl Fields<'_> {
    /// `[[site.NAME.file]]` tables (see [`crate::files`]).
    fn files(&mut self, key: &str) -> Result<Vec<crate::files::TokenFile>, ConfigError> {
        let Some((at, value)) = self.take(key) else {
            return Ok(Vec::new());
        };
        crate::files::parse(value).map_err(|m| self.err(at, key, m))
    }

    /// A list of strings, each parsed by `parse`: `hosts =
    /// ["git.example.com", "git.example.com:8443"]` ([`GitHost::parse`]),
    /// `urls = ["https://git.example.com/team-a/"]` ([`UrlPrefix::parse`]).
    fn parsed_list<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        self.strings(key)?
            .iter()
            .map(|h| parse(h).map_err(|m| self.err(self.at_of(key), key, m)))
            .collect()
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((_, Value::Boolean(b))) => Ok(Some(b)),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!("expected true or false, found {}", v.type_str()),
            )),
        }
    }

    /// A string that may be only whitespace (the scope separator may be " ").
    /// A string that may be empty (`prompt = ""`: none).
    fn string_or_empty(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.trim().to_owned())),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!("expected a string, found {}", v.type_str()),
            )),
        }
    }

    fn string_raw(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((at, Value::String(s))) if s.is_empty() => {
                Err(self.err(at, key, "must not be empty"))
            }
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((at, v)) => Err(self.err(
                at,
                key,
                format!("expected a string, found {}", v.type_str()),
            )),
        }
    }
}

/// Checks that hold across keys, after presets are applied.
fn validate(f: &Fields<'_>, site: SiteConfig) -> Result<SiteConfig, ConfigError> {
    let at = f.header_at;
    if site.client_id.is_empty() {
        return Err(f.err(
            at,
            "client_id",
            "missing: every site needs the client_id registered with the provider",
        ));
    }
    if site.issuer.is_none() && site.token_url.is_none() {
        return Err(f.err(
            at,
            "issuer",
            "missing: give `issuer` (for discovery) or `token_url` and `authorize_url`",
        ));
    }
    let keyed = site.workload.client_key.is_some() || site.workload.client_assertion.is_some();
    if site.grant.needs_secret() && site.secret.is_none() && !keyed {
        return Err(f.err(
            at,
            "grant",
            format!(
                "{} needs a client credential: add client_secret_env or client_secret_cmd, client_key_file (private_key_jwt) or a client_assertion_file / _cmd / _source",
                site.grant.name()
            ),
        ));
    }
    workload::validate(f, &site)?;
    if site.kube_token == TokenKind::IdToken && !site.wants_id_token() {
        return Err(f.err(
            f.at_of("kube_token"),
            "kube_token",
            "an ID token needs `openid` among the site's `scopes`",
        ));
    }
    if site.client_auth.is_some_and(client_auth::needs_secret) && site.secret.is_none() {
        let with_secret: Vec<&str> = client_auth::all()
            .filter(|a| client_auth::needs_secret(*a))
            .map(client_auth::name)
            .collect();
        return Err(f.err(
            at,
            "client_auth",
            format!(
                "{} need a client secret: add client_secret_env or client_secret_cmd",
                with_secret.join(" and ")
            ),
        ));
    }
    if site.dpop && site.grant.token_from_browser() {
        let bound: Vec<String> = Grant::all()
            .filter(|g| !g.token_from_browser())
            .map(|g| format!("\"{}\"", g.name()))
            .collect();
        let bound = match bound.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, init)) => format!("{} or {last}", init.join(", ")),
            None => String::new(),
        };
        return Err(f.err(
            at,
            "dpop",
            format!(
                "the {} grant's token comes from the browser, unbound: DPoP needs grant = {bound}",
                site.grant.name()
            ),
        ));
    }
    Ok(site)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<SiteConfig, ConfigError> {
        let text =
            format!("[site.corp]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\n{body}");
        let c = super::super::Config::parse(Path::new("/c.toml"), &text);
        match c.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok((*c.sites["corp"]).clone()),
        }
    }

    #[test]
    fn dpop_is_a_bool_and_part_of_the_identity() {
        let plain = parse("").unwrap();
        assert!(!plain.dpop);
        let bound = parse("dpop = true\n").unwrap();
        assert!(bound.dpop);
        assert_ne!(plain.identity(), bound.identity());
        assert!(
            !plain.identity().contains("dpop"),
            "unchanged for other sites"
        );
        let e = parse("dpop = \"yes\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("dpop"));
        assert_eq!(e.line, Some(4));
        let e = parse("dpop = true\ngrant = \"implicit\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("dpop"));
        assert!(
            e.message.ends_with(
                "the implicit grant's token comes from the browser, unbound: DPoP needs grant = \
             \"authorization_code\", \"client_credentials\", \"device_code\", \"jwt_bearer\" or \
             \"token_exchange\""
            ),
            "{e}"
        );
    }

    #[test]
    fn offline_access_at_an_oidc_provider_asks_for_consent_unless_told_otherwise() {
        let prompt = |body: &str| parse(body).unwrap().effective_prompt().map(str::to_owned);
        let offline = "scopes = [\"openid\", \"offline_access\"]\n";
        assert_eq!(prompt(offline).as_deref(), Some("consent"));
        assert_eq!(prompt("scopes = [\"offline_access\"]\n"), None, "not OIDC");
        assert_eq!(prompt("scopes = [\"openid\"]\n"), None);
        assert_eq!(prompt(&format!("{offline}prompt = \"\"\n")), None);
        assert_eq!(
            prompt(&format!("{offline}prompt = \"login consent\"\n")).as_deref(),
            Some("login consent")
        );
        assert_eq!(
            prompt(&format!(
                "{offline}extra_params = {{ prompt = \"none\" }}\n"
            )),
            None,
            "extra_params carries its own"
        );
        let e = parse("prompt = 1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("prompt"));
    }

    fn parse_file(text: &str) -> super::super::Config {
        super::super::Config::parse(Path::new("/c.toml"), text)
    }

    /// A thousand sites of one issuer hold one copy of its URL.
    #[test]
    fn sites_of_one_issuer_share_its_url() {
        let c = parse_file(
            "[site.a]\nissuer = \"https://auth.example\"\nclient_id = \"a\"\n\
             [site.b]\nissuer = \"https://auth.example\"\nclient_id = \"b\"\n\
             [site.c]\nissuer = \"https://other.example\"\nclient_id = \"c\"\n",
        );
        let issuer = |s: &str| c.sites[s].issuer.clone().unwrap();
        assert!(Arc::ptr_eq(&issuer("a").0, &issuer("b").0));
        assert!(!Arc::ptr_eq(&issuer("a").0, &issuer("c").0));
        assert_eq!(issuer("c").as_str(), "https://other.example");
    }

    /// `identity()` is stored with each login and compared on load: the
    /// same config must give the same bytes across releases, the URLs as
    /// written (no slash added, case and default ports kept).
    #[test]
    fn identity_is_pinned() {
        let c = parse_file(
            "[site.a]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\nscopes = [\"write\", \"openid\"]\n\
             [site.b]\nissuer = \"https://Auth.Example:443/realms/x/\"\nclient_id = \"c\"\ndpop = true\n\
             [site.c]\ntoken_url = \"https://auth.example\"\nauthorize_url = \"https://auth.example/authorize\"\nclient_id = \"c\"\nscopes = \"read\"\n\
             [site.d]\npreset = \"gitlab\"\nbase_url = \"https://Git.Example.com/\"\nclient_id = \"g\"\nscopes = [\"read_api\"]\n\
             [site.e]\npreset = \"stackoverflow-teams\"\nsubdomain = \"acme\"\nclient_id = \"t\"\n\
             [site.f]\npreset = \"microsoft\"\ntenant = \"9188040d-6c67-4c5b-b112-36a304b66dad\"\nclient_id = \"m\"\n",
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let ids: Vec<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| c.sites[*n].identity())
            .collect();
        assert_eq!(
            ids,
            [
                "https://auth.example|c|openid write",
                "https://Auth.Example:443/realms/x/|c||dpop",
                "https://auth.example|c|read",
                "https://Git.Example.com|g|read_api",
                "https://acme.stackenterprise.co/oauth/access_token/json|t|",
                "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0|m|",
            ]
        );
    }

    /// A login is kept across an edit only while everything that receives it
    /// stays: each of these edits gives the site a new identity, so its
    /// stored login is dropped, never sent to the new endpoint.
    #[test]
    fn endpoints_and_client_authentication_are_part_of_the_identity() {
        let base = "[site.a]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\n";
        let id = |extra: &str| {
            let c = parse_file(&format!("{base}{extra}"));
            assert!(c.errors.is_empty(), "{:?}", c.errors);
            c.sites["a"].identity()
        };
        let plain = id("");
        assert_eq!(
            plain, "https://auth.example|c|",
            "unchanged without the keys"
        );
        let edits = [
            "token_url = \"https://evil.example/token\"\n",
            "revoke_url = \"https://evil.example/revoke\"\n",
            "device_url = \"https://evil.example/device\"\n",
            "api_base = \"https://evil.example/api\"\n",
            "client_auth = \"post\"\nclient_secret_env = \"S\"\n",
            "client_secret_env = \"AWS_SECRET_ACCESS_KEY\"\n",
        ];
        let mut seen = vec![plain];
        for edit in edits {
            let edited = id(edit);
            assert!(!seen.contains(&edited), "{edit}: {edited}");
            seen.push(edited);
        }
        assert_ne!(
            id("token_url = \"https://a.example/token\"\n"),
            id("token_url = \"https://b.example/token\"\n")
        );
    }

    #[test]
    fn url_errors_name_the_key_and_line() {
        let e = parse("token_url = \"http://auth.example/token\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/c.toml:4: site corp: key `token_url`: `http://auth.example/token` is plain http: \
             tokens and codes go only over TLS; use https (plain http is allowed only for \
             127.0.0.1, ::1 or localhost)"
        );
        let e = parse("scopes = []\nredirect_uri = \"auth.example/cb\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/c.toml:5: site corp: key `redirect_uri`: `auth.example/cb` is not an https URL"
        );
        let e = parse("api_base = \"ftp://auth.example\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/c.toml:4: site corp: key `api_base`: `ftp://auth.example` is not an https URL"
        );
        let e = parse_file(
            "[site.g]\nclient_id = \"g\"\npreset = \"gitlab\"\nbase_url = \"http://git.example\"\n",
        )
        .errors
        .remove(0);
        assert!(
            e.to_string().starts_with(
                "/c.toml:4: site g: key `base_url`: `http://git.example` is plain http"
            ),
            "{e}"
        );
        let s = parse("redirect_uri = \"http://localhost:8400\"\n").unwrap();
        assert_eq!(
            s.redirect_uri.as_ref().map(ToString::to_string).as_deref(),
            Some("http://localhost:8400")
        );
    }

    /// `grant` and `client_auth` parse into the types the daemon uses, with
    /// the same names, defaults and errors (each at its line) as before.
    #[test]
    fn grant_and_client_auth_keep_their_names_defaults_and_errors() {
        let s = parse("").unwrap();
        assert_eq!(s.grant.name(), "authorization_code");
        assert_eq!(s.client_auth, None);
        assert_eq!(s.effective_client_auth(), ClientAuth::None);
        let s = parse("client_secret_env = \"S\"\n").unwrap();
        assert_eq!(s.effective_client_auth(), ClientAuth::Basic);
        let s = parse("client_secret_env = \"S\"\nclient_auth = \"post\"\n").unwrap();
        assert_eq!(s.client_auth, Some(ClientAuth::Post));
        for g in Grant::all() {
            let secret = match g {
                _ if g.needs_secret() => "client_secret_cmd = \"pass corp\"\n",
                Grant::JwtBearer => "assertion_file = \"/run/token\"\n",
                Grant::TokenExchange => "subject_site = \"other\"\n",
                _ => "",
            };
            let s = parse(&format!("grant = \"{}\"\n{secret}", g.name())).unwrap();
            assert_eq!(s.grant.name(), g.name());
        }
        let shown = |body: &str| parse(body).unwrap_err().to_string();
        assert_eq!(
            shown("scopes = []\ngrant = \"password\"\n"),
            "/c.toml:5: site corp: key `grant`: `password` is not one of \"authorization_code\", \
             \"client_credentials\", \"device_code\", \"implicit\", \"jwt_bearer\", \"token_exchange\""
        );
        assert_eq!(
            shown("client_auth = \"jwt\"\n"),
            "/c.toml:4: site corp: key `client_auth`: `jwt` is not one of \"none\", \"basic\", \"post\", \"private_key_jwt\", \"client_assertion\""
        );
        assert_eq!(
            shown("grant = \"client_credentials\"\n"),
            "/c.toml:1: site corp: key `grant`: client_credentials needs a client credential: \
             add client_secret_env or client_secret_cmd, client_key_file (private_key_jwt) or a \
             client_assertion_file / _cmd / _source"
        );
        assert_eq!(
            shown("client_auth = \"basic\"\n"),
            "/c.toml:1: site corp: key `client_auth`: basic and post need a client secret: \
             add client_secret_env or client_secret_cmd"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("scops"), Some("scopes"));
        assert_eq!(suggest("isuer"), Some("issuer"));
        assert_eq!(suggest("zzzzzzzzzz"), None);
    }
}
