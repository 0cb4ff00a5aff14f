//! Story: each site's tokens have one owner, so a crowd of callers causes
//! one token call, a `--min-ttl` the provider cannot meet is answered with
//! the freshest token and a warning instead of a call per caller, and a
//! login whose caller went away does not block the next one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tokend_e2e::{serve_corp, wait_output, Env, Provider, Value};

/// Sends one request line and returns the answer line, parsed.
fn request(env: &Env, line: &str) -> Value {
    let mut s = UnixStream::connect(env.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(answer.trim()).unwrap()
}

#[test]
fn a_crowd_asking_more_than_the_provider_gives_shares_one_refresh() {
    // 9-second tokens; 100 callers want 590 s at once.
    let (provider, env, _daemon) = serve_corp(9);
    env.token(&["get", "corp"]).ok();
    provider.reset();
    let outs = env.token_concurrently(100, &["get", "corp", "--min-ttl", "590"]);
    for o in &outs {
        o.ok();
    }
    let refreshes = provider.stats().grant("refresh_token");
    eprintln!("refresh calls for the crowd: {refreshes}");
    // One call for the crowd; refresh-ahead may renew the 9-second token
    // once more while a hundred clients start on a busy machine.
    assert!(
        (1..=2).contains(&refreshes),
        "one refresh for the crowd, not one per caller: {refreshes}"
    );
}

#[test]
fn sequential_gets_past_the_providers_lifetime_make_one_refresh_and_warn() {
    let (provider, env, _daemon) = serve_corp(3600);
    env.token(&["get", "corp"]).ok();
    provider.reset();
    for _ in 0..3 {
        let answer = request(
            &env,
            "{\"v\":1,\"op\":\"get\",\"site\":\"corp\",\"min_ttl\":7200,\"login\":\"never\"}\n",
        );
        assert_eq!(answer["ok"], true, "{answer}");
        let warning = answer["warning"].as_str().unwrap_or_default();
        assert!(
            warning.contains("corp") && warning.contains("3600s") && warning.contains("7200s"),
            "the warning names the site and the provider's lifetime: {answer}"
        );
    }
    let stats = provider.stats();
    eprintln!(
        "refresh calls for 3 sequential gets: {}",
        stats.grant("refresh_token")
    );
    assert_eq!(
        stats.grant("refresh_token"),
        1,
        "one call, not one per get: {stats:?}"
    );
}

#[test]
fn a_login_whose_caller_went_away_reopens_for_the_next_caller() {
    let provider = Provider::start(3600);
    let mut env = Env::with_site("corp", &provider);
    env.set("BROWSER_MODE", "ignore");
    let daemon = env.daemon();

    let mut first = env.cmd(&["get", "corp"]).spawn();
    assert!(
        env.wait_browser_launches(1, Duration::from_secs(10)),
        "the browser opens"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // The next caller gets a login of its own (a second browser) instead
    // of waiting on one nobody watches.
    let second = env.cmd(&["get", "corp"]).spawn();
    assert!(
        env.wait_browser_launches(2, Duration::from_secs(10)),
        "a new login for the next caller; tokend log:\n{}",
        daemon.log()
    );
    let url = env.browser_urls().pop().unwrap();
    env.run_browser(&[&url], "approval of the second login");
    wait_output(second, Duration::from_secs(30), "second get").ok();
    assert_eq!(provider.stats().grant("authorization_code"), 1);
}
