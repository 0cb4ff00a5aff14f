//! Story: a site with `dpop = true` gets sender-constrained tokens (RFC 9449)
//! from oidc-provider (its DPoP feature on). `token get SITE --dpop METHOD
//! URL` prints the token and a proof for that one request, signed by the
//! daemon; the provider's userinfo endpoint (a resource that verifies DPoP
//! proofs) accepts the pair, and refuses the same token as a Bearer token, with
//! the proof replayed, or with a proof by another key. Introspection shows the
//! token bound to the daemon's key (`cnf.jkt`). A server that requires nonces
//! gets them (one `use_dpop_nonce` retry), and a refresh and a daemon restart
//! keep the binding: the key lives in the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokend_e2e::{exit, now_unix, Daemon, Env, Provider, Value};

/// Part `n` (0: header, 1: claims) of a compact JWS, decoded.
fn part(jws: &str, n: usize) -> Value {
    let b64 = jws
        .split('.')
        .nth(n)
        .unwrap_or_else(|| panic!("not a JWS: {jws}"));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap()
}

fn sha256_b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(s.as_bytes()))
}

/// The RFC 7638 thumbprint of the key a proof carries in its header.
fn jkt_of(proof: &str) -> String {
    let jwk = &part(proof, 0)["jwk"];
    let m = |k: &str| {
        jwk[k]
            .as_str()
            .unwrap_or_else(|| panic!("jwk without {k}: {jwk}"))
    };
    sha256_b64(&format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
        m("crv"),
        m("kty"),
        m("x"),
        m("y")
    ))
}

/// `token get SITE --dpop GET URL --format json` (plus `extra`): the token
/// and its proof.
fn get_bound(env: &Env, site: &str, url: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["get", site, "--dpop", "GET", url, "--format", "json"];
    args.extend_from_slice(extra);
    let out = env.token(&args);
    out.ok();
    let v = out.json();
    assert_eq!(v["token_type"], "DPoP", "{v}");
    let token = v["access_token"].as_str().expect("access_token").to_owned();
    let proof = v["dpop_proof"].as_str().expect("dpop_proof").to_owned();
    (token, proof)
}

/// The proof is for this request and this token, by a public key only.
fn assert_proof_for(proof: &str, url: &str, token: &str) {
    let header = part(proof, 0);
    assert_eq!(header["typ"], "dpop+jwt", "{header}");
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["jwk"]["crv"], "P-256", "{header}");
    assert!(
        header["jwk"].get("d").is_none(),
        "the private key never leaves the daemon: {header}"
    );
    let claims = part(proof, 1);
    assert_eq!(claims["htm"], "GET", "{claims}");
    assert_eq!(claims["htu"], url, "{claims}");
    assert_eq!(claims["ath"], sha256_b64(token), "{claims}");
}

#[test]
fn a_dpop_token_works_only_with_a_fresh_proof_by_the_daemons_key() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}dpop = true\n\n{}",
        Env::site_config("corp", &provider),
        Env::site_config("plain", &provider)
    ));
    let _daemon = env.daemon();
    let me = provider.userinfo_url();

    let (token, proof) = get_bound(&env, "corp", &me, &[]);
    assert_proof_for(&proof, &me, &token);
    assert!(
        part(&proof, 1).get("nonce").is_none(),
        "this provider asks for no nonce"
    );

    // The token is bound to the key that signed the proof.
    let intro = provider.introspect(&token);
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["token_type"], "DPoP", "{intro}");
    assert_eq!(intro["cnf"]["jkt"], jkt_of(&proof), "{intro}");

    // The resource accepts the token with its proof ...
    let (status, body) = provider.userinfo_dpop(&token, &proof);
    assert_eq!(status, 200, "token + proof: {body}");
    assert!(body.contains("\"sub\""), "{body}");
    // ... but not the same proof twice,
    let (status, body) = provider.userinfo_dpop(&token, &proof);
    assert_eq!(status, 401, "a replayed proof: {body}");
    // nor the token alone, as a Bearer token,
    let (status, body) = provider.userinfo(&token);
    assert_eq!(status, 401, "the bound token without a proof: {body}");
    // nor with a proof that is right in every way but the key.
    let other = tokend_oauth::DpopKey::generate().unwrap();
    let forged = other
        .proof(
            "GET",
            &url::Url::parse(&me).unwrap(),
            Some(&token),
            None,
            now_unix(),
        )
        .unwrap();
    assert_proof_for(&forged, &me, &token);
    let (status, body) = provider.userinfo_dpop(&token, &forged);
    assert_eq!(status, 401, "a proof by another key: {body}");

    // Every call gets a fresh proof; raw prints the token, then the proof.
    let raw = env.token(&["get", "corp", "--dpop", "get", &me]);
    raw.ok();
    let lines: Vec<&str> = raw.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{raw}");
    assert_eq!(lines[0], token, "the same token");
    assert_ne!(lines[1], proof, "a new proof");
    assert_proof_for(lines[1], &me, &token);
    let (status, body) = provider.userinfo_dpop(lines[0], lines[1]);
    assert_eq!(status, 200, "raw output: {body}");

    // --format header: both headers, ready for curl -H.
    let header = env.token(&["get", "corp", "--dpop", "GET", &me, "--format", "header"]);
    header.ok();
    let lines: Vec<&str> = header.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{header}");
    assert_eq!(lines[0], format!("Authorization: DPoP {token}"));
    let proof = lines[1]
        .strip_prefix("DPoP: ")
        .unwrap_or_else(|| panic!("{header}"));
    let (status, body) = provider.userinfo_dpop(&token, proof);
    assert_eq!(status, 200, "header output: {body}");

    // token exec: $TOKEN and $DPOP.
    let exec = env.token(&[
        "exec",
        "corp",
        "--dpop",
        "GET",
        &me,
        "--",
        "sh",
        "-c",
        "printf '%s\\n%s\\n' \"$TOKEN\" \"$DPOP\"",
    ]);
    exec.ok();
    let lines: Vec<&str> = exec.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{exec}");
    let (status, body) = provider.userinfo_dpop(lines[0], lines[1]);
    assert_eq!(status, 200, "exec's variables: {body}");

    // One login for all of it.
    assert_eq!(env.browser_launches(), 1);
    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 1, "{stats:?}");
    eprintln!("measured: {stats:?}");
}

