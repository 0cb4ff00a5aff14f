//! The config file: `[site.NAME]` tables in TOML. Parsing keeps going past a
//! bad site so the good ones are served; every problem names the file, the
//! line and the key at fault.

pub(crate) mod client_auth;
mod daemon;
mod fast;
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
#[doc(hidden)]
pub use fast::check_fast_read;
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
    /// [`text_hash`] of the text read, when a file was read: the watcher
    /// tells by it whether a file that may have changed did.
    pub(crate) text_hash: Option<u64>,
}

/// A config text's fingerprint, to tell whether the file still holds the
/// text read. Not a secret, and not kept beyond the process; only the
/// user's own (trusted) file is hashed, so no one picks a text to collide.
/// FxHash's step over the text's 8-byte words, seeded with the length and
/// ended by splitmix64's finalizer: each step is one-to-one in the word and
/// in the state, so a change of any one word always changes the hash (a
/// thousand sites' config in a fraction of SipHash's time).
pub(crate) fn text_hash(text: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let b = text.as_bytes();
    let mut h = b.len() as u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = step(h, u64::from_le_bytes(word));
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = step(h, u64::from_le_bytes(last));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A key as written: one of the site keys (no copy) when the fast read
/// knows it, else its own text.
pub(crate) type Key = std::borrow::Cow<'static, str>;

/// A TOML table's entries, in the order written. A list, not a map: a
/// site has a handful of keys, and a thousand sites are parsed before the
/// daemon is ready. (The TOML parser has already refused duplicate keys.)
#[derive(Debug, Default)]
struct RawTable(Vec<(Spanned<Key>, Spanned<toml::Value>)>);

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
    type Item = (Spanned<Key>, Spanned<toml::Value>);
    type IntoIter = std::vec::IntoIter<Self::Item>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[derive(Default, Deserialize)]
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

/// The `[site.NAME]` tables of a document, as either read gives them:
/// every table's entries in one list (a site is a run of it: no list a
/// site, and none made again by `parse_site`), the sites in order of name.
#[derive(Debug, Default)]
pub(super) struct SiteTables {
    /// Each key, where it is (its byte offset) and its value, site after site.
    entries: Vec<(Key, usize, Option<toml::Value>)>,
    /// Each site's name, where its name is, and its run of `entries`.
    sites: Vec<(String, usize, std::ops::Range<usize>)>,
}

impl SiteTables {
    fn from_raw(raw: impl IntoIterator<Item = (Spanned<String>, Spanned<RawTable>)>) -> SiteTables {
        let mut tables = SiteTables::default();
        for (name, table) in raw {
            let at = name.span().start;
            tables.push_site(name.into_inner(), at);
            for (k, v) in table.into_inner() {
                tables.push_entry(k.span().start, k.into_inner(), v.into_inner());
            }
        }
        tables
    }

    fn push_site(&mut self, name: String, at: usize) {
        let start = self.entries.len();
        self.sites.push((name, at, start..start));
    }

    /// An entry of the last site pushed.
    fn push_entry(&mut self, at: usize, key: Key, value: toml::Value) {
        self.entries.push((key, at, Some(value)));
        if let Some((_, _, run)) = self.sites.last_mut() {
            run.end = self.entries.len();
        }
    }
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

/// The 1-based lines of byte offsets, from one pass over the text made
/// when the first line is asked for: a config of a thousand good sites
/// asks for none (a site keeps where its keys are, and only an error says
/// its line).
pub(crate) struct Lines<'a> {
    text: &'a str,
    /// Where each line starts.
    starts: std::cell::OnceCell<Vec<usize>>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Lines<'a> {
        Lines {
            text,
            starts: std::cell::OnceCell::new(),
        }
    }

    /// The line of byte `offset`.
    pub(crate) fn of(&self, offset: usize) -> usize {
        let starts = self.starts.get_or_init(|| {
            let newlines = self.text.bytes().enumerate().filter(|&(_, c)| c == b'\n');
            std::iter::once(0)
                .chain(newlines.map(|(i, _)| i + 1))
                .collect()
        });
        starts.partition_point(|&s| s <= offset)
    }
}

