//! Tests of the flows in `site.rs`: the wire form of every request, and the
//! send path end to end against a scripted local responder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::*;
use crate::client::ClientAuth;
use crate::pkce::challenge_for;
use crate::secret::ClientSecret;
use crate::testserver::{json_ok, serve};

fn provider() -> Provider {
    let mut p = Provider::new(Url::parse("https://auth.example/token").unwrap());
    p.authorize_url = Some(Url::parse("https://auth.example/authorize?tenant=t1").unwrap());
    p.revoke_url = Some(Url::parse("https://auth.example/revoke").unwrap());
    p
}

fn site(auth: ClientAuth) -> OAuthSite {
    let client = Client {
        id: "cid".into(),
        secret: Some(ClientSecret::new("p@ss:w+rd/=%&?".into())),
        auth,
        key: None,
        assertion: None,
    };
    let mut site = OAuthSite::new(provider(), client);
    site.extra_params = vec![
        ("audience".into(), "https://api.example".into()),
        ("state".into(), "attacker".into()),
        ("tenant".into(), "t2".into()),
    ];
    site
}

fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn query(url: &Url) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url.query_pairs() {
        map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    map
}

#[test]
fn authorize_url_contents() {
    let pkce = Pkce::try_new().unwrap();
    let url = site(ClientAuth::None)
        .authorize_url(
            "http://127.0.0.1:5555/callback",
            &scopes(&["read", "write"]),
            "st8",
            Some(&pkce),
        )
        .unwrap();
    let q = query(&url);
    let one = |k: &str| {
        let values = &q[k];
        assert_eq!(values.len(), 1, "{k} appears {values:?}");
        values[0].clone()
    };
    assert_eq!(url.path(), "/authorize");
    assert_eq!(one("response_type"), "code");
    assert_eq!(one("client_id"), "cid");
    assert_eq!(one("redirect_uri"), "http://127.0.0.1:5555/callback");
    assert_eq!(one("scope"), "read write");
    assert_eq!(one("state"), "st8", "extra params never override state");
    assert_eq!(one("code_challenge_method"), "S256");
    assert_eq!(one("code_challenge"), challenge_for(&pkce.verifier));
    assert_eq!(one("audience"), "https://api.example");
    assert_eq!(
        one("tenant"),
        "t1",
        "the configured URL's own query is kept"
    );
    assert!(!url.as_str().contains(pkce.verifier.expose()));
    // Scopes are joined with a real space, encoded in the URL.
    assert!(url.as_str().contains("scope=read+write"), "{url}");
}

#[test]
fn authorize_url_carries_the_login_hint_once() {
    let mut s = site(ClientAuth::None);
    assert!(!query(
        &s.authorize_url("http://127.0.0.1:1/cb", &[], "st", None)
            .unwrap()
    )
    .contains_key("login_hint"));
    s.login_hint = Some("alice@example.com".into());
    s.extra_params.push(("login_hint".into(), "bob".into()));
    let q = query(
        &s.authorize_url("http://127.0.0.1:1/cb", &[], "st", None)
            .unwrap(),
    );
    assert_eq!(q["login_hint"], ["alice@example.com"]);
}

#[test]
fn authorize_url_with_nonce_carries_one_nonce() {
    let mut s = site(ClientAuth::None);
    s.extra_params.push(("nonce".into(), "from-config".into()));
    let url = s
        .authorize_url_with_nonce("http://r", &scopes(&["openid"]), "st", None, "n-1")
        .unwrap();
    let q = query(&url);
    assert_eq!(q["nonce"], ["n-1"], "the login's nonce, once");
    assert_eq!(q["state"], ["st"]);
    assert_eq!(q["tenant"], ["t1"]);
}

