//! The Stack Exchange / Teams stub (`tests/se_stub/server.py`) seen from a
//! test: start it, point a site and the browser at it, read its counters,
//! call its API and approve a login with plain HTTP. Included by the test
//! files that need it with `#[path = "../se_stub/stub.rs"] mod stub;`.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokend_e2e::{form_encode, tests_dir, Env, Value};

/// The app key the stub accepts (its `SE_KEY`).
pub const KEY: &str = "test-key";

/// A running `server.py`; killed on drop (its log printed if the test failed).
pub struct SeStub {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SeStub {
    pub fn start() -> SeStub {
        SeStub::start_with(&[])
    }

    /// With extra environment (`SE_CLIENT_SECRET`, `SE_OAUTH_DOMAIN`, `SE_EXPIRES`, ...).
    pub fn start_with(env: &[(&str, &str)]) -> SeStub {
        let dir = tempfile::Builder::new()
            .prefix("tokend-se-stub.")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("se-stub.log");
        let mut child = Command::new("python3")
            .arg(tests_dir().join("se_stub").join("server.py"))
            .env("PORT", "0")
            .env("SE_KEY", KEY)
            .env("SE_DEBUG", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(&log).expect("stub log")))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 for the Stack Exchange stub: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, r));
        });
        let Ok((Ok(line), reader)) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Stack Exchange stub did not start:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("bad ready line {line:?}: {e}"));
        let base = v["base"].as_str().expect("base").to_owned();
        SeStub {
            child,
            _stdout: reader,
            base,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/__test/stats`.
    pub fn stats(&self) -> Value {
        let (status, _, body) = request("GET", &format!("{}/__test/stats", self.base), None);
        assert_eq!(status, 200, "stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }

    /// `GET {api}/me?key=KEY&access_token=TOKEN` where `api` is `/2.3` or
    /// `/api/2.3`: (status, body).
    pub fn me(&self, api: &str, token: &str) -> (u16, String) {
        let url = format!(
            "{}{api}/me?key={KEY}&access_token={}",
            self.base,
            form_encode(token)
        );
        let (status, _, body) = request("GET", &url, None);
        (status, body)
    }

    /// Invalidates a token behind tokend's back.
    pub fn invalidate(&self, token: &str) {
        let url = format!(
            "{}/2.3/access-tokens/{}/invalidate?key={KEY}",
            self.base,
            form_encode(token)
        );
        let (status, _, body) = request("GET", &url, None);
        assert_eq!(status, 200, "invalidate: {body}");
    }

    /// Plays the user at an authorization URL of this stub with plain HTTP:
    /// GET the approval page, press Approve, return where SE redirects to
    /// (the URL a paste-mode user copies).
    pub fn approve(&self, authorization_url: &str) -> String {
        let (status, _, page) = request("GET", authorization_url, None);
        assert_eq!(status, 200, "approval page for {authorization_url}: {page}");
        let id = page
            .split("name=\"request\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no approval form: {page}"));
        let form = format!("request={}&decision=approve", form_encode(id));
        let (status, headers, body) =
            request("POST", &format!("{}/oauth/approve", self.base), Some(&form));
        assert_eq!(status, 302, "approve: {body}");
        header(&headers, "location")
            .unwrap_or_else(|| panic!("no Location after approval: {headers:?}"))
    }

    /// The `[site.NAME]` table of a `stackexchange` preset site with its
    /// endpoints overridden to this stub (`extra` lines appended).
    pub fn site(&self, name: &str, scopes: &[&str], extra: &str) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "[site.{name}]\npreset = \"stackexchange\"\nclient_id = \"4711\"\napi_key = \"{KEY}\"\n\
             scopes = [{}]\nauthorize_url = \"{b}/oauth\"\ntoken_url = \"{b}/oauth/access_token/json\"\n\
             api_base = \"{b}/2.3\"\n{extra}",
            scopes.join(", "),
            b = self.base
        )
    }

    /// Points `BROWSER` at the stub's browser script; returns the file it
    /// writes paste-mode URLs to.
    pub fn use_browser(&self, env: &mut Env) -> PathBuf {
        let paste = env.root().join("se-paste-url");
        env.set(
            "BROWSER",
            &tests_dir()
                .join("se_stub")
                .join("browser.py")
                .to_string_lossy(),
        );
        env.set("SE_PASTE_FILE", &paste.to_string_lossy());
        paste
    }
}

impl Drop for SeStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- se stub log ({}) ---\n{}", self.base, self.log());
        }
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// A tiny HTTP/1.1 exchange that also returns the headers (for `Location`).
pub fn request(
    method: &str,
    url: &str,
    form: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs: {url}"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = form.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed response {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (status, headers, payload.to_owned())
}

/// Waits for a file to appear with content, and returns its first line.
pub fn wait_for_file(path: &std::path::Path, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if let Some(line) = s.lines().next().filter(|l| !l.is_empty()) {
                return Some(line.to_owned());
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
