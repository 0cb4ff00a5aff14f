//! Story: cargo gets a private registry's token from tokend.
//! `cargo-credential-token` speaks cargo's credential-provider protocol v1;
//! real cargo resolves and downloads a crate from a sparse registry
//! (tests/cargo_registry.py) that has `auth-required = true` and checks every
//! request's `Authorization` with the test provider. A registry no site
//! serves is `url-not-supported`; a login that cannot happen is `not-found`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokend_e2e::{
    bin, json, now_unix, path_with_bins, Daemon, Env, Output, Provider, PyService, Value,
};

/// The cargo that runs this test (cargo sets `CARGO` for its tests).
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// A registry (AUTH: `bearer` or `raw`), a site `crates` serving its index,
/// a daemon and a login.
struct World {
    env: Env,
    _provider: Provider,
    _daemon: Daemon,
    registry: PyService,
    token: String,
}

impl World {
    fn start(auth: &str, extra: &str) -> World {
        let provider = Provider::start(3600);
        let mut env = Env::new();
        let dir = env.root().join("registry");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("requests.log");
        let registry = PyService::start(
            "cargo_registry.py",
            &[
                dir.as_os_str(),
                std::ffi::OsStr::new(provider.issuer()),
                log.as_os_str(),
                std::ffi::OsStr::new(auth),
            ],
            &log,
        );
        env.write_config(&format!(
            "{}urls = [\"http://127.0.0.1:{}/index/\"]\n{extra}",
            Env::site_config("crates", &provider),
            registry.port
        ));
        let daemon = env.daemon();
        let token = env.token(&["get", "crates"]);
        token.ok();
        let token = token.line().to_owned();
        World {
            env,
            _provider: provider,
            _daemon: daemon,
            registry,
            token,
        }
    }

    fn index(&self) -> String {
        format!("sparse+http://127.0.0.1:{}/index/", self.registry.port)
    }

    /// A package that depends on `tokend-hello` from registry `corp` at
    /// `index`, with `cargo-credential-token` as corp's provider (in the
    /// private CARGO_HOME's config.toml).
    fn project(&self, index: &str) -> PathBuf {
        let dir = self.env.root().join("app");
        fs::create_dir_all(dir.join("src")).unwrap();
        let home = self.env.root().join("cargo-home");
        fs::create_dir_all(&home).unwrap();
        fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ntokend-hello = { version = \"0.1\", registry = \"corp\" }\n",
        )
        .unwrap();
        fs::write(dir.join("src/lib.rs"), "").unwrap();
        fs::write(
            home.join("config.toml"),
            format!(
                "[registries.corp]\nindex = \"{index}\"\ncredential-provider = [\"cargo-credential-token\"]\n"
            ),
        )
        .unwrap();
        dir
    }

    /// `cargo ARGS` in the project, with the build's helpers on PATH and a
    /// private CARGO_HOME.
    fn cargo(&self, project: &std::path::Path, args: &[&str]) -> Output {
        let mut all = vec![
            "--manifest-path".to_owned(),
            project.join("Cargo.toml").display().to_string(),
        ];
        all.splice(0..0, args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.env
            .cmd(&all)
            .program(cargo())
            .env("PATH", &path_with_bins())
            .env(
                "CARGO_HOME",
                &self.env.root().join("cargo-home").display().to_string(),
            )
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTC_WRAPPER")
            .timeout(Duration::from_secs(120))
            .run()
    }

    /// One session with the provider: hello, then each request's answer.
    fn provider(&self, requests: &[Value]) -> Vec<Value> {
        provider_session(&self.env, requests)
    }
}

/// Runs `cargo-credential-token --cargo-plugin` with `requests` (one a
/// line): its hello, then each answer.
fn provider_session(env: &Env, requests: &[Value]) -> Vec<Value> {
    let stdin: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let out = env
        .cmd(&["--cargo-plugin"])
        .program(bin("cargo-credential-token"))
        .stdin(&stdin)
        .timeout(Duration::from_secs(20))
        .run();
    out.ok();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{out}")))
        .collect();
    assert_eq!(lines[0], json!({"v": [1]}), "hello first: {out}");
    assert_eq!(lines.len(), requests.len() + 1, "{out}");
    lines[1..].to_vec()
}

fn get(index: &str, operation: &str) -> Value {
    json!({"v": 1, "registry": {"index-url": index, "name": "corp"}, "kind": "get", "operation": operation, "args": []})
}

#[test]
fn cargo_fetches_a_crate_from_an_auth_required_registry_with_the_sites_token() {
    let w = World::start("bearer", "");
    let project = w.project(&w.index());
    let out = w.cargo(&project, &["generate-lockfile"]);
    assert_eq!(
        out.code,
        0,
        "cargo generate-lockfile: {out}\n{}",
        w.registry.log()
    );
    let lock = fs::read_to_string(project.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"tokend-hello\""), "{lock}");
    let out = w.cargo(&project, &["fetch"]);
    assert_eq!(out.code, 0, "cargo fetch: {out}\n{}", w.registry.log());
    let log = w.registry.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /dl/tokend-hello/0.1.0 auth=Bearer -> 200")),
        "the crate was downloaded with the token: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /index/config.json auth=Bearer -> 200")),
        "{log}"
    );
    // Only cargo's first probe went without the token.
    assert!(
        log.lines().filter(|l| l.contains("-> 401")).count() <= 1,
        "{log}"
    );
    assert_eq!(w.env.browser_launches(), 1, "no second login");
}

