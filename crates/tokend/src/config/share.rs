//! One `[share.NAME]` table: a second socket that serves only some sites
//! (for a container, a devcontainer or an SSH host), checked key by key so
//! each problem carries the line of the key at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Value;

use super::{ConfigError, Lines, RawTable, SiteConfig};

/// `[share.NAME]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShareConfig {
    pub name: String,
    /// The line of `[share.NAME]`, for messages about it.
    pub line: usize,
    /// Absolute, `~/` expanded.
    pub socket: PathBuf,
    /// The sites served here, as written (unknown ones dropped with an error).
    pub sites: Vec<String>,
    /// Other uids admitted (the socket is then 0666 and admission is by peer uid).
    pub uids: Vec<u32>,
    /// May a caller here start a login?
    pub login: bool,
}

impl ShareConfig {
    pub(crate) fn serves(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == site)
    }
}

const KEYS: &str = "socket, sites, uids and login";

/// Parses one table. A listed site that the config does not have is an
/// error (returned beside the share, which serves the others).
pub(super) fn parse_share(
    path: &Path,
    lines: &Lines,
    name: &str,
    line: usize,
    raw: RawTable,
    sites: &BTreeMap<String, Arc<SiteConfig>>,
    broken: &BTreeMap<String, ConfigError>,
) -> Result<(ShareConfig, Vec<ConfigError>), ConfigError> {
    let err = super::table_error(path, "share", name);
    if let Some(e) = super::bad_table_name(&err, "share", name, line) {
        return Err(e);
    }
    let mut socket = None;
    let mut listed: Option<Vec<(String, usize)>> = None;
    let mut uids = Vec::new();
    let mut login = false;
    for (key, value) in raw {
        let kline = lines.of(key.span().start);
        let vline = lines.of(value.span().start);
        let key = key.into_inner();
        match (&*key, value.into_inner()) {
            ("socket", Value::String(s)) => {
                socket = Some(super::written_path(&s).map_err(|m| err(kline, Some("socket"), m))?)
            }
            ("sites", Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push((s, vline)),
                        other => {
                            return Err(err(
                                kline,
                                Some("sites"),
                                format!(
                                    "expected a list of site names, found a {}",
                                    other.type_str()
                                ),
                            ))
                        }
                    }
                }
                listed = Some(out);
            }
            ("uids", Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::Integer(n) => {
                            uids.push(u32::try_from(n).map_err(|_| {
                                err(kline, Some("uids"), format!("{n} is not a uid"))
                            })?)
                        }
                        other => {
                            return Err(err(
                                kline,
                                Some("uids"),
                                format!(
                                    "expected a list of numeric uids, found a {}",
                                    other.type_str()
                                ),
                            ))
                        }
                    }
                }
            }
            ("login", Value::Boolean(b)) => login = b,
            (k @ ("socket" | "sites" | "uids" | "login"), other) => {
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
                    format!("unknown key; [share.{name}] takes {KEYS}"),
                ))
            }
        }
    }
    let socket = socket.ok_or_else(|| {
        err(
            line,
            Some("socket"),
            "missing: say where the share's socket goes, e.g. socket = \"~/.local/state/tokend/NAME.sock\"".to_owned(),
        )
    })?;
    let listed = listed.ok_or_else(|| {
        err(
            line,
            Some("sites"),
            "missing: list the sites this socket serves, e.g. sites = [\"corp\"]".to_owned(),
        )
    })?;
    let mut problems = Vec::new();
    let mut served = Vec::new();
    for (site, sline) in listed {
        if sites.contains_key(&site) || broken.contains_key(&site) {
            served.push(site);
        } else {
            let known: Vec<&str> = sites.keys().map(String::as_str).collect();
            problems.push(err(
                sline,
                Some("sites"),
                format!(
                    "no site named `{site}` (the configured sites are {}): it is not shared; \
                     the share serves the others",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok((
        ShareConfig {
            name: name.to_owned(),
            line,
            socket,
            sites: served,
            uids,
            login,
        },
        problems,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/c.toml"), text)
    }

    const SITES: &str = "[site.a]\ntoken_url = \"https://a/token\"\nclient_id = \"x\"\n\
        grant = \"client_credentials\"\nclient_secret_env = \"S\"\n";

    #[test]
    fn a_share_and_its_defaults() {
        let c = parse(&format!(
            "{SITES}[share.box]\nsocket = \"/run/box.sock\"\nsites = [\"a\"]\n"
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let s = &c.shares["box"];
        assert_eq!(s.socket, Path::new("/run/box.sock"));
        assert_eq!(s.sites, ["a"]);
        assert!(s.uids.is_empty());
        assert!(!s.login);
    }

    #[test]
    fn an_unknown_site_is_an_error_and_the_rest_is_served() {
        let c = parse(&format!(
            "{SITES}[share.box]\nsocket = \"/run/box.sock\"\nuids = [1000]\nlogin = true\nsites = [\"a\", \"nope\"]\n"
        ));
        assert_eq!(c.shares["box"].sites, ["a"]);
        assert_eq!(c.shares["box"].uids, [1000]);
        assert!(c.shares["box"].login);
        let msg = c.errors[0].to_string();
        assert!(
            msg.starts_with("/c.toml:10: key `share.box.sites`: no site named `nope`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_shares() {
        let c = parse(&format!("{SITES}[share.box]\nsites = [\"a\"]\n"));
        assert!(c.shares.is_empty());
        assert!(c.errors[0]
            .to_string()
            .contains("share.box.socket`: missing"));
        let c = parse(&format!(
            "{SITES}[share.box]\nsocket = \"rel.sock\"\nsites = [\"a\"]\n"
        ));
        assert!(c.errors[0]
            .to_string()
            .contains(":7: key `share.box.socket`"));
        let c = parse(&format!(
            "{SITES}[share.box]\nsocket = \"/s\"\nsites = [\"a\"]\nuid = [1]\n"
        ));
        assert!(
            c.errors[0].to_string().contains("unknown key"),
            "{}",
            c.errors[0]
        );
        assert!(c.sites.contains_key("a"));
    }
}
