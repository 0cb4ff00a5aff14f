//! Story: a program that cannot run a helper talks to a local proxy that
//! adds the token. `[proxy.NAME]` forwards each request to its upstream
//! with the site's fresh token in place of the caller's `Authorization`;
//! a site that needs a login answers 401 naming the command; a dead
//! upstream is a 502; only our uid is served on loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tokend_e2e::{raw_get, require, Daemon, Env, Provider};

fn have_curl(test: &str) -> bool {
    let curl = Command::new("curl").arg("--version").output().is_ok();
    require(curl, test, "no curl", "apt-get install -y curl")
}

/// `corp` (logged in) and `fresh` (not), a proxy for each to the
/// provider, and a third to a port where nothing listens.
fn proxied(tcp_port: Option<u16>) -> (Provider, Env, Daemon, PathBuf) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let dir = env.root().join("px");
    let upstream = provider.issuer().to_owned();
    let extra = tcp_port.map_or(String::new(), |port| {
        format!("\n[proxy.tcp]\nsite = \"corp\"\nupstream = \"{upstream}\"\nlisten = \"127.0.0.1:{port}\"\n")
    });
    env.write_config(&format!(
        "{}{}\n[proxy.api]\nsite = \"corp\"\nupstream = \"{upstream}\"\nlisten = \"{}\"\n\n\
         [proxy.fresh]\nsite = \"fresh\"\nupstream = \"{upstream}\"\nlisten = \"{}\"\n\n\
         [proxy.dead]\nsite = \"corp\"\nupstream = \"http://127.0.0.1:9\"\nlisten = \"{}\"\n{extra}",
        Env::site_config("corp", &provider),
        Env::site_config("fresh", &provider),
        dir.join("api.sock").display(),
        dir.join("fresh.sock").display(),
        dir.join("dead.sock").display(),
    ));
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    (provider, env, daemon, dir)
}

/// `curl --unix-socket SOCK http://proxy/PATH [ARGS]`: (status, body).
fn curl_unix(sock: &Path, path: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .args(args)
        .arg(format!("http://proxy{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[test]
fn the_proxy_adds_the_token_and_replaces_the_callers() {
    if !have_curl("proxy::the_proxy_adds_the_token_and_replaces_the_callers") {
        return;
    }
    let (_provider, env, _daemon, dir) = proxied(None);
    let sock = dir.join("api.sock");
    assert_eq!(tokend_e2e::mode(&sock), 0o600);
    let (code, body) = curl_unix(&sock, "/me", &[]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"sub\""), "{body}");
    // The caller's own Authorization is replaced, not forwarded.
    let (code, body) = curl_unix(&sock, "/me", &["-H", "Authorization: Bearer not-a-token"]);
    assert_eq!(code, "200", "{body}");

    // A site that needs a login: 401 naming the command, and no browser.
    let launches = env.browser_launches();
    let (code, body) = curl_unix(&dir.join("fresh.sock"), "/me", &[]);
    assert_eq!(code, "401", "{body}");
    let v: tokend_e2e::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "login_required");
    assert_eq!(v["site"], "fresh");
    assert!(
        v["message"].as_str().unwrap().contains("token login fresh"),
        "{body}"
    );
    assert_eq!(env.browser_launches(), launches);

    // An upstream that is down: 502 with a clear body.
    let (code, body) = curl_unix(&dir.join("dead.sock"), "/me", &[]);
    assert_eq!(code, "502", "{body}");
    assert!(body.contains("cannot reach http://127.0.0.1:9"), "{body}");
}

#[test]
fn loopback_tcp_serves_only_our_uid() {
    if !have_curl("proxy::loopback_tcp_serves_only_our_uid") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_provider, env, daemon, _dir) = proxied(Some(port));
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/me"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code, "200", "log:\n{}", daemon.log());
    if !tokend_e2e::require_root("proxy::loopback_tcp_serves_only_our_uid (another uid)") {
        return;
    }
    let out = raw_get(&env, true, port, "/me");
    assert_eq!(out, "", "another uid is closed unanswered: {out}");
}

/// The proxy's Unix socket serves our uid and nobody else: another uid
/// cannot even reach it (its directory is ours, 0700), and would be
/// refused by the peer check if it could.
#[test]
fn another_uid_cannot_use_the_proxys_unix_socket() {
    let test = "proxy::another_uid_cannot_use_the_proxys_unix_socket";
    if !have_curl(test) || !tokend_e2e::require_root(test) {
        return;
    }
    let (_provider, env, _daemon, dir) = proxied(None);
    let sock = dir.join("api.sock");
    let (code, body) = curl_unix(&sock, "/me", &[]);
    assert_eq!(code, "200", "{body}");
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_UNIX)\n\
         try:\n\
         \x20 s.connect({:?})\n\
         \x20 s.sendall(b'GET /me HTTP/1.1\\r\\nHost: proxy\\r\\nConnection: close\\r\\n\\r\\n')\n\
         \x20 print('answered' if s.recv(100) else 'closed')\n\
         except OSError as e:\n\
         \x20 print('refused', e.errno)\n",
        sock.display().to_string()
    );
    let out = env.python(true, &script).run();
    assert!(
        out.stdout.starts_with("refused") || out.stdout.starts_with("closed"),
        "another uid reached the proxy: {out}"
    );
}

