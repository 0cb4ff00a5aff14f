//! Waiting on a login over the real wire, in-process: the events a
//! waiting caller sees, a second caller joining, the paste that finishes
//! a paste-back login, and what a caller that goes away leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::kit::{code, corp_and_fresh, get, message, ok};

/// A `get` that needs a login sees the login's event before its answer;
/// a second caller joins the same login and is not the one to open the
/// browser.
#[tokio::test]
async fn a_get_that_waits_for_a_login_sees_its_event_and_a_second_caller_joins() {
    let server = corp_and_fresh();
    let mut first = server.connect().await;
    first.send(&get("fresh")).await;
    let event = first.value().await;
    assert_eq!(event["event"], "login_url", "{event}");
    assert_eq!(event["site"], "fresh");
    assert_eq!(event["open_browser"], true);
    assert_eq!(event["timeout"], 300);
    assert!(
        event["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{event}"
    );

    let mut second = server.connect().await;
    second.send(&get("fresh")).await;
    let joined = second.value().await;
    assert_eq!(joined["event"], "login_url", "{joined}");
    assert_eq!(joined["open_browser"], false, "one browser opens");
    assert_eq!(server.state("fresh").await, "login_pending");
}

/// The caller that opened the login goes away: the login goes on for the
/// one still waiting, which now opens the browser; once every caller has
/// gone, the login ends and nothing of it is left.
#[tokio::test]
async fn a_caller_that_goes_away_leaves_the_login_to_the_others_and_the_last_ends_it() {
    let server = corp_and_fresh();
    let mut opener = server.connect().await;
    opener.send(&get("fresh")).await;
    assert_eq!(opener.value().await["open_browser"], true);
    let mut other = server.connect().await;
    other.send(&get("fresh")).await;
    assert_eq!(other.value().await["open_browser"], false);

    opener.close();
    let took_over = other.value().await;
    assert_eq!(took_over["event"], "login_url", "{took_over}");
    assert_eq!(
        took_over["open_browser"], true,
        "the remaining caller opens it"
    );
    assert_eq!(server.state("fresh").await, "login_pending");

    other.close();
    server.becomes("fresh", "login_required").await;
    // The next caller starts a fresh login, and opens its browser.
    let mut next = server.connect().await;
    next.send(&get("fresh")).await;
    assert_eq!(next.value().await["open_browser"], true);
    assert_eq!(server.provider.calls(), 0);
}

/// A paste-back login: its caller sees the URL to open, the paste arrives
/// on a second connection, and the caller's answer is the token.
#[tokio::test]
async fn login_by_paste_is_finished_by_a_paste_on_another_connection() {
    let server = corp_and_fresh();
    let nothing = server
        .ask(r#"{"v":1,"op":"paste","site":"fresh","input":"code"}"#)
        .await;
    assert_eq!(code(&nothing), Some("bad_request"), "{nothing}");
    assert!(
        message(&nothing).contains("no paste-back login waiting"),
        "{nothing}"
    );

    let mut waiting = server.connect().await;
    waiting
        .send(r#"{"v":1,"op":"login","site":"fresh","mode":"paste"}"#)
        .await;
    let event = waiting.value().await;
    assert_eq!(event["event"], "paste_url", "{event}");
    assert_eq!(event["paste"], true);
    assert!(
        event["url"]
            .as_str()
            .unwrap()
            .starts_with("https://fresh.example/authorize?"),
        "{event}"
    );
    let pasted = server
        .ask(r#"{"v":1,"op":"paste","site":"fresh","input":"the-code"}"#)
        .await;
    ok(&pasted);
    assert_eq!(pasted["message"], "received");
    let token = waiting.answer().await;
    ok(&token);
    assert_eq!(token["access_token"], "at1", "{token}");
    assert_eq!(server.provider.calls(), 1, "the code was exchanged");
    assert_eq!(server.state("fresh").await, "ready");
}

/// A `get` from a caller with no browser waits on a paste-back login: the
/// event, then (the paste arriving on another connection) the token, on
/// the one connection.
#[tokio::test]
async fn a_get_without_a_browser_sees_the_paste_event_then_its_token() {
    let server = corp_and_fresh();
    let mut waiting = server.connect().await;
    waiting
        .send(r#"{"v":1,"op":"get","site":"fresh","no_browser":true}"#)
        .await;
    let event = waiting.value().await;
    assert_eq!(event["event"], "paste_url", "{event}");
    ok(&server
        .ask(r#"{"v":1,"op":"paste","site":"fresh","input":"the-code"}"#)
        .await);
    let token = waiting.value().await;
    ok(&token);
    assert_eq!(token["access_token"], "at1", "{token}");
}

/// A logout while a login waits ends the login: its caller hears
/// `login_incomplete`, not a hang.
#[tokio::test]
async fn a_logout_while_a_login_waits_answers_its_caller_login_incomplete() {
    let server = corp_and_fresh();
    let mut waiting = server.connect().await;
    waiting
        .send(r#"{"v":1,"op":"login","site":"fresh","mode":"paste"}"#)
        .await;
    assert_eq!(waiting.value().await["event"], "paste_url");
    ok(&server.ask(r#"{"v":1,"op":"logout","site":"fresh"}"#).await);
    let answer = waiting.answer().await;
    assert_eq!(code(&answer), Some("login_incomplete"), "{answer}");
    assert_eq!(server.state("fresh").await, "login_required");
}
