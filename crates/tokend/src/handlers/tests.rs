//! Every handler on the real wire, in-process (`crate::kit::serve`), with
//! its answers and error codes. Waiting on a login: `waiting.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::kit::{code, corp_and_fresh, get, message, ok, serve, site, status};

fn get_never(site: &str) -> String {
    format!(r#"{{"v":1,"op":"get","site":"{site}","login":"never"}}"#)
}

#[tokio::test]
async fn get_serves_the_token_in_hand_and_makes_one_call() {
    let server = corp_and_fresh();
    let first = server.ask(&get("corp")).await;
    ok(&first);
    assert_eq!(first["access_token"], "at1", "{first}");
    assert_eq!(first["token_type"], "Bearer");
    let again = server.ask(&get("corp")).await;
    assert_eq!(again["access_token"], "at1", "{again}");
    assert_eq!(server.provider.calls(), 1);
}

#[tokio::test]
async fn get_names_the_sites_for_an_unknown_one() {
    let server = corp_and_fresh();
    let answer = server.ask(&get("corpp")).await;
    assert_eq!(code(&answer), Some("unknown_site"), "{answer}");
    assert!(
        message(&answer).contains("did you mean `corp`?"),
        "{answer}"
    );
    let answer = server.ask(&get("no/such")).await;
    assert_eq!(code(&answer), Some("unknown_site"), "{answer}");
    assert!(
        message(&answer).contains("only letters, digits"),
        "{answer}"
    );
}

#[tokio::test]
async fn get_with_login_never_hears_login_required() {
    let server = corp_and_fresh();
    let answer = server.ask(&get_never("fresh")).await;
    assert_eq!(code(&answer), Some("login_required"), "{answer}");
    assert!(message(&answer).contains("token login fresh"), "{answer}");
    assert_eq!(server.provider.calls(), 0);
    assert_eq!(server.state("fresh").await, "login_required");
}

#[tokio::test]
async fn get_refuses_an_id_token_with_scopes_as_bad_request() {
    let server = corp_and_fresh();
    let answer = server
        .ask(r#"{"v":1,"op":"get","site":"corp","token":"id_token","scopes":["read"]}"#)
        .await;
    assert_eq!(code(&answer), Some("bad_request"), "{answer}");
    assert!(message(&answer).contains("drop --scope"), "{answer}");
}

#[tokio::test]
async fn login_of_an_unknown_site_is_unknown_site() {
    let server = corp_and_fresh();
    let answer = server.ask(r#"{"v":1,"op":"login","site":"nope"}"#).await;
    assert_eq!(code(&answer), Some("unknown_site"), "{answer}");
}

/// A client-credentials site has nobody to ask: its login is a fresh
/// token call.
#[tokio::test]
async fn login_of_a_client_credentials_site_is_a_token_call() {
    let config = site("svc") + "grant = \"client_credentials\"\nclient_secret_cmd = \"echo s\"\n";
    let server = serve(&config, &[]);
    let first = server.ask(r#"{"v":1,"op":"login","site":"svc"}"#).await;
    ok(&first);
    let second = server.ask(r#"{"v":1,"op":"login","site":"svc"}"#).await;
    assert_ne!(
        first["access_token"], second["access_token"],
        "a fresh token"
    );
    assert_eq!(server.provider.calls(), 2);
}

#[tokio::test]
async fn logout_forgets_the_login() {
    let server = corp_and_fresh();
    ok(&server.ask(&get("corp")).await);
    let out = server.ask(r#"{"v":1,"op":"logout","site":"corp"}"#).await;
    ok(&out);
    assert!(out["message"].as_str().unwrap().contains("corp"), "{out}");
    let answer = server.ask(&get_never("corp")).await;
    assert_eq!(code(&answer), Some("login_required"), "{answer}");
    let crate::store::Store::Memory(records) = &server.store else {
        unreachable!()
    };
    assert!(
        !records.lock().unwrap().contains_key("corp"),
        "still stored"
    );
    let again = server.ask(r#"{"v":1,"op":"logout","site":"corp"}"#).await;
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("was not logged in"),
        "{again}"
    );
    let unknown = server.ask(r#"{"v":1,"op":"logout","site":"nope"}"#).await;
    assert_eq!(code(&unknown), Some("unknown_site"), "{unknown}");
}

#[tokio::test]
async fn status_lists_every_site_or_one() {
    let server = corp_and_fresh();
    let all = server.ask(r#"{"v":1,"op":"status"}"#).await;
    ok(&all);
    let names: Vec<&str> = all["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["corp", "fresh"], "{all}");
    assert_eq!(all["store"], "memory");
    assert_eq!(all["pid"], std::process::id());
    let corp = &all["sites"][0];
    assert_eq!(corp["has_refresh_token"], true, "{all}");
    assert_eq!(all["sites"][1]["state"], "login_required", "{all}");
    let unknown = server.ask(&status("nope")).await;
    assert_eq!(code(&unknown), Some("unknown_site"), "{unknown}");
}

#[tokio::test]
async fn lookup_finds_the_site_listing_a_remote_and_refuses_plain_http() {
    let config = site("corp") + "hosts = [\"git.example\"]\n";
    let server = serve(&config, &["corp"]);
    let lookup = |protocol: &str, host: &str| {
        format!(r#"{{"v":1,"op":"lookup","protocol":"{protocol}","host":"{host}"}}"#)
    };
    let found = server.ask(&lookup("https", "git.example")).await;
    ok(&found);
    assert_eq!(found["site"], "corp");
    assert_eq!(found["git_auth"], "basic");
    assert_eq!(found["username"], "oauth2");
    let plain = server.ask(&lookup("http", "git.example")).await;
    assert_eq!(code(&plain), Some("unknown_site"), "{plain}");
    assert!(message(&plain).contains("only to https"), "{plain}");
    let other = server.ask(&lookup("https", "other.example")).await;
    assert_eq!(code(&other), Some("unknown_site"), "{other}");
    assert!(
        message(&other).contains("urls = [\"https://other.example/\"]"),
        "{other}"
    );
}

/// One request where the helpers made two: the token of the site the URL
/// map picks, with that site's name and how the helper sends its token.
#[tokio::test]
async fn get_by_url_answers_the_token_and_the_site_that_serves_it() {
    let config = site("corp")
        + "urls = [\"https://registry.example/\"]\nusername = \"bob\"\ncargo_token = \"raw\"\n"
        + &site("other")
        + "urls = [\"https://other.example/team/\"]\n";
    let server = serve(&config, &["corp"]);
    let by_url = |url: &str| format!(r#"{{"v":1,"op":"get","url":"{url}","login":"never"}}"#);
    let found = server.ask(&by_url("registry.example")).await;
    ok(&found);
    assert_eq!(found["access_token"], "at1", "{found}");
    assert_eq!(found["served"]["site"], "corp", "{found}");
    assert_eq!(found["served"]["username"], "bob", "{found}");
    assert_eq!(found["served"]["cargo_token"], "raw", "{found}");
    // The same site by name: the same token, and no `served` beside it.
    let by_name = server.ask(&get("corp")).await;
    assert_eq!(by_name["access_token"], "at1", "{by_name}");
    assert!(by_name.get("served").is_none(), "{by_name}");
    assert_eq!(server.provider.calls(), 1);
    // The site's own answers follow the URL map's choice.
    let later = server.ask(&by_url("https://other.example/team/x")).await;
    assert_eq!(code(&later), Some("login_required"), "{later}");
    assert!(message(&later).contains("token login other"), "{later}");
    let unserved = server.ask(&by_url("https://nobody.example/")).await;
    assert_eq!(code(&unserved), Some("unknown_site"), "{unserved}");
    assert!(message(&unserved).contains("no site serves"), "{unserved}");
    let plain = server.ask(&by_url("http://registry.example/")).await;
    assert_eq!(code(&plain), Some("unknown_site"), "{plain}");
    let both = server
        .ask(r#"{"v":1,"op":"get","site":"corp","url":"https://registry.example/"}"#)
        .await;
    assert_eq!(code(&both), Some("bad_request"), "{both}");
    assert!(message(&both).contains("not both"), "{both}");
    let neither = server.ask(r#"{"v":1,"op":"get"}"#).await;
    assert_eq!(code(&neither), Some("bad_request"), "{neither}");
}

#[tokio::test]
async fn reload_reads_the_config_again() {
    let server = serve(&site("corp"), &["corp"]);
    server.write_config(&(site("corp") + &site("added")));
    let reply = server.ask(r#"{"v":1,"op":"reload"}"#).await;
    ok(&reply);
    assert_eq!(reply["sites"], 2, "{reply}");
    assert_eq!(reply["kept_previous"], false, "{reply}");
    let answer = server.ask(&get_never("added")).await;
    assert_eq!(code(&answer), Some("login_required"), "{answer}");

    // A file that does not parse keeps the previous settings.
    server.write_config("[site.corp\n");
    let kept = server.ask(r#"{"v":1,"op":"reload"}"#).await;
    assert_eq!(kept["kept_previous"], true, "{kept}");
    assert_eq!(kept["sites"], 2, "{kept}");
    assert!(
        !kept["config_errors"].as_array().unwrap().is_empty(),
        "{kept}"
    );
}

/// `stop` is understood at every protocol version, so a newer client can
/// replace an older daemon; the server then ends.
#[tokio::test]
async fn stop_at_any_version_ends_the_server() {
    let mut server = corp_and_fresh();
    let reply = server.ask(r#"{"v":7,"op":"stop"}"#).await;
    ok(&reply);
    assert!(server.ended().await, "the server kept running");
}

/// Callers on many connections at once share the one token call.
#[tokio::test]
async fn a_crowd_of_connections_shares_one_token_call() {
    let server = corp_and_fresh();
    *server.provider.delay.lock().unwrap() = Duration::from_millis(200);
    let mut crowd = Vec::new();
    for _ in 0..20 {
        let mut c = server.connect().await;
        c.send(&get("corp")).await;
        crowd.push(c);
    }
    for mut c in crowd {
        assert_eq!(c.answer().await["access_token"], "at1");
    }
    assert_eq!(server.provider.calls(), 1);
}

#[tokio::test]
async fn a_provider_that_fails_is_a_provider_error_saying_when_next() {
    let server = corp_and_fresh();
    server.provider.fail.store(1000, Ordering::SeqCst);
    let answer = server.ask(&get("corp")).await;
    assert_eq!(code(&answer), Some("provider_error"), "{answer}");
    assert!(message(&answer).contains("503"), "{answer}");
    assert!(message(&answer).contains("tries again in"), "{answer}");
}

#[tokio::test]
async fn a_site_whose_table_is_invalid_is_a_config_error() {
    let server = serve(
        &(site("corp") + "[site.bad]\nclient_id = \"c\"\n"),
        &["corp"],
    );
    let answer = server.ask(&get("bad")).await;
    assert_eq!(code(&answer), Some("config_error"), "{answer}");
    assert!(message(&answer).contains("config.toml"), "{answer}");
    ok(&server.ask(&get("corp")).await);
}
