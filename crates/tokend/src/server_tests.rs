//! The server on the real wire, in-process (`crate::kit::serve`): framing,
//! order, timeouts and eviction, each in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::Limits;
use serde_json::Value;

use crate::kit::{
    code, message, serve, serve_share_with, serve_with, site, status, Client, Server, TEST_LIMITS,
};

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
    a_line_begun_must_end(false).await;
}

/// On the event loop, or (`on_thread`) on a connection's own thread.
async fn a_line_begun_must_end(on_thread: bool) {
    let limits = Limits {
        idle_timeout: Duration::from_secs(30),
        ..if on_thread { PROMOTING } else { TEST_LIMITS }
    };
    let server = serve_with(&site("corp"), &["corp"], limits);
    let mut c = answered(&server, on_thread).await;
    // Idle after an answer: kept (the idle timeout is long).
    assert!(!c.closed_within(limits.line_timeout * 2).await);
    // A line begun and never ended: closed.
    c.send_raw(br#"{"v":1,"#).await;
    assert!(c.closed_within(limits.line_timeout * 4).await);
    threads_become(&server, 0).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    idle_closes(false).await;
}

/// On the event loop, or (`on_thread`) on a connection's own thread.
async fn idle_closes(on_thread: bool) {
    let limits = if on_thread { PROMOTING } else { TEST_LIMITS };
    let server = serve_with(&site("corp"), &["corp"], limits);
    let mut c = answered(&server, on_thread).await;
    let idle = limits.idle_timeout;
    assert!(!c.closed_within(idle / 4).await, "closed early");
    corp_token(&c.ask(&get_never("corp")).await);
    assert!(!c.closed_within(idle / 4).await, "closed early");
    assert!(c.closed_within(idle * 4).await, "an idle client was kept");
    threads_become(&server, 0).await;
}

/// A connection to `server` that has been answered: on its own thread
/// (`on_thread`), else on the event loop.
async fn answered(server: &Server, on_thread: bool) -> Client {
    if on_thread {
        return promoted(server).await;
    }
    let mut c = server.connect().await;
    corp_token(&c.ask(&get_never("corp")).await);
    c
}

/// At the cap, a new connection closes the longest-idle one; one that
/// waits on a login is busy and stays.
#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    at_the_cap(false).await;
}

