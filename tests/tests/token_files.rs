//! Story: programs that read a token from a file (an SDK's token file, a
//! kubeconfig `tokenFile`, `curl -H @FILE`) get one that stays fresh.
//! `[[site.NAME.file]]` entries are written at login and after every
//! refresh, with nobody asking, always before the old token expires; 0600,
//! atomically; listed in `status`; removed by `token logout` and when the
//! entry leaves the config. A directory others can write is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokend_e2e::{mode, now_unix_f64, require, wait_until, Daemon, Env, Provider, Value};

/// `[site.corp]` with `files` (`[[site.corp.file]]` bodies) at `provider`.
fn config(provider: &Provider, files: &[(PathBuf, &str)]) -> String {
    let mut c = Env::site_config("corp", provider);
    for (path, format) in files {
        c.push_str(&format!(
            "\n[[site.corp.file]]\npath = \"{}\"\nformat = \"{format}\"\n",
            path.display()
        ));
    }
    c
}

/// A daemon whose `corp` writes `files`, logged in.
fn with_files(ttl: u64, files: &[(&str, &str)]) -> (Provider, Env, Daemon, Vec<PathBuf>) {
    let provider = Provider::start(ttl);
    let mut env = Env::new();
    let dir = env.root().join("tokens");
    let paths: Vec<(PathBuf, &str)> = files.iter().map(|(n, f)| (dir.join(n), *f)).collect();
    env.write_config(&config(&provider, &paths));
    let daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    let paths: Vec<PathBuf> = paths.into_iter().map(|(p, _)| p).collect();
    for p in &paths {
        assert!(
            wait_until(Duration::from_secs(5), || p.exists()),
            "{} written at login; log:\n{}",
            p.display(),
            daemon.log()
        );
    }
    (provider, env, daemon, paths)
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

#[test]
fn a_file_stays_fresh_through_refreshes_with_nobody_asking() {
    let (provider, _env, daemon, paths) =
        with_files(4, &[("corp.token", "raw"), ("corp.json", "json")]);
    let (raw, json) = (&paths[0], &paths[1]);
    assert_eq!(mode(raw), 0o600);
    assert_eq!(mode(json), 0o600);
    assert_eq!(
        mode(raw.parent().unwrap()),
        0o700,
        "a directory it creates is private"
    );
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 && Instant::now() < deadline {
        // Never a torn or expired token: atomic writes, renewed ahead.
        let token = read(raw).expect("the raw file is always there");
        let v: Value = serde_json::from_str(&read(json).expect("json file")).expect("whole JSON");
        let expires_at = v["expires_at"].as_f64().expect("expires_at");
        assert!(
            now_unix_f64() < expires_at,
            "the file holds an expired token: {v}"
        );
        assert!(!token.is_empty() && !token.contains('\n'), "{token:?}");
        if seen.insert(token.clone()) {
            let (status, body) = provider.userinfo(&token);
            assert_eq!(status, 200, "the file's token is accepted: {body}");
            assert_eq!(v["token_type"], "Bearer");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.len() >= 4,
        "three refreshes with no caller reached the file ({} tokens); log:\n{}",
        seen.len(),
        daemon.log()
    );
    assert_eq!(mode(raw), 0o600);
}

#[test]
fn a_header_file_works_with_curl_and_logout_removes_it() {
    let curl = Command::new("curl").arg("--version").output().is_ok();
    if !require(
        curl,
        "token_files::a_header_file_works_with_curl_and_logout_removes_it",
        "no curl",
        "apt-get install -y curl",
    ) {
        return;
    }
    let (provider, env, _daemon, paths) = with_files(3600, &[("corp.header", "header")]);
    let header = &paths[0];
    let text = read(header).unwrap();
    assert!(text.starts_with("Authorization: Bearer "), "{text}");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("@{}", header.display()))
        .arg(provider.userinfo_url())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");

    // Listed in status, text and JSON.
    let status = env.site_status("corp");
    assert_eq!(status["files"][0]["path"], header.display().to_string());
    assert_eq!(status["files"][0]["format"], "header");
    assert!(
        status["files"][0]["written_at"].as_u64().is_some(),
        "{status}"
    );
    let out = env.token(&["status"]);
    assert!(
        out.stdout.contains(&format!(
            "file of corp: {} (header): written",
            header.display()
        )),
        "{out}"
    );

    env.token(&["logout", "corp"]).ok();
    assert!(
        wait_until(Duration::from_secs(5), || !header.exists()),
        "logout removes the token file"
    );
}

#[test]
fn a_file_leaves_with_its_config_entry() {
    let (provider, env, _daemon, paths) =
        with_files(3600, &[("a.token", "raw"), ("b.token", "raw")]);
    env.write_config(&config(&provider, &[(paths[1].clone(), "raw")]));
    env.token(&["reload"]).ok();
    assert!(
        wait_until(Duration::from_secs(5), || !paths[0].exists()),
        "a file whose entry is gone is removed"
    );
    assert!(paths[1].exists(), "the other one stays");
    // A new entry is written without waiting for the next refresh.
    let c = env.root().join("tokens").join("c.token");
    env.write_config(&config(
        &provider,
        &[(paths[1].clone(), "raw"), (c.clone(), "raw")],
    ));
    env.token(&["reload"]).ok();
    assert!(
        wait_until(Duration::from_secs(5), || c.exists()),
        "new entry written"
    );
    assert_eq!(read(&c), read(&paths[1]));
}

#[test]
fn a_file_in_a_directory_others_can_write_is_refused() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let open = env.root().join("open");
    fs::create_dir_all(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let file = open.join("corp.token");
    env.write_config(&config(&provider, &[(file.clone(), "raw")]));
    let _daemon = env.daemon();
    let out = env.token(&["status"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("config error:"))
        .unwrap_or_else(|| panic!("a config error: {out}"));
    assert!(
        line.contains("config.toml:6: site corp: key `file`")
            && line.contains("has mode 777: others could replace the token file there"),
        "{line}"
    );
    let out = env.token(&["get", "corp"]);
    out.code(tokend_e2e::exit::USAGE);
    assert!(!file.exists());
}

#[test]
fn a_file_that_cannot_be_written_is_reported_and_retried() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    let dir = env.root().join("tokens");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    // A directory where the file should go: the rename over it fails.
    let blocked = dir.join("corp.token");
    fs::create_dir(&blocked).unwrap();
    let id = dir.join("corp.id");
    env.write_config(&config(
        &provider,
        &[(blocked.clone(), "raw"), (id.clone(), "id_token")],
    ));
    let _daemon = env.daemon();
    env.token(&["get", "corp"]).ok();
    let status = env.wait_site_status("corp", Duration::from_secs(5), "the write error", |s| {
        s["files"][0]["error"].is_string()
    });
    assert_eq!(status["state"], "ready", "the site keeps serving: {status}");
    env.token(&["get", "corp"]).ok();
    // The ID token file was written all the same.
    let token = read(&id).expect("the id_token file");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    fs::remove_dir(&blocked).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || blocked.is_file()),
        "retried after the failure"
    );
    env.wait_site_status("corp", Duration::from_secs(5), "the error cleared", |s| {
        s["files"][0]["error"].is_null() && s["files"][0]["written_at"].is_u64()
    });
}
