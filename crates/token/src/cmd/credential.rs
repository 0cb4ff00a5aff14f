//! `token credential get|store|erase`, also run as `git-credential-token`:
//! the git credential helper protocol. The daemon picks the site from the
//! sites' `hosts` lists, and only for an https remote (plain http only on
//! loopback) whose host and port a site lists.
//!
//! The token goes to git as HTTP Basic (`username` + the token as password,
//! with `password_expiry_utc`), which forges accept for OAuth tokens and which
//! git sends on every request of a push. Sites with `git_auth = "bearer"` get
//! `authtype=Bearer` on git 2.46+ (`capability[]=authtype`); git leaves that
//! header off the probe request of a push larger than `http.postBuffer`, so
//! such pushes need the buffer raised, and the helper says so.

use std::io::{BufRead, Write};

use token_proto::{ErrorCode, GitAuth, LookupReply, LookupRequest, Purpose};

use crate::cli::GetArgs;
use crate::{platform, ClientError};

/// Reads git's `key=value` lines up to a blank line or EOF.
pub(crate) fn read_attributes(input: impl BufRead) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    for line in input.lines().map_while(Result::ok) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            attrs.push((k.to_owned(), v.to_owned()));
        }
    }
    attrs
}

fn attribute<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Whether git said it understands `authtype` (2.46+).
fn knows_authtype(attrs: &[(String, String)]) -> bool {
    attrs
        .iter()
        .any(|(k, v)| k == "capability[]" && v == "authtype")
}

/// Whether `value` can be one attribute of git's credential protocol.
fn fit_for_git(value: &str) -> bool {
    !value.contains(['\n', '\r', '\0'])
}

/// `protocol://[user@]host/[path]` from git's attributes, the user name
/// percent-encoded (git hands it over decoded).
fn remote_url(protocol: &str, host: &str, path: Option<&str>, username: Option<&str>) -> String {
    let user = match username.filter(|u| !u.is_empty()) {
        Some(u) => {
            let mut enc = String::new();
            for b in u.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    enc.push(char::from(b));
                } else {
                    enc.push_str(&format!("%{b:02X}"));
                }
            }
            format!("{enc}@")
        }
        None => String::new(),
    };
    let path = path.unwrap_or("").trim_start_matches('/');
    format!("{protocol}://{user}{host}/{path}")
}

/// What to print for git.
fn answer(how: &LookupReply, bearer: bool, token: &str, expires_at: Option<u64>) -> String {
    let mut out = if bearer {
        format!("capability[]=authtype\nauthtype=Bearer\ncredential={token}\nephemeral=true\n")
    } else {
        format!("username={}\npassword={token}\n", how.username)
    };
    if let Some(at) = expires_at {
        out.push_str(&format!("password_expiry_utc={at}\n"));
    }
    out
}

