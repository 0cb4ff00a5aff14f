//! `token credential get|store|erase`, also run as `git-credential-token`:
//! the git credential helper protocol. The site comes from the daemon's
//! `hosts` lists. With git 2.46+ (`capability[]=authtype`) the answer is a
//! Bearer credential marked ephemeral; older git gets `username=oauth2` and
//! the token as password, which GitHub, GitLab and most forges accept.

use std::io::{BufRead, Write};

use serde_json::Value;
use token_proto::{ErrorCode, LookupRequest, Op};

use crate::cli::{Format, GetArgs};
use crate::conn::Conn;
use crate::ClientError;

/// Reads git's `key=value` lines up to a blank line or EOF.
fn read_attributes(input: impl BufRead) -> Vec<(String, String)> {
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

/// What to print for git.
fn answer(attrs: &[(String, String)], token: &str, expires_at: Option<u64>) -> String {
    let authtype = attrs
        .iter()
        .any(|(k, v)| k == "capability[]" && v == "authtype");
    let mut out = String::new();
    if authtype {
        out.push_str("capability[]=authtype\nauthtype=Bearer\n");
        out.push_str(&format!("credential={token}\nephemeral=true\n"));
    } else {
        out.push_str(&format!("username=oauth2\npassword={token}\n"));
    }
    if let Some(at) = expires_at {
        out.push_str(&format!("password_expiry_utc={at}\n"));
    }
    out
}

pub fn run(action: &str) -> Result<u8, ClientError> {
    let attrs = read_attributes(std::io::stdin().lock());
    // git also calls `store` and `erase`: tokend owns the tokens, so there is
    // nothing to store, and a rejected token is replaced by the next refresh.
    if action != "get" {
        return Ok(0);
    }
    let Some(host) = attrs
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone())
    else {
        return Ok(0);
    };
    let site = match Conn::request(Op::Lookup(LookupRequest { host }), |_| Ok(())) {
        Ok(v) => v
            .get("site")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        // Not ours: stay silent so git asks its other helpers.
        Err(ClientError::Daemon(body)) if body.code == ErrorCode::UnknownSite => return Ok(0),
        Err(e) => return Err(e),
    };
    let reply = crate::cmd::get(&GetArgs {
        site,
        min_ttl: Some(60),
        scopes: Vec::new(),
        format: Format::Raw,
        no_login: false,
    })?;
    let text = answer(&attrs, &reply.access_token, reply.expires_at);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| ClientError::Other(format!("cannot write to git: {e}")))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_until_the_blank_line() {
        let input = b"protocol=https\nhost=git.example.com\ncapability[]=authtype\n\nignored=1\n";
        let attrs = read_attributes(&input[..]);
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[1], ("host".to_owned(), "git.example.com".to_owned()));
    }

    #[test]
    fn bearer_for_new_git_basic_for_old() {
        let new = vec![("capability[]".to_owned(), "authtype".to_owned())];
        assert_eq!(
            answer(&new, "t0k", Some(5)),
            "capability[]=authtype\nauthtype=Bearer\ncredential=t0k\nephemeral=true\npassword_expiry_utc=5\n"
        );
        assert_eq!(answer(&[], "t0k", None), "username=oauth2\npassword=t0k\n");
    }
}
