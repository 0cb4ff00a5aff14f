//! The URL map: which site serves a URL, from the sites' `urls` prefixes
//! and `hosts` entries. One matcher for every consumer: git's helper (with
//! the path when git sends one, `credential.useHttpPath`), `token get
//! --url`, the docker and cargo helpers, and later the proxy.
//!
//! A URL matches a prefix when scheme, host (case-insensitive, no trailing
//! dot, IDN as punycode) and port (the scheme's default when none is
//! written) are equal and the prefix's path is a prefix of the URL's path at
//! a `/` boundary. The longest match wins; two sites with the same longest
//! match are ambiguous unless the URL carries a user name that one of them
//! (alone) has as its `username`. A `hosts` entry `h[:p]` is the prefix
//! `https://h[:p]/` (and `http://h[:p]/` for a loopback host). A
//! scheme-less `host[:port][/path]` (what docker sends) is matched as
//! `https://` (and `http://` for a loopback host). A token never goes in
//! clear text over a network: plain `http` only for loopback hosts.

use std::fmt;

use url::{Host, Url};

use super::git::GitHost;
use super::SiteConfig;

/// One served prefix: `https://git.example.com/team-a/`, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UrlPrefix {
    /// `https`, or `http` (loopback hosts only).
    https: bool,
    /// Lower-case, punycode, no trailing dot; IPv6 in brackets.
    host: String,
    port: u16,
    /// Starts and ends with `/`.
    path: String,
}

/// Why a URL gets no token at all (before any site is looked at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `http` to a host that is not loopback, or another scheme.
    Insecure(String),
    /// Not a URL or `host[:port][/path]`.
    Malformed(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Insecure(url) => write!(
                f,
                "no token for {url}: tokens go only to https URLs (plain http only on a \
                 loopback host); use the https URL"
            ),
            Refused::Malformed(url) => write!(
                f,
                "`{url}` is not a URL (https://host[:port]/path) or host[:port][/path]"
            ),
        }
    }
}

