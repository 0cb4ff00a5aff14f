//! The authorization server: a node oidc-provider on 127.0.0.1 with
//! test-control endpoints for counters, faults and delays.

use super::*;

/// Counters kept by the provider's `/__test/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub token_calls: u64,
    pub by_grant: BTreeMap<String, u64>,
    pub revocations: u64,
    /// `token_type_hint` of each revocation call (None when absent).
    pub revoked: Vec<Option<String>>,
    /// Token calls held (see [`Provider::hold`]) whose client went away:
    /// dropped unprocessed.
    pub dropped: u64,
}

impl Stats {
    /// Calls with this grant type (`refresh_token`, `authorization_code`, ...).
    pub fn grant(&self, grant_type: &str) -> u64 {
        self.by_grant.get(grant_type).copied().unwrap_or(0)
    }
}

/// A running oidc-provider (`tests/provider/server.mjs`). Killed on drop.
pub struct Provider {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    issuer: String,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Provider {
    /// Starts the provider with access tokens living `at_ttl_secs`.
    pub fn start(at_ttl_secs: u64) -> Provider {
        Provider::start_with(&[("AT_TTL", &at_ttl_secs.to_string())])
    }

    /// Starts the provider with extra environment (`AT_TTL`, `RT_TTL`, `PORT`,
    /// `PROVIDER_DEBUG`, `RT_POLICY=stock`).
    pub fn start_with(env: &[(&str, &str)]) -> Provider {
        let dir = tests_dir().join("provider");
        assert!(
            dir.join("node_modules").join("oidc-provider").is_dir(),
            "tests/provider/node_modules is missing: run scripts/test or `npm ci` in tests/provider"
        );
        let tmp = tempfile::Builder::new()
            .prefix("tokend-provider.")
            .tempdir()
            .expect("tempdir");
        let log = tmp.path().join("provider.log");
        let logf = fs::File::create(&log).expect("provider log");
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("server.mjs"))
            .current_dir(&dir)
            .env_remove("PROVIDER_DEBUG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf));
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run node (Node 20+ is needed for the test provider): {e}")
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (line, reader) = match ready_line(stdout, Duration::from_secs(15)) {
            Ok((line, reader)) if !line.trim().is_empty() => (line, reader),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "test provider did not start ({:?}); its log:\n{}",
                    other.map(|(l, _)| l.trim().to_owned()),
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("bad ready line from provider {line:?}: {e}"));
        let issuer = v["issuer"].as_str().expect("issuer").to_owned();
        let port = v["port"].as_u64().expect("port") as u16;
        Provider {
            child,
            _stdout: reader,
            issuer,
            port,
            log,
            _dir: tmp,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the provider wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    fn control(&self, method: &str, path: &str) -> Value {
        let (status, body) = http(method, &self.url(path), &[], None);
        assert_eq!(status, 200, "{method} {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The counters of token and revocation endpoint calls.
    pub fn stats(&self) -> Stats {
        let v = self.control("GET", "/__test/stats");
        Stats {
            token_calls: v["token_calls"].as_u64().unwrap_or(0),
            by_grant: v["by_grant"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            revocations: v["revocations"].as_u64().unwrap_or(0),
            revoked: v["revoked"]
                .as_array()
                .map(|a| a.iter().map(|h| h.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            dropped: v["dropped"].as_u64().unwrap_or(0),
        }
    }

    /// Zeroes the counters and drops pending faults and delays.
    pub fn reset(&self) {
        self.control("POST", "/__test/reset");
    }

    /// The next `count` token-endpoint calls fail: `"500"` / `"503"` (HTML
    /// body), `"429"` (JSON error, `Retry-After`), `"timeout"` (held 60 s),
    /// `"garbage"` (200, not JSON), `"truncated"` (200, JSON cut short),
    /// `"reset"` (socket destroyed), `"slow"` (a real answer 1.5 s late).
    pub fn fault(&self, kind: &str, count: u32) {
        self.control("POST", &format!("/__test/fault?kind={kind}&count={count}"));
    }

    /// The next token-endpoint call fails as `kind` with a duration: a
    /// `"timeout"` held `ms` (then 504), or a `"slow"` answer, real but `ms` late.
    pub fn fault_for(&self, kind: &str, ms: u64) {
        self.control(
            "POST",
            &format!("/__test/fault?kind={kind}&count=1&ms={ms}"),
        );
    }

    /// Holds token calls before oidc-provider processes them (`on`), or lets
    /// them go on; one whose client went away meanwhile is dropped. Answers
    /// how many calls oidc-provider is processing now.
    pub fn hold(&self, on: bool) -> u64 {
        let v = self.control("POST", &format!("/__test/hold?on={}", u8::from(on)));
        v["processing"].as_u64().unwrap_or(0)
    }

    /// How many token calls oidc-provider is processing now (past any hold).
    pub fn processing(&self) -> u64 {
        self.control("GET", "/__test/processing")["processing"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The next `count` token-endpoint calls are held `ms` milliseconds first.
    pub fn delay(&self, ms: u64, count: u32) {
        self.control("POST", &format!("/__test/delay?ms={ms}&count={count}"));
    }

    /// Every refresh token issued from now on carries `chars` more
    /// characters (0: none), checked when it comes back: a torn or altered
    /// one is refused with `invalid_grant`.
    pub fn pad_refresh_tokens(&self, chars: usize) {
        self.control("POST", &format!("/__test/rt_pad?chars={chars}"));
    }

    /// Waits until at least `at_least` token calls of `grant_type` were made.
    pub fn wait_grant(&self, grant_type: &str, at_least: u64, within: Duration) -> bool {
        wait_until(within, || self.stats().grant(grant_type) >= at_least)
    }

    /// Waits until there were more than `before` token calls (a request the
    /// test caused has reached the provider).
    pub fn wait_token_calls_above(&self, before: u64, within: Duration) -> bool {
        wait_until(within, || self.stats().token_calls > before)
    }

    /// The discovery document.
    pub fn discovery(&self) -> Value {
        let (status, body) = http(
            "GET",
            &self.url("/.well-known/openid-configuration"),
            &[],
            None,
        );
        assert_eq!(status, 200, "discovery: {body}");
        serde_json::from_str(&body).expect("discovery JSON")
    }

    /// GET the userinfo endpoint with a Bearer token: (status, body).
    pub fn userinfo(&self, access_token: &str) -> (u16, String) {
        let auth = format!("Bearer {access_token}");
        http("GET", &self.url("/me"), &[("Authorization", &auth)], None)
    }

    /// The userinfo endpoint (`/me`): a resource that verifies DPoP proofs.
    pub fn userinfo_url(&self) -> String {
        self.url("/me")
    }

    /// GET the userinfo endpoint as a DPoP client (RFC 9449 §7.1):
    /// `Authorization: DPoP <token>` and `DPoP: <proof>`. (status, body).
    pub fn userinfo_dpop(&self, access_token: &str, proof: &str) -> (u16, String) {
        let auth = format!("DPoP {access_token}");
        http(
            "GET",
            &self.userinfo_url(),
            &[("Authorization", &auth), ("DPoP", proof)],
            None,
        )
    }

    /// The provider's raw `/__test/stats` (workload identity lists
    /// included: `client_assertions`, `bearer_assertions`, `exchanges`).
    pub fn stats_json(&self) -> Value {
        self.control("GET", "/__test/stats")
    }

    /// A token from the trusted workload issuer (what a Kubernetes API
    /// server or GitHub Actions would issue): `iss` (default: the workload
    /// issuer itself), `sub`, `aud`, living five minutes.
    pub fn mint(&self, iss: Option<&str>, sub: &str, aud: &str) -> String {
        let mut path = format!(
            "/__test/mint?sub={}&aud={}",
            form_encode(sub),
            form_encode(aud)
        );
        if let Some(iss) = iss {
            path.push_str(&format!("&iss={}", form_encode(iss)));
        }
        let v = self.control("GET", &path);
        v["value"].as_str().expect("minted token").to_owned()
    }

    /// The public JWK the provider derives from the test key
    /// `tests/provider/keys/NAME` (what it registered for the client).
    pub fn client_jwk(&self, name: &str) -> Value {
        self.control("GET", &format!("/__test/client_jwk?name={name}"))
    }

    /// The token endpoint URL (the audience of client assertions).
    pub fn token_endpoint(&self) -> String {
        self.url("/token")
    }

    /// With `omit`, token-exchange answers leave out `issued_token_type`.
    pub fn omit_issued_token_type(&self, omit: bool) {
        let v = u8::from(omit);
        self.control("POST", &format!("/__test/exchange_itt?omit={v}"));
    }

    /// A resource server that accepts only an active access token issued
    /// for `aud`: (status, body).
    pub fn resource(&self, token: &str, aud: &str) -> (u16, String) {
        http(
            "GET",
            &self.url(&format!("/__test/resource?aud={}", form_encode(aud))),
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        )
    }

    /// Introspects a token (as `conf-basic`): the JSON answer.
    pub fn introspect(&self, token: &str) -> Value {
        // base64("conf-basic:" + urlencoded secret), precomputed to keep deps minimal.
        let body = format!("token={}", form_encode(token));
        let (status, text) = http(
            "POST",
            &self.url("/token/introspection"),
            &[
                (
                    "Authorization",
                    &format!("Basic {}", basic_auth("conf-basic", CONF_BASIC_SECRET)),
                ),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&body),
        );
        assert_eq!(status, 200, "introspection: {text}");
        serde_json::from_str(&text).expect("introspection JSON")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
        if thread::panicking() {
            eprintln!(
                "--- provider log ({}) ---\n{}",
                self.issuer,
                tail(&self.log(), 4000)
            );
        }
    }
}

/// The `conf-basic` client's secret (deliberately full of URL/Basic specials).
pub const CONF_BASIC_SECRET: &str = "p@ss:w+rd/=%&?";

/// application/x-www-form-urlencoded encoding of one value.
pub fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 6749 §2.3.1 Basic credentials: base64(urlenc(id) ":" urlenc(secret)).
pub fn basic_auth(id: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_encode(id),
        form_encode(secret)
    ))
}
