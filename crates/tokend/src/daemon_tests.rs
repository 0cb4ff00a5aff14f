//! The daemon's side of the sites, in-process on tokio's paused clock: a
//! reload retires a changed site before its successor reads the store, and
//! one slow issuer's discovery does not hold up another's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Daemon;
use crate::kit::Provider;
use crate::site::{Deps, Served, PARK_AFTER};
use crate::sites::Status;
use crate::store::Store;

fn site(name: &str, issuer: &str, client_id: &str) -> String {
    format!(
        "[site.{name}]\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\nscopes = [\"read\"]\n"
    )
}

/// A daemon, with what a test looks at: its config file's directory, the
/// provider (discovery of `https://slow.example` takes 20 s), its store.
struct Fixture {
    dir: tempfile::TempDir,
    calls: Arc<Provider>,
    d: Daemon,
    store: Store,
}

/// A daemon over `config`, whose sites all hold a stored refresh token.
fn daemon(config: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let calls = Provider::new(3600, Duration::ZERO);
    calls.slow_discovery("https://slow.example", Duration::from_secs(20));
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let parsed = crate::config::Config::parse(&path, config);
    let names: Vec<&str> = parsed.sites.keys().map(String::as_str).collect();
    let store = crate::kit::logged_in(&parsed, &names);
    let deps = Deps::scripted(calls.http(), store.clone());
    let d = Daemon::with_deps(path.clone(), crate::config::Config::load(&path), deps);
    Fixture {
        dir,
        calls,
        d,
        store,
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_issuer_does_not_hold_up_another_sites_discovery() {
    let config =
        site("slow", "https://slow.example", "c") + &site("fast", "https://fast.example", "c");
    let Fixture {
        dir: _dir,
        calls,
        d,
        ..
    } = daemon(&config);
    let slow = d.site("slow").unwrap();
    let waiting = tokio::spawn(async move { slow.get(Vec::new(), None).await });
    tokio::task::yield_now().await;
    let asked = Instant::now();
    let fast = d.site("fast").unwrap().get(Vec::new(), None).await.unwrap();
    assert!(matches!(fast, Served::Token(_)));
    assert_eq!(
        asked.elapsed(),
        Duration::ZERO,
        "waited on the other issuer"
    );
    assert!(!waiting.is_finished());
    assert!(matches!(waiting.await.unwrap().unwrap(), Served::Token(_)));
    assert_eq!(calls.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_the_client_retires_the_site_and_drops_its_login() {
    let Fixture { dir, d, .. } = daemon(&site("corp", "https://auth.example", "c1"));
    let before = d.site("corp").unwrap();
    assert!(matches!(
        before.get(Vec::new(), None).await.unwrap(),
        Served::Token(_)
    ));

    std::fs::write(
        dir.path().join("config.toml"),
        site("corp", "https://auth.example", "c2"),
    )
    .unwrap();
    d.reload();
    let after = d.site("corp").unwrap();
    let status = after.status().await.unwrap();
    assert!(
        !status.has_refresh_token,
        "the other client's login is not used"
    );
    assert!(matches!(
        after.get(Vec::new(), None).await.unwrap(),
        Served::NeedLogin
    ));
    // A settings change that keeps the client keeps the site and its login.
    std::fs::write(
        dir.path().join("config.toml"),
        site("corp", "https://auth.example", "c2") + "refresh_before = \"5m\"\n",
    )
    .unwrap();
    d.reload();
    assert!(after.status().await.is_ok(), "the site was restarted");
}

#[tokio::test(start_paused = true)]
async fn a_sites_task_starts_when_the_site_is_first_asked_for() {
    let config = site("a", "https://auth.example", "c") + &site("b", "https://auth.example", "c");
    let Fixture { dir, calls, d, .. } = daemon(&config);
    assert!(
        d.sites.running_names().await.is_empty(),
        "no task before a site is asked for"
    );
    // A settings change of a site nobody asked for starts nothing either,
    // and the site then runs with the new settings.
    std::fs::write(
        dir.path().join("config.toml"),
        config.clone() + "refresh_before = \"5m\"\n",
    )
    .unwrap();
    d.reload();
    assert!(d.sites.running_names().await.is_empty());
    let b = d.site("b").unwrap();
    assert!(matches!(
        b.get(Vec::new(), None).await.unwrap(),
        Served::Token(_)
    ));
    assert_eq!(d.sites.running_names().await, ["b"]);
    assert_eq!(d.site("b").unwrap().name(), "b");
    assert_eq!(
        d.sites.running_names().await,
        ["b"],
        "asked again: the same task"
    );
    let lines = d.statuses().await;
    assert_eq!(lines.len(), 2);
    for line in lines {
        if let Status::Ask(site) = line {
            site.status().await.unwrap();
        }
    }
    assert_eq!(
        d.sites.running_names().await.len(),
        2,
        "status starts every site"
    );
    // `a`, loaded for its status, renews at once: a refresh token and no
    // access token in hand (as after a restart).
    assert_eq!(calls.calls(), 2);
}

fn access_token(served: Served) -> String {
    match served {
        Served::Token(t) => t.access_token.clone(),
        Served::NeedLogin => panic!("needs a login"),
    }
}

/// A daemon over `config` (one site), whose site has served a token
/// (returned) and parked since.
async fn served_then_parked(config: String) -> (Fixture, String) {
    let fixture = daemon(&config);
    let d = &fixture.d;
    let name = d.config().sites.keys().next().unwrap().clone();
    let first = access_token(d.site(&name).unwrap().get(Vec::new(), None).await.unwrap());
    tokio::time::sleep(PARK_AFTER * 2).await;
    assert_eq!(d.sites.parked_names().await, [name]);
    (fixture, first)
}

#[tokio::test(start_paused = true)]
async fn an_idle_site_parks_and_its_next_caller_is_served_from_memory() {
    let Fixture {
        dir: _dir,
        calls,
        d,
        store,
    } = daemon(&site("a", "https://auth.example", "c"));
    let first = d.site("a").unwrap();
    let token = access_token(first.get(Vec::new(), None).await.unwrap());
    assert_eq!(d.sites.running_names().await, ["a"]);

    tokio::time::sleep(PARK_AFTER * 2).await;
    assert!(d.sites.running_names().await.is_empty());
    assert_eq!(d.sites.parked_names().await, ["a"]);

    // Its login is in memory: the store is not read again.
    let Store::Memory(m) = &store else {
        unreachable!()
    };
    m.lock().unwrap().clear();
    // A handle from before it parked reaches the site's next actor.
    let again = access_token(first.get(Vec::new(), None).await.unwrap());
    assert_eq!(again, token);
    assert_eq!(calls.calls(), 1, "no provider call");
    assert_eq!(d.sites.running_names().await, ["a"]);
    let status = d.site("a").unwrap().status().await.unwrap();
    assert!(status.has_refresh_token);

    // `status` does not wake a parked site: its line is known.
    tokio::time::sleep(PARK_AFTER * 2).await;
    let Ok(Status::Known(status)) = d.status_of("a").await else {
        panic!("the parked site was asked")
    };
    assert!(status.has_refresh_token);
    assert_eq!(status.state, "ready");
    assert!(matches!(d.statuses().await[..], [Status::Known(_)]));
    assert!(d.sites.running_names().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_parked_site_is_refreshed_ahead_and_parks_again() {
    let (
        Fixture {
            calls,
            d,
            dir: _dir,
            ..
        },
        first,
    ) = served_then_parked(site("a", "https://auth.example", "c")).await;

    // The one-hour token is renewed before it expires, with nobody asking.
    tokio::time::sleep(Duration::from_secs(3590)).await;
    assert_eq!(calls.calls(), 2, "refreshed ahead once");
    assert_eq!(d.sites.parked_names().await, ["a"], "parked again after it");
    let asked = Instant::now();
    let now = access_token(d.site("a").unwrap().get(Vec::new(), None).await.unwrap());
    assert_ne!(now, first);
    assert_eq!(asked.elapsed(), Duration::ZERO);
    assert_eq!(calls.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reload_drops_a_parked_login_only_when_the_client_changes() {
    let (Fixture { dir, calls, d, .. }, first) =
        served_then_parked(site("corp", "https://auth.example", "c1")).await;

    // Other settings: the login is kept.
    let write = |config: String| std::fs::write(dir.path().join("config.toml"), config).unwrap();
    write(site("corp", "https://auth.example", "c1") + "refresh_before = \"5m\"\n");
    d.reload();
    let kept = access_token(d.site("corp").unwrap().get(Vec::new(), None).await.unwrap());
    assert_eq!(kept, first);
    tokio::time::sleep(PARK_AFTER * 2).await;
    assert_eq!(d.sites.parked_names().await, ["corp"]);

    // Another client: the parked login is dropped with the site.
    write(site("corp", "https://auth.example", "c2"));
    d.reload();
    assert!(d.sites.parked_names().await.is_empty());
    assert!(matches!(
        d.site("corp").unwrap().get(Vec::new(), None).await.unwrap(),
        Served::NeedLogin
    ));
    assert_eq!(calls.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stopping_daemon_wakes_no_parked_site() {
    let (
        Fixture {
            calls,
            d,
            dir: _dir,
            ..
        },
        _,
    ) = served_then_parked(site("a", "https://auth.example", "c")).await;
    d.stop_sites(Duration::from_secs(5)).await;
    // Its refresh falls due after the daemon began to stop: no call is
    // started that the process would cut off halfway.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(calls.calls(), 1);
    assert!(d.sites.running_names().await.is_empty());
}

/// The stop hole: a `get` that arrives while the daemon waits for a token
/// call to land (the stop grace) starts no site that nobody would stop.
#[tokio::test(start_paused = true)]
async fn a_get_during_the_stop_grace_starts_no_site() {
    let config =
        site("slow", "https://slow.example", "c") + &site("idle", "https://fast.example", "c");
    let Fixture {
        dir: _dir,
        calls,
        d,
        ..
    } = daemon(&config);
    let d = Arc::new(d);
    // A token call under way (its discovery takes 20 s) holds the grace.
    let slow = d.site("slow").unwrap();
    let refreshing = tokio::spawn(async move { slow.get(Vec::new(), None).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopping = tokio::spawn({
        let d = d.clone();
        async move { d.stop_sites(Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        !stopping.is_finished(),
        "the grace waits for the token call"
    );
    let during = tokio::time::timeout(
        Duration::from_secs(1),
        d.site("idle").unwrap().get(Vec::new(), None),
    )
    .await
    .expect("a get during the stop grace was not answered");
    assert!(
        during.is_err(),
        "a site started during the stop: {during:?}"
    );
    assert_eq!(d.sites.running_names().await, ["slow"]);
    stopping.await.unwrap();
    assert!(matches!(refreshing.await.unwrap(), Ok(Served::Token(_))));
    assert!(d.sites.running_names().await.is_empty());
    assert_eq!(calls.calls(), 1, "only the slow site's call");
}

/// A parked site keeps its OAuth client: its `client_secret_cmd` runs once,
/// not once per wake. (On tokio's real clock: the command is a process.)
#[tokio::test]
async fn a_parked_site_keeps_its_client_and_does_not_run_its_secret_command_again() {
    let runs = tempfile::tempdir().unwrap();
    let counter = runs.path().join("runs");
    let config = site("conf", "https://auth.example", "c")
        + &format!(
            "client_secret_cmd = \"echo run >> '{}'; echo s3cret\"\n",
            counter.display()
        );
    let Fixture {
        dir: _dir,
        calls,
        d,
        ..
    } = daemon(&config);
    let ran = || {
        std::fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let site = d.site("conf").unwrap();
    assert!(matches!(site.renew().await.unwrap(), Served::Token(_)));
    assert_eq!(ran(), 1);
    for _ in 0..2 {
        tokio::time::sleep(PARK_AFTER * 3).await;
        assert_eq!(d.sites.parked_names().await, ["conf"]);
        assert!(matches!(site.renew().await.unwrap(), Served::Token(_)));
    }
    assert_eq!(calls.calls(), 3);
    assert_eq!(ran(), 1, "the secret command ran again after a wake");
}

/// A reload hands a site its new settings before it replaces the daemon's
/// copy of the config: a request in between decides (grant, `kube_token`,
/// `dpop`) on the site's, never on the stale copy.
#[tokio::test(start_paused = true)]
async fn a_request_decides_on_the_settings_installed_with_its_site() {
    let Fixture { dir, d, .. } = daemon(&site("corp", "https://auth.example", "c"));
    let (_, before) = d.site_with_settings("corp").unwrap();
    assert_eq!(before.grant.name(), "authorization_code");

    // The same identity (a secret command is not part of it), another grant.
    let edited = format!(
        "{}grant = \"client_credentials\"\nclient_secret_cmd = \"echo s\"\n",
        site("corp", "https://auth.example", "c")
    );
    let new = crate::config::Config::parse(&dir.path().join("config.toml"), &edited);
    assert_eq!(new.sites["corp"].identity(), before.identity());
    // What `install` does first; the daemon's copy is replaced after.
    d.apply(&d.config(), &new);
    assert_eq!(d.config().sites["corp"].grant.name(), "authorization_code");
    let (site, now) = d.site_with_settings("corp").unwrap();
    assert_eq!(now.grant.name(), "client_credentials");
    assert_eq!(site.name(), "corp");
}

/// A site removed from the config keeps its stored login for the grace
/// (`[daemon] prune_after`, a week by default), and loses it after.
#[tokio::test(start_paused = true)]
async fn a_removed_sites_login_is_pruned_after_the_grace() {
    let config = site("a", "https://a.example", "c") + &site("b", "https://b.example", "c");
    let Fixture { dir, d, store, .. } = daemon(&config);
    let d = Arc::new(d);
    std::fs::write(
        dir.path().join("config.toml"),
        site("a", "https://a.example", "c"),
    )
    .unwrap();
    d.reload();
    d.prune_removed().await;
    assert!(
        store.load("b").await.unwrap().is_some(),
        "kept within the grace"
    );
    tokio::time::advance(crate::store::prune::PRUNE_AFTER - Duration::from_secs(60)).await;
    d.prune_removed().await;
    assert!(
        store.load("b").await.unwrap().is_some(),
        "kept within the grace"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    d.prune_removed().await;
    assert!(
        store.load("b").await.unwrap().is_none(),
        "pruned after the grace"
    );
    assert!(
        store.load("a").await.unwrap().is_some(),
        "a configured site keeps its login"
    );
    assert!(!d.removed().contains("b"));
}

/// `[daemon] prune_after` shortens the grace.
#[tokio::test(start_paused = true)]
async fn prune_after_sets_the_grace() {
    let config = site("a", "https://a.example", "c") + &site("b", "https://b.example", "c");
    let Fixture { dir, d, store, .. } = daemon(&config);
    let d = Arc::new(d);
    let without_b = format!(
        "[daemon]\nprune_after = \"1h\"\n{}",
        site("a", "https://a.example", "c")
    );
    std::fs::write(dir.path().join("config.toml"), without_b).unwrap();
    d.reload();
    tokio::time::advance(Duration::from_secs(3599)).await;
    d.prune_removed().await;
    assert!(store.load("b").await.unwrap().is_some());
    tokio::time::advance(Duration::from_secs(1)).await;
    d.prune_removed().await;
    assert!(store.load("b").await.unwrap().is_none());
}

/// A site gone from the config while no daemon ran is noticed by the next
/// one: after its "ready" (the book is not read before), or by a reload
/// that comes first.
#[tokio::test(start_paused = true)]
async fn a_site_removed_while_no_daemon_ran_is_noted_after_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("removed-sites.json");
    let path = dir.path().join("config.toml");
    let store = crate::kit::logged_in(&crate::config::Config::default(), &[]);
    let start = |config: &str| {
        std::fs::write(&path, config).unwrap();
        let deps = Deps::scripted(Provider::new(3600, Duration::ZERO).http(), store.clone());
        let removed = crate::store::prune::Removed::open(Some(book.clone()));
        Daemon::build(
            path.clone(),
            crate::config::Config::load(&path),
            deps,
            removed,
        )
    };
    let both = site("a", "https://a.example", "c") + &site("b", "https://b.example", "c");
    start(&both).note_removed_at_start();
    let only_a = site("a", "https://a.example", "c");
    let d = start(&only_a);
    assert!(!d.removed().contains("b"), "not before the start's note");
    d.note_removed_at_start();
    assert!(d.removed().contains("b"));

    // A reload before the note: the start's config is noted first.
    let d = start(&both);
    assert!(
        d.removed().contains("b"),
        "the book as the last daemon left it"
    );
    std::fs::write(&path, &only_a).unwrap();
    d.reload();
    assert!(d.removed().contains("b"));
    d.note_removed_at_start();
    assert!(d.removed().contains("b"));
}
