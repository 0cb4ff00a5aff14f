//! Which git remotes a site serves: the `hosts` entries, and the rule that
//! decides whether a remote git asks about is one of them.
//!
//! A token goes only where it is meant to: an `https` remote whose host and
//! port match an entry exactly (an entry without a port means the scheme's
//! default port), or a plain `http` remote on a loopback host. A token is
//! never sent in clear text over a network, nor to another port of a listed
//! host (another service, perhaps another user's, may listen there).

use std::net::IpAddr;

/// One `hosts` entry: `git.example.com`, `git.example.com:8443`, `[::1]:3000`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitHost {
    /// Lower-case, IPv6 literals without brackets.
    host: String,
    port: Option<u16>,
}

impl GitHost {
    /// Parses a config entry; the error says what shape was expected.
    pub fn parse(entry: &str) -> Result<GitHost, String> {
        if entry.contains("://") || entry.contains('/') {
            return Err(format!(
                "`{entry}` is not a host: give the host name and, for a port other than 443, \
                 `:PORT` (e.g. \"git.example.com\" or \"git.example.com:8443\"), without a scheme or path"
            ));
        }
        split_host_port(entry)
            .filter(|(host, _)| !host.is_empty() && !host.contains(char::is_whitespace))
            .map(|(host, port)| GitHost { host, port })
            .ok_or_else(|| format!("`{entry}` is not a host or host:port"))
    }

    /// `host[:port]`, IPv6 in brackets: the authority of its URL.
    pub fn display_entry(&self) -> String {
        GitHost::display(&self.host, self.port)
    }

    /// As written in a config, for messages.
    fn display(host: &str, port: Option<u16>) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// A remote as git describes it (`protocol=https`, `host=h[:port]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    host: String,
    port: u16,
    /// Of the remote's scheme: what an entry without a port means.
    default_port: u16,
}

/// Why a remote gets no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not https (or http on loopback): the token would cross a network in clear.
    Insecure { protocol: String, host: String },
    /// The host attribute does not parse.
    BadHost(String),
}

impl Remote {
    /// The remote of git's `protocol` and `host` attributes, if a token may
    /// be sent to it at all.
    pub fn new(protocol: &str, host: &str) -> Result<Remote, Refusal> {
        let Some((name, port)) = split_host_port(host) else {
            return Err(Refusal::BadHost(host.to_owned()));
        };
        let default_port = match protocol {
            "https" => 443,
            "http" if is_loopback(&name) => 80,
            _ => {
                return Err(Refusal::Insecure {
                    protocol: protocol.to_owned(),
                    host: host.to_owned(),
                })
            }
        };
        Ok(Remote {
            host: name,
            port: port.unwrap_or(default_port),
            default_port,
        })
    }

    /// Whether a `hosts` entry names this remote: same host, same port (an
    /// entry without a port names the default port of the remote's scheme,
    /// 443 for https; 80 for loopback http).
    pub fn matches(&self, entry: &GitHost) -> bool {
        entry.host == self.host && entry.port.unwrap_or(self.default_port) == self.port
    }

    /// The entry that would serve this remote, for the hint in an error.
    pub fn as_entry(&self) -> String {
        let port = (self.port != self.default_port).then_some(self.port);
        GitHost::display(&self.host, port)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (lower-case host, port).
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            // A bare IPv6 literal without brackets has several colons.
            Some((h, _)) if h.contains(':') => (s, None),
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(s: &str) -> GitHost {
        GitHost::parse(s).unwrap()
    }

    fn served(protocol: &str, host: &str, e: &str) -> bool {
        Remote::new(protocol, host).is_ok_and(|r| r.matches(&entry(e)))
    }

    #[test]
    fn https_host_and_port_must_match_exactly() {
        assert!(served("https", "git.example.com", "git.example.com"));
        assert!(served("https", "Git.Example.com:443", "git.example.com"));
        assert!(served("https", "git.example.com", "git.example.com:443"));
        assert!(served(
            "https",
            "git.example.com:8443",
            "git.example.com:8443"
        ));
        // Another port of a listed host is another service.
        assert!(!served("https", "git.example.com:8443", "git.example.com"));
        assert!(!served("https", "git.example.com", "git.example.com:8443"));
        assert!(!served("https", "evil.example.com", "git.example.com"));
        assert!(!served(
            "https",
            "git.example.com.evil.test",
            "git.example.com"
        ));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert_eq!(
            Remote::new("http", "git.example.com"),
            Err(Refusal::Insecure {
                protocol: "http".into(),
                host: "git.example.com".into()
            })
        );
        assert!(Remote::new("ftp", "127.0.0.1").is_err());
        assert!(Remote::new("", "git.example.com").is_err());
        assert!(served("http", "127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(served("http", "localhost", "localhost"));
        assert!(served("http", "[::1]:3000", "[::1]:3000"));
        assert!(!served("http", "127.0.0.1:8080", "127.0.0.1"));
    }

    #[test]
    fn entries_are_hosts_not_urls() {
        assert!(GitHost::parse("https://git.example.com").is_err());
        assert!(GitHost::parse("git.example.com/group").is_err());
        assert!(GitHost::parse("git.example.com:0").is_err());
        assert!(GitHost::parse("git.example.com:99999").is_err());
        assert!(GitHost::parse("").is_err());
        assert_eq!(entry("[::1]:3000").port, Some(3000));
        assert_eq!(entry("::1").host, "::1");
        assert_eq!(GitHost::display("::1", Some(3)), "[::1]:3");
        let remote = Remote::new("https", "Git.Example.com:443").unwrap();
        assert_eq!(remote.as_entry(), "git.example.com");
        let remote = Remote::new("http", "[::1]:3000").unwrap();
        assert_eq!(remote.as_entry(), "[::1]:3000");
    }
}