/// A URL a caller asks about, as the prefixes it could match (two for a
/// scheme-less loopback `host:port`: https and http).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    candidates: Vec<UrlPrefix>,
    /// The URL's user name (percent-decoded), if it carries one.
    username: Option<String>,
    /// As the caller gave it, for messages.
    shown: String,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl UrlPrefix {
    /// A parsed http(s) URL as a prefix (or a URL to match): its path cut
    /// to what it names (query and fragment dropped).
    fn of(url: &Url) -> Option<UrlPrefix> {
        let https = match url.scheme() {
            "https" => true,
            "http" if is_loopback(url) => false,
            _ => return None,
        };
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(UrlPrefix {
            https,
            host,
            port: url.port_or_known_default()?,
            path: url.path().to_owned(),
        })
    }

    /// A `urls` entry of the config; the error says what shape is expected.
    pub(crate) fn parse(entry: &str) -> Result<UrlPrefix, String> {
        let url = Url::parse(entry).map_err(|_| {
            format!(
                "`{entry}` is not a URL: give a prefix like \"https://git.example.com/team-a/\" \
                 (for a whole host, `hosts` takes \"git.example.com\")"
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{entry}` carries a user name: give the URL without it, and the site's \
                 user name in `username`"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{entry}` has a query or fragment: a prefix is scheme, host, port and path"
            ));
        }
        let mut prefix = UrlPrefix::of(&url).ok_or_else(|| match url.scheme() {
            "http" => format!(
                "`{entry}` is plain http: tokens go only over TLS; use https (plain http is \
                 allowed only for 127.0.0.1, ::1 or localhost)"
            ),
            _ => format!("`{entry}` is not an https URL"),
        })?;
        if !prefix.path.ends_with('/') {
            prefix.path.push('/');
        }
        Ok(prefix)
    }

    /// The prefixes a `hosts` entry stands for: `https://h[:p]/`, and
    /// `http://h[:p]/` too when the host is loopback.
    pub(crate) fn of_host(entry: &GitHost) -> Vec<UrlPrefix> {
        ["https", "http"]
            .iter()
            .filter_map(|scheme| Url::parse(&format!("{scheme}://{}/", entry.display_entry())).ok())
            .filter_map(|url| UrlPrefix::of(&url))
            .collect()
    }

    /// How long a match of this prefix is (longer wins).
    fn len(&self) -> usize {
        self.path.len()
    }

    /// Whether `url` (a target candidate) is under this prefix.
    fn covers(&self, url: &UrlPrefix) -> bool {
        self.https == url.https
            && self.host == url.host
            && self.port == url.port
            && (url.path.starts_with(&self.path)
                || self
                    .path
                    .strip_suffix('/')
                    .is_some_and(|bare| url.path == bare))
    }

    /// Whether this is an `https` prefix (what `urls` lists to helpers).
    pub(crate) fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for UrlPrefix {
    /// `https://host[:port]/path/`, the default port left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, default) = if self.https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != default {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

impl Target {
    /// A URL (`https://alice@git.example.com/team-a/x.git`) or a
    /// scheme-less `host[:port][/path]`.
    pub(crate) fn parse(s: &str) -> Result<Target, Refused> {
        let s = s.trim();
        let malformed = || Refused::Malformed(s.to_owned());
        let (urls, shown) = if s.contains("://") {
            let url = Url::parse(s).map_err(|_| malformed())?;
            (vec![url], s.to_owned())
        } else {
            if s.is_empty() || s.starts_with('/') {
                return Err(malformed());
            }
            let https = Url::parse(&format!("https://{s}")).map_err(|_| malformed())?;
            let mut urls = vec![https.clone()];
            if is_loopback(&https) {
                // `localhost:5000`: the http URL too, its port as written
                // (else 80).
                let mut http = https.clone();
                if http.set_scheme("http").is_ok() {
                    if https.port().is_none() {
                        let _ = http.set_port(Some(80));
                    }
                    urls.push(http);
                }
            }
            (urls, s.to_owned())
        };
        let username = urls
            .first()
            .map(Url::username)
            .filter(|u| !u.is_empty())
            .map(percent_decode);
        let shown = without_userinfo(&shown);
        let candidates: Vec<UrlPrefix> = urls.iter().filter_map(UrlPrefix::of).collect();
        if candidates.is_empty() {
            return Err(match urls.first().map(Url::scheme) {
                Some("http" | "https") if urls.iter().all(|u| u.host_str().is_some()) => {
                    Refused::Insecure(shown)
                }
                Some("http" | "https") | None => Refused::Malformed(shown),
                Some(_) => Refused::Insecure(shown),
            });
        }
        Ok(Target {
            candidates,
            username,
            shown,
        })
    }

    /// The URL as the caller gave it, without any user info.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// The `hosts` entry or `urls` prefix that would serve this URL, for
    /// the hint of an error.
    pub(crate) fn as_prefix(&self) -> String {
        self.candidates
            .first()
            .map(|c| {
                let mut root = c.clone();
                root.path = "/".to_owned();
                root.to_string()
            })
            .unwrap_or_default()
    }
}

/// `a%40b` → `a@b` (invalid escapes kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without `user[:password]@`: never echo a password back.
fn without_userinfo(s: &str) -> String {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, s),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest.to_owned(),
    }
}

/// Why no single site serves a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No site lists a prefix of it.
    Unserved,
    /// Two sites serve it equally well, and no user name in the URL decides.
    Ambiguous {
        first: String,
        second: String,
        prefix: String,
    },
}

/// The site's user name as matched against a URL's (default `oauth2`).
fn username_of(site: &SiteConfig) -> &str {
    site.rare
        .username
        .as_deref()
        .unwrap_or(token_proto::DEFAULT_GIT_USERNAME)
}

/// The site that serves `target`, by the rules above.
pub(crate) fn find<'a>(
    sites: impl IntoIterator<Item = &'a SiteConfig>,
    target: &Target,
) -> Result<&'a SiteConfig, Miss> {
    let mut best: Vec<(&SiteConfig, &UrlPrefix)> = Vec::new();
    let mut best_len = 0;
    for site in sites {
        let Some(p) = site
            .served
            .iter()
            .filter(|p| target.candidates.iter().any(|c| p.covers(c)))
            .max_by_key(|p| p.len())
        else {
            continue;
        };
        if best.is_empty() || p.len() > best_len {
            best.clear();
            best_len = p.len();
            best.push((site, p));
        } else if p.len() == best_len {
            best.push((site, p));
        }
    }
    if best.len() > 1 {
        if let Some(user) = &target.username {
            let mut named = best.iter().filter(|(s, _)| username_of(s) == user);
            if let (Some(&one), None) = (named.next(), named.next()) {
                best = vec![one];
            }
        }
    }
    match best.as_slice() {
        [] => Err(Miss::Unserved),
        [(site, _)] => Ok(site),
        [(a, p), (b, _), ..] => Err(Miss::Ambiguous {
            first: a.name.clone(),
            second: b.name.clone(),
            prefix: p.to_string(),
        }),
    }
}