#[test]
fn dpop_on_a_site_without_it_is_a_config_error_before_any_login() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("plain", &provider);
    let _daemon = env.daemon();
    let me = provider.userinfo_url();

    let out = env.token(&["get", "plain", "--dpop", "GET", &me]);
    out.code(exit::USAGE);
    assert!(
        out.stderr.contains("site plain") && out.stderr.contains("dpop = true"),
        "names the site and the key: {out}"
    );
    // Bad requests are refused before a login, too (this site has none).
    let out = env.token(&["get", "plain", "--dpop", "GET"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("--dpop"), "{out}");
    assert_eq!(env.browser_launches(), 0, "no login for a refused request");
    assert_eq!(provider.stats().token_calls, 0);

    // Its tokens stay Bearer tokens.
    let out = env.token(&["get", "plain", "--format", "json"]);
    out.ok();
    assert_eq!(out.json()["token_type"], "Bearer", "{out}");
    let header = env.token(&["get", "plain", "--format", "header"]);
    header.ok();
    assert!(
        header.line().starts_with("Authorization: Bearer "),
        "{header}"
    );
}

#[test]
fn server_nonces_a_refresh_and_a_restart_keep_the_binding() {
    let provider = Provider::start_with(&[("AT_TTL", "3600"), ("DPOP_NONCE", "1")]);
    let mut env = Env::with_store("file");
    env.write_config(&format!(
        "{}dpop = true\n",
        Env::site_config("corp", &provider)
    ));
    let mut daemon = env.daemon();
    let me = provider.userinfo_url();

    // The login's code exchange was asked for a nonce and retried once.
    let (token, proof) = get_bound(&env, "corp", &me, &[]);
    let stats = provider.stats();
    assert_eq!(
        stats.grant("authorization_code"),
        2,
        "one use_dpop_nonce answer, one retry: {stats:?}"
    );
    // userinfo is on the token endpoint's origin: the proof carries its nonce.
    assert_proof_for(&proof, &me, &token);
    assert!(part(&proof, 1)["nonce"].is_string(), "{}", part(&proof, 1));
    let (status, body) = provider.userinfo_dpop(&token, &proof);
    assert_eq!(status, 200, "token + proof with the server's nonce: {body}");
    let jkt = jkt_of(&proof);
    assert_eq!(provider.introspect(&token)["cnf"]["jkt"], jkt);

    // A refresh forced by --min-ttl (longer than any token this provider
    // issues): a new token, bound to the same key, working with a new proof.
    let (fresh, proof) = get_bound(&env, "corp", &me, &["--min-ttl", "2h"]);
    assert_ne!(fresh, token, "a refreshed token");
    let stats = provider.stats();
    assert!(stats.grant("refresh_token") >= 1, "{stats:?}");
    assert_proof_for(&proof, &me, &fresh);
    assert_eq!(jkt_of(&proof), jkt, "the same key");
    assert_eq!(provider.introspect(&fresh)["cnf"]["jkt"], jkt);
    let (status, body) = provider.userinfo_dpop(&fresh, &proof);
    assert_eq!(status, 200, "the refreshed token + proof: {body}");

    // The key is kept in the store with the login (the refresh token is
    // bound to it too), so a restarted daemon refreshes with it (--min-ttl
    // forces the refresh: the stored access token would serve otherwise).
    let store = fs::read_to_string(env.state_dir().join("tokens.json")).unwrap();
    assert!(store.contains("\"dpop_key\""), "the key is stored");
    daemon.stop();
    drop(daemon);
    let _daemon = env.daemon();
    let refreshes = provider.stats().grant("refresh_token");
    let (after, proof) = get_bound(&env, "corp", &me, &["--no-login", "--min-ttl", "2h"]);
    assert_ne!(after, fresh, "refreshed after the restart");
    let stats = provider.stats();
    assert!(stats.grant("refresh_token") > refreshes, "{stats:?}");
    assert_eq!(jkt_of(&proof), jkt, "the stored key after a restart");
    assert_eq!(provider.introspect(&after)["cnf"]["jkt"], jkt);
    let (status, body) = provider.userinfo_dpop(&after, &proof);
    assert_eq!(status, 200, "after a restart: {body}");
    assert_eq!(env.browser_launches(), 1, "no new login");
    eprintln!("measured: {:?}", provider.stats());
}

