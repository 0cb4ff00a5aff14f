//! Story: a login in a real browser. `BROWSER` is headless Chromium (Debian's
//! `/usr/bin/chromium`, driven by playwright-core from `tests/chromium/`): it
//! fills oidc-provider's login and consent pages, follows the redirect to the
//! loopback listener, and the token works. A screenshot of the page the
//! listener answered with is kept in `target/test-artifacts/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokend_e2e::{require, serve_corp_with_store, tests_dir, wait_until, workspace_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Where the screenshot is kept: `target/test-artifacts/chromium/`.
fn artifact(name: &str) -> PathBuf {
    workspace_root()
        .join("target")
        .join("test-artifacts")
        .join("chromium")
        .join(name)
}

/// The BROWSER script, or `None` after printing why `test` is skipped.
fn chromium_browser_or_skip(test: &str) -> Option<PathBuf> {
    let dir = tests_dir().join("chromium");
    if !require(
        Path::new(CHROMIUM).is_file(),
        test,
        "no /usr/bin/chromium",
        "apt-get install -y chromium (scripts/test installs it where it can)",
    ) || !require(
        dir.join("node_modules")
            .join("playwright-core")
            .join("package.json")
            .is_file(),
        test,
        "no playwright-core in tests/chromium/node_modules",
        "cd tests/chromium && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci (scripts/test runs it)",
    ) {
        return None;
    }
    Some(dir.join("browser.mjs"))
}

#[test]
fn a_login_in_headless_chromium_gives_a_working_token() {
    let test = "a_login_in_headless_chromium_gives_a_working_token";
    let Some(browser) = chromium_browser_or_skip(test) else {
        return;
    };
    let shot = artifact("login-done.png");
    let _ = fs::remove_file(&shot);

    let (provider, mut env, _daemon) = serve_corp_with_store(3600, "memory");
    env.set("BROWSER", &browser.to_string_lossy());
    env.set("BROWSER_SCREENSHOT", &shot.to_string_lossy());

    // Chromium starts slowly on a busy 2-core machine: a generous bound.
    // The client hands its environment to the browser; without the session
    // bus Chromium does not start accessibility services on the test's bus.
    let out = env
        .cmd(&["get", "corp"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .timeout(Duration::from_secs(180))
        .run();
    out.ok();
    let token = out.line().to_owned();
    assert!(!token.is_empty(), "{out}");
    assert_eq!(env.browser_launches(), 1, "one browser: {out}");

    let (status, body) = provider.userinfo(&token);
    assert_eq!(status, 200, "userinfo refused the token: {body}");
    assert!(body.contains("\"sub\""), "userinfo: {body}");
    assert_eq!(provider.stats().grant("authorization_code"), 1);

    // The worker takes the screenshot after the listener answered, which may
    // be just after `token get` returned; wait until it has closed Chromium.
    assert!(
        wait_until(Duration::from_secs(120), || {
            let log = env.browser_log();
            log.contains("] done") || log.contains("failed:")
        }),
        "the browser did not finish; its log:\n{}",
        env.browser_log()
    );
    let png = fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "screenshot {}: {e}; browser log:\n{}",
            shot.display(),
            env.browser_log()
        )
    });
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{} is not a PNG ({} bytes)",
        shot.display(),
        png.len()
    );
    let log = env.browser_log();
    assert!(
        log.contains("login form") && log.contains("consent form"),
        "the browser went through the provider's pages:\n{log}"
    );
    assert!(
        log.to_ascii_lowercase().contains("close this tab"),
        "the listener's page says the tab can be closed:\n{log}"
    );
    // The provider's pages ask for web fonts: the script refuses anything
    // but loopback, so every page the browser showed was on 127.0.0.1.
    let pages: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("] at ").map(|(_, u)| u))
        .collect();
    assert!(
        pages.len() >= 2 && pages.iter().all(|u| u.starts_with("http://127.0.0.1:")),
        "pages shown: {pages:?}"
    );
    eprintln!("screenshot of the final page: {}", shot.display());
}
