//! Story: container tools get their registry credentials from tokend.
//! `docker-credential-token` (docker's credential helper protocol, found by
//! `"credHelpers": {"127.0.0.1:PORT": "token"}`) answers the registry's site
//! token. A real OCI registry (Debian's `docker-registry`, the distribution
//! server) runs with token authentication, its token service
//! (tests/registry_token.py) accepting Basic `oauth2:<access token>` only when
//! the test provider accepts the token, as GitLab's and Harbor's do; real
//! `skopeo` copies an image in and inspects it back. A registry no site serves
//! gets the convention's "credentials not found", and skopeo goes on
//! anonymously with no browser opened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokend_e2e::{
    bin, free_port, http, json, on_path, path_with_bins, require, tests_dir, tie_to_test,
    wait_until, Daemon, Env, Output, Provider, PyService, Value,
};

const REGISTRY: &str = "/usr/bin/docker-registry";
const INSTALL: &str = "apt-get install -y --no-install-recommends skopeo docker-registry";

/// Whether skopeo and the registry are here (else `test` is skipped, or fails
/// under the strict switch).
fn tools(test: &str) -> bool {
    require(
        on_path("skopeo") && Path::new(REGISTRY).is_file() && on_path("openssl"),
        test,
        "no skopeo, docker-registry or openssl",
        INSTALL,
    )
}

/// The distribution registry with token auth, and its token service.
struct Registry {
    child: Child,
    port: u16,
    tokens: PyService,
    log: PathBuf,
}

impl Registry {
    fn start(dir: &Path, provider: &Provider) -> Registry {
        let dir = dir.join("registry");
        fs::create_dir_all(&dir).unwrap();
        let tokens = PyService::start(
            "registry_token.py",
            &[
                dir.as_os_str(),
                std::ffi::OsStr::new(provider.issuer()),
                dir.join("tokens.log").as_os_str(),
            ],
            &dir.join("tokens.log"),
        );
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: http://127.0.0.1:{tp}/token\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {cert}\n",
            root = dir.join("data").display(),
            tp = tokens.port,
            service = tokens.ready["service"].as_str().unwrap(),
            issuer = tokens.ready["issuer"].as_str().unwrap(),
            cert = tokens.ready["cert"].as_str().unwrap(),
        );
        fs::write(dir.join("config.yml"), config).unwrap();
        let log = dir.join("registry.log");
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(REGISTRY);
        cmd.arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        tie_to_test(&mut cmd);
        let child = cmd.spawn().expect("docker-registry serve");
        let mut reg = Registry {
            child,
            port,
            tokens,
            log,
        };
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "the registry did not listen: {}", reg.log());
        let (status, _) = http("GET", &format!("http://127.0.0.1:{port}/v2/"), &[], None);
        assert_eq!(status, 401, "the registry asks for a token: {}", reg.log());
        assert!(reg.child.try_wait().unwrap().is_none());
        reg
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- registry log ---\n{}", self.log());
        }
    }
}

/// A provider, a registry, a site `reg` that serves it (and
/// `registry.example.com`), its daemon and a login.
struct World {
    provider: Provider,
    env: Env,
    _daemon: Daemon,
    registry: Registry,
    token: String,
}

impl World {
    /// The world of `test`, or `None` (skipped) without skopeo or the registry.
    fn for_test(test: &str) -> Option<World> {
        tools(test).then(World::start)
    }

    fn start() -> World {
        let provider = Provider::start(3600);
        let mut env = Env::new();
        let registry = Registry::start(env.root(), &provider);
        env.write_config(&format!(
            "{}urls = [\"http://{}/\", \"https://registry.example.com\"]\n",
            Env::site_config("reg", &provider),
            registry.host()
        ));
        let daemon = env.daemon();
        let token = env.token(&["get", "reg"]);
        token.ok();
        let token = token.line().to_owned();
        World {
            provider,
            env,
            _daemon: daemon,
            registry,
            token,
        }
    }

    /// `docker-credential-token ARGS` with `stdin`.
    fn helper(&self, args: &[&str], stdin: &str) -> Output {
        self.env
            .cmd(args)
            .program(bin("docker-credential-token"))
            .stdin(stdin)
            .timeout(Duration::from_secs(20))
            .run()
    }

    /// An authfile whose `credHelpers` send `hosts` to `token`.
    fn authfile(&self, hosts: &[&str]) -> PathBuf {
        let helpers: serde_json::Map<String, Value> = hosts
            .iter()
            .map(|h| ((*h).to_owned(), json!("token")))
            .collect();
        let path = self.env.root().join("auth.json");
        fs::write(&path, json!({ "credHelpers": helpers }).to_string()).unwrap();
        path
    }

