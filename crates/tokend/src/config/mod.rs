//! The config file: `[site.NAME]` tables in TOML. Parsing keeps going past a
//! bad site so the good ones are served; every problem names the file, the
//! line and the key at fault.

pub(crate) mod client_auth;
mod daemon;
mod git;
pub(crate) mod grant;
mod preset;
mod proxy;
mod share;
mod site;
mod trust;
pub(crate) mod urls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

pub(crate) use daemon::{DaemonSettings, StoreKind};
pub use git::{GitHost, Refusal, Remote};
pub(crate) use proxy::{Listen, ProxyConfig};
pub(crate) use share::ShareConfig;
pub(crate) use site::{SecretSource, Subject};
pub use site::{SiteConfig, WrittenUrl};
pub(crate) use token_proto::parse_duration;

/// One problem in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) path: PathBuf,
    pub line: Option<usize>,
    pub(crate) site: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(site) = &self.site {
            write!(f, "site {site}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A problem of the file as a whole (no line, site or key).
    pub(crate) fn of_file(path: &Path, message: String) -> ConfigError {
        ConfigError {
            path: path.to_owned(),
            line: None,
            site: None,
            key: None,
            message,
        }
    }
}

/// The parsed file: the good sites, and what was wrong with the others.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub(crate) path: PathBuf,
    pub sites: BTreeMap<String, Arc<SiteConfig>>,
    /// Whole-file problems (unreadable, not TOML) and per-site problems.
    pub errors: Vec<ConfigError>,
    /// Sites present in the file but invalid, with their error (for `get`).
    pub broken: BTreeMap<String, ConfigError>,
    /// The file is not TOML, or others could write it: no site in it can
    /// be trusted (for `get`).
    pub(crate) unparsable: Option<ConfigError>,
    /// Another user could write the file: refused as a whole.
    pub(crate) untrusted: bool,
    /// The `[daemon]` table.
    pub(crate) daemon: DaemonSettings,
    /// There is no config file (not yet, or no longer).
    pub(crate) missing: bool,
    /// The `[share.NAME]` tables: sockets serving only some sites.
    pub(crate) shares: BTreeMap<String, Arc<ShareConfig>>,
    /// The `[proxy.NAME]` tables: local listeners that add the token.
    pub(crate) proxies: BTreeMap<String, Arc<ProxyConfig>>,
}

/// A TOML table's entries, in the order written. A list, not a map: a
/// site has a handful of keys, and a thousand sites are parsed before the
/// daemon is ready. (The TOML parser has already refused duplicate keys.)
#[derive(Debug, Default)]
struct RawTable(Vec<(Spanned<String>, Spanned<toml::Value>)>);

impl<'de> Deserialize<'de> for RawTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = RawTable;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawTable, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawTable(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

impl IntoIterator for RawTable {
    type Item = (Spanned<String>, Spanned<toml::Value>);
    type IntoIter = std::vec::IntoIter<Self::Item>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    site: BTreeMap<Spanned<String>, Spanned<RawTable>>,
    daemon: Option<Spanned<RawTable>>,
    #[serde(default)]
    share: BTreeMap<Spanned<String>, Spanned<RawTable>>,
    #[serde(default)]
    proxy: BTreeMap<Spanned<String>, Spanned<RawTable>>,
}

/// The error maker of a `[TABLE.NAME]` table: `(line, key, message)`,
/// the key said as `TABLE.NAME.KEY` (or `TABLE.NAME` without one).
pub(crate) fn table_error<'a>(
    path: &'a Path,
    table: &'a str,
    name: &'a str,
) -> impl Fn(usize, Option<&str>, String) -> ConfigError + 'a {
    move |line, key, message| ConfigError {
        path: path.to_owned(),
        line: Some(line),
        site: None,
        key: Some(match key {
            Some(k) => format!("{table}.{name}.{k}"),
            None => format!("{table}.{name}"),
        }),
        message,
    }
}