#[test]
fn authorize_url_separator_and_no_pkce() {
    let mut s = site(ClientAuth::None);
    s.scope_separator = ",".into();
    s.extra_params.clear();
    let url = s
        .authorize_url(
            "https://stackexchange.com/oauth/login_success",
            &scopes(&["write_access", "no_expiry"]),
            "s",
            None,
        )
        .unwrap();
    let q = query(&url);
    assert_eq!(q["scope"], ["write_access,no_expiry"]);
    assert!(!q.contains_key("code_challenge"));
    let url = s.authorize_url("http://r", &[], "s", None).unwrap();
    assert!(!query(&url).contains_key("scope"));
    std::sync::Arc::make_mut(&mut s.provider).authorize_url = None;
    assert!(matches!(
        s.authorize_url("http://r", &[], "s", None),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn code_request_wire_form() {
    let s = site(ClientAuth::Post);
    let req = s
        .code_request(
            &AuthCode::new("the-code".into()),
            "http://127.0.0.1:1/cb",
            &PkceVerifier::new("ver".into()),
        )
        .unwrap();
    assert_eq!(req.url.as_str(), "https://auth.example/token");
    assert_eq!(req.header_value("accept"), Some("application/json"));
    assert_eq!(req.form_value("grant_type"), Some("authorization_code"));
    assert_eq!(req.form_value("code"), Some("the-code"));
    assert_eq!(
        req.form_value("redirect_uri"),
        Some("http://127.0.0.1:1/cb")
    );
    assert_eq!(req.form_value("code_verifier"), Some("ver"));
    assert_eq!(req.form_value("client_id"), Some("cid"));
    assert_eq!(req.form_value("client_secret"), Some("p@ss:w+rd/=%&?"));
    assert_eq!(req.form_value("audience"), Some("https://api.example"));
    assert_eq!(
        req.form.iter().filter(|(k, _)| k == "state").count(),
        1,
        "state is extra here, sent once"
    );
}

#[test]
fn refresh_request_wire_form() {
    let mut s = site(ClientAuth::Basic);
    s.scope_separator = ",".into();
    let rt = RefreshToken::new("rt-1".into());
    let req = s.refresh_request(&rt, Some(&scopes(&["a", "b"]))).unwrap();
    assert_eq!(req.form_value("grant_type"), Some("refresh_token"));
    assert_eq!(req.form_value("refresh_token"), Some("rt-1"));
    assert_eq!(req.form_value("scope"), Some("a,b"));
    assert_eq!(
        req.form_value("client_id"),
        None,
        "basic auth keeps the id in the header"
    );
    assert!(req
        .header_value("authorization")
        .unwrap()
        .starts_with("Basic "));
    let req = s.refresh_request(&rt, None).unwrap();
    assert_eq!(req.form_value("scope"), None);
}

#[test]
fn client_credentials_and_revoke_requests() {
    let s = site(ClientAuth::Post);
    let req = s.client_credentials_request(&scopes(&["api"])).unwrap();
    assert_eq!(req.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(req.form_value("scope"), Some("api"));

    let req = s.revoke_request("tok", "refresh_token").unwrap();
    assert_eq!(req.url.as_str(), "https://auth.example/revoke");
    assert_eq!(req.form_value("token"), Some("tok"));
    assert_eq!(req.form_value("token_type_hint"), Some("refresh_token"));
    assert_eq!(req.form_value("audience"), None);
    let mut s = s;
    std::sync::Arc::make_mut(&mut s.provider).revoke_url = None;
    assert!(matches!(
        s.revoke_request("t", "access_token"),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn revoke_responses() {
    let raw = |status: u16, ct: &str, body: &str| RawResponse {
        status,
        content_type: Some(ct.into()),
        location: None,
        dpop_nonce: None,
        body: body.as_bytes().to_vec(),
    };
    assert!(parse_revoke_response(&raw(200, "text/plain", "")).is_ok());
    assert!(parse_revoke_response(&raw(200, "text/html", "<p>ok</p>")).is_ok());
    let err = parse_revoke_response(&raw(
        400,
        "application/json",
        r#"{"error":"unsupported_token_type"}"#,
    ))
    .unwrap_err();
    assert_eq!(err.to_string(), "provider said unsupported_token_type");
    let err = parse_revoke_response(&raw(503, "text/html", "<html/>")).unwrap_err();
    assert!(err.is_transient());
}

#[test]
fn debug_of_site_hides_client_secret() {
    let shown = format!("{:?}", site(ClientAuth::Basic));
    assert!(!shown.contains("p@ss"), "{shown}");
}

#[tokio::test]
async fn exchange_code_over_the_wire() {
    let server = serve(vec![json_ok(
        r#"{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":"rt"}"#,
    )])
    .await;
    let mut s = site(ClientAuth::Basic);
    std::sync::Arc::make_mut(&mut s.provider).token_url = server.url("/token");
    let http = Http::new();
    let token = s
        .exchange_code(
            &http,
            &AuthCode::new("c 1".into()),
            "http://127.0.0.1:9/cb",
            &PkceVerifier::new("v".into()),
        )
        .await
        .unwrap();
    assert_eq!(token.access_token.expose(), "at");
    assert_eq!(token.refresh_token.unwrap().expose(), "rt");

    let seen = &server.requests().await[0];
    let lower = seen.to_ascii_lowercase();
    assert!(seen.starts_with("POST /token HTTP/1.1"), "{seen}");
    assert!(lower.contains("accept: application/json"), "{seen}");
    assert!(
        lower.contains("content-type: application/x-www-form-urlencoded"),
        "{seen}"
    );
    assert!(
        lower.contains(&format!("user-agent: tokend/{}", env!("CARGO_PKG_VERSION"))),
        "{seen}"
    );
    let auth = seen
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: Basic ")
                .or_else(|| l.strip_prefix("Authorization: Basic "))
        })
        .unwrap();
    let decoded = String::from_utf8(STANDARD.decode(auth.trim()).unwrap()).unwrap();
    assert_eq!(decoded, "cid:p%40ss%3Aw%2Brd%2F%3D%25%26%3F");
    let body = seen.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        body.contains("grant_type=authorization_code&code=c+1&"),
        "{body}"
    );
}

#[tokio::test]
async fn refresh_error_names_the_endpoint() {
    let server = serve(vec![Some(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>".into(),
    )])
    .await;
    let mut s = site(ClientAuth::None);
    std::sync::Arc::make_mut(&mut s.provider).token_url = server.url("/token?k=secret");
    let err = s
        .refresh(&Http::new(), &RefreshToken::new("rt".into()), None)
        .await
        .unwrap_err();
    let expected = format!(
        "token endpoint {} answered HTTP 502 with an HTML page",
        server.url("/token")
    );
    assert_eq!(err.to_string(), expected);
    assert!(err.is_transient());
}

#[test]
fn implicit_url_asks_for_a_token_without_pkce() {
    let s = site(ClientAuth::None);
    let url = s
        .implicit_authorize_url(
            "https://stackexchange.com/oauth/login_success",
            &scopes(&["read"]),
            "st",
        )
        .unwrap();
    let q = query(&url);
    assert_eq!(q["response_type"], ["token"]);
    assert_eq!(q["state"], ["st"]);
    assert!(!q.contains_key("code_challenge"));
}

/// The `DPoP` header of a raw request, decoded claims.
fn dpop_claims(request: &str) -> serde_json::Value {
    let proof = request
        .lines()
        .find_map(|l| {
            l.strip_prefix("dpop: ")
                .or_else(|| l.strip_prefix("DPoP: "))
        })
        .unwrap_or_else(|| panic!("no DPoP header in {request}"));
    let payload = proof.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A site with a fresh DPoP key whose token endpoint is `server`.
fn dpop_site(auth: ClientAuth, server: &crate::testserver::TestServer) -> OAuthSite {
    let mut site = site(auth);
    std::sync::Arc::make_mut(&mut site.provider).token_url = server.url("/token");
    site.dpop = Some(std::sync::Arc::new(Dpop::new(
        crate::dpop::DpopKey::generate().unwrap(),
        || 1_700_000_000,
    )));
    site
}

#[tokio::test]
async fn dpop_token_requests_carry_a_proof_and_retry_once_with_the_servers_nonce() {
    let nonce_please = Some(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nDPoP-Nonce: n-42\r\nContent-Length: 28\r\nConnection: close\r\n\r\n{\"error\":\"use_dpop_nonce\"}\n "
            .to_owned(),
    );
    let server = serve(vec![
        nonce_please,
        json_ok(r#"{"access_token":"bound","token_type":"DPoP","expires_in":60}"#),
        json_ok(r#"{"access_token":"plain","token_type":"Bearer","expires_in":60}"#),
    ])
    .await;
    let site = dpop_site(ClientAuth::Post, &server);
    let http = Http::new();
    let token = site
        .client_credentials(&http, &scopes(&["read"]))
        .await
        .unwrap();
    assert_eq!(token.access_token.expose(), "bound");
    let seen = server.requests().await;
    assert_eq!(seen.len(), 2);
    let first = dpop_claims(&seen[0]);
    let second = dpop_claims(&seen[1]);
    assert_eq!(first["htm"], "POST");
    assert_eq!(first["htu"], server.url("/token").as_str());
    assert!(first.get("nonce").is_none());
    assert_eq!(second["nonce"], "n-42");
    assert_ne!(first["jti"], second["jti"]);

    // A provider that ignores DPoP and hands out a Bearer token is an error.
    let err = site
        .client_credentials(&http, &scopes(&["read"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("DPoP"), "{err}");
}

#[tokio::test]
async fn dpop_device_polls_carry_a_proof_and_refuse_an_unbound_token() {
    let server = serve(vec![
        json_ok(r#"{"error":"authorization_pending"}"#),
        json_ok(r#"{"access_token":"plain","token_type":"Bearer","expires_in":60}"#),
    ])
    .await;
    let site = dpop_site(ClientAuth::None, &server);
    let device = crate::device::DeviceAuthorization {
        device_code: crate::secret::DeviceCode::new("dc".into()),
        user_code: "ABCD-EFGH".into(),
        verification_uri: "https://x/device".into(),
        verification_uri_complete: None,
        expires_in: 60,
        interval: 5,
    };
    let http = Http::new();
    assert!(matches!(
        site.device_poll(&http, &device).await,
        Ok(crate::device::DevicePoll::Pending)
    ));
    let err = site.device_poll(&http, &device).await.unwrap_err();
    assert!(matches!(err, Error::NotBound { .. }), "{err}");
    assert!(!err.is_transient(), "a Bearer answer is not retried: {err}");
    let seen = server.requests().await;
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(dpop_claims(request)["htm"], "POST");
    }
}
