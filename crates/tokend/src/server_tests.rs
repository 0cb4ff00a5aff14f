//! The server on the real wire, in-process (`crate::kit::serve`): framing,
//! order, timeouts and eviction, each in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::Limits;
use crate::kit::{code, message, serve, serve_with, site, status, Client, Server, TEST_LIMITS};

/// A server with one logged-in site, `corp`.
fn corp() -> Server {
    serve(&site("corp"), &["corp"])
}

/// Whether `client` still gets answers.
async fn serves(client: &mut Client) -> bool {
    code(&client.ask(&status("corp")).await).is_none()
}

#[tokio::test]
async fn a_line_over_64_kib_is_answered_bad_request_and_the_connection_serves_on() {
    let server = corp();
    let mut c = server.connect().await;
    let mut long = vec![b'x'; 70 * 1024];
    long.push(b'\n');
    c.send_raw(&long).await;
    let answer = c.value().await;
    assert_eq!(code(&answer), Some("bad_request"), "{answer}");
    assert!(message(&answer).contains("64 KiB"), "{answer}");
    assert!(serves(&mut c).await, "the next line is answered");
}

#[tokio::test]
async fn lines_that_are_not_requests_are_answered_with_why() {
    let server = corp();
    let mut c = server.connect().await;
    for (line, want, says) in [
        ("hello", "bad_request", "not JSON"),
        ("[1,2]", "bad_request", "not a JSON object"),
        (r#"{"op":"status"}"#, "bad_request", "no numeric `v`"),
        (
            r#"{"v":"1","op":"status"}"#,
            "bad_request",
            "no numeric `v`",
        ),
        (r#"{"v":1,"op":"fly"}"#, "bad_request", "bad request"),
        (r#"{"v":1,"op":"get"}"#, "bad_request", "site"),
        (r#"{"v":2,"op":"status"}"#, "version_mismatch", "token stop"),
        (r#"{"v":2,"op":"fly"}"#, "version_mismatch", "version 2"),
    ] {
        let answer = c.ask(line).await;
        assert_eq!(code(&answer), Some(want), "{line}: {answer}");
        assert!(message(&answer).contains(says), "{line}: {answer}");
    }
    assert!(serves(&mut c).await);
}

#[tokio::test]
async fn many_requests_in_one_write_are_answered_in_order() {
    let server = corp();
    let mut c = server.connect().await;
    let mut batch = String::new();
    for i in 0..50 {
        batch += &status(&format!("nope{i}"));
        // Blank lines between requests are skipped, not answered.
        batch += if i % 2 == 0 { "\n" } else { "\n \n\n" };
    }
    c.send_raw(batch.as_bytes()).await;
    for i in 0..50 {
        let answer = c.value().await;
        assert_eq!(code(&answer), Some("unknown_site"), "{answer}");
        assert!(
            message(&answer).contains(&format!("`nope{i}`")),
            "answer {i} out of order: {answer}"
        );
    }
    assert!(serves(&mut c).await);
}

#[tokio::test]
async fn a_line_split_across_writes_is_one_request() {
    let server = corp();
    let mut c = server.connect().await;
    let line = status("corp");
    let (a, b) = line.split_at(10);
    c.send_raw(a.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b).await;
    let answer = c.value().await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["sites"][0]["site"], "corp", "{answer}");
}

#[tokio::test]
async fn a_half_written_line_then_close_is_dropped_and_others_are_served() {
    let server = corp();
    let mut c = server.connect().await;
    c.send_raw(br#"{"v":1,"op":"sta"#).await;
    c.finish_sending().await;
    assert_eq!(c.line().await, None, "the half line was not answered");
    assert!(serves(&mut server.connect().await).await);
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped_after_the_line_timeout() {
    let server = corp();
    let mut c = server.connect().await;
    let line = TEST_LIMITS.line_timeout;
    // Margins wide enough for a loaded machine: the early check waits a
    // quarter of the timeout, the late one four times it (it returns as
    // soon as the connection closes).
    assert!(!c.closed_within(line / 4).await, "closed early");
    assert!(c.closed_within(line * 4).await, "a silent client was kept");
}

#[tokio::test]
async fn a_line_begun_must_end_within_the_line_timeout() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(30),
        ..TEST_LIMITS
    };
    let server = serve_with(&site("corp"), &["corp"], limits);
    let mut c = server.connect().await;
    assert!(serves(&mut c).await);
    // Idle after an answer: kept (the idle timeout is long).
    assert!(!c.closed_within(limits.line_timeout * 2).await);
    // A line begun and never ended: closed.
    c.send_raw(br#"{"v":1,"#).await;
    assert!(c.closed_within(limits.line_timeout * 4).await);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = corp();
    let mut c = server.connect().await;
    assert!(serves(&mut c).await);
    let idle = TEST_LIMITS.idle_timeout;
    assert!(!c.closed_within(idle / 4).await, "closed early");
    assert!(serves(&mut c).await, "a request renews the connection");
    assert!(!c.closed_within(idle / 4).await, "closed early");
    assert!(c.closed_within(idle * 4).await, "an idle client was kept");
}

/// At the cap, a new connection closes the longest-idle one; one that
/// waits on a login is busy and stays.
#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let limits = Limits {
        max_connections: 3,
        idle_timeout: Duration::from_secs(30),
        line_timeout: Duration::from_secs(30),
    };
    let server = serve_with(&(site("corp") + &site("fresh")), &["corp"], limits);
    // Busy: a get that waits for a login.
    let mut busy = server.connect().await;
    busy.send(r#"{"v":1,"op":"get","site":"fresh"}"#).await;
    let event = busy.value().await;
    assert_eq!(event["event"], "login_url", "{event}");
    let mut oldest = server.connect().await;
    assert!(serves(&mut oldest).await);
    let mut newer = server.connect().await;
    assert!(serves(&mut newer).await);

    let mut newest = server.connect().await;
    assert!(serves(&mut newest).await);
    assert!(
        oldest.closed_within(Duration::from_secs(2)).await,
        "the longest-idle connection was kept"
    );
    assert!(
        serves(&mut newer).await,
        "a newer idle connection was closed"
    );
    assert!(
        !busy.closed_within(Duration::from_millis(100)).await,
        "a busy connection was closed"
    );
}

/// Limits for the cap tests: two served at once before eviction, four at
/// once in all; timeouts out of the way.
const CAP: Limits = Limits {
    max_connections: 2,
    idle_timeout: Duration::from_secs(30),
    line_timeout: Duration::from_secs(30),
};

/// A connection that waits on `fresh`'s login (busy: never evicted).
async fn busy(server: &Server) -> Client {
    let mut c = server.connect().await;
    c.send(&crate::kit::get("fresh")).await;
    assert_eq!(c.value().await["event"], "login_url");
    c
}

#[tokio::test]
async fn closed_connections_give_their_place_back() {
    let server = serve_with(&site("corp"), &["corp"], CAP);
    for _ in 0..20 {
        let mut c = server.connect().await;
        assert!(serves(&mut c).await);
        c.close();
    }
    let mut last = server.connect().await;
    assert!(
        serves(&mut last).await,
        "a closed connection kept its place"
    );
}

/// When every connection is busy, a new one waits (in the kernel's
/// backlog) instead of closing a caller's, and is served once one ends.
#[tokio::test]
async fn with_every_connection_busy_a_new_one_waits_its_turn() {
    let server = serve_with(&(site("corp") + &site("fresh")), &["corp"], CAP);
    let mut callers = Vec::new();
    for _ in 0..4 {
        callers.push(busy(&server).await);
    }
    let mut late = server.connect().await;
    late.send(&status("corp")).await;
    assert!(
        !late.closed_within(Duration::from_millis(300)).await,
        "answered past the limit"
    );
    callers.pop().unwrap().close();
    let answer = late.value().await;
    assert_eq!(answer["ok"], true, "{answer}");
    for c in &mut callers {
        assert!(
            !c.closed_within(Duration::from_millis(50)).await,
            "a busy caller was closed"
        );
    }
}
