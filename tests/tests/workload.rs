//! Story: fleets without stored secrets (DESIGN "Fleets without stored
//! secrets"): `private_key_jwt` with EC and RSA keys, federated client
//! assertions read afresh from a file or a command, a GitHub Actions job's
//! OIDC token as a jwt-bearer grant, and RFC 8693 token exchange from
//! another site's access or ID token. The provider checks every assertion
//! (signature, `iss`, `aud`, `exp`, a single-use `jti`) and the exchanged
//! token's audience, so none of this is checked only by unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use tokend_e2e::*;

/// A test key from tests/provider/keys, copied into `env` with `mode`.
fn key_file(env: &Env, name: &str, mode: u32) -> PathBuf {
    let to = env.root().join(name);
    fs::copy(tests_dir().join("provider").join("keys").join(name), &to).unwrap();
    fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    to
}

fn pkjwt_site(provider: &Provider, client: &str, key: &Path, kid: &str) -> String {
    format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"{client}\"\nscopes = [\"openid\", \"read\"]\n\
         client_auth = \"private_key_jwt\"\nclient_key_file = \"{}\"\nclient_key_id = \"{kid}\"\n",
        provider.issuer(),
        key.display()
    )
}

/// The `jti` of each client assertion the provider received, and where.
fn assertions(provider: &Provider) -> Vec<(String, String)> {
    provider.stats_json()["client_assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["jti"].as_str().unwrap_or("").to_owned(),
                a["at"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// A JWT's `jti`, read without checking.
fn jti(jwt: &str) -> String {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["jti"].as_str().unwrap().to_owned()
}

/// Login (code exchange), refresh and revocation, each authenticated by a
/// fresh assertion signed with the client's own key.
fn login_refresh_revoke(client: &str, key: &str, kid: &str) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let key = key_file(&env, key, 0o600);
    env.write_config(&pkjwt_site(&provider, client, &key, kid));
    let _daemon = env.daemon();
    let first = env.token(&["get", "corp"]);
    first.ok();
    assert_eq!(provider.userinfo(first.line()).0, 200);
    // A token that must outlive the provider's: a refresh now.
    let second = env.token(&["get", "corp", "--min-ttl", "7200"]);
    second.ok();
    assert_ne!(second.line(), first.line(), "a refreshed token");
    env.token(&["logout", "corp"]).ok();
    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 1, "{stats:?}");
    assert_eq!(stats.grant("refresh_token"), 1, "{stats:?}");
    assert!(stats.revocations >= 1, "{stats:?}");
    let seen = assertions(&provider);
    assert!(seen.len() >= 3, "code, refresh, revocation: {seen:?}");
    assert!(
        seen.iter().any(|(_, at)| at.ends_with("/revocation")),
        "{seen:?}"
    );
    let mut jtis: Vec<&str> = seen.iter().map(|(j, _)| j.as_str()).collect();
    jtis.sort_unstable();
    jtis.dedup();
    assert_eq!(
        jtis.len(),
        seen.len(),
        "every assertion has its own jti: {seen:?}"
    );
    assert_eq!(env.browser_launches(), 1);
}

#[test]
fn private_key_jwt_with_an_ec_key() {
    login_refresh_revoke("pkjwt-ec", "client_ec.pem", "ec-1");
}

#[test]
fn private_key_jwt_with_an_rsa_key() {
    login_refresh_revoke("pkjwt-rsa", "client_rsa.pem", "rsa-1");
}

#[test]
fn a_wrong_key_is_refused_by_the_provider() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let key = key_file(&env, "wrong_ec.pem", 0o600);
    env.write_config(&pkjwt_site(&provider, "pkjwt-ec", &key, "ec-1"));
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.code(exit::PROVIDER);
    assert!(out.stderr.contains("invalid_client"), "{out}");
    assert!(
        out.stderr.contains("client_key_file") && out.stderr.contains("token jwk corp"),
        "the error names the key and how to see its public half: {out}"
    );
}

