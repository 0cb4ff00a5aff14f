//! Story: no caller ever gets a token the provider already considers
//! expired. tokend counts a token's expiry from when it asked for it, less
//! a second, and every place that shows an expiry shows that one (`token
//! get --format json`, git's `password_expiry_utc`, kube's
//! `expirationTimestamp`); through an outage a held token is served only
//! while it has the floor left (the larger of 2 s and 5 % of its life),
//! below that the caller hears the provider's failure and the next try.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tokend_e2e::{exit, now_unix_f64 as now_f64, Env, Provider};

/// `date -u` of Unix second `at`, as kube's `expirationTimestamp` is written.
fn rfc3339(at: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{at}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn every_expiry_shown_is_before_the_providers() {
    // Long enough for git's 60 s --min-ttl.
    let provider = Provider::start(300);
    let mut env = Env::new();
    env.write_config(&format!(
        "{}hosts = [\"127.0.0.1:1\"]\n",
        Env::site_config("corp", &provider)
    ));
    let _daemon = env.daemon();
    // The login's code exchange is answered 1.5 s late: the provider issues
    // the token then, and counts its `exp` from then.
    provider.delay(1500, 1);
    let token = env.token(&["get", "corp"]).ok().line().to_owned();
    let exp = provider.introspect(&token)["exp"]
        .as_u64()
        .expect("the provider's exp");

    let json = env.token(&["get", "corp", "--format", "json"]).ok().json();
    let at = json["expires_at"].as_u64().expect("expires_at");
    assert!(
        at < exp,
        "expires_at {at} is before the provider's exp {exp}"
    );
    assert!(at + 4 >= exp, "and not much before: {at} vs {exp}");

    let git = env
        .cmd(&["credential", "get"])
        .stdin("protocol=http\nhost=127.0.0.1:1\n\n")
        .run();
    git.ok();
    assert!(
        git.stdout.contains(&format!("password_expiry_utc={at}\n")),
        "git gets the same expiry: {git}"
    );

    let kube = env.token(&["kube", "corp"]).ok().json();
    assert_eq!(
        kube["status"]["expirationTimestamp"].as_str(),
        Some(rfc3339(at).as_str()),
        "kubectl gets the same expiry: {kube}"
    );

    // --min-ttl counts against it too: more than it has left makes a refresh.
    let left = at.saturating_sub(now_f64() as u64);
    let out = env.token(&["get", "corp", "--min-ttl", &format!("{}s", left + 1)]);
    out.ok();
    assert_ne!(out.line(), token, "a new token for the --min-ttl");
    assert_eq!(provider.stats().grant("refresh_token"), 1);
}

#[test]
fn through_an_outage_a_token_is_served_only_while_the_floor_is_left() {
    // 10 s tokens (9 s as tokend counts them): the floor is 2 s. The
    // provider refuses a token the second it expires.
    let provider = Provider::start_with(&[("AT_TTL", "10"), ("CLOCK_TOLERANCE", "0")]);
    let mut env = Env::new();
    env.write_config(&Env::site_config("corp", &provider));
    let _daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    // From now on every token call fails: refresh-ahead (about 6 s in) and
    // its retries.
    provider.fault("500", 1000);

    let json = env
        .token(&["get", "corp", "--no-login", "--format", "json"])
        .ok()
        .json();
    let at = json["expires_at"].as_u64().unwrap() as f64;
    let (mut served, mut refused) = (0, 0);
    let until = Instant::now() + Duration::from_secs(15);
    while now_f64() < at + 1.0 && Instant::now() < until {
        let asked = now_f64();
        let out = env.token(&["get", "corp", "--no-login", "--format", "json"]);
        match out.code {
            exit::OK => {
                let v = out.json();
                let left = v["expires_at"].as_u64().unwrap() as f64 - now_f64();
                // The daemon checked 2 s at least; a slow client run eats a bit.
                assert!(
                    left > 1.0,
                    "served {left:.2} s before its expiry, below the floor: {out}"
                );
                let (status, body) = provider.userinfo(v["access_token"].as_str().unwrap());
                assert_eq!(status, 200, "the provider takes what was served: {body}");
                served += 1;
            }
            exit::PROVIDER => {
                assert!(
                    asked > at - 3.0,
                    "refused while the token had {:.2} s left: {out}",
                    at - asked
                );
                assert!(out.stderr.contains("site corp"), "{out}");
                assert!(out.stderr.contains("HTTP 500"), "the failure: {out}");
                assert!(out.stderr.contains("tries again in"), "the next try: {out}");
                refused += 1;
            }
            _ => panic!("neither a token nor the provider's failure: {out}"),
        }
        thread::sleep(Duration::from_millis(150));
    }
    assert!(served > 0, "the token was served through the outage");
    assert!(refused > 0, "below the floor the caller is told why");
    assert_eq!(env.browser_launches(), 1, "no login for an outage");
}