/// One proxy `[proxy.api]` to the provider for `[site.corp]` with `site_extra`.
fn one_proxy(site_extra: &str) -> (Provider, Env, Daemon, PathBuf) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let sock = env.root().join("px").join("api.sock");
    env.write_config(&format!(
        "{}{site_extra}\n[proxy.api]\nsite = \"corp\"\nupstream = \"{}\"\nlisten = \"{}\"\n",
        Env::site_config("corp", &provider),
        provider.issuer(),
        sock.display()
    ));
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    (provider, env, daemon, sock)
}

#[test]
fn a_dpop_site_through_the_proxy_sends_a_proof() {
    if !have_curl("proxy::a_dpop_site_through_the_proxy_sends_a_proof") {
        return;
    }
    let (provider, env, _daemon, sock) = one_proxy("dpop = true\n");
    for _ in 0..2 {
        // A fresh proof each time (the resource refuses a replayed one).
        let (code, body) = curl_unix(&sock, "/me", &[]);
        assert_eq!(code, "200", "{body}");
    }
    let token = env.token(&["get", "corp"]).line().to_owned();
    let (status, _) = provider.userinfo(&token);
    assert_eq!(status, 401, "the same token as Bearer is refused");
}

/// `python3 -c SCRIPT ARGS`, tied to the test, and the first line it
/// prints (the port it listens on).
fn python_upstream(script: &str, args: &[&Path]) -> (std::process::Child, String) {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", script])
        .args(args)
        .stdout(std::process::Stdio::piped());
    tokend_e2e::tie_to_test(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    (child, port)
}

/// A resource on 127.0.0.1 (python3) that refuses the first token it sees
/// with `401 error="invalid_token"` (as after a revocation) and accepts any
/// other, answering `ok AUTHORIZATION BODY-LENGTH`; `/hang` answers after
/// 30 s. Prints its port first.
const PICKY_UPSTREAM: &str = r#"
import http.server, sys
seen = []
class H(http.server.BaseHTTPRequestHandler):
    def do_any(self):
        if self.path == '/hang':
            import time
            time.sleep(30)
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n)
        auth = self.headers.get('Authorization', '')
        if not seen:
            seen.append(auth)
        if auth == seen[0]:
            self.send_response(401)
            self.send_header('WWW-Authenticate', 'Bearer error="invalid_token"')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        out = ('ok %s %d' % (auth, len(body))).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_any
    do_POST = do_any
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[test]
fn an_upstream_that_refuses_the_token_gets_one_refresh_and_a_retry() {
    if !have_curl("proxy::an_upstream_that_refuses_the_token_gets_one_refresh_and_a_retry") {
        return;
    }
    let (mut upstream, port) = python_upstream(PICKY_UPSTREAM, &[]);
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let sock = env.root().join("px").join("api.sock");
    env.write_config(&format!(
        "{}\n[proxy.api]\nsite = \"corp\"\nupstream = \"http://127.0.0.1:{}\"\nlisten = \"{}\"\ntimeout = \"2s\"\n",
        Env::site_config("corp", &provider),
        port.trim(),
        sock.display()
    ));
    let daemon = env.daemon();
    let first = env.token(&["get", "corp"]).line().to_owned();
    // Expiry counts whole seconds: a token refused in the second it was
    // issued is not told from its successor.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, body) = curl_unix(&sock, "/r", &["-d", "hello"]);
    assert_eq!(code, "200", "{body}; log:\n{}", daemon.log());
    let second = env.token(&["get", "corp"]).line().to_owned();
    assert_ne!(first, second, "refreshed once");
    assert_eq!(
        body,
        format!("ok Bearer {second} 5"),
        "the kept body was sent again"
    );

    // A 3 MB body streams through (too big to keep, so it is not retried).
    let big = env.root().join("big");
    std::fs::write(&big, vec![b'x'; 3_000_000]).unwrap();
    let data = format!("@{}", big.display());
    let (code, body) = curl_unix(&sock, "/big", &["--data-binary", &data]);
    assert_eq!(code, "200", "{body}");
    assert_eq!(body, format!("ok Bearer {second} 3000000"));

    // An upstream that hangs: 504 after the proxy's timeout.
    let started = std::time::Instant::now();
    let (code, body) = curl_unix(&sock, "/hang", &[]);
    assert_eq!(code, "504", "{body}");
    assert!(body.contains("did not answer within 2s"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let _ = upstream.kill();
    let _ = upstream.wait();
}

#[test]
fn a_proxy_follows_the_config() {
    let (provider, env, _daemon, sock) = one_proxy("");
    assert!(sock.exists());
    // Moved: the old socket goes, the new one listens.
    let moved = sock.with_file_name("moved.sock");
    let proxy = |listen: &Path| {
        format!(
            "{}\n[proxy.api]\nsite = \"corp\"\nupstream = \"{}\"\nlisten = \"{}\"\n",
            Env::site_config("corp", &provider),
            provider.issuer(),
            listen.display()
        )
    };
    env.write_config(&proxy(&moved));
    env.token(&["reload"]).ok();
    assert!(!sock.exists() && moved.exists());
    // Removed: nothing listens any more.
    env.write_config(&Env::site_config("corp", &provider));
    env.token(&["reload"]).ok();
    assert!(!moved.exists(), "a removed proxy stops listening");
    assert!(std::os::unix::net::UnixStream::connect(&moved).is_err());
}

/// A request that is not HTTP gets a 400 from the proxy, and it serves on.
#[test]
fn a_malformed_request_is_answered_400() {
    if !have_curl("proxy::a_malformed_request_is_answered_400") {
        return;
    }
    let (_provider, env, _daemon, dir) = proxied(None);
    let sock = dir.join("api.sock");
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_UNIX)\n\
         s.settimeout(5)\n\
         s.connect({:?})\n\
         s.sendall(b'NOT HTTP AT ALL\\r\\n\\r\\n')\n\
         print(s.recv(100).decode('latin-1').split('\\r\\n')[0])\n",
        sock.display().to_string()
    );
    let out = env.python(false, &script).run();
    assert!(out.stdout.starts_with("HTTP/1.1 400"), "{out}");
    let (code, body) = curl_unix(&sock, "/me", &[]);
    assert_eq!(code, "200", "{body}");
}