/// The `[site.NAME]` tables, taken out of the document `root` without
/// serde's visitors (a thousand sites are read before the daemon is
/// ready). `None`, with `root` as it was, when `site` is not a table of
/// tables: serde then refuses it, in its words.
fn take_sites(root: &mut toml::de::DeTable<'_>) -> Result<Option<SiteTables>, toml::de::Error> {
    use toml::de::DeValue;
    let tables = match root.get("site").map(Spanned::get_ref) {
        Some(DeValue::Table(sites)) => sites
            .values()
            .all(|t| matches!(t.get_ref(), DeValue::Table(_))),
        _ => false,
    };
    if !tables {
        return Ok(None);
    }
    let Some((_, sites)) = root.remove_entry("site") else {
        return Ok(None);
    };
    let DeValue::Table(sites) = sites.into_inner() else {
        return Ok(None);
    };
    let mut out = SiteTables::default();
    for (name, table) in sites {
        let DeValue::Table(table) = table.into_inner() else {
            continue;
        };
        out.push_site(name.get_ref().to_string(), name.span().start);
        for (key, value) in table {
            let at = key.span().start;
            let key = Key::Owned(key.into_inner().into_owned());
            out.push_entry(at, key, value_of(value)?.into_inner());
        }
    }
    Ok(Some(out))
}

/// A parsed TOML value as a [`toml::Value`]: strings, booleans and arrays
/// of them at once, the rest (numbers, dates, tables) through serde, which
/// gives the same value, or the same error, as a whole-document parse.
fn value_of(
    value: Spanned<toml::de::DeValue<'_>>,
) -> Result<Spanned<toml::Value>, toml::de::Error> {
    use toml::de::DeValue;
    let span = value.span();
    let value = match value.into_inner() {
        DeValue::String(s) => toml::Value::String(s.into_owned()),
        DeValue::Boolean(b) => toml::Value::Boolean(b),
        DeValue::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                values.push(value_of(item)?.into_inner());
            }
            toml::Value::Array(values)
        }
        other => toml::Value::deserialize(toml::de::ValueDeserializer::from(Spanned::new(
            span.clone(),
            other,
        )))?,
    };
    Ok(Spanned::new(span, value))
}

/// A site as `parse_site` made it (or why it could not), by name: small
/// (a thousand are sorted), each site in the `Arc` the daemon keeps it in.
type Parsed = Vec<(String, Result<Arc<SiteConfig>, Box<ConfigError>>)>;

/// The sites of a document in the common form (`fast::read`), each parsed
/// as soon as its table ends, so one table's entries are in memory at a
/// time; in order of name. `None` for any other document (what was parsed
/// of it is dropped).
fn fast_sites(
    path: &Path,
    lines: &Lines<'_>,
    urls: &mut site::SharedUrls,
    text: &str,
) -> Option<Parsed> {
    let mut parsed: Parsed = Vec::new();
    fast::read(text, |name, at, table| {
        let site = site::parse_site(path, lines, urls, &name, at, table);
        parsed.push((name, site.map(Arc::new).map_err(Box::new)));
    })?;
    parsed.sort_by(|(a, _), (b, _)| a.cmp(b));
    // A name written twice is the full parse's to refuse, in its words.
    if parsed.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(parsed)
}

