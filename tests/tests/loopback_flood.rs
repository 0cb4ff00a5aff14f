//! Story: a flood of connections to a login's loopback port, from another
//! user and from our own, cannot starve the daemon of file descriptors: the
//! other user's are closed unanswered, ours are capped (a new one closes the
//! oldest), and the daemon raises its descriptor limit at start. The login
//! completes and another site is served meanwhile.
//!
//! The daemon is started with a soft limit of 256 descriptors (the test
//! process lowers its own before spawning it) so the flood needs only a few
//! hundred sockets; this file holds one test, as the limit is per process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Child;
use std::time::{Duration, Instant};

use tokend_e2e::{query_param, wait_output, Env, Provider};

/// python3 holding `n` idle connections to 127.0.0.1:`port` for `secs`,
/// reopening each one the listener closes (20 ms apart); as uid 65534 when
/// `as_nobody`.
fn flood(env: &Env, as_nobody: bool, port: u16, n: usize, secs: u64) -> Child {
    let script = format!(
        "import resource,socket,time,select\n\
         soft,hard=resource.getrlimit(resource.RLIMIT_NOFILE)\n\
         resource.setrlimit(resource.RLIMIT_NOFILE,(hard,hard))\n\
         end=time.time()+{secs}\n\
         socks=[]\n\
         def one():\n\
         \x20 try:\n\
         \x20   s=socket.create_connection(('127.0.0.1',{port}),timeout=2); s.setblocking(False); return s\n\
         \x20 except OSError: return None\n\
         while time.time()<end:\n\
         \x20 socks=[s for s in socks if s is not None]\n\
         \x20 while len(socks)<{n} and time.time()<end: socks.append(one())\n\
         \x20 socks=[s for s in socks if s is not None]\n\
         \x20 r,_,_=select.select(socks,[],[],0.02) if socks else ([],[],[])\n\
         \x20 for s in r:\n\
         \x20   try:\n\
         \x20     if not s.recv(4096): s.close(); socks.remove(s)\n\
         \x20   except OSError: s.close(); socks.remove(s)\n"
    );
    env.python(as_nobody, &script).spawn()
}

fn set_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        old
    }
}

#[test]
fn a_connection_flood_during_a_login_starves_nothing() {
    if !tokend_e2e::require_root("a_connection_flood_during_a_login_starves_nothing") {
        return;
    }
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.set("CC_SECRET", "cc-secret");
    env.write_config(&format!(
        "{}[site.svc]\nissuer = \"{}\"\nclient_id = \"cc-client\"\ngrant = \"client_credentials\"\nscopes = [\"read\"]\nclient_secret_env = \"CC_SECRET\"\n",
        Env::site_config("corp", &provider),
        provider.issuer()
    ));
    env.set("BROWSER_MODE", "ignore");
    let old = set_nofile(256);
    let daemon = env.daemon();
    set_nofile(old);

    let waiting = env.cmd(&["get", "corp"]).spawn();
    assert!(env.wait_browser_launches(1, Duration::from_secs(10)));
    let url = env.browser_urls().pop().unwrap();
    let port = url::Url::parse(&query_param(&url, "redirect_uri"))
        .unwrap()
        .port()
        .unwrap();

    let floods = vec![
        flood(&env, true, port, 400, 12),
        flood(&env, false, port, 400, 12),
    ];
    std::thread::sleep(Duration::from_secs(2));
    // The flood holds few of the daemon's descriptors (16 connections, and
    // the other user's closed at once), not hundreds.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .count();
    eprintln!("measured: daemon descriptors under the flood: {fds}");
    assert!(fds < 128, "{fds} descriptors open under the flood");

    // Another site is served meanwhile (a token-endpoint call, a socket).
    let t = Instant::now();
    env.cmd(&["get", "svc"])
        .timeout(Duration::from_secs(20))
        .run()
        .ok();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "get svc took {took:?}");

    // And the login completes.
    env.run_browser(&[&url], "approval under a flood");
    wait_output(waiting, Duration::from_secs(30), "get corp").ok();
    for f in floods {
        wait_output(f, Duration::from_secs(20), "flood");
    }
}
