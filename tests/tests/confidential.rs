//! Story: confidential clients: the secret comes from `client_secret_env`
//! (or `client_secret_cmd`) and is sent with Basic (URL-encoded, RFC 6749
//! §2.3.1) or in the form body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{Env, Provider, CONF_BASIC_SECRET};

fn config(provider: &Provider, client: &str, extra: &str) -> String {
    format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"{client}\"\nscopes = [\"openid\", \"read\"]\n{extra}",
        provider.issuer()
    )
}

fn logs_in(env: &mut Env, provider: &Provider) {
    let _daemon = env.daemon();
    let out = env.token(&["get", "corp"]);
    out.ok();
    let (status, body) = provider.userinfo(out.line());
    assert_eq!(status, 200, "{body}");
    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 1, "{stats:?}");
    assert_eq!(env.browser_launches(), 1);
}

/// `client` logs in with `secret` taken from `$CORP_SECRET` (`extra` config
/// lines after `client_secret_env`).
fn logs_in_with_secret_from_env(client: &str, secret: &str, extra: &str) {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("CORP_SECRET", secret);
    env.write_config(&config(
        &provider,
        client,
        &format!("client_secret_env = \"CORP_SECRET\"\n{extra}"),
    ));
    logs_in(&mut env, &provider);
}

#[test]
fn client_secret_basic_from_env() {
    logs_in_with_secret_from_env("conf-basic", CONF_BASIC_SECRET, "");
}

#[test]
fn client_secret_post_from_env() {
    logs_in_with_secret_from_env("conf-post", "post-secret", "client_auth = \"post\"\n");
}

#[test]
fn client_secret_cmd() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let script = env.root().join("secret.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf '%s\\n' 'p@ss:w+rd/=%&?'\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    env.write_config(&config(
        &provider,
        "conf-basic",
        &format!("client_secret_cmd = \"{}\"\n", script.display()),
    ));
    logs_in(&mut env, &provider);
}

#[test]
fn client_credentials_grant() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_client_credentials_config(&provider);
    let _daemon = env.daemon();
    let out = env.token(&["get", "svc", "--no-login"]);
    out.ok();
    assert!(!out.line().is_empty());
    assert_eq!(
        env.browser_launches(),
        0,
        "client_credentials needs no browser"
    );
    assert_eq!(provider.stats().grant("client_credentials"), 1);
    let again = env.token(&["get", "svc"]);
    again.ok();
    assert_eq!(again.line(), out.line(), "served from memory");
    assert_eq!(provider.stats().grant("client_credentials"), 1);
    // Nobody to ask: a login is a fresh token call, whichever way is asked.
    for args in [&["login", "svc"][..], &["login", "svc", "--device"]] {
        env.token(args).ok();
    }
    assert_eq!(provider.stats().grant("client_credentials"), 3);
    assert_eq!(env.browser_launches(), 0);
}
