//! Story: a cluster that authenticates users with OIDC (the API server's
//! `--oidc-*` flags) wants an ID token. Real `kubectl` (v1.32), with a
//! kubeconfig whose exec plugin is `token kube corp --id-token`, reaches a
//! local TLS API stand-in (`tests/kube_api.py`) that accepts only a valid ID
//! token: RS256 signature checked against oidc-provider's JWKS, `iss`, `aud`
//! = the client id, `exp`. The access token in its place is refused.
//! Skipped with a message where `kubectl`, `openssl` or `python3` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use tokend_e2e::{bin, ready_line, require, serve_corp, tests_dir, tie_to_test, Env, Value};

fn on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

/// The stand-in API server; killed on drop.
struct KubeApi {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    port: u16,
    log: PathBuf,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KubeApi {
    /// A self-signed certificate for localhost in `dir`, and the stand-in
    /// trusting ID tokens of `issuer` for `client_id`.
    fn start(dir: &Path, issuer: &str, client_id: &str) -> KubeApi {
        let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-days", "1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(st.success(), "openssl req -x509 failed");
        let log = dir.join("kube-api.log");
        let mut cmd = Command::new("python3");
        cmd.arg(tests_dir().join("kube_api.py"))
            .arg(&cert)
            .arg(&key)
            .args([issuer, client_id])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        tie_to_test(&mut cmd);
        let mut child = cmd.spawn().expect("run kube_api.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let (line, reader) = ready_line(stdout, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("kube_api.py did not start: {e}"));
        let v: Value = serde_json::from_str(line.trim()).expect("ready line");
        KubeApi {
            child,
            _stdout: reader,
            port: v["port"].as_u64().expect("port") as u16,
            log,
        }
    }

    /// What the stand-in saw, one JSON object a request.
    fn seen(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }
}

/// A kubeconfig for the stand-in whose user is `token ARGS`.
fn kubeconfig(env: &Env, api: &KubeApi, args: &[&str]) -> PathBuf {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: stand-in
  cluster:
    server: https://127.0.0.1:{port}
    insecure-skip-tls-verify: true
users:
- name: corp
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: "{token}"
      args: [{args}]
      interactiveMode: Never
contexts:
- name: corp
  context:
    cluster: stand-in
    user: corp
current-context: corp
"#,
        port = api.port,
        token = bin("token").display(),
        args = args.join(", "),
    );
    let path = env.root().join(format!("kubeconfig-{}", args.len()));
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn kubectl_reaches_an_oidc_cluster_with_the_id_token() {
    let (kubectl, openssl, python) = (on_path("kubectl"), on_path("openssl"), on_path("python3"));
    if !require(
        kubectl.is_some() && openssl.is_some() && python.is_some(),
        "kubectl_reaches_an_oidc_cluster_with_the_id_token",
        "needs kubectl, openssl and python3 on PATH",
        "apt-get install -y kubectl openssl python3 (kubectl from Debian's kubernetes-client \
         or the Kubernetes apt repository)",
    ) {
        return;
    }
    let kubectl = kubectl.unwrap();
    let (provider, env, _daemon) = serve_corp(3600);
    let api = KubeApi::start(env.root(), provider.issuer(), "public-pkce");

    // Log in first: kubectl runs the plugin without a terminal
    // (interactiveMode: Never), so the plugin must not need one.
    let id = env.token(&["get", "corp", "--id-token"]);
    id.ok();
    let id = id.line().to_owned();

    // kubectl inherits this world's TOKEND_SOCKET etc. and hands them to
    // the plugin.
    let config = kubeconfig(&env, &api, &["kube", "corp", "--id-token"]);
    let kube = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", config.to_str().unwrap()];
        all.extend_from_slice(args);
        env.cmd(&all).program(&kubectl).run()
    };
    let pods = kube(&["get", "--raw", "/api/v1/namespaces/default/pods"]);
    pods.ok();
    assert_eq!(pods.json()["kind"], "PodList", "{pods}");
    let version = kube(&["version", "-o", "json"]);
    version.ok();
    assert_eq!(
        version.json()["serverVersion"]["gitVersion"],
        "v1.32.0-standin",
        "{version}"
    );
    let seen = api.seen();
    assert!(!seen.is_empty(), "the stand-in saw no request");
    for r in &seen {
        assert_eq!(r["verdict"], "ok", "{r}");
        assert_eq!(r["token"], id.as_str(), "the ID token `token get` serves");
    }

    // The access token in its place is refused by the same cluster.
    let access = kubeconfig(&env, &api, &["kube", "corp"]);
    let refused = env
        .cmd(&[
            "--kubeconfig",
            access.to_str().unwrap(),
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods",
        ])
        .program(&kubectl)
        .run();
    assert_ne!(refused.code, 0, "an access token got in: {refused}");
    assert!(
        api.seen()
            .iter()
            .any(|r| r["verdict"] != "ok" && r["token"] != id.as_str()),
        "the stand-in refused the access token"
    );
}