pub fn run(action: &str) -> Result<u8, ClientError> {
    let attrs = read_attributes(std::io::stdin().lock());
    // git also calls `store` and `erase`: tokend owns the tokens, so there is
    // nothing to store, and a rejected token is replaced by the next refresh;
    // a login is never dropped because one request was refused.
    if action != "get" {
        return Ok(0);
    }
    let (Some(protocol), Some(host)) = (attribute(&attrs, "protocol"), attribute(&attrs, "host"))
    else {
        return Ok(0);
    };
    // The URL from git's attributes (the path too with
    // `credential.useHttpPath`, the user name when the remote names one),
    // for the daemon's URL map, in one `get`; `protocol` and `host` too,
    // for the `lookup` an older daemon is asked instead.
    let at = LookupRequest {
        protocol: protocol.to_owned(),
        host: host.to_owned(),
        url: Some(remote_url(
            protocol,
            host,
            attribute(&attrs, "path"),
            attribute(&attrs, "username"),
        )),
    };
    let args = GetArgs {
        min_ttl: Some(60),
        ..GetArgs::plain(String::new(), Some(Purpose::Git))
    };
    let (how, reply) = match super::get::get_served(&args, at) {
        Ok(found) => found,
        // Not ours (or not https): stay silent so git asks its other helpers.
        Err(ClientError::Daemon(body)) if body.code == ErrorCode::UnknownSite => return Ok(0),
        Err(e) => return Err(e),
    };
    let bearer = how.git_auth == GitAuth::Bearer;
    if bearer && !knows_authtype(&attrs) {
        eprintln!(
            "token: site {} wants Bearer for git (git_auth = \"bearer\"), which needs git 2.46 \
             or later; sending the token as a password instead",
            how.site
        );
    } else if bearer && platform::in_git_push() && !post_buffer_raised() {
        eprintln!(
            "token: site {} sends git a Bearer token, which git leaves off the first request \
             of a push larger than http.postBuffer (1 MiB): if this push fails, run \
             `git config http.postBuffer 67108864` (or use git_auth = \"basic\")",
            how.site
        );
    }
    // git's credential protocol is one `key=value` a line: a value with a
    // line break (or NUL) would add attributes of its own. The daemon
    // refuses such tokens; this holds even for one that got through.
    if !fit_for_git(&reply.access_token) || !fit_for_git(&how.username) {
        return Err(ClientError::Other(format!(
            "site {}: the token or user name holds a line break or NUL, so it is not given to git; run `token logout {}` and log in again",
            how.site, how.site
        )));
    }
    let text = answer(
        &how,
        bearer && knows_authtype(&attrs),
        &reply.access_token,
        reply.expires_at,
    );
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| ClientError::Other(format!("cannot write to git: {e}")))?;
    Ok(0)
}

/// Whether `http.postBuffer` is set in the git config that this push sees
/// (`-c` on the command line reaches us through the environment).
fn post_buffer_raised() -> bool {
    std::process::Command::new("git")
        .args(["config", "--get", "http.postBuffer"])
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_url_carries_path_and_user_name() {
        assert_eq!(
            remote_url("https", "git.example.com", None, None),
            "https://git.example.com/"
        );
        assert_eq!(
            remote_url(
                "https",
                "git.example.com:8443",
                Some("team-a/x.git"),
                Some("a@b c")
            ),
            "https://a%40b%20c@git.example.com:8443/team-a/x.git"
        );
    }

    #[test]
    fn a_value_with_a_line_break_is_not_fit_for_git() {
        assert!(fit_for_git("gho_abc))"));
        for bad in ["t\nurl=https://evil.example", "t\r", "t\0"] {
            assert!(!fit_for_git(bad), "{bad:?}");
        }
    }

    #[test]
    fn reads_until_the_blank_line() {
        let input = b"protocol=https\nhost=git.example.com\ncapability[]=authtype\n\nignored=1\n";
        let attrs = read_attributes(&input[..]);
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[1], ("host".to_owned(), "git.example.com".to_owned()));
    }

    #[test]
    fn basic_by_default_bearer_when_asked() {
        let how = LookupReply {
            site: "s".into(),
            git_auth: GitAuth::Basic,
            username: "oauth2".into(),
            ..Default::default()
        };
        assert_eq!(
            answer(&how, false, "t0k", Some(5)),
            "username=oauth2\npassword=t0k\npassword_expiry_utc=5\n"
        );
        assert_eq!(
            answer(&how, true, "t0k", Some(5)),
            "capability[]=authtype\nauthtype=Bearer\ncredential=t0k\nephemeral=true\npassword_expiry_utc=5\n"
        );
        assert_eq!(
            answer(&how, false, "t0k", None),
            "username=oauth2\npassword=t0k\n"
        );
    }

    #[test]
    fn capability_and_attributes() {
        let attrs = read_attributes(&b"protocol=https\nhost=h\ncapability[]=authtype\n\n"[..]);
        assert!(knows_authtype(&attrs));
        assert_eq!(attribute(&attrs, "host"), Some("h"));
        assert!(!knows_authtype(&read_attributes(&b"host=h\n"[..])));
    }
}