    /// `skopeo ARGS` with the build's helpers on PATH and an accept-all policy.
    fn skopeo(&self, args: &[&str]) -> Output {
        let policy = self.env.root().join("policy.json");
        fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        let mut all = vec!["--policy".to_owned(), policy.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.env
            .cmd(&all)
            .program("skopeo")
            .env("PATH", &path_with_bins())
            .timeout(Duration::from_secs(90))
            .run()
    }

    /// A tiny OCI image layout under the world's root (tests/oci_image.py).
    fn image(&self) -> PathBuf {
        let dir = self.env.root().join("image");
        let st = Command::new("python3")
            .arg(tests_dir().join("oci_image.py"))
            .arg(&dir)
            .status()
            .expect("python3 tests/oci_image.py");
        assert!(st.success());
        dir
    }

    /// `skopeo inspect docker://IMAGE` with the helper serving `helper_for`.
    fn inspect(&self, helper_for: &str, image: &str) -> Output {
        let auth = self.authfile(&[helper_for]);
        self.skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--authfile",
            &auth.display().to_string(),
            &format!("docker://{image}"),
        ])
    }

    /// Copies the image to `REPO:1` on the registry through the helper.
    fn push(&self, repo: &str) {
        let auth = self.authfile(&[&self.registry.host()]);
        let src = format!("oci:{}:1", self.image().display());
        let dest = format!("docker://{}/{repo}:1", self.registry.host());
        let out = self.skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            &auth.display().to_string(),
            &src,
            &dest,
        ]);
        assert_eq!(
            out.code,
            0,
            "skopeo copy: {out}\n{}",
            self.registry.tokens.log()
        );
    }
}

#[test]
fn skopeo_copies_an_image_in_and_inspects_it_back_with_the_sites_token() {
    let Some(w) = World::for_test(
        "docker::skopeo_copies_an_image_in_and_inspects_it_back_with_the_sites_token",
    ) else {
        return;
    };
    w.push("team/app");
    let host = w.registry.host();
    let out = w.inspect(&host, &format!("{host}/team/app:1"));
    assert_eq!(out.code, 0, "skopeo inspect: {out}");
    let inspected = out.json();
    assert_eq!(
        inspected["Labels"]["org.example.tokend-test"], "1",
        "{inspected}"
    );
    // The token service saw Basic oauth2:<the site's token> and granted
    // push: nothing anonymous got through.
    let log = w.registry.tokens.log();
    assert!(
        log.lines()
            .any(|l| l.contains("pull,push") && l.contains("user=oauth2") && l.ends_with("-> 200")),
        "{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("auth=-")),
        "no anonymous token request: {log}"
    );
    // One login, one browser: the helper never started another.
    assert_eq!(w.env.browser_launches(), 1);
    assert!(w.provider.stats().grant("authorization_code") >= 1);
}

#[test]
fn the_helper_answers_every_shape_of_server_url_and_lists_the_registries() {
    let Some(w) = World::for_test(
        "docker::the_helper_answers_every_shape_of_server_url_and_lists_the_registries",
    ) else {
        return;
    };
    let host = w.registry.host();
    for shape in [
        host.clone(),
        format!("http://{host}/v2/"),
        "registry.example.com".to_owned(),
        "registry.example.com:443".to_owned(),
        "https://registry.example.com".to_owned(),
        "https://registry.example.com/v1/".to_owned(),
        "REGISTRY.example.com.\n".to_owned(),
    ] {
        let out = w.helper(&["get"], &shape);
        assert_eq!(out.code, 0, "{shape}: {out}");
        let v = out.json();
        assert_eq!(v["ServerURL"], shape.trim(), "{shape}");
        assert_eq!(v["Username"], "oauth2");
        assert_eq!(v["Secret"], w.token.as_str(), "{shape}");
    }
    let out = w.helper(&["list"], "");
    out.ok();
    let list = out.json();
    // The https prefixes (a loopback http one is served but not listed).
    assert_eq!(list, json!({"https://registry.example.com/": "oauth2"}));
}

#[test]
fn a_registry_no_site_serves_is_used_anonymously_and_opens_no_browser() {
    let Some(w) = World::for_test(
        "docker::a_registry_no_site_serves_is_used_anonymously_and_opens_no_browser",
    ) else {
        return;
    };
    w.push("public/app");
    // `localhost:PORT` is the same registry under a name no site lists.
    let other = format!("localhost:{}", w.registry.port);
    let out = w.helper(&["get"], &other);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.line(), "credentials not found in native keychain");
    let started = Instant::now();
    let out = w.inspect(&other, &format!("{other}/public/app:1"));
    assert_eq!(out.code, 0, "anonymous pull of a public repository: {out}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = w.registry.tokens.log();
    assert!(
        log.lines()
            .any(|l| l.contains("repository:public/app:pull") && l.contains("auth=-")),
        "skopeo went on anonymously: {log}"
    );
    assert_eq!(
        w.env.browser_launches(),
        1,
        "only the first login's browser"
    );
}

