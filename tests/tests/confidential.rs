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

#[test]
fn client_secret_basic_from_env() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("CORP_SECRET", CONF_BASIC_SECRET);
    env.write_config(&config(
        &provider,
        "conf-basic",
        "client_secret_env = \"CORP_SECRET\"\n",
    ));
    logs_in(&mut env, &provider);
}

#[test]
fn client_secret_post_from_env() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("CORP_SECRET", "post-secret");
    env.write_config(&config(
        &provider,
        "conf-post",
        "client_secret_env = \"CORP_SECRET\"\nclient_auth = \"post\"\n",
    ));
    logs_in(&mut env, &provider);
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
    env.set("CC_SECRET", "cc-secret");
    env.write_config(&format!(
        "[site.svc]\nissuer = \"{}\"\nclient_id = \"cc-client\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\nclient_secret_env = \"CC_SECRET\"\n",
        provider.issuer()
    ));
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
}
