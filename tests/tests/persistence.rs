//! Story: a login survives a daemon restart with the file store and with the
//! OS keyring; the file store is private (0600 file in a 0700 dir).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use tokend_e2e::{
    exit, files_under, keyring_available, mode, require, serve_corp_with_store, unique, Env,
    Provider,
};

fn dirs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        if e.path().is_dir() {
            out.extend(dirs_under(&e.path()));
        }
    }
    out
}

/// Logs in, restarts the daemon (gracefully or with SIGKILL), and checks the
/// new daemon serves the site with no new login.
fn survives_restart(env: &mut Env, provider: &Provider, site: &str, kill9: bool) {
    let mut daemon = env.daemon();
    let first = env.token(&["get", site]);
    first.ok();
    assert_eq!(env.browser_launches(), 1);
    if kill9 {
        daemon.kill9();
    } else {
        daemon.stop();
    }
    drop(daemon);

    let calls = provider.stats().token_calls;
    let _daemon = env.daemon();
    let out = env.token(&["get", site, "--no-login"]);
    out.ok();
    assert_eq!(env.browser_launches(), 1, "no new login after a restart");
    assert_eq!(
        provider.stats().token_calls,
        calls,
        "the stored access token is still valid: a cold get makes no provider call"
    );
    assert_eq!(
        out.line(),
        first.line(),
        "the same token as before the restart"
    );
    let (status, body) = provider.userinfo(out.line());
    assert_eq!(status, 200, "the token after the restart works: {body}");
    let stats = provider.stats();
    assert_eq!(stats.grant("authorization_code"), 1, "{stats:?}");
}

/// A provider and a file-store world with `[site.corp]` that [`survives_restart`].
fn file_store_survives_restart(kill9: bool) -> (Provider, Env) {
    let provider = Provider::start(3600);
    let mut env = Env::with_store("file");
    env.write_config(&Env::site_config("corp", &provider));
    survives_restart(&mut env, &provider, "corp", kill9);
    (provider, env)
}

#[test]
fn file_store_survives_a_restart_and_is_private() {
    let (_provider, env) = file_store_survives_restart(false);

    let dir = env.state_dir();
    assert!(
        dir.is_dir(),
        "the file store lives under $XDG_STATE_HOME/tokend ({})",
        dir.display()
    );
    for d in dirs_under(&dir) {
        assert_eq!(mode(&d), 0o700, "store dir {} must be 0700", d.display());
    }
    let files = files_under(&dir);
    assert!(!files.is_empty(), "no store file under {}", dir.display());
    for f in &files {
        assert_eq!(mode(f), 0o600, "store file {} must be 0600", f.display());
    }
}

#[test]
fn file_store_survives_kill_9() {
    file_store_survives_restart(true);
}

#[test]
fn secrets_never_reach_the_config_dir_or_the_log() {
    let (_provider, env, daemon) = serve_corp_with_store(3600, "file");
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();
    let log = daemon.log();
    assert!(
        !log.contains(&token),
        "the access token appears in the daemon log"
    );
    let config = fs::read_to_string(env.config_path()).unwrap();
    assert!(!config.contains(&token));
}

#[test]
fn keyring_store_survives_a_restart() {
    if !require(
        keyring_available(),
        "keyring_store_survives_a_restart",
        "TOKEND_TEST_KEYRING=1 is not set",
        "run the tests through scripts/test (it unlocks gnome-keyring on a private D-Bus session and sets it)",
    ) {
        return;
    }
    let provider = Provider::start(3600);
    let mut env = Env::with_store("keyring");
    // The keyring is shared by every test of the session: a unique site name.
    let site = unique("corp").replace('-', "_");
    env.write_config(&Env::site_config(&site, &provider));
    survives_restart(&mut env, &provider, &site, false);

    // Nothing of the login may be written to the state dir.
    let files = files_under(&env.state_dir());
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_default();
        assert!(
            !text.contains("refresh"),
            "keyring store wrote {} ({text})",
            f.display()
        );
    }
    let _ = env.token(&["logout", &site]);
}