/// The longest-idle connection on the event loop, or (`on_thread`) on its
/// own thread.
async fn at_the_cap(on_thread: bool) {
    let limits = Limits {
        max_connections: 3,
        idle_timeout: Duration::from_secs(30),
        line_timeout: Duration::from_secs(30),
        ..if on_thread { PROMOTING } else { TEST_LIMITS }
    };
    let server = serve_with(&(site("corp") + &site("fresh")), &["corp"], limits);
    // Busy: a get that waits for a login.
    let mut busy = server.connect().await;
    busy.send(r#"{"v":1,"op":"get","site":"fresh"}"#).await;
    let event = busy.value().await;
    assert_eq!(event["event"], "login_url", "{event}");
    let mut oldest = answered(&server, on_thread).await;
    let mut newer = server.connect().await;
    assert!(serves(&mut newer).await);

    let mut newest = server.connect().await;
    assert!(serves(&mut newest).await);
    assert!(
        oldest.closed_within(Duration::from_secs(2)).await,
        "the longest-idle connection was kept"
    );
    threads_become(&server, 0).await;
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
    ..TEST_LIMITS
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

/// Connection threads soon: after three requests answered at once.
const PROMOTING: Limits = Limits {
    promote_after: 3,
    ..TEST_LIMITS
};

/// A plain `get` of `site` that never starts a login (the fast path's
/// kind, as a load loop sends it).
fn get_never(site: &str) -> String {
    format!(r#"{{"v":1,"op":"get","site":"{site}","login":"never"}}"#)
}

/// `corp` logged in and `fresh` not, with connection threads soon.
fn promoting() -> Server {
    serve_with(&(site("corp") + &site("fresh")), &["corp"], PROMOTING)
}

/// Asserts `answer` is `corp`'s token.
fn corp_token(answer: &Value) {
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["access_token"], "at1", "{answer}");
}

/// A connection to `server` that has a thread of its own: promoted after
/// its third `get` answered at once (a site publishes its answer once it
/// has served it twice).
async fn promoted(server: &Server) -> Client {
    let before = server.threads();
    let mut c = server.connect().await;
    for _ in 0..PROMOTING.promote_after + 3 {
        corp_token(&c.ask(&get_never("corp")).await);
        if server.threads() > before {
            return c;
        }
    }
    panic!("the connection got no thread");
}

/// Waits (up to 5 s) until `server` runs `n` connection threads.
async fn threads_become(server: &Server, n: usize) {
    for _ in 0..100 {
        if server.threads() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} connection threads, not {n}", server.threads());
}

#[tokio::test]
async fn a_busy_connection_gets_a_thread_and_answers_as_before() {
    let server = promoting();
    let mut c = promoted(&server).await;
    for _ in 0..50 {
        corp_token(&c.ask(&get_never("corp")).await);
    }
    // Pipelined: every answer, in order.
    let batch = get_never("corp") + "\n\n";
    c.send_raw(batch.repeat(100).as_bytes()).await;
    for _ in 0..100 {
        corp_token(&c.value().await);
    }
    assert_eq!(server.provider.calls(), 1);
    assert_eq!(server.threads(), 1);
    // A CLI's one request never gets one.
    corp_token(&server.ask(&get_never("corp")).await);
    assert_eq!(server.threads(), 1);
}

/// A thread looks for its caller's next line a moment before it sleeps: a
/// caller slower than that, or one that closes while it looks, is served
/// (or let go) as one that is quick.
#[tokio::test]
async fn a_promoted_caller_slow_quick_or_gone_is_served_alike() {
    let server = promoting();
    let mut c = promoted(&server).await;
    for pause in [0, 5, 0, 0, 3, 0] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        corp_token(&c.ask(&get_never("corp")).await);
    }
    // A half line, then the rest after the looks are over.
    let line = get_never("corp") + "\n";
    let (head, tail) = line.split_at(10);
    c.send_raw(head.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.send_raw(tail.as_bytes()).await;
    corp_token(&c.value().await);
    drop(c);
    threads_become(&server, 0).await;
}

#[tokio::test]
async fn requests_a_thread_does_not_answer_go_back_to_the_task_in_order() {
    let server = promoting();
    let mut c = promoted(&server).await;
    let mut batch = String::new();
    for line in [
        get_never("corp"),
        status("corp"),
        get_never("corp"),
        "hello".to_owned(),
        get_never("fresh"),
        get_never("corp"),
    ] {
        batch += &line;
        batch += "\n";
    }
    for _ in 0..3 {
        c.send_raw(batch.as_bytes()).await;
        corp_token(&c.value().await);
        let s = c.value().await;
        assert_eq!(s["sites"][0]["site"], "corp", "{s}");
        corp_token(&c.value().await);
        let bad = c.value().await;
        assert_eq!(code(&bad), Some("bad_request"), "{bad}");
        assert!(message(&bad).contains("not JSON"), "{bad}");
        assert_eq!(code(&c.value().await), Some("login_required"));
        corp_token(&c.value().await);
    }
    // Back on its thread after three more answered at once.
    for _ in 0..4 {
        corp_token(&c.ask(&get_never("corp")).await);
    }
    assert_eq!(server.threads(), 1);
}

#[tokio::test]
async fn a_line_split_across_a_handover_is_one_request() {
    let server = promoting();
    let mut c = server.connect().await;
    // Two to publish the answer, two answered at once.
    for _ in 0..PROMOTING.promote_after + 1 {
        corp_token(&c.ask(&get_never("corp")).await);
    }
    assert_eq!(server.threads(), 0);
    // The task answers the third at once, promotes with half a line, and
    // the thread reads the rest.
    let get = get_never("corp");
    let (a, b) = get.split_at(12);
    c.send_raw(format!("{get}\n{a}").as_bytes()).await;
    corp_token(&c.value().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.threads(), 1, "not promoted");
    c.send(b).await;
    corp_token(&c.value().await);
    // The thread hands a `status` back with half a `get`: the task reads
    // the rest.
    let status = status("corp");
    c.send_raw(format!("{status}\n{a}").as_bytes()).await;
    let s = c.value().await;
    assert_eq!(s["sites"][0]["site"], "corp", "{s}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b).await;
    corp_token(&c.value().await);
}

#[tokio::test]
async fn an_idle_promoted_connection_is_closed_after_the_idle_timeout() {
    idle_closes(true).await;
}

#[tokio::test]
async fn a_line_begun_on_a_thread_must_end_within_the_line_timeout() {
    a_line_begun_must_end(true).await;
}

#[tokio::test]
async fn at_the_cap_a_promoted_idle_connection_makes_room() {
    at_the_cap(true).await;
}

#[tokio::test]
async fn a_logout_is_heard_by_a_promoted_connection() {
    let server = promoting();
    let mut c = promoted(&server).await;
    let out = server.ask(r#"{"v":1,"op":"logout","site":"corp"}"#).await;
    assert_eq!(out["ok"], true, "{out}");
    let answer = c.ask(&get_never("corp")).await;
    assert_eq!(code(&answer), Some("login_required"), "{answer}");
    assert_eq!(server.threads(), 0, "the thread handed it back");
}

#[tokio::test]
async fn a_stop_closes_a_promoted_connection() {
    let mut server = promoting();
    let mut c = promoted(&server).await;
    let stopped = server.ask(r#"{"v":1,"op":"stop"}"#).await;
    assert_eq!(stopped["ok"], true, "{stopped}");
    assert!(server.ended().await);
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "a promoted connection outlived the stop"
    );
    threads_become(&server, 0).await;
}

#[tokio::test]
async fn more_busy_connections_than_threads_stay_on_the_event_loop() {
    let limits = Limits {
        max_threads: 2,
        ..PROMOTING
    };
    let server = serve_with(&site("corp"), &["corp"], limits);
    let mut conns = Vec::new();
    for _ in 0..2 {
        conns.push(promoted(&server).await);
    }
    let mut third = server.connect().await;
    for _ in 0..10 {
        corp_token(&third.ask(&get_never("corp")).await);
    }
    assert_eq!(server.threads(), 2);
    conns.pop().unwrap().close();
    threads_become(&server, 1).await;
    // Promoted once a place is free.
    corp_token(&third.ask(&get_never("corp")).await);
    assert_eq!(server.threads(), 2);
}

/// A share socket's thread answers only the sites it shares; the rest go
/// the share's way (`unknown_site`), in order.
#[tokio::test]
async fn a_share_s_thread_answers_only_its_sites() {
    let config = site("corp")
        + &site("other")
        + "[share.box]\nsocket = \"/tmp/tokend-kit-unused.sock\"\nsites = [\"corp\"]\n";
    let server = serve_share_with(&config, &["corp", "other"], PROMOTING, Some("box"));
    let mut c = promoted(&server).await;
    let batch = format!("{}\n{}\n", get_never("other"), get_never("corp"));
    c.send_raw(batch.as_bytes()).await;
    let refused = c.value().await;
    assert_eq!(code(&refused), Some("unknown_site"), "{refused}");
    corp_token(&c.value().await);
}