/// A resource over TLS on 127.0.0.1 (python3) answering `ok AUTHORIZATION`;
/// argv: its certificate and key. Prints its port first.
const TLS_UPSTREAM: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        out = ('ok %s' % self.headers.get('Authorization', '')).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// `openssl req` for a new P-256 key, unencrypted.
const EC_REQ: [&str; 6] = [
    "req",
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
];

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An https upstream: the proxy speaks TLS to it, trusting the system's
/// roots (here `SSL_CERT_FILE`, a test CA) and checking the name: the same
/// server reached by an address its certificate does not name is a 502.
#[test]
fn an_https_upstream_is_reached_over_tls_and_its_name_checked() {
    let test = "proxy::an_https_upstream_is_reached_over_tls_and_its_name_checked";
    if !have_curl(test) {
        return;
    }
    let openssl_there = Command::new("openssl").arg("version").output().is_ok();
    if !require(
        openssl_there,
        test,
        "no openssl",
        "apt-get install -y openssl",
    ) {
        return;
    }
    let mut env = Env::new();
    let pki = env.root().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    openssl(
        &pki,
        &[
            &EC_REQ[..],
            &["-x509", "-subj", "/CN=tokend test CA", "-days", "1"],
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    openssl(
        &pki,
        &[
            &EC_REQ[..],
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        pki.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ],
    );

    let (mut upstream, port) = python_upstream(
        TLS_UPSTREAM,
        &[&pki.join("leaf.crt"), &pki.join("leaf.key")],
    );
    let port = port.trim();

    let provider = Provider::start(3600);
    env.set("SSL_CERT_FILE", pki.join("ca.crt").to_str().unwrap());
    let dir = env.root().join("px");
    env.write_config(&format!(
        "{}\n[proxy.tls]\nsite = \"corp\"\nupstream = \"https://localhost:{port}\"\nlisten = \"{}\"\n\n\
         [proxy.misnamed]\nsite = \"corp\"\nupstream = \"https://127.0.0.1:{port}\"\nlisten = \"{}\"\n",
        Env::site_config("corp", &provider),
        dir.join("tls.sock").display(),
        dir.join("misnamed.sock").display(),
    ));
    let daemon = env.daemon();
    let token = env.token(&["get", "corp"]).line().to_owned();
    for _ in 0..2 {
        // Twice: the second request goes on the kept TLS connection.
        let (code, body) = curl_unix(&dir.join("tls.sock"), "/me", &[]);
        assert_eq!(code, "200", "{body}; log:\n{}", daemon.log());
        assert_eq!(body, format!("ok Bearer {token}"));
    }
    let (code, body) = curl_unix(&dir.join("misnamed.sock"), "/me", &[]);
    assert_eq!(code, "502", "{body}");
    assert!(
        body.contains("cannot reach https://127.0.0.1:") && body.contains("certificate"),
        "{body}"
    );
    assert!(!body.contains(&token), "{body}");
    let _ = upstream.kill();
    let _ = upstream.wait();
}

/// The proxy keeps a token for at most a second between requests: a
/// logout reaches it within that (then: 401, the login to run).
#[test]
fn a_logout_reaches_the_proxy_within_a_second() {
    if !have_curl("proxy::a_logout_reaches_the_proxy_within_a_second") {
        return;
    }
    let (_provider, env, _daemon, sock) = one_proxy("");
    let (code, body) = curl_unix(&sock, "/me", &[]);
    assert_eq!(code, "200", "{body}");
    env.token(&["logout", "corp"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, body) = curl_unix(&sock, "/me", &[]);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("token login corp"), "{body}");
}