/// A `[TABLE.NAME]` whose name is not one a site could have.
fn bad_table_name(
    err: &impl Fn(usize, Option<&str>, String) -> ConfigError,
    table: &str,
    name: &str,
    line: usize,
) -> Option<ConfigError> {
    (!token_proto::names::is_site_name(name)).then(|| {
        err(
            line,
            None,
            format!("a {table} name holds only letters, digits, `.`, `_` and `-` ([A-Za-z0-9._-])"),
        )
    })
}

/// A path as written in the config: `~/x` is expanded; anything else
/// must be absolute (the daemon runs from `/`).
pub(crate) fn written_path(s: &str) -> Result<PathBuf, String> {
    let p = match s.strip_prefix("~/") {
        Some(rest) => token_proto::home_dir().join(rest),
        None => PathBuf::from(s),
    };
    if p.is_absolute() && p.file_name().is_some() {
        Ok(p)
    } else {
        Err(format!(
            "`{s}` is not an absolute path (or one starting with ~/): write the path in full"
        ))
    }
}

/// The 1-based lines of byte offsets, from one pass over the text (a
/// config with a thousand sites asks for thousands of them).
pub(crate) struct Lines {
    /// Where each line starts.
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { starts }
    }

    /// The line of byte `offset`.
    pub(crate) fn of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

