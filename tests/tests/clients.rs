//! Story: the other ways programs take a token (kubectl, `token exec`,
//! header format), a confidential client whose auth method does not match
//! its registration, and the daemon's ownership of its socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixListener;

use tokend_e2e::{exit, serve_corp, Env, Provider};

fn logged_in() -> (Provider, Env, tokend_e2e::Daemon) {
    let (provider, env, daemon) = serve_corp(3600);
    env.token(&["get", "corp"]).ok();
    (provider, env, daemon)
}

#[test]
fn kube_exec_and_header_formats_carry_the_same_token() {
    let (_provider, env, _daemon) = logged_in();
    let token = env.token(&["get", "corp"]).ok().line().to_owned();

    let header = env.token(&["get", "corp", "--format", "header"]);
    assert_eq!(header.ok().line(), format!("Authorization: Bearer {token}"));

    let json = env.token(&["get", "corp", "--format", "json"]).ok().json();
    assert_eq!(json["access_token"], token.as_str());
    assert_eq!(json["token_type"], "Bearer");
    assert!(json["expires_at"].as_u64().is_some(), "{json}");
    assert_eq!(json["scopes"], serde_json::json!(["openid", "read"]));
    assert!(json["api_key"].is_null());

    let kube = env.token(&["kube", "corp"]).ok().json();
    assert_eq!(kube["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(kube["kind"], "ExecCredential");
    assert_eq!(kube["status"]["token"], token.as_str());
    let ts = kube["status"]["expirationTimestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");

    let exec = env.token(&[
        "exec",
        "corp",
        "--env",
        "GH_TOKEN",
        "--",
        "sh",
        "-c",
        "printf %s \"$GH_TOKEN\"",
    ]);
    assert_eq!(exec.ok().stdout, token);
    // The command's exit code is passed on.
    env.token(&["exec", "corp", "--", "sh", "-c", "exit 7"])
        .code(7);
}

#[test]
fn a_post_client_configured_as_basic_surfaces_invalid_client() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("CORP_SECRET", "post-secret");
    env.write_config(&format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"conf-post\"\nclient_secret_env = \"CORP_SECRET\"\nclient_auth = \"basic\"\nscopes = [\"openid\"]\n",
        provider.issuer()
    ));
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.code(exit::PROVIDER);
    assert!(out.stderr.contains("site corp"), "{out}");
    assert!(out.stderr.contains("invalid_client"), "{out}");
    assert!(!out.stderr.contains("post-secret"), "{out}");
}

#[test]
fn a_stale_socket_is_replaced_and_a_second_daemon_leaves_the_first_alone() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&Env::site_config("corp", &provider));
    // A socket file nobody listens on, as a crashed daemon leaves it.
    let sock = env.socket_path();
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(sock.parent().unwrap())
        .unwrap();
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let mut first = env.daemon();
    env.token(&["status"]).ok();

    let mut second = env.spawn_daemon(&[]);
    // It sees the first one and exits by itself, successfully.
    let code = second.wait_exit(std::time::Duration::from_secs(10));
    let log = second.log();
    assert_eq!(code, Some(0), "second daemon: {log}");
    assert!(log.contains("already serving"), "second daemon said: {log}");
    assert!(first.alive());
    env.token(&["status"]).ok();
}

#[test]
fn the_client_starts_a_daemon_when_none_answers() {
    let provider = Provider::start(3600);
    let env = Env::new();
    env.write_config(&Env::site_config("corp", &provider));
    let out = env.cmd(&["status", "--json"]).autostart().run();
    let status = out.ok().json();
    assert_eq!(status["sites"][0]["site"], "corp");
    // Stop it so nothing outlives the test.
    env.token(&["stop"]).ok();
    let gone = tokend_e2e::wait_until(std::time::Duration::from_secs(5), || {
        !tokend_e2e::raw_status_answers(&env.socket_path())
    });
    assert!(gone, "the autostarted daemon did not stop");
    env.token(&["status"]).code(exit::UNREACHABLE);
}

#[test]
fn extra_params_reach_the_authorization_request() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}extra_params = {{ login_hint = \"tester@example.com\", ui_locales = \"en\" }}\n",
        Env::site_config("corp", &provider)
    ));
    let _daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    let urls = env.browser_urls();
    assert_eq!(urls.len(), 1, "{urls:?}");
    assert!(
        urls[0].contains("login_hint=tester%40example.com"),
        "{}",
        urls[0]
    );
    assert!(urls[0].contains("ui_locales=en"), "{}", urls[0]);
    // PKCE S256 is always there, and the parameters tokend owns are not duplicated.
    assert!(
        urls[0].contains("code_challenge_method=S256"),
        "{}",
        urls[0]
    );
    assert_eq!(urls[0].matches("state=").count(), 1, "{}", urls[0]);
}

#[test]
fn a_daemon_of_another_protocol_version_is_replaced() {
    use std::io::{BufRead, BufReader, Write};

    let provider = Provider::start(3600);
    let env = Env::with_site("corp", &provider);
    let sock = env.socket_path();
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        sock.parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // An "old daemon" left running across an upgrade: it answers every
    // request with version_mismatch and exits when told to stop.
    let listener = UnixListener::bind(&sock).unwrap();
    let old = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut writer = stream.try_clone().unwrap();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains(r#""op":"stop""#) {
                    writer.write_all(b"{\"ok\":true}\n").unwrap();
                    return true;
                }
                writer
                    .write_all(
                        b"{\"ok\":false,\"error\":{\"code\":\"version_mismatch\",\"message\":\"this tokend speaks protocol 0\"}}\n",
                    )
                    .unwrap();
            }
        }
        false
    });

    let out = env.cmd(&["status", "--json"]).autostart().run();
    assert!(old.join().unwrap(), "the client stopped the old daemon");
    let status = out.ok().json();
    assert_eq!(status["sites"][0]["site"], "corp", "{out}");
    assert!(out.stderr.contains("restarting"), "{out}");
    env.token(&["stop"]).ok();
}