#[test]
fn store_and_erase_change_nothing_and_bad_input_gets_a_clear_answer() {
    let Some(w) =
        World::for_test("docker::store_and_erase_change_nothing_and_bad_input_gets_a_clear_answer")
    else {
        return;
    };
    let creds = r#"{"ServerURL":"registry.example.com","Username":"u","Secret":"s"}"#;
    for op in ["store", "erase"] {
        let out = w.helper(&[op], creds);
        out.ok();
        assert_eq!(out.stdout, "");
    }
    let out = w.helper(&["get"], "registry.example.com");
    out.ok();
    assert_eq!(out.json()["Secret"], w.token.as_str(), "still logged in");

    let big = "a".repeat(1 << 20);
    for (what, stdin, needle) in [
        ("empty stdin", "", "no server URL"),
        ("garbage JSON", "{\"ServerURL\": [", "not a registry"),
        ("a 1 MiB line", big.as_str(), "1048576 bytes"),
    ] {
        let out = w.helper(&["get"], stdin);
        assert_eq!(out.code, 1, "{what}: {out}");
        assert_eq!(
            out.line(),
            "credentials not found in native keychain",
            "{what}"
        );
        assert!(out.stderr.contains(needle), "{what}: {out}");
        assert!(!out.stderr.contains("panicked"), "{what}: {out}");
    }
    let out = w.helper(&["fetch"], "");
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("unknown action `fetch`"), "{out}");
    let out = w.helper(&["get", "registry.example.com"], "");
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("takes no arguments"), "{out}");
    let out = w.helper(&[], "");
    assert_eq!(out.code, 2, "{out}");
    let out = w.helper(&["--help"], "");
    out.ok();
    assert!(out.stdout.contains("credHelpers"), "{out}");
}

#[test]
fn without_a_daemon_the_helper_says_not_found_at_once() {
    // No registry needed: nothing answers, and autostart is off.
    let env = Env::new();
    for stdin in ["registry.example.com", "127.0.0.1:5000"] {
        let started = Instant::now();
        let out = env
            .cmd(&["get"])
            .program(bin("docker-credential-token"))
            .stdin(stdin)
            .timeout(Duration::from_secs(10))
            .run();
        assert_eq!(out.code, 1, "{out}");
        assert_eq!(out.line(), "credentials not found in native keychain");
        assert!(out.stderr.contains("tokend"), "says why on stderr: {out}");
        assert!(started.elapsed() < Duration::from_secs(3), "fast: {out}");
    }
    let out = env
        .cmd(&["list"])
        .program(bin("docker-credential-token"))
        .run();
    out.ok();
    assert_eq!(out.json(), json!({}));
}

/// Tools run their helpers in the background (an IDE pulling images, a
/// build fetching crates all night): after one login nobody answered,
/// neither helper opens another tab, and each answers "not found" at once.
#[test]
fn after_an_unanswered_login_the_helpers_open_no_more_browsers() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("BROWSER_MODE", "ignore");
    env.set("TOKEND_LOGIN_TIMEOUT", "5");
    env.write_config(&format!(
        "{}urls = [\"https://registry.example.com\", \"https://cargo.example.com/index/\"]\n\n[daemon]\nlogin_cooldown = \"15m\"\n",
        Env::site_config("reg", &provider)
    ));
    let _daemon = env.daemon();
    let docker = |stdin: &str| {
        env.cmd(&["get"])
            .program(bin("docker-credential-token"))
            .stdin(stdin)
            .timeout(Duration::from_secs(60))
            .run()
    };
    // The first pull opens the browser; nobody answers.
    let first = docker("registry.example.com");
    assert_eq!(first.code, 1, "{first}");
    assert!(env.wait_browser_launches(1, Duration::from_secs(20)));
    let cargo_get = json!({"v": 1, "registry": {"index-url": "sparse+https://cargo.example.com/index/"}, "kind": "get", "operation": "read", "args": []});
    for i in 0..10 {
        let started = Instant::now();
        let out = docker("https://registry.example.com/v1/");
        assert_eq!(out.code, 1, "{out}");
        assert_eq!(out.line(), "credentials not found in native keychain");
        assert!(out.stderr.contains("token login reg"), "{out}");
        let out = env
            .cmd(&["--cargo-plugin"])
            .program(bin("cargo-credential-token"))
            .stdin(&format!("{cargo_get}\n"))
            .run();
        out.ok();
        assert!(
            out.stdout.ends_with("{\"Err\":{\"kind\":\"not-found\"}}\n"),
            "{out}"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "round {i} took {took:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        env.browser_launches(),
        1,
        "one opening for 21 background calls"
    );
}