impl Config {
    /// Reads and parses the file. A missing file is an empty config (with a
    /// hint in `errors`), not a failure: the daemon still starts. A file
    /// that another user could have written is refused as a whole.
    pub(crate) fn load(path: &Path) -> Config {
        let (message, missing) = match trust::read_trusted(path) {
            Ok(text) => return Config::parse(path, &text),
            Err(trust::Refusal::Untrusted(why)) => {
                let error = ConfigError::of_file(
                    path,
                    format!(
                        "refused as a whole: another user could change where your tokens go, because {why}"
                    ),
                );
                return Config {
                    path: path.to_owned(),
                    errors: vec![error.clone()],
                    unparsable: Some(error),
                    untrusted: true,
                    ..Default::default()
                };
            }
            Err(trust::Refusal::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => (
                "no config file yet: create it with a [site.NAME] table (see the README)"
                    .to_owned(),
                true,
            ),
            Err(trust::Refusal::Io(e)) => (format!("cannot read the config file: {e}"), false),
        };
        Config {
            path: path.to_owned(),
            missing,
            errors: vec![ConfigError::of_file(path, message)],
            ..Default::default()
        }
    }

    pub fn parse(path: &Path, text: &str) -> Config {
        let mut config = Config {
            path: path.to_owned(),
            ..Default::default()
        };
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.span().map(|s| Lines::new(text).of(s.start));
                let error = ConfigError {
                    path: path.to_owned(),
                    line,
                    site: None,
                    key: None,
                    message: format!("the config file does not parse: {}", e.message().trim()),
                };
                config.errors.push(error.clone());
                config.unparsable = Some(error);
                return config;
            }
        };
        let lines = Lines::new(text);
        if let Some(table) = raw.daemon {
            match daemon::parse_daemon(path, &lines, table.into_inner()) {
                Ok(settings) => config.daemon = settings,
                Err(e) => config.errors.push(e),
            }
        }
        let mut urls = site::UrlMemo::default();
        for (name, table) in raw.site {
            let line = lines.of(name.span().start);
            let name = name.into_inner();
            match site::parse_site(path, &lines, &name, line, table.into_inner(), &mut urls) {
                Ok(site) => {
                    config.sites.insert(name, Arc::new(site));
                }
                Err(e) => {
                    config.broken.insert(name, e.clone());
                    config.errors.push(e);
                }
            }
        }
        for conflict in urls::conflicts(config.sites.values().map(|s| &**s)) {
            config.errors.push(ConfigError::of_file(path, conflict));
        }
        for (name, table) in raw.share {
            let line = lines.of(name.span().start);
            let name = name.into_inner();
            let parsed = share::parse_share(
                path,
                &lines,
                &name,
                line,
                table.into_inner(),
                &config.sites,
                &config.broken,
            );
            match parsed {
                Ok((share, problems)) => {
                    config.errors.extend(problems);
                    let taken = config.shares.values().find(|s| s.socket == share.socket);
                    if let Some(other) = taken {
                        config.errors.push(ConfigError {
                            path: path.to_owned(),
                            line: Some(line),
                            site: None,
                            key: Some(format!("share.{name}.socket")),
                            message: format!(
                                "[share.{}] already uses {}: give each share its own socket",
                                other.name,
                                share.socket.display()
                            ),
                        });
                        continue;
                    }
                    config.shares.insert(name, Arc::new(share));
                }
                Err(e) => config.errors.push(e),
            }
        }
        for (name, table) in raw.proxy {
            let line = lines.of(name.span().start);
            let name = name.into_inner();
            let parsed =
                proxy::parse_proxy(path, &lines, &name, line, table.into_inner(), &config.sites);
            match parsed {
                Ok(p) => {
                    config.proxies.insert(name, Arc::new(p));
                }
                Err(e) => config.errors.push(e),
            }
        }
        config
    }

    /// The message for a `get` of a site that is not served.
    pub fn site_error(&self, name: &str) -> Option<String> {
        if self.sites.contains_key(name) {
            return None;
        }
        if let Some(e) = &self.unparsable {
            return Some(format!(
                "{e}; fix it (tokend reads it again as soon as it changes)"
            ));
        }
        if let Some(e) = self.broken.get(name) {
            return Some(format!(
                "site {name} is not usable: {e}; fix the config file"
            ));
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/c.toml"), text)
    }

    #[test]
    fn a_good_site() {
        let c = parse(
            r#"
[site.corp]
issuer = "https://auth.example.com"
client_id = "abc"
scopes = ["read", "write"]
"#,
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let s = &c.sites["corp"];
        assert_eq!(s.client_id, "abc");
        assert_eq!(s.scopes, ["read", "write"]);
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let c = parse("[site.a]\nissuer = \"x\"\nclient_id = \n");
        assert_eq!(c.errors.len(), 1);
        let msg = c.errors[0].to_string();
        assert!(msg.starts_with("/c.toml:3: "), "{msg}");
    }

    #[test]
    fn one_bad_site_does_not_stop_the_others() {
        let c = parse(
            r#"
[site.good]
token_url = "https://a/token"
client_id = "x"
grant = "client_credentials"
client_secret_env = "S"

[site.bad]
issuer = "https://a"
client_id = "y"
scops = ["z"]
"#,
        );
        assert!(c.sites.contains_key("good"));
        assert!(!c.sites.contains_key("bad"));
        let msg = c.errors[0].to_string();
        assert!(msg.contains("/c.toml:11: site bad: key `scops`"), "{msg}");
        assert!(msg.contains("did you mean `scopes`"), "{msg}");
        assert!(c.site_error("bad").is_some());
    }

    #[test]
    fn wrong_types_and_missing_keys() {
        let c = parse("[site.a]\nissuer = \"https://a\"\nclient_id = 5\n");
        assert!(c.errors[0]
            .to_string()
            .contains(":3: site a: key `client_id`: expected a string"));
        let c = parse("[site.a]\nissuer = \"https://a\"\n");
        assert!(
            c.errors[0]
                .to_string()
                .contains(":1: site a: key `client_id`: missing"),
            "{}",
            c.errors[0]
        );
        let c = parse("[site.a]\nclient_id = \"x\"\n");
        assert!(
            c.errors[0].to_string().contains("issuer"),
            "{}",
            c.errors[0]
        );
    }

    #[test]
    fn bad_site_names_are_rejected() {
        let c = parse("[site.\"a b\"]\nissuer = \"https://a\"\nclient_id = \"x\"\n");
        assert!(c.sites.is_empty());
        assert!(c.errors[0].to_string().contains("[A-Za-z0-9._-]"));
    }

    #[test]
    fn unknown_top_level_key() {
        let c = parse("[sites.a]\nissuer = \"x\"\n");
        assert!(
            c.errors[0].to_string().contains("/c.toml:1"),
            "{}",
            c.errors[0]
        );
    }
}
