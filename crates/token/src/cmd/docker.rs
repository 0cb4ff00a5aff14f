//! `docker-credential-token get|list|store|erase`: the docker credential
//! helper protocol, which docker, podman, skopeo, buildah, helm, oras and
//! crane speak (`"credHelpers": {"registry.example.com": "token"}`).
//!
//! `get` reads the registry on stdin, in whichever shape the tool sends it
//! (`host:port`, `https://host/v1/`, `https://host`), and prints
//! `{"ServerURL":…,"Username":…,"Secret":<access token>}`. A registry no site
//! serves, or a token that cannot be had without a person, prints the
//! convention's `credentials not found in native keychain` on stdout and
//! exits 1: the tool then goes on without credentials (anonymously). Tools
//! often hide the helper's stderr, so that answer comes at once. `store` and
//! `erase` change nothing: tokend owns the tokens and `token logout` the login.

use std::io::{BufReader, Write};

use serde_json::{json, Map, Value};

use super::served::{self, discard, means_not_found, read_line_capped};
use crate::ClientError;

/// What the protocol's clients match on stdout to mean "no credentials".
pub(crate) const NOT_FOUND: &str = "credentials not found in native keychain";

/// The longest server URL read from stdin.
const MAX_URL: usize = 4096;

/// The token a registry gets stays valid this long: the tool trades it for
/// a registry token at once.
const MIN_TTL: u64 = 60;

const USAGE: &str = "\
docker-credential-token: the docker credential helper of tokend, for docker,
podman, skopeo, buildah, helm, oras and crane.

