//! The test infrastructure itself: the provider, its control endpoints and
//! the scripted browser, without the tokend binaries. When these fail, every
//! other end-to-end failure is suspect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokend_e2e::{
    basic_auth, form_encode, http, mode, tests_dir, wait_until, Env, Provider, Value,
    CONF_BASIC_SECRET,
};

fn post_form(url: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    let basic;
    if let Some(a) = auth {
        basic = format!("Basic {a}");
        h.push(("Authorization", &basic));
    }
    http("POST", url, &h, Some(body))
}

#[test]
fn provider_discovery_stats_and_faults() {
    let p = Provider::start(3600);
    let d = p.discovery();
    assert_eq!(d["issuer"], p.issuer());
    assert_eq!(d["userinfo_endpoint"], format!("{}/me", p.issuer()));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(p.stats().token_calls, 0);

    let token = format!("{}/token", p.issuer());
    let cc = Some(basic_auth("cc-client", "cc-secret"));
    let (s, b) = post_form(
        &token,
        cc.as_deref(),
        "grant_type=client_credentials&scope=read",
    );
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["expires_in"], 3600);

    p.fault("500", 1);
    let (s, b) = post_form(&token, cc.as_deref(), "grant_type=client_credentials");
    assert_eq!(s, 500);
    assert!(b.contains("<html"), "{b}");
    p.fault("garbage", 1);
    let (s, b) = post_form(&token, cc.as_deref(), "grant_type=client_credentials");
    assert_eq!(s, 200);
    assert!(serde_json::from_str::<Value>(&b).is_err());

    let st = p.stats();
    assert_eq!(st.token_calls, 3);
    assert_eq!(st.grant("client_credentials"), 3);
    p.reset();
    assert_eq!(p.stats().token_calls, 0);

    // Bad credentials with the special-character secret, then good ones.
    let (s, _) = post_form(
        &token,
        Some(&basic_auth("conf-basic", "wrong")),
        "grant_type=refresh_token&refresh_token=x",
    );
    assert_eq!(s, 401);
    let (s, b) = post_form(
        &token,
        Some(&basic_auth("conf-basic", CONF_BASIC_SECRET)),
        "grant_type=refresh_token&refresh_token=x",
    );
    assert_eq!(s, 400, "authenticated, then invalid_grant: {b}");
    assert!(b.contains("invalid_grant"), "{b}");
}

#[test]
fn provider_dies_with_its_handle() {
    let p = Provider::start(3600);
    let port = p.port();
    drop(p);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "provider still listening"
    );
}

#[test]
fn browser_approves_a_device_code() {
    let p = Provider::start(3600);
    let (s, b) = post_form(
        &format!("{}/device/auth", p.issuer()),
        None,
        "client_id=public-pkce&scope=openid+read",
    );
    assert_eq!(s, 200, "{b}");
    let d: Value = serde_json::from_str(&b).unwrap();
    let st = Command::new(tests_dir().join("browser.py"))
        .args([
            "--device",
            d["verification_uri"].as_str().unwrap(),
            d["user_code"].as_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let body = format!(
        "grant_type={}&device_code={}&client_id=public-pkce",
        form_encode("urn:ietf:params:oauth:grant-type:device_code"),
        form_encode(d["device_code"].as_str().unwrap())
    );
    let (s, b) = post_form(&format!("{}/token", p.issuer()), None, &body);
    assert_eq!(s, 200, "{b}");
    let t: Value = serde_json::from_str(&b).unwrap();
    assert!(
        t["refresh_token"].is_string(),
        "a refresh token on every device grant: {t}"
    );
    let (s, b) = p.userinfo(t["access_token"].as_str().unwrap());
    assert_eq!(s, 200, "{b}");
}

#[test]
fn browser_counts_launches_and_ignores() {
    let env = {
        let mut e = Env::new();
        e.set("BROWSER_MODE", "ignore");
        e
    };
    for _ in 0..2 {
        let mut c = Command::new(env.var("BROWSER").unwrap());
        env.apply(&mut c);
        assert!(c
            .arg("http://127.0.0.1:9/auth?x=1")
            .status()
            .unwrap()
            .success());
    }
    assert_eq!(env.browser_launches(), 2);
    assert_eq!(env.browser_urls(), vec!["http://127.0.0.1:9/auth?x=1"; 2]);
}

#[test]
fn browser_refuses_other_hosts() {
    let env = Env::new();
    let mut c = Command::new(env.var("BROWSER").unwrap());
    env.apply(&mut c);
    let st = c
        .env("BROWSER_FOREGROUND", "1")
        .arg("http://example.com/auth")
        .status()
        .unwrap();
    assert!(!st.success());
    assert!(
        env.browser_log().contains("refusing"),
        "{}",
        env.browser_log()
    );
}

#[test]
fn env_layout() {
    let env = Env::new();
    assert!(env.socket_path().starts_with(env.root()));
    assert_eq!(mode(Path::new(env.var("XDG_RUNTIME_DIR").unwrap())), 0o700);
    assert_eq!(env.var("TOKEND_STORE"), Some("memory"));
    assert!(env.config_path().parent().unwrap().is_dir());
    assert!(wait_until(Duration::from_millis(10), || true));
}