#[test]
fn a_key_others_can_read_is_refused_with_the_chmod() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let key = key_file(&env, "client_ec.pem", 0o644);
    env.write_config(&pkjwt_site(&provider, "pkjwt-ec", &key, "ec-1"));
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr.contains(&format!("chmod 600 {}", key.display())),
        "{out}"
    );
    assert_eq!(provider.stats().token_calls, 0, "{out}");
    assert_eq!(env.browser_launches(), 0, "refused before any login");
}

#[test]
fn token_jwk_prints_the_public_key_to_register() {
    let provider = Provider::start(3600);
    for (client, file, kid, members) in [
        ("pkjwt-ec", "client_ec.pem", "ec-1", &["crv", "x", "y"][..]),
        ("pkjwt-rsa", "client_rsa.pem", "rsa-1", &["n", "e"][..]),
    ] {
        let mut env = Env::new();
        let key = key_file(&env, file, 0o600);
        env.write_config(&pkjwt_site(&provider, client, &key, kid));
        let _daemon = env.daemon();
        let out = env.token(&["jwk", "corp"]);
        out.ok();
        let set: Value = serde_json::from_str(&out.stdout).unwrap();
        let jwk = &set["keys"][0];
        let registered = provider.client_jwk(file);
        for m in members.iter().chain(&["kty"]) {
            assert_eq!(jwk[m], registered[m], "{m}: {out}");
        }
        assert_eq!(jwk["kid"], kid);
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                jwk.get(private).is_none(),
                "no private member {private}: {out}"
            );
        }
    }
    // A DPoP site: its proof key's public half.
    let mut env = Env::new();
    env.write_config(&format!(
        "{}dpop = true\n",
        Env::site_config("corp", &provider)
    ));
    let _daemon = env.daemon();
    let out = env.token(&["jwk", "corp"]);
    out.ok();
    let set: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(set["keys"][0]["kty"], "EC", "{out}");
    assert!(set["keys"][0].get("d").is_none());
    // A site with no key of its own says so.
    env.write_config(&Env::site_config("corp", &provider));
    env.token(&["reload"]).ok();
    let out = env.token(&["jwk", "corp"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("private_key_jwt"), "{out}");
}

fn fed_site(provider: &Provider, auth: &str) -> String {
    format!(
        "[site.svc]\nissuer = \"{}\"\nclient_id = \"fed-cc\"\ngrant = \"client_credentials\"\n\
         scopes = [\"read\"]\n{auth}\n",
        provider.issuer()
    )
}

#[test]
fn a_federated_assertion_file_is_read_afresh_for_each_call() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let file = env.root().join("projected-token");
    let first = provider.mint(Some("fed-cc"), "fed-cc", &provider.token_endpoint());
    fs::write(&file, format!("{first}\n")).unwrap();
    env.write_config(&fed_site(
        &provider,
        &format!("client_assertion_file = \"{}\"", file.display()),
    ));
    let _daemon = env.daemon();
    env.token(&["get", "svc"]).ok();
    // The kubelet rotates the projected token.
    let second = provider.mint(Some("fed-cc"), "fed-cc", &provider.token_endpoint());
    fs::write(&file, &second).unwrap();
    env.token(&["get", "svc", "--min-ttl", "7200"]).ok();
    let seen: Vec<String> = assertions(&provider).into_iter().map(|(j, _)| j).collect();
    assert_eq!(seen, [jti(&first), jti(&second)]);
    assert_eq!(provider.stats().grant("client_credentials"), 2);
    assert_eq!(env.browser_launches(), 0);
}

#[test]
fn a_missing_assertion_file_is_named() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let file = env.root().join("not-there");
    env.write_config(&fed_site(
        &provider,
        &format!("client_assertion_file = \"{}\"", file.display()),
    ));
    let _daemon = env.daemon();
    let out = env.token(&["get", "svc"]);
    out.code(exit::LOGIN_REQUIRED);
    assert!(
        out.stderr
            .contains(&format!("client_assertion_file {}", file.display()))
            && out.stderr.contains("does not exist"),
        "{out}"
    );
    assert_eq!(provider.stats().token_calls, 0);
}