/// A provider (access tokens of `at_ttl` s), `[site.corp]` with `dpop =
/// true`, its daemon, and the userinfo URL.
fn dpop_corp(at_ttl: u64) -> (Provider, Env, Daemon, String) {
    let provider = Provider::start(at_ttl);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}dpop = true\n",
        Env::site_config("corp", &provider)
    ));
    let daemon = env.daemon();
    let me = provider.userinfo_url();
    (provider, env, daemon, me)
}

#[test]
fn refresh_ahead_and_down_scoped_tokens_are_bound_too() {
    let (provider, env, _daemon, me) = dpop_corp(10);
    let (first, proof) = get_bound(&env, "corp", &me, &[]);
    let jkt = jkt_of(&proof);

    // Nobody calls: the daemon refreshes ahead of expiry, with a proof.
    let logged_in = env.site_status("corp")["last_refresh"].as_u64();
    assert!(
        provider.wait_grant("refresh_token", 1, Duration::from_secs(20)),
        "no refresh-ahead within 20 s: {:?}",
        provider.stats()
    );
    env.wait_site_status(
        "corp",
        Duration::from_secs(10),
        "the refresh landing",
        |s| s["last_refresh"].as_u64() > logged_in,
    );
    let (ahead, proof) = get_bound(&env, "corp", &me, &["--no-login"]);
    assert_ne!(ahead, first, "the token refreshed ahead");
    assert_eq!(jkt_of(&proof), jkt);
    assert_eq!(provider.introspect(&ahead)["cnf"]["jkt"], jkt);
    let (status, body) = provider.userinfo_dpop(&ahead, &proof);
    assert_eq!(status, 200, "refreshed ahead: {body}");

    // A down-scoped token (a refresh with fewer scopes) is bound as well.
    let (narrow, proof) = get_bound(&env, "corp", &me, &["--scope", "openid"]);
    let intro = provider.introspect(&narrow);
    assert_eq!(intro["scope"], "openid", "{intro}");
    assert_eq!(intro["cnf"]["jkt"], jkt, "{intro}");
    let (status, body) = provider.userinfo_dpop(&narrow, &proof);
    assert_eq!(status, 200, "down-scoped: {body}");
    let (status, _) = provider.userinfo(&narrow);
    assert_eq!(status, 401, "the down-scoped token without a proof");
}

/// A logout replaces the site's DPoP key: the next login's tokens are
/// bound to a new key, not to the one a logged-out token was bound to.
#[test]
fn a_logout_replaces_the_dpop_key() {
    let (provider, env, _daemon, me) = dpop_corp(3600);
    let (_, before) = get_bound(&env, "corp", &me, &[]);
    env.token(&["logout", "corp"]).ok();
    let (token, after) = get_bound(&env, "corp", &me, &[]);
    assert_eq!(env.browser_launches(), 2, "a new login");
    assert_ne!(
        jkt_of(&before),
        jkt_of(&after),
        "a new key after the logout"
    );
    let intro = provider.introspect(&token);
    assert_eq!(intro["cnf"]["jkt"], jkt_of(&after), "{intro}");
}

/// A resource server that demands a nonce (RFC 9449 §9) answers with
/// `DPoP-Nonce`; `--dpop-nonce` puts it in the proof. One that is not a
/// nonce is refused before any token is fetched.
#[test]
fn a_resource_servers_nonce_goes_into_the_proof() {
    let (_provider, env, _daemon, me) = dpop_corp(3600);
    let (_, proof) = get_bound(&env, "corp", &me, &["--dpop-nonce", "rs-nonce-1"]);
    assert_eq!(part(&proof, 1)["nonce"], "rs-nonce-1");
    let (_, plain) = get_bound(&env, "corp", &me, &[]);
    assert!(part(&plain, 1).get("nonce").is_none(), "only when asked");
    let out = env.token(&["get", "corp", "--dpop", "GET", &me, "--dpop-nonce", "a\"b"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("--dpop-nonce"), "{out}");
    let out = env.token(&["get", "corp", "--dpop-nonce", "n"]);
    out.code(exit::USAGE);
}
