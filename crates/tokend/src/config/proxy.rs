//! One `[proxy.NAME]` table: a local listener that forwards every request
//! to `upstream` with the site's fresh token (see `crate::proxy`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_proto::parse_duration;
use toml::Value;

use super::{ConfigError, Lines, RawTable, SiteConfig, WrittenUrl};

/// Where a proxy listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Listen {
    /// A Unix socket, 0600 in a private directory.
    Unix(PathBuf),
    /// Loopback TCP; connections of other users are closed unanswered.
    Tcp(SocketAddr),
}

/// `[proxy.NAME]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyConfig {
    pub name: String,
    pub line: usize,
    pub site: String,
    pub upstream: WrittenUrl,
    pub listen: Listen,
    /// May a request start a login (a browser)? Default false: 401.
    pub login: bool,
    /// Seconds to wait for the upstream's answer (and between its bytes).
    pub timeout: u64,
}

const KEYS: &str = "site, upstream, listen, login and timeout";

pub(super) fn parse_proxy(
    path: &Path,
    lines: &Lines,
    name: &str,
    line: usize,
    raw: RawTable,
    sites: &BTreeMap<String, Arc<SiteConfig>>,
) -> Result<ProxyConfig, ConfigError> {
    let err = super::table_error(path, "proxy", name);
    if let Some(e) = super::bad_table_name(&err, "proxy", name, line) {
        return Err(e);
    }
    let (mut site, mut upstream, mut listen) = (None, None, None);
    let mut login = false;
    let mut timeout = 60;
    for (key, value) in raw {
        let kline = lines.of(key.span().start);
        let key = key.into_inner();
        match (&*key, value.into_inner()) {
            ("site", Value::String(s)) => {
                if !sites.contains_key(&s) {
                    let known: Vec<&str> = sites.keys().map(String::as_str).collect();
                    return Err(err(
                        kline,
                        Some("site"),
                        format!(
                            "no site named `{s}` (the configured sites are {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                site = Some(s);
            }
            ("upstream", Value::String(s)) => {
                upstream =
                    Some(WrittenUrl::parse(&s).map_err(|m| err(kline, Some("upstream"), m))?);
            }
            ("listen", Value::String(s)) => {
                listen = Some(parse_listen(&s).map_err(|m| err(kline, Some("listen"), m))?);
            }
            ("login", Value::Boolean(b)) => login = b,
            ("timeout", Value::String(s)) => {
                timeout = parse_duration(&s).filter(|&n| n > 0).ok_or_else(|| {
                    err(
                        kline,
                        Some("timeout"),
                        format!("`{s}` is not a duration like \"30s\""),
                    )
                })?;
            }
            (k @ ("site" | "upstream" | "listen" | "login" | "timeout"), other) => {
                return Err(err(
                    kline,
                    Some(k),
                    format!("unexpected {}", other.type_str()),
                ))
            }
            (other, _) => {
                return Err(err(
                    kline,
                    Some(other),
                    format!("unknown key; [proxy.{name}] takes {KEYS}"),
                ))
            }
        }
    }
    let missing =
        |key: &str, example: &str| err(line, Some(key), format!("missing: e.g. {key} = {example}"));
    let site = site.ok_or_else(|| missing("site", "\"corp\""))?;
    let upstream = upstream.ok_or_else(|| missing("upstream", "\"https://api.example.com\""))?;
    let listen = listen.unwrap_or_else(|| {
        let own = token_proto::default_socket_path();
        let dir = own.parent().map_or_else(PathBuf::new, Path::to_owned);
        Listen::Unix(dir.join(format!("proxy-{name}.sock")))
    });
    Ok(ProxyConfig {
        name: name.to_owned(),
        line,
        site,
        upstream,
        listen,
        login,
        timeout,
    })
}

/// A socket path, or `127.0.0.1:PORT` / `[::1]:PORT`.
fn parse_listen(s: &str) -> Result<Listen, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "`{s}` is not a loopback address: the proxy adds your token to every request, \
                 so it listens only on 127.0.0.1 or ::1 (or a Unix socket)"
            ));
        }
        return Ok(Listen::Tcp(addr));
    }
    super::written_path(s).map(Listen::Unix)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Config;
    use super::Listen;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/c.toml"), text)
    }

    const SITE: &str = "[site.a]\ntoken_url = \"https://a/token\"\nclient_id = \"x\"\n\
        grant = \"client_credentials\"\nclient_secret_env = \"S\"\n";

    #[test]
    fn a_proxy_and_its_defaults() {
        let c = parse(&format!(
            "{SITE}[proxy.api]\nsite = \"a\"\nupstream = \"https://api.example.com\"\n"
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let p = &c.proxies["api"];
        assert!(matches!(&p.listen, Listen::Unix(s) if s.ends_with("proxy-api.sock")));
        assert!(!p.login);
        assert_eq!(p.timeout, 60);
        let c = parse(&format!(
            "{SITE}[proxy.api]\nsite = \"a\"\nupstream = \"http://127.0.0.1:8080\"\nlisten = \"127.0.0.1:8700\"\ntimeout = \"5s\"\n"
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(
            c.proxies["api"].listen,
            Listen::Tcp("127.0.0.1:8700".parse().unwrap())
        );
    }

    #[test]
    fn bad_proxies() {
        let bad = [
            (
                "site = \"nope\"\nupstream = \"https://x\"\n",
                ":7: key `proxy.api.site`: no site named `nope`",
            ),
            (
                "site = \"a\"\nupstream = \"http://api.example.com\"\n",
                ":8: key `proxy.api.upstream`: `http://api.example.com` is plain http",
            ),
            (
                "site = \"a\"\nupstream = \"https://x\"\nlisten = \"0.0.0.0:80\"\n",
                "is not a loopback address",
            ),
            ("site = \"a\"\n", "key `proxy.api.upstream`: missing"),
        ];
        for (body, want) in bad {
            let c = parse(&format!("{SITE}[proxy.api]\n{body}"));
            assert!(c.proxies.is_empty());
            let msg = c.errors[0].to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(c.sites.contains_key("a"), "the rest is served");
        }
    }
}