#[test]
fn the_provider_answers_read_and_publish_and_refuses_login_and_logout() {
    let w = World::start("bearer", "");
    let index = w.index();
    let answers = w.provider(&[
        get(&index, "read"),
        get(&index, "publish"),
        json!({"v": 1, "registry": {"index-url": index}, "kind": "login", "token": "pasted"}),
        json!({"v": 1, "registry": {"index-url": index}, "kind": "logout"}),
    ]);
    let now = now_unix();
    for a in &answers[..2] {
        let ok = &a["Ok"];
        assert_eq!(ok["kind"], "get", "{a}");
        assert_eq!(ok["token"], format!("Bearer {}", w.token), "{a}");
        assert_eq!(ok["operation_independent"], true);
        assert_eq!(ok["cache"], "expires");
        let exp = ok["expiration"].as_u64().unwrap();
        // The provider's tokens live an hour; cargo's copy ends at the
        // daemon's renewal, before the expiry.
        assert!(exp > now && exp < now + 3600, "{a}");
    }
    assert_eq!(answers[2]["Err"]["kind"], "operation-not-supported");
    assert!(answers[2]["Err"]["message"]
        .as_str()
        .unwrap()
        .contains("token login"));
    assert!(answers[3]["Err"]["message"]
        .as_str()
        .unwrap()
        .contains("token logout"));
}

#[test]
fn a_registry_that_wants_the_bare_token_gets_it() {
    let w = World::start("raw", "cargo_token = \"raw\"\n");
    let answers = w.provider(&[get(&w.index(), "read")]);
    assert_eq!(
        answers[0]["Ok"]["token"],
        w.token.as_str(),
        "{}",
        answers[0]
    );
    let project = w.project(&w.index());
    let out = w.cargo(&project, &["fetch"]);
    assert_eq!(out.code, 0, "cargo fetch: {out}\n{}", w.registry.log());
    assert!(w
        .registry
        .log()
        .contains("GET /dl/tokend-hello/0.1.0 auth=raw -> 200"));
}

#[test]
fn a_registry_no_site_serves_is_url_not_supported() {
    let w = World::start("bearer", "");
    // The same server under a name no site lists.
    let other = format!("sparse+http://localhost:{}/index/", w.registry.port);
    let answers = w.provider(&[get(&other, "read")]);
    assert_eq!(answers[0], json!({"Err": {"kind": "url-not-supported"}}));
    let project = w.project(&other);
    let out = w.cargo(&project, &["generate-lockfile"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("no credential providers could handle the request"),
        "cargo found no provider for the registry: {out}"
    );
    assert!(
        !w.registry.log().contains("auth=Bearer"),
        "no token went to a registry no site serves: {}",
        w.registry.log()
    );
}

#[test]
fn a_login_that_cannot_happen_is_not_found_and_bad_lines_get_an_error() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}urls = [\"https://cargo.example.com/index/\"]\n",
        Env::site_config("crates", &provider)
    ));
    let _daemon = env.daemon();
    // Not logged in, and no browser, terminal or display to log in with.
    env.unset("BROWSER");
    let started = Instant::now();
    let answers = provider_session(
        &env,
        &[
            get("sparse+https://cargo.example.com/index/", "read"),
            json!({"v": 1, "kind": "get"}),
            json!({"v": 9, "kind": "get"}),
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(answers[0], json!({"Err": {"kind": "not-found"}}));
    assert_eq!(answers[1]["Err"]["kind"], "other");
    assert_eq!(answers[2]["Err"]["kind"], "other");
    assert_eq!(env.browser_launches(), 0);

    let big = "x".repeat(1 << 20);
    let out = env
        .cmd(&["--cargo-plugin"])
        .program(bin("cargo-credential-token"))
        .stdin(&format!("\n{{garbage\n{big}\n"))
        .run();
    out.ok();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1..].iter().all(|l| l["Err"]["kind"] == "other"),
        "{out}"
    );
    let out = env.cmd(&[]).program(bin("cargo-credential-token")).run();
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--cargo-plugin"), "{out}");
}

#[test]
fn without_a_daemon_the_provider_says_not_found_at_once() {
    let env = Env::new();
    let started = Instant::now();
    let answers = provider_session(
        &env,
        &[get("sparse+https://cargo.example.com/index/", "read")],
    );
    assert_eq!(answers[0], json!({"Err": {"kind": "not-found"}}));
    assert!(started.elapsed() < Duration::from_secs(3));
}