impl Config {
    /// Reads and parses the file. A missing file is an empty config (with a
    /// hint in `errors`), not a failure: the daemon still starts. A file
    /// that another user could have written is refused as a whole.
    pub(crate) fn load(path: &Path) -> Config {
        let (message, missing) = match trust::read_trusted(path) {
            Ok(text) => {
                let mut config = Config::parse(path, &text);
                config.text_hash = Some(text_hash(&text));
                return config;
            }
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
        let lines = Lines::new(text);
        let mut urls = site::SharedUrls::default();
        // The common document (sites alone, plain values) without the TOML
        // parser, each site parsed as soon as its table is read; any other
        // through the parser (config/fast.rs).
        let (parsed, raw) = match fast_sites(path, &lines, &mut urls, text) {
            Some(parsed) => (parsed, RawFile::default()),
            None => {
                let whole = toml::de::DeTable::parse(text).and_then(|root| {
                    let span = root.span();
                    let mut root = root.into_inner();
                    let sites = take_sites(&mut root)?;
                    let rest = RawFile::deserialize(toml::de::Deserializer::from(Spanned::new(
                        span, root,
                    )))?;
                    Ok((sites, rest))
                });
                let (sites, mut raw) = match whole {
                    Ok(whole) => whole,
                    Err(e) => {
                        let error = ConfigError {
                            path: path.to_owned(),
                            line: e.span().map(|s| lines.of(s.start)),
                            site: None,
                            key: None,
                            message: format!(
                                "the config file does not parse: {}",
                                e.message().trim()
                            ),
                        };
                        config.errors.push(error.clone());
                        config.unparsable = Some(error);
                        return config;
                    }
                };
                if let Some(table) = raw.daemon.take() {
                    match daemon::parse_daemon(path, &lines, table.into_inner()) {
                        Ok(settings) => config.daemon = settings,
                        Err(e) => config.errors.push(e),
                    }
                }
                let SiteTables { mut entries, sites } = match sites {
                    Some(sites) => sites,
                    None => SiteTables::from_raw(std::mem::take(&mut raw.site)),
                };
                let parsed = sites
                    .into_iter()
                    .map(|(name, at, run)| {
                        let table = &mut entries[run];
                        let site = site::parse_site(path, &lines, &mut urls, &name, at, table);
                        (name, site.map(Arc::new).map_err(Box::new))
                    })
                    .collect();
                (parsed, raw)
            }
        };
        // In order of name (both reads give them so): the map is built in
        // one pass instead of a thousand inserts.
        let mut good = Vec::with_capacity(parsed.len());
        for (name, site) in parsed {
            match site {
                Ok(site) => good.push((name, site)),
                Err(e) => {
                    config.broken.insert(name, (*e).clone());
                    config.errors.push(*e);
                }
            }
        }
        config.sites = good.into_iter().collect();
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

    /// The site tables as serde makes them, and as `take_sites` does.
    fn both_ways(text: &str) -> (Vec<String>, Vec<String>) {
        let show = |sites: SiteTables| -> Vec<String> {
            sites
                .sites
                .iter()
                .flat_map(|(name, at, run)| {
                    let head = format!("{name}@{at}");
                    let entries = sites.entries[run.clone()]
                        .iter()
                        .map(|(k, at, v)| format!("{k}@{at} = {v:?}"));
                    std::iter::once(head).chain(entries).collect::<Vec<_>>()
                })
                .collect()
        };
        let serde: RawFile = toml::from_str(text).unwrap();
        let mut root = toml::de::DeTable::parse(text).unwrap().into_inner();
        let taken = take_sites(&mut root).unwrap().unwrap();
        (show(SiteTables::from_raw(serde.site)), show(taken))
    }

    #[test]
    fn site_tables_read_without_serde_are_what_serde_reads() {
        let text = r#"
[daemon]
log = "debug"

[site.b]
issuer = "https://b.example"
client_id = 'c'
scopes = ["openid", "read"]
dpop = true
refresh_before = 300
extra_params = { audience = "api", n = 1.5 }
hosts = []
when = 1979-05-27T07:32:00Z
nested = [[1, 2], ["x"]]

[site.a]
"quoted key" = """multi
line"""

[[site.a.file]]
path = "~/t"
"#;
        let (serde, taken) = both_ways(text);
        assert_eq!(serde, taken);
        assert_eq!(serde.len(), 13, "{serde:#?}");
        let c = parse(text);
        assert_eq!(c.daemon.log.as_deref(), Some("debug"));
    }

    #[test]
    fn a_document_whose_sites_are_not_tables_is_refused_in_serdes_words() {
        for text in [
            "site = 5\n",
            "[site]\na = 5\n",
            "[site.a]\nissuer = \"https://a\"\n[sites.b]\n",
            "[daemon]\n[site.a]\nx = 99999999999999999999\n",
        ] {
            let want = toml::from_str::<RawFile>(text).map(|_| ()).unwrap_err();
            let c = parse(text);
            assert!(c.unparsable.is_some(), "{text}: {:?}", c.errors);
            let got = c.unparsable.as_ref().unwrap();
            assert_eq!(
                got.message,
                format!("the config file does not parse: {}", want.message().trim()),
                "{text}"
            );
            assert_eq!(
                got.line,
                want.span().map(|s| Lines::new(text).of(s.start)),
                "{text}"
            );
        }
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
