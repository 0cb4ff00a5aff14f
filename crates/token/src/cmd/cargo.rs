//! `cargo-credential-token --cargo-plugin`: cargo's credential-provider
//! protocol v1 (cargo ≥ 1.74), for registries with `auth-required`. Set up
//! with `credential-provider = ["cargo-credential-token"]` on the registry.
//!
//! One JSON line each way: this side says hello (`{"v":[1]}`), cargo sends
//! requests until it closes stdin. `get` (for every operation: read,
//! publish, yank, owners) answers the token of the site that serves the
//! registry's index URL (without `sparse+`), as `Bearer …` (or bare, with
//! `cargo_token = "raw"`), cached by cargo until the daemon would renew it.
//! A registry no site serves is `url-not-supported` (cargo asks its next
//! provider); a token that needs a login no one can do here is `not-found`.
//! `login` and `logout` belong to `token login` and `token logout`.

use std::io::{BufRead, BufReader, Write};

use serde_json::{json, Value};
use token_proto::TokenReply;

use super::served::{self, means_not_found, read_line_capped, Served};
use crate::ClientError;

/// The longest request line read from cargo.
const MAX_LINE: usize = 64 * 1024;

/// cargo trades nothing: the token must last through a build's downloads.
const MIN_TTL: u64 = 60;

const USAGE: &str = "\
cargo-credential-token: the cargo credential provider of tokend (cargo 1.74+).
cargo runs it as `cargo-credential-token --cargo-plugin` and speaks JSON lines.