Usage: docker-credential-token get|list|store|erase  (the tool writes on stdin)

  get     the registry (host[:port] or a URL) on stdin -> its site's token as
          {\"ServerURL\",\"Username\",\"Secret\"}; a registry no site serves ->
          `credentials not found in native keychain`, exit 1
  list    the registries the sites serve, as {\"URL\":\"USERNAME\"}
  store, erase   change nothing (`token logout SITE` ends a login)

Set up, in ~/.docker/config.json (or skopeo's/podman's --authfile):
  {\"credHelpers\": {\"registry.example.com\": \"token\"}}
and serve the registry from a site in tokend's config:
  urls = [\"https://registry.example.com\"]
";

/// What one run prints and its exit code.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    stdout: String,
    stderr: Option<String>,
    code: u8,
}

impl Answer {
    fn ok(stdout: String) -> Answer {
        Answer {
            stdout,
            stderr: None,
            code: 0,
        }
    }

    /// The convention's "no credentials", with why on stderr.
    fn not_found(why: Option<String>) -> Answer {
        Answer {
            stdout: format!("{NOT_FOUND}\n"),
            stderr: why,
            code: 1,
        }
    }

    fn failed(why: String) -> Answer {
        Answer {
            stdout: format!("{why}\n"),
            stderr: Some(why),
            code: 1,
        }
    }
}

/// Runs the helper with its arguments (without the program name).
pub fn run(args: &[String]) -> u8 {
    let answer = match args.first().map(String::as_str) {
        Some("get") if args.len() == 1 => get(&mut BufReader::new(std::io::stdin().lock())),
        Some("list") if args.len() == 1 => list(),
        Some("store" | "erase") if args.len() == 1 => {
            discard(std::io::stdin().lock());
            Answer::ok(String::new())
        }
        Some("version" | "--version") => Answer::ok(format!(
            "docker-credential-token {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        Some("help" | "--help" | "-h") => Answer::ok(USAGE.to_owned()),
        other => Answer {
            stdout: String::new(),
            stderr: Some(format!(
                "{}; run `docker-credential-token --help`",
                match other {
                    Some(op @ ("get" | "list" | "store" | "erase")) => {
                        format!("`{op}` takes no arguments (the tool writes on stdin)")
                    }
                    Some(op) => format!("unknown action `{}`", token_text::clean(op, 80)),
                    None => "no action given (get, list, store or erase)".to_owned(),
                }
            )),
            code: 2,
        },
    };
    if let Some(why) = &answer.stderr {
        eprintln!("docker-credential-token: {why}");
    }
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(answer.stdout.as_bytes())
        .and_then(|()| out.flush());
    answer.code
}

/// The registry as the tool wrote it: one line, trimmed.
fn server_url(input: &mut impl std::io::BufRead) -> Result<String, String> {
    let line = match read_line_capped(input, MAX_URL) {
        Ok(Some(Ok(line))) => line,
        Ok(Some(Err(n))) => {
            return Err(format!(
                "the server URL on stdin is {n} bytes long, more than {MAX_URL}: not a registry"
            ))
        }
        Ok(None) => return Err("no server URL on stdin".to_owned()),
        Err(e) => return Err(format!("cannot read stdin: {e}")),
    };
    let text = String::from_utf8(line).map_err(|_| "the server URL on stdin is not UTF-8")?;
    let url = text.trim();
    if url.is_empty() {
        return Err("no server URL on stdin".to_owned());
    }
    if !url.chars().all(url_char) {
        return Err(format!(
            "`{}` is not a registry host or URL",
            token_text::clean(url, 200)
        ));
    }
    Ok(url.to_owned())
}

/// Whether `c` may stand in a URL (RFC 3986's unreserved, reserved and `%`;
/// non-ASCII for IDN hosts): garbage on stdin is refused before it is sent.
fn url_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

fn get(input: &mut impl std::io::BufRead) -> Answer {
    let url = match server_url(input) {
        Ok(u) => u,
        Err(why) => return Answer::not_found(Some(why)),
    };
    match served::token_for(&url, MIN_TTL) {
        Ok(Some((s, t))) => Answer::ok(format!(
            "{}\n",
            json!({"ServerURL": url, "Username": s.username, "Secret": t.access_token})
        )),
        // No site serves it: quiet, the tool asks its other sources.
        Ok(None) => Answer::not_found(None),
        Err(e) if means_not_found(&e) => Answer::not_found(Some(e.to_string())),
        Err(e) => Answer::failed(e.to_string()),
    }
}

fn list() -> Answer {
    match served::served_urls() {
        Ok(urls) => Answer::ok(format!("{}\n", list_json(urls))),
        // No daemon to ask: nothing to list, as a helper with an empty store.
        Err(e @ ClientError::Unreachable(_)) => Answer {
            stdout: "{}\n".to_owned(),
            stderr: Some(e.to_string()),
            code: 0,
        },
        Err(e) => Answer::failed(e.to_string()),
    }
}

fn list_json(urls: Vec<(String, String)>) -> Value {
    Value::Object(
        urls.into_iter()
            .map(|(url, user)| (url, Value::String(user)))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn url(input: &[u8]) -> Result<String, String> {
        server_url(&mut &input[..])
    }

    #[test]
    fn reads_the_server_url_in_every_shape() {
        for shape in [
            "127.0.0.1:5000",
            "https://index.docker.io/v1/",
            "https://r.example",
        ] {
            assert_eq!(url(shape.as_bytes()).as_deref(), Ok(shape));
            assert_eq!(url(format!("{shape}\n").as_bytes()).as_deref(), Ok(shape));
            assert_eq!(
                url(format!(" {shape}\r\n").as_bytes()).as_deref(),
                Ok(shape)
            );
        }
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert_eq!(url(b"").unwrap_err(), "no server URL on stdin");
        assert_eq!(url(b"\n").unwrap_err(), "no server URL on stdin");
        for garbage in [&b"a b"[..], b"{\"ServerURL\": 1}", b"x\x1b[2J", b"<html>"] {
            assert!(
                url(garbage).unwrap_err().contains("not a registry"),
                "{garbage:?}"
            );
        }
        assert_eq!(
            url("r\u{e9}gistry.example".as_bytes()).as_deref(),
            Ok("r\u{e9}gistry.example")
        );
        assert!(url(b"\xff\xfe").unwrap_err().contains("UTF-8"));
        let big = vec![b'a'; 1 << 20];
        assert!(url(&big).unwrap_err().contains("1048576 bytes"));
    }

    #[test]
    fn not_found_is_the_conventions_line() {
        let a = Answer::not_found(None);
        assert_eq!(a.stdout, "credentials not found in native keychain\n");
        assert_eq!(a.code, 1);
    }

    #[test]
    fn list_maps_urls_to_user_names() {
        let v = list_json(vec![
            ("https://r.example/".into(), "oauth2".into()),
            ("http://127.0.0.1:5000/".into(), "bob".into()),
        ]);
        assert_eq!(
            v,
            json!({"https://r.example/": "oauth2", "http://127.0.0.1:5000/": "bob"})
        );
    }
}
