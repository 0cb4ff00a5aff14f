//! Story: a daemon told to stop stops, however soon after it started. A
//! service manager or a script may send SIGTERM the moment tokend says
//! "ready"; tokend catches the signal from before it says so, and ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokend_e2e::{bin, Env};

/// SIGTERM right after "ready", a few hundred times: every daemon ends,
/// with success. Before the handler was installed ahead of "ready", about
/// one start in 300 lost the signal (signal-hook-registry drops one that
/// arrives while it installs the handler) and ran on.
#[test]
fn sigterm_right_after_ready_always_stops_the_daemon() {
    let env = Env::new();
    // Nothing is asked of the provider: a start reads the config and serves.
    env.write_config("[site.corp]\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"c\"\n");
    for round in 0..300 {
        let mut cmd = Command::new(bin("tokend"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        env.apply(&mut cmd);
        cmd.env("TOKEND_NOTIFY_READY", "1");
        let mut child = cmd.spawn().expect("spawn tokend");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "round {round}");
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                panic!("round {round}: tokend ran on 10 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(status.success(), "round {round}: {status}");
    }
}
