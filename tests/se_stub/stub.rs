//! The Stack Exchange / Teams stub (`tests/se_stub/server.py`) seen from a
//! test: start it, point a site and the browser at it, read its counters,
//! call its API and approve a login with plain HTTP. Declared once in the
//! end-to-end binary (tests/tests/main.rs) for the stories that need it.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokend_e2e::{
    form_encode, http_exchange, ready_line, tests_dir, wait_output, Env, Output, Value,
};

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
        let Ok((line, reader)) = ready_line(stdout, Duration::from_secs(10)) else {
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

/// A tiny HTTP/1.1 exchange that also returns the headers (for `Location`);
/// `form` is sent as an `application/x-www-form-urlencoded` body.
pub fn request(
    method: &str,
    url: &str,
    form: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let headers: &[(&str, &str)] = if form.is_some() {
        &[("Content-Type", "application/x-www-form-urlencoded")]
    } else {
        &[]
    };
    http_exchange(method, url, headers, form)
}

/// What a `token login SITE --paste` run showed and did.
pub struct PasteLogin {
    /// The authorization URL it printed on stderr.
    pub authorization_url: String,
    /// Where the stub redirected after the approval: what was pasted back.
    pub pasted: String,
    /// How it ended; `stderr` is all of it.
    pub out: Output,
}

/// Runs `token login SITE --paste`: reads the authorization URL from its
/// stderr, approves it at the stub with plain HTTP, and writes the final
/// URL the stub redirects to on its stdin.
pub fn run_paste_login(env: &Env, se: &SeStub, site: &str) -> PasteLogin {
    let mut cmd = env
        .cmd(&["login", site, "--paste"])
        .env("BROWSER_MODE", "ignore")
        .command();
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn token login --paste");
    let mut stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let seen = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let prefix = format!("{}/oauth", se.base());
    let mut lines = Vec::new();
    let authorization_url = loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no authorization URL on the stderr of `token login {site} --paste`:\n{}",
                lines.join("\n")
            );
        };
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with(&prefix)) {
            break url.to_owned();
        }
        lines.push(line);
    };
    let pasted = se.approve(&authorization_url);
    writeln!(stdin, "{pasted}").unwrap();
    drop(stdin);
    let mut out = wait_output(child, Duration::from_secs(30), "token login --paste");
    out.stderr = seen.join().unwrap_or_default();
    PasteLogin {
        authorization_url,
        pasted,
        out,
    }
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
