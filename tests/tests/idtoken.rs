//! Story: a site whose scopes include `openid` gets an ID token with its
//! login; the daemon validates it (signature against oidc-provider's real
//! JWKS, `iss`, `aud`, `exp`, the login's `nonce`) and serves it to
//! `token get --id-token` and `token kube --id-token` (or to `token kube`
//! when the site says `kube_token = "id_token"`). A site without `openid`
//! has none, and says what to change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokend_e2e::{exit, serve_corp, Env, Provider, Value};

/// A JWT's payload, decoded (not verified: the daemon did that).
pub fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {jwt}");
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON payload")
}

/// Unix seconds as RFC 3339, as `date -u` writes them.
fn rfc3339(unix: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn get_id_token_serves_a_validated_id_token_with_the_logins_nonce() {
    let (provider, env, _daemon) = serve_corp(3600);

    let out = env.token(&["get", "corp", "--id-token"]);
    out.ok();
    let id = out.line().to_owned();
    let c = claims(&id);
    assert_eq!(c["iss"], provider.issuer(), "{c}");
    assert_eq!(c["aud"], "public-pkce", "{c}");
    let nonce = c["nonce"].as_str().expect("a nonce claim").to_owned();
    // The nonce is the one the login sent.
    let urls = env.browser_urls();
    assert_eq!(urls.len(), 1, "one login");
    let sent: Vec<String> = url::Url::parse(&urls[0])
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(sent, [nonce], "the authorization request's nonce");

    // The access token is another token, and still what `get` serves.
    let access = env.token(&["get", "corp"]);
    access.ok();
    assert_ne!(access.line(), id);
    assert_eq!(provider.userinfo(access.line()).0, 200);

    // JSON: expires_at is the ID token's exp.
    let json = env.token(&["get", "corp", "--id-token", "--format", "json"]);
    json.ok();
    let j = json.json();
    assert_eq!(j["id_token"], id.as_str());
    assert_eq!(j["expires_at"], c["exp"], "{j}");
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}

#[test]
fn kube_id_token_puts_the_id_token_and_its_exp_in_the_exec_credential() {
    let (_provider, env, _daemon) = serve_corp(3600);

    let out = env.token(&["kube", "corp", "--id-token"]);
    out.ok();
    let cred = out.json();
    assert_eq!(cred["kind"], "ExecCredential");
    let id = cred["status"]["token"].as_str().unwrap().to_owned();
    let exp = claims(&id)["exp"].as_u64().unwrap();
    assert_eq!(
        cred["status"]["expirationTimestamp"],
        rfc3339(exp).as_str(),
        "{cred}"
    );
    assert_eq!(
        env.token(&["get", "corp", "--id-token"]).line(),
        id,
        "the same ID token"
    );
    // Without the flag, kube serves the access token.
    let plain = env.token(&["kube", "corp"]);
    plain.ok();
    assert_ne!(plain.json()["status"]["token"], id.as_str());
}

#[test]
fn kube_token_id_token_in_the_config_makes_kube_serve_the_id_token() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&(Env::site_config("corp", &provider) + "kube_token = \"id_token\"\n"));
    let _daemon = env.daemon();

    let out = env.token(&["kube", "corp"]);
    out.ok();
    let id = out.json()["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&id)["aud"], "public-pkce");
    // `get` still means the access token.
    let access = env.token(&["get", "corp"]);
    access.ok();
    assert_ne!(access.line(), id);
}

#[test]
fn a_site_without_openid_has_no_id_token_and_says_so() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "[site.plain]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = [\"read\"]\n",
        provider.issuer()
    ));
    let _daemon = env.daemon();

    let out = env.token(&["get", "plain", "--id-token"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr.contains("plain") && out.stderr.contains("openid"),
        "names the site and the scope: {out}"
    );
    assert_eq!(env.browser_launches(), 0, "no login for nothing");
    // Its logins send no nonce and its access token works as before.
    env.token(&["get", "plain"]).ok();
    assert!(!env.browser_urls()[0].contains("nonce="));
}