Set up, in .cargo/config.toml:
  [registries.corp]
  index = \"sparse+https://cargo.example.com/index/\"
  credential-provider = [\"cargo-credential-token\"]
and serve the index URL from a site in tokend's config:
  urls = [\"https://cargo.example.com/index/\"]
  cargo_token = \"raw\"      # only for registries that want the bare token
Log in with `token login SITE`; `cargo login`/`cargo logout` are not used.
";

/// Runs the provider with its arguments (without the program name).
pub fn run(args: &[String]) -> u8 {
    match args.first().map(String::as_str) {
        Some("--cargo-plugin") => {}
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return 0;
        }
        Some("--version" | "version") => {
            println!("cargo-credential-token {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        _ => {
            eprintln!(
                "cargo-credential-token: cargo runs this with --cargo-plugin; set \
                 `credential-provider = [\"cargo-credential-token\"]` for the registry \
                 (see `cargo-credential-token --help`)"
            );
            return 2;
        }
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", json!({"v": [1]}))
        .and_then(|()| out.flush())
        .is_err()
    {
        return 1;
    }
    serve(
        &mut BufReader::new(std::io::stdin().lock()),
        &mut out,
        &mut |index| served::token_for(index, MIN_TTL),
    )
}

/// The token of the site that serves a registry's index URL, and that
/// site; `None` when no site serves it.
type Fetch<'a> = dyn FnMut(&str) -> Result<Option<(Served, TokenReply)>, ClientError> + 'a;

/// Answers cargo's requests until it closes stdin.
fn serve(input: &mut impl BufRead, out: &mut impl Write, fetch: &mut Fetch<'_>) -> u8 {
    loop {
        let answer = match read_line_capped(input, MAX_LINE) {
            Ok(None) => return 0,
            Ok(Some(Ok(line))) if line.trim_ascii().is_empty() => continue,
            Ok(Some(Ok(line))) => answer(&line, fetch),
            Ok(Some(Err(n))) => other(format!(
                "cargo sent a request line of {n} bytes, more than {MAX_LINE}"
            )),
            Err(e) => {
                eprintln!("cargo-credential-token: cannot read from cargo: {e}");
                return 1;
            }
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
    }
}

fn err(kind: &str) -> Value {
    json!({"Err": {"kind": kind}})
}

/// A failure cargo shows as it is, and stops on.
fn other(message: String) -> Value {
    json!({"Err": {"kind": "other", "message": message}})
}

/// The answer to one request line.
fn answer(line: &[u8], fetch: &mut Fetch<'_>) -> Value {
    let req: Value = match serde_json::from_slice(line) {
        Ok(v @ Value::Object(_)) => v,
        _ => return other("cargo sent a line that is not a JSON request object".to_owned()),
    };
    if req["v"] != json!(1) {
        return other(format!(
            "cargo asked for credential protocol version {}; this provider speaks 1",
            token_text::clean(&req["v"].to_string(), 40)
        ));
    }
    let kind = req["kind"].as_str().unwrap_or("");
    match kind {
        "get" => {}
        "login" | "logout" => {
            let how = if kind == "login" {
                "`token login SITE` logs in (tokend keeps and refreshes the token)"
            } else {
                "`token logout SITE` logs out"
            };
            let message = format!("cargo-credential-token does not {kind}: {how}");
            eprintln!("cargo-credential-token: {message}");
            return json!({"Err": {"kind": "operation-not-supported", "message": message}});
        }
        _ => return err("operation-not-supported"),
    }
    let Some(index) = req["registry"]["index-url"].as_str() else {
        return other("cargo sent a `get` without registry.index-url".to_owned());
    };
    let index = index.strip_prefix("sparse+").unwrap_or(index);
    match fetch(index) {
        Ok(Some((served, reply))) => granted(&served, &reply, crate::time::now_unix()),
        Ok(None) => err("url-not-supported"),
        Err(e) => failure(e),
    }
}

/// No token without a person, or no daemon: cargo may ask its next provider.
fn failure(e: ClientError) -> Value {
    if means_not_found(&e) {
        eprintln!("cargo-credential-token: {e}");
        return err("not-found");
    }
    other(e.to_string())
}

/// `get`'s answer: cached by cargo until the daemon would renew the token
/// (its `renew_at`), never past its expiry.
fn granted(served: &Served, reply: &TokenReply, now: u64) -> Value {
    let token = if served.cargo_raw {
        reply.access_token.clone()
    } else {
        format!("Bearer {}", reply.access_token)
    };
    let until = [reply.renew_at, reply.expires_at]
        .into_iter()
        .flatten()
        .min();
    let mut ok = json!({"kind": "get", "token": token, "operation_independent": true});
    match until {
        // Already due: good for this one request only.
        Some(t) if t <= now => ok["cache"] = json!("never"),
        Some(t) => {
            ok["cache"] = json!("expires");
            ok["expiration"] = json!(t);
        }
        None => ok["cache"] = json!("session"),
    }
    json!({"Ok": ok})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use token_proto::{ErrorBody, ErrorCode};

    fn site(raw: bool) -> Served {
        Served {
            site: "reg".into(),
            username: "oauth2".into(),
            cargo_raw: raw,
        }
    }

    fn reply(expires_at: Option<u64>, renew_at: Option<u64>) -> TokenReply {
        let mut r = TokenReply::default();
        r.access_token = "t0k".into();
        r.token_type = "Bearer".into();
        r.expires_at = expires_at;
        r.renew_at = renew_at;
        r
    }

    /// Runs `serve` over `input` with a registry map of one site for
    /// `http://127.0.0.1:1/index/`.
    fn session(input: &str, token: Result<TokenReply, ErrorCode>) -> Vec<Value> {
        let mut out = Vec::new();
        let code = serve(&mut input.as_bytes(), &mut out, &mut |index| {
            if index != "http://127.0.0.1:1/index/" {
                return Ok(None);
            }
            token
                .clone()
                .map(|t| Some((site(false), t)))
                .map_err(|c| ClientError::Daemon(ErrorBody::new(c, "site reg needs a login")))
        });
        assert_eq!(code, 0);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn get(index: &str, op: &str) -> String {
        json!({"v": 1, "registry": {"index-url": index, "name": "corp"}, "kind": "get", "operation": op, "args": []}).to_string()
    }

    #[test]
    fn get_answers_bearer_cached_until_the_renewal() {
        let r = granted(&site(false), &reply(Some(2000), Some(1700)), 1000);
        assert_eq!(
            r,
            json!({"Ok": {"kind": "get", "token": "Bearer t0k", "cache": "expires", "expiration": 1700, "operation_independent": true}})
        );
        let r = granted(&site(true), &reply(Some(2000), None), 1000);
        assert_eq!(r["Ok"]["token"], "t0k");
        assert_eq!(r["Ok"]["expiration"], 2000);
        assert_eq!(
            granted(&site(false), &reply(None, None), 1000)["Ok"]["cache"],
            "session"
        );
        assert_eq!(
            granted(&site(false), &reply(Some(900), Some(800)), 1000)["Ok"]["cache"],
            "never"
        );
    }

    #[test]
    fn read_and_publish_of_a_served_registry_get_the_token() {
        let input = format!(
            "{}\n{}\n",
            get("sparse+http://127.0.0.1:1/index/", "read"),
            get("sparse+http://127.0.0.1:1/index/", "publish")
        );
        let answers = session(&input, Ok(reply(Some(u64::MAX), None)));
        assert_eq!(answers.len(), 2);
        for a in answers {
            assert_eq!(a["Ok"]["token"], "Bearer t0k", "{a}");
        }
    }

    #[test]
    fn other_registries_logins_and_bad_lines() {
        let input = [
            get("sparse+https://elsewhere.example/index/", "read"),
            json!({"v": 1, "registry": {"index-url": "sparse+http://127.0.0.1:1/index/"}, "kind": "login", "token": "x"}).to_string(),
            json!({"v": 1, "registry": {"index-url": "sparse+http://127.0.0.1:1/index/"}, "kind": "logout"}).to_string(),
            json!({"v": 1, "kind": "cache-flush"}).to_string(),
            json!({"v": 2, "kind": "get"}).to_string(),
            "{garbage".to_owned(),
            "x".repeat(1 << 20),
        ]
        .join("\n");
        let a = session(&input, Ok(reply(None, None)));
        assert_eq!(a[0], json!({"Err": {"kind": "url-not-supported"}}));
        assert_eq!(a[1]["Err"]["kind"], "operation-not-supported");
        assert!(a[1]["Err"]["message"]
            .as_str()
            .unwrap()
            .contains("token login"));
        assert!(a[2]["Err"]["message"]
            .as_str()
            .unwrap()
            .contains("token logout"));
        assert_eq!(a[3], json!({"Err": {"kind": "operation-not-supported"}}));
        for bad in &a[4..] {
            assert_eq!(bad["Err"]["kind"], "other", "{bad}");
        }
        assert!(a[6]["Err"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576 bytes"));
        assert_eq!(a.len(), 7);
    }

    #[test]
    fn a_login_needed_and_not_allowed_is_not_found() {
        let input = get("sparse+http://127.0.0.1:1/index/", "read");
        let a = session(&input, Err(ErrorCode::LoginRequired));
        assert_eq!(a, vec![json!({"Err": {"kind": "not-found"}})]);
        let a = session(&input, Err(ErrorCode::ProviderError));
        assert_eq!(a[0]["Err"]["kind"], "other");
    }
}