#[test]
fn a_failing_or_flooding_assertion_command_is_named() {
    let provider = Provider::start(3600);
    for (cmd, says) in [
        ("exit 7", "failed"),
        (
            "head -c 1048577 /dev/zero | tr '\\\\0' a",
            "printed more than 1 MiB",
        ),
    ] {
        let mut env = Env::new();
        env.write_config(&fed_site(
            &provider,
            &format!("client_assertion_cmd = \"{cmd}\""),
        ));
        let _daemon = env.daemon();
        let out = env.token(&["get", "svc"]);
        out.code(exit::LOGIN_REQUIRED);
        assert!(
            out.stderr.contains("client_assertion_cmd `") && out.stderr.contains(says),
            "{out}"
        );
    }
    assert_eq!(provider.stats().token_calls, 0);
}

/// The GitHub Actions token endpoint stand-in (tests/gha_token.py).
struct Actions {
    _child: ChildGuard,
    _stdout: std::io::BufReader<ChildStdout>,
    port: u16,
    log: PathBuf,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Actions {
    fn start(env: &Env, request_token: &str, audience: &str, provider: &Provider) -> Actions {
        let log = env.root().join("gha.log");
        let mut cmd = Command::new("python3");
        cmd.arg(tests_dir().join("gha_token.py"))
            .args([
                request_token,
                audience,
                provider.issuer(),
                "repo:octo/app:ref:refs/heads/main",
            ])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        tie_to_test(&mut cmd);
        let mut child = cmd.spawn().expect("run gha_token.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let child = ChildGuard(child);
        let (line, reader) = ready_line(stdout, std::time::Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("gha_token.py did not start: {e}"));
        let v: Value = serde_json::from_str(line.trim()).expect("ready line");
        Actions {
            _child: child,
            _stdout: reader,
            port: v["port"].as_u64().expect("port") as u16,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/idtoken?api-version=2.0", self.port)
    }

    fn verdicts(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["verdict"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

#[test]
fn a_github_actions_token_feeds_a_jwt_bearer_site() {
    if !require(
        which("python3"),
        "workload::a_github_actions_token_feeds_a_jwt_bearer_site",
        "python3",
        "apt-get install python3",
    ) {
        return;
    }
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let actions = Actions::start(&env, "job-request-token", provider.issuer(), &provider);
    env.set("ACTIONS_ID_TOKEN_REQUEST_URL", &actions.url());
    env.set("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "job-request-token");
    env.write_config(&ci_config(&provider));
    let _daemon = env.daemon();
    let out = env.token(&["get", "ci"]);
    out.ok();
    assert_eq!(
        provider
            .stats()
            .grant("urn:ietf:params:oauth:grant-type:jwt-bearer"),
        1
    );
    assert_eq!(actions.verdicts(), ["ok"]);
    assert_eq!(env.browser_launches(), 0);
    drop(_daemon);

    // A job whose request token is wrong: GitHub's 401, named.
    let mut env = Env::new();
    env.set("ACTIONS_ID_TOKEN_REQUEST_URL", &actions.url());
    env.set("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "stale");
    env.write_config(&ci_config(&provider));
    let _daemon = env.daemon();
    let out = env.token(&["get", "ci"]);
    out.code(exit::LOGIN_REQUIRED);
    assert!(
        out.stderr.contains("assertion_source = \"github_actions\"") && out.stderr.contains("401"),
        "{out}"
    );
    assert!(
        !out.stderr.contains("stale"),
        "no request token in errors: {out}"
    );
}

/// A jwt-bearer site fed by the job's OIDC token, for the provider.
fn ci_config(provider: &Provider) -> String {
    format!(
        "[site.ci]\nissuer = \"{}\"\nclient_id = \"jwtb-client\"\ngrant = \"jwt_bearer\"\n\
         assertion_source = \"github_actions\"\nassertion_audience = \"{}\"\n",
        provider.issuer(),
        provider.issuer()
    )
}

fn which(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `corp` (a user's login) and `api`, exchanged from it.
fn exchange_config(provider: &Provider, subject: &str, audience: &str) -> String {
    format!(
        "{}\n[site.api]\nissuer = \"{}\"\nclient_id = \"xchg-client\"\ngrant = \"token_exchange\"\n\
         subject_site = \"corp\"\nsubject_token = \"{subject}\"\naudience = \"{audience}\"\n",
        Env::site_config("corp", provider),
        provider.issuer()
    )
}

/// A world with [`exchange_config`] (the access token, for
/// `https://api.example`) and its daemon.
fn exchange_env(provider: &Provider) -> (Env, Daemon) {
    let mut env = Env::new();
    env.write_config(&exchange_config(
        provider,
        "access_token",
        "https://api.example",
    ));
    let daemon = env.daemon();
    (env, daemon)
}

fn exchanges(provider: &Provider) -> Vec<Value> {
    provider.stats_json()["exchanges"]
        .as_array()
        .unwrap()
        .clone()
}

fn exchanged_for(subject: &str, subject_type: &str) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&exchange_config(&provider, subject, "https://api.example"));
    let _daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    let out = env.token(&["get", "api"]);
    out.ok();
    let token = out.line();
    let (status, body) = provider.resource(token, "https://api.example");
    assert_eq!(status, 200, "the resource accepts it: {body}");
    let (status, body) = provider.resource(token, "https://other.example");
    assert_eq!(status, 403, "for its audience only: {body}");
    let seen = exchanges(&provider);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0]["subject_token_type"],
        format!("urn:ietf:params:oauth:token-type:{subject_type}")
    );
    assert_eq!(seen[0]["audience"], "https://api.example");
    assert_eq!(env.browser_launches(), 1, "only corp's login");
}

#[test]
fn token_exchange_from_another_sites_access_token() {
    exchanged_for("access_token", "access_token");
}

#[test]
fn token_exchange_from_another_sites_id_token() {
    exchanged_for("id_token", "id_token");
}

#[test]
fn an_exchanged_token_is_renewed_before_expiry_with_no_caller() {
    let provider = Provider::start(20);
    let (env, _daemon) = exchange_env(&provider);
    env.token(&["get", "corp"]).ok();
    let first = env.token(&["get", "api"]);
    first.ok();
    assert!(
        wait_until(std::time::Duration::from_secs(30), || exchanges(&provider)
            .len()
            >= 2),
        "exchanged again ahead of expiry: {:?}",
        exchanges(&provider)
    );
    let again = env.token(&["get", "api"]);
    again.ok();
    assert_ne!(again.line(), first.line());
    assert_eq!(
        provider.resource(again.line(), "https://api.example").0,
        200
    );
    assert_eq!(env.browser_launches(), 1);
}

#[test]
fn a_subject_site_not_logged_in_is_named() {
    let provider = Provider::start(3600);
    let (env, _daemon) = exchange_env(&provider);
    let out = env.token(&["get", "api"]);
    out.code(exit::LOGIN_REQUIRED);
    assert!(
        out.stderr.contains("subject_site corp is not logged in")
            && out.stderr.contains("token login corp"),
        "{out}"
    );
    assert_eq!(
        env.browser_launches(),
        0,
        "an exchange never opens a browser"
    );
    assert_eq!(provider.stats().token_calls, 0);
}

#[test]
fn an_exchange_answer_without_issued_token_type_is_refused() {
    let provider = Provider::start(3600);
    let (env, _daemon) = exchange_env(&provider);
    env.token(&["get", "corp"]).ok();
    provider.omit_issued_token_type(true);
    let out = env.token(&["get", "api"]);
    out.code(exit::PROVIDER);
    assert!(
        out.stderr.contains("site api") && out.stderr.contains("issued_token_type"),
        "{out}"
    );
}