/// The pairs of sites that serve one prefix with one user name: no URL
/// can tell them apart, a config error naming both.
pub(crate) fn conflicts<'a>(sites: impl IntoIterator<Item = &'a SiteConfig>) -> Vec<String> {
    let mut seen: std::collections::HashMap<(String, &str), &str> =
        std::collections::HashMap::new();
    let mut out = Vec::new();
    for site in sites {
        let mut own: Vec<String> = site.served.iter().map(ToString::to_string).collect();
        own.sort();
        own.dedup();
        for prefix in own {
            let key = (prefix, username_of(site));
            match seen.get(&key) {
                Some(other) => out.push(format!(
                    "sites {other} and {} both serve {} (in `urls` or `hosts`) with user name \
                     `{}`: no URL can tell them apart; give one a longer `urls` prefix \
                     (\"{}team-a/\"), or give them different `username`s (a URL with \
                     `USER@` then picks)",
                    site.name, key.0, key.1, key.0
                )),
                None => {
                    seen.insert(key, &site.name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> super::super::Config {
        super::super::Config::parse(Path::new("/c.toml"), text)
    }

    fn site(name: &str, keys: &str) -> String {
        format!("[site.{name}]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\n{keys}\n")
    }

    fn served_by(c: &super::super::Config, url: &str) -> Result<String, Miss> {
        let target = Target::parse(url).unwrap();
        find(c.sites.values().map(|s| &**s), &target).map(|s| s.name.clone())
    }

    #[test]
    fn scheme_host_port_must_match() {
        let c = config(&site("a", "urls = [\"https://git.example.com/\"]"));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let ok = |u: &str| served_by(&c, u).is_ok();
        assert!(ok("https://git.example.com/x"));
        assert!(ok("https://GIT.Example.COM/x"), "host is case-insensitive");
        assert!(ok("https://git.example.com./x"), "trailing dot ignored");
        assert!(ok("https://git.example.com:443/x"), "default port");
        assert!(ok("git.example.com"), "scheme-less is https");
        assert!(ok("git.example.com:443/v2/"));
        assert!(!ok("https://git.example.com:8443/x"), "another port");
        assert!(!ok("git.example.com:8443"));
        assert!(!ok("https://git.example.com.evil.test/"));
        assert!(!ok("https://evil.example.com/"));
        assert!(!ok("https://example.com/"));
    }

    #[test]
    fn idn_hosts_match_as_punycode() {
        let c = config(&site("a", "urls = [\"https://Bücher.example/\"]"));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert!(served_by(&c, "https://xn--bcher-kva.example/").is_ok());
        assert!(served_by(&c, "https://BÜCHER.example/x").is_ok());
        assert!(served_by(&c, "bücher.example").is_ok());
        assert_eq!(
            c.sites["a"].served[0].to_string(),
            "https://xn--bcher-kva.example/"
        );
    }

    #[test]
    fn paths_match_at_a_slash_boundary_and_the_longest_wins() {
        let c = config(&format!(
            "{}{}{}",
            site("all", "hosts = [\"git.example.com\"]"),
            site("a", "urls = [\"https://git.example.com/team-a\"]"),
            site("b", "urls = [\"https://git.example.com/team-b/\"]"),
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let by = |u: &str| served_by(&c, u).unwrap();
        assert_eq!(by("https://git.example.com/team-a/repo.git"), "a");
        assert_eq!(by("https://git.example.com/team-a"), "a");
        assert_eq!(by("https://git.example.com/team-a/"), "a");
        assert_eq!(by("https://git.example.com/team-b/x/y"), "b");
        assert_eq!(
            by("https://git.example.com/team-ab/x"),
            "all",
            "no / boundary"
        );
        assert_eq!(by("https://git.example.com/team-b"), "b");
        assert_eq!(by("https://git.example.com/"), "all");
        assert_eq!(by("https://git.example.com"), "all");
        assert_eq!(by("git.example.com/team-a/x"), "a");
        assert_eq!(by("https://git.example.com/team-a/x?y=1#z"), "a");
        assert_eq!(
            served_by(&c, "https://other.example.com/team-a/"),
            Err(Miss::Unserved)
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let c = config(&format!(
            "{}{}",
            site("local", "hosts = [\"127.0.0.1:8080\", \"localhost\"]"),
            site("v6", "urls = [\"http://[::1]:3000/git/\"]"),
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(served_by(&c, "http://127.0.0.1:8080/x").unwrap(), "local");
        assert_eq!(served_by(&c, "https://127.0.0.1:8080/x").unwrap(), "local");
        assert_eq!(served_by(&c, "127.0.0.1:8080").unwrap(), "local");
        assert_eq!(served_by(&c, "http://localhost/x").unwrap(), "local");
        assert_eq!(served_by(&c, "localhost").unwrap(), "local");
        assert_eq!(served_by(&c, "http://[::1]:3000/git/r").unwrap(), "v6");
        assert_eq!(served_by(&c, "[::1]:3000/git/r").unwrap(), "v6");
        assert_eq!(served_by(&c, "http://127.0.0.1/x"), Err(Miss::Unserved));
        assert!(matches!(
            Target::parse("http://git.example.com/"),
            Err(Refused::Insecure(_))
        ));
        assert!(matches!(
            Target::parse("ftp://127.0.0.1/"),
            Err(Refused::Insecure(_))
        ));
        let e = config(&site("a", "urls = [\"http://git.example.com/\"]")).errors;
        assert!(e[0].to_string().contains("plain http"), "{}", e[0]);
    }

    #[test]
    fn bad_entries_and_targets() {
        for (entry, says) in [
            ("git.example.com/x", "not a URL"),
            ("https://alice@git.example.com/", "user name"),
            ("https://git.example.com/?a=1", "query"),
            ("ftp://git.example.com/", "not an https URL"),
        ] {
            let c = config(&site("a", &format!("urls = [\"{entry}\"]")));
            let e = c.errors[0].to_string();
            assert!(e.contains("key `urls`") && e.contains(says), "{entry}: {e}");
            assert_eq!(c.errors[0].line, Some(4));
        }
        for bad in ["", "/x", "https://", "https://exa mple.com/"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let t = Target::parse("https://alice:s3cret@git.example.com/x").unwrap();
        assert_eq!(t.shown(), "https://git.example.com/x");
        assert_eq!(t.as_prefix(), "https://git.example.com/");
        assert!(
            !Refused::Insecure(Target::parse("https://a:pw@h/").unwrap().shown().into())
                .to_string()
                .contains("pw")
        );
    }

    #[test]
    fn a_tie_is_decided_by_the_urls_user_name_or_is_an_error() {
        let c = config(&format!(
            "{}{}",
            site(
                "alice",
                "hosts = [\"git.example.com\"]\nusername = \"alice\""
            ),
            site(
                "bob",
                "urls = [\"https://git.example.com\"]\nusername = \"bob\""
            ),
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(
            served_by(&c, "https://alice@git.example.com/x").unwrap(),
            "alice"
        );
        assert_eq!(
            served_by(&c, "https://bob@git.example.com/x").unwrap(),
            "bob"
        );
        assert_eq!(
            served_by(&c, "https://b%6Fb@git.example.com/").unwrap(),
            "bob"
        );
        let tie = Miss::Ambiguous {
            first: "alice".into(),
            second: "bob".into(),
            prefix: "https://git.example.com/".into(),
        };
        assert_eq!(served_by(&c, "https://git.example.com/x"), Err(tie.clone()));
        assert_eq!(served_by(&c, "https://carol@git.example.com/"), Err(tie));
        // A user name does not pick against a longer path.
        let c = config(&format!(
            "{}{}",
            site(
                "alice",
                "hosts = [\"git.example.com\"]\nusername = \"alice\""
            ),
            site("team", "urls = [\"https://git.example.com/team/\"]"),
        ));
        assert_eq!(
            served_by(&c, "https://alice@git.example.com/team/x").unwrap(),
            "team"
        );
    }

    #[test]
    fn one_prefix_with_one_user_name_is_a_config_error_naming_both() {
        let c = config(&format!(
            "{}{}",
            site("one", "hosts = [\"git.example.com\"]"),
            site("two", "urls = [\"https://GIT.example.com/\"]"),
        ));
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        let e = c.errors[0].to_string();
        assert!(
            e.contains("sites one and two both serve https://git.example.com/"),
            "{e}"
        );
        // Both stay served by name; the URL is ambiguous.
        assert!(c.sites.contains_key("one") && c.sites.contains_key("two"));
        assert!(matches!(
            served_by(&c, "https://git.example.com/"),
            Err(Miss::Ambiguous { .. })
        ));
        // One site listing a prefix twice is no conflict.
        let c = config(&site(
            "one",
            "hosts = [\"git.example.com\"]\nurls = [\"https://git.example.com/\"]",
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }

    #[test]
    fn prefixes_print_normalized() {
        let c = config(&site(
            "a",
            "hosts = [\"Git.Example.com:443\", \"[::1]:3000\"]\nurls = [\"https://r.example:8443/v2\"]",
        ));
        let shown: Vec<String> = c.sites["a"]
            .served
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "https://r.example:8443/v2/",
                "https://git.example.com/",
                "https://[::1]:3000/",
                "http://[::1]:3000/",
            ]
        );
    }
}
