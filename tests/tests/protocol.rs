//! Story: the wire protocol survives hostile or broken clients: an oversized
//! line, a non-JSON line, another protocol version, a client that stalls.
//! Each gets an error response or a closed connection, and the daemon keeps
//! serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tokend_e2e::{serve_corp, Env, Value};

fn connect(env: &Env) -> UnixStream {
    let s = UnixStream::connect(env.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// What came back for one request line.
#[derive(Debug)]
enum Answer {
    /// A JSON response line.
    Response(Value),
    /// EOF or a reset: the daemon closed the connection.
    Closed,
}

fn send(env: &Env, line: &[u8]) -> Answer {
    let mut s = connect(env);
    if s.write_all(line).is_err() {
        return Answer::Closed; // closed while we were still writing
    }
    let mut r = BufReader::new(s);
    let mut buf = String::new();
    match r.read_line(&mut buf) {
        Ok(0) => Answer::Closed,
        Ok(_) => Answer::Response(
            serde_json::from_str(buf.trim())
                .unwrap_or_else(|e| panic!("response is not JSON ({e}): {buf:?}")),
        ),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("no answer and no close within 10 s")
        }
        Err(_) => Answer::Closed,
    }
}

fn assert_error(a: &Answer, codes: &[&str]) {
    match a {
        Answer::Closed => {}
        Answer::Response(v) => {
            assert_eq!(v["ok"], Value::Bool(false), "an error response: {v}");
            let code = v["error"]["code"].as_str().unwrap_or_default();
            assert!(
                codes.contains(&code),
                "error code {code:?} not in {codes:?}: {v}"
            );
        }
    }
}

fn still_serving(env: &Env) {
    let out = env.cmd(&["status"]).timeout(Duration::from_secs(10)).run();
    assert_ne!(
        out.code,
        tokend_e2e::exit::UNREACHABLE,
        "the daemon stopped serving: {out}"
    );
    assert!(out.code < 128, "{out}");
}

/// A running daemon answers `line` with an error in `codes` (or closes the
/// connection) and keeps serving.
fn refused_and_still_serving(line: &[u8], codes: &[&str]) {
    let (_p, env, mut daemon) = serve_corp(3600);
    assert_error(&send(&env, line), codes);
    still_serving(&env);
    assert!(daemon.alive());
}

#[test]
fn a_70_kib_line_is_refused() {
    let mut line = br#"{"v":1,"op":"get","site":""#.to_vec();
    line.extend(std::iter::repeat_n(b'x', 70 * 1024));
    line.extend(b"\"}\n");
    refused_and_still_serving(&line, &["bad_request"]);
}

#[test]
fn a_non_json_line_is_refused() {
    refused_and_still_serving(b"hello, daemon\n", &["bad_request"]);
}

#[test]
fn another_protocol_version_is_refused() {
    refused_and_still_serving(
        b"{\"v\":2,\"op\":\"status\"}\n",
        &["version_mismatch", "bad_request"],
    );
}

#[test]
fn an_unknown_op_is_refused() {
    refused_and_still_serving(b"{\"v\":1,\"op\":\"explode\"}\n", &["bad_request"]);
}

#[test]
fn status_over_the_raw_socket_and_many_requests_on_one_connection() {
    let (_p, env, _daemon) = serve_corp(3600);
    let mut s = connect(&env);
    s.write_all(b"{\"v\":1,\"op\":\"status\"}\n{\"v\":1,\"op\":\"get\",\"site\":\"nope\",\"login\":\"never\"}\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(first.trim()).unwrap();
    assert_eq!(first["ok"], Value::Bool(true), "status answers ok: {first}");
    let mut second = String::new();
    r.read_line(&mut second).unwrap();
    let second: Value = serde_json::from_str(second.trim()).unwrap();
    assert_eq!(second["ok"], Value::Bool(false), "{second}");
    assert_eq!(
        second["error"]["code"], "unknown_site",
        "answered in order: {second}"
    );
}

#[test]
fn a_stalled_client_does_not_stall_the_others() {
    let (_p, env, _daemon) = serve_corp(3600);
    // Half a request, never finished, connection kept open.
    let mut stalled = connect(&env);
    stalled.write_all(b"{\"v\":1,\"op\":").unwrap();
    // And one that never sends anything.
    let _idle = connect(&env);

    still_serving(&env);

    // Order, not duration: status was answered while the stalled client
    // still holds its half-sent request (the daemon's idle timeout is 60 s),
    // so nothing waited for it.
    stalled
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut b = [0u8; 1];
    let err = stalled
        .read(&mut b)
        .expect_err("the stalled connection is still open and unanswered");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}