/// The keyring is the user's, the one-daemon lock the state directory's:
/// a daemon with another state directory on the same keyring (another
/// `XDG_STATE_HOME`, a container on the session's Secret Service) neither
/// sees nor overwrites the first one's login of a site of the same name.
#[test]
fn daemons_with_different_state_dirs_keep_apart_in_one_keyring() {
    if !require(
        keyring_available(),
        "daemons_with_different_state_dirs_keep_apart_in_one_keyring",
        "TOKEND_TEST_KEYRING=1 is not set",
        "run the tests through scripts/test (it unlocks gnome-keyring on a private D-Bus session and sets it)",
    ) {
        return;
    }
    let provider = Provider::start(3600);
    let site = unique("apart").replace('-', "_");
    let mut first = Env::with_store("keyring");
    first.write_config(&Env::site_config(&site, &provider));
    let _first_daemon = first.daemon();
    first.token(&["get", &site]).ok();

    let mut second = Env::with_store("keyring");
    second.write_config(&Env::site_config(&site, &provider));
    let _second_daemon = second.daemon();
    second
        .token(&["get", &site, "--no-login"])
        .code(exit::LOGIN_REQUIRED);
    // Its own login and logout leave the first one's login alone.
    second.token(&["get", &site]).ok();
    second.token(&["logout", &site]).ok();
    first.token(&["get", &site, "--no-login"]).ok();
    let _ = first.token(&["logout", &site]);
}

/// Logs in to a fresh site (`env` as `before` sets it up) with the file
/// store, then starts a daemon whose store is the keyring (`after`): the
/// login must come along.
fn moves_from_the_file_store_to_the_keyring(
    test: &str,
    before: impl FnOnce(&mut Env),
    after: impl FnOnce(&mut Env),
) {
    if !require(
        keyring_available(),
        test,
        "TOKEND_TEST_KEYRING=1 is not set",
        "run it under scripts/test, which unlocks gnome-keyring and sets it",
    ) {
        return;
    }
    let provider = Provider::start(3600);
    let mut env = Env::new();
    before(&mut env);
    // The keyring is shared by every test of the session: a unique site name.
    let site = unique("corp").replace('-', "_");
    env.write_config(&Env::site_config(&site, &provider));
    let mut daemon = env.daemon();
    env.token(&["get", &site]).ok();
    daemon.stop();
    drop(daemon);
    let file = env.state_dir().join("tokens.json");
    assert!(fs::read_to_string(&file).unwrap().contains(&site));

    // file -> keyring: the login comes along, no new login.
    after(&mut env);
    let mut daemon = env.daemon();
    env.token(&["get", &site, "--no-login"]).ok();
    assert_eq!(env.browser_launches(), 1, "no new login");
    let moved = format!("the store changed from file to keyring: moved the logins of {site}");
    assert!(daemon.log().contains(&moved), "{}", daemon.log());
    let status = env.token(&["status"]);
    assert!(status.stdout.contains(&moved), "{status}");
    assert!(
        !fs::read_to_string(&file).unwrap().contains(&site),
        "removed from the file store"
    );
    daemon.stop();
    drop(daemon);

    // A restart with the same store moves nothing again, and the note of
    // the store in use was replaced (not refused because it existed).
    let daemon = env.daemon();
    env.token(&["get", &site, "--no-login"]).ok();
    assert!(!daemon.log().contains("store changed"), "{}", daemon.log());
    assert!(!daemon.log().contains("cannot note"), "{}", daemon.log());
    assert_eq!(
        fs::read_to_string(env.state_dir().join("store")).unwrap(),
        "keyring"
    );
    let _ = env.token(&["logout", &site]);
}

#[test]
fn a_store_change_moves_the_logins_to_the_new_store() {
    moves_from_the_file_store_to_the_keyring(
        "a_store_change_moves_the_logins_to_the_new_store",
        |env| {
            env.set("TOKEND_STORE", "file");
        },
        |env| {
            env.set("TOKEND_STORE", "keyring");
        },
    );
}

#[test]
fn logins_of_the_fallback_file_store_move_to_a_keyring_that_appeared() {
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_default();
    moves_from_the_file_store_to_the_keyring(
        "logins_of_the_fallback_file_store_move_to_a_keyring_that_appeared",
        // The default store, and no session bus to find a Secret Service on.
        |env| {
            env.unset("TOKEND_STORE");
            env.set("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        },
        |env| {
            env.set("DBUS_SESSION_BUS_ADDRESS", &bus);
        },
    );
}
