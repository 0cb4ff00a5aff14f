//! The daemon's side of the sites, in-process on tokio's paused clock: a
//! reload retires a changed site before its successor reads the store, and
//! one slow issuer's discovery does not hold up another's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokend_oauth::{Http, RawResponse};
use tokio::time::Instant;

use super::Daemon;
use crate::clock::Clock;
use crate::site::{Deps, Served, PARK_AFTER};
use crate::sites::Status;
use crate::store::{Record, Store};

/// A provider for every issuer: discovery of `https://slow.example` takes
/// 20 s, everything else answers at once; token calls are counted.
fn provider(token_calls: Arc<AtomicU64>) -> Http {
    Http::scripted(Arc::new(move |req| {
        let url = req.url.clone();
        let issuer = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        let (delay, body) = if url.path().starts_with("/.well-known/") {
            let slow = issuer == "https://slow.example";
            (
                Duration::from_secs(if slow { 20 } else { 0 }),
                format!(
                    r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/authorize","token_endpoint":"{issuer}/token"}}"#
                ),
            )
        } else {
            let n = token_calls.fetch_add(1, Ordering::SeqCst) + 1;
            (
                Duration::ZERO,
                format!(r#"{{"access_token":"at{n}","token_type":"Bearer","expires_in":3600}}"#),
            )
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(RawResponse {
                status: 200,
                content_type: Some("application/json".into()),
                location: None,
                dpop_nonce: None,
                body: body.into_bytes(),
            })
        })
    }))
}

fn site(name: &str, issuer: &str, client_id: &str) -> String {
    format!(
        "[site.{name}]\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\nscopes = [\"read\"]\n"
    )
}

/// A daemon, with what a test looks at: its config file's directory, the
/// provider's count of token calls, its store.
struct Fixture {
    dir: tempfile::TempDir,
    calls: Arc<AtomicU64>,
    d: Daemon,
    store: Store,
}

/// A daemon over `config`, whose sites all hold a stored refresh token.
fn daemon(config: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let store = Store::Memory(Arc::default());
    let parsed = crate::config::Config::parse(&path, config);
    if let Store::Memory(m) = &store {
        for (name, cfg) in &parsed.sites {
            m.lock().unwrap().insert(
                name.clone(),
                Record::refresh_only(
                    cfg.identity(),
                    &format!("rt-{name}"),
                    cfg.scopes.clone(),
                    1_799_999_000,
                ),
            );
        }
    }
    let deps = Deps {
        store_notice: None,
        store: store.clone(),
        http: provider(calls.clone()),
        discovery: Arc::default(),
        clock: Clock::tokio_at(1_800_000_000.0),
        login_timeout: crate::site::LoginTimeout::new(Duration::from_secs(300)),
        load_slots: Arc::new(tokio::sync::Semaphore::new(8)),
        keys: Arc::default(),
    };
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
    assert_eq!(calls.load(Ordering::SeqCst), 2);
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
    before.finished().await;
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
    let running = |d: &Daemon| d.sites.running_names();
    assert!(running(&d).is_empty(), "no task before a site is asked for");
    // A settings change of a site nobody asked for starts nothing either,
    // and the site then runs with the new settings.
    std::fs::write(
        dir.path().join("config.toml"),
        config.clone() + "refresh_before = \"5m\"\n",
    )
    .unwrap();
    d.reload();
    assert!(running(&d).is_empty());
    let b = d.site("b").unwrap();
    assert!(matches!(
        b.get(Vec::new(), None).await.unwrap(),
        Served::Token(_)
    ));
    assert_eq!(running(&d), ["b"]);
    assert_eq!(d.site("b").unwrap().name(), "b");
    assert_eq!(running(&d), ["b"], "asked again: the same task");
    assert_eq!(d.statuses().len(), 2);
    assert_eq!(running(&d).len(), 2, "status starts every site");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
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
    assert_eq!(d.sites.parked_names(), [name]);
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
    assert_eq!(d.sites.running_names(), ["a"]);

    tokio::time::sleep(PARK_AFTER * 2).await;
    assert!(first.is_finished(), "the idle site's task ended");
    assert!(d.sites.running_names().is_empty());
    assert_eq!(d.sites.parked_names(), ["a"]);

    // Its login is in memory: the store is not read again.
    let Store::Memory(m) = &store else {
        unreachable!()
    };
    m.lock().unwrap().clear();
    // A handle from before it parked reaches the site's next actor.
    let again = access_token(first.get(Vec::new(), None).await.unwrap());
    assert_eq!(again, token);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no provider call");
    assert_eq!(d.sites.running_names(), ["a"]);
    let status = d.site("a").unwrap().status().await.unwrap();
    assert!(status.has_refresh_token);

    // `status` does not wake a parked site: its line is known.
    tokio::time::sleep(PARK_AFTER * 2).await;
    let Ok(Status::Known(status)) = d.status_of("a") else {
        panic!("the parked site was asked")
    };
    assert!(status.has_refresh_token);
    assert_eq!(status.state, "ready");
    assert!(matches!(d.statuses()[..], [Status::Known(_)]));
    assert!(d.sites.running_names().is_empty());
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
    assert_eq!(calls.load(Ordering::SeqCst), 2, "refreshed ahead once");
    assert_eq!(d.sites.parked_names(), ["a"], "parked again after it");
    let asked = Instant::now();
    let now = access_token(d.site("a").unwrap().get(Vec::new(), None).await.unwrap());
    assert_ne!(now, first);
    assert_eq!(asked.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
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
    assert_eq!(d.sites.parked_names(), ["corp"]);

    // Another client: the parked login is dropped with the site.
    write(site("corp", "https://auth.example", "c2"));
    d.reload();
    assert!(d.sites.parked_names().is_empty());
    assert!(matches!(
        d.site("corp").unwrap().get(Vec::new(), None).await.unwrap(),
        Served::NeedLogin
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
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
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(d.sites.running_names().is_empty());
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
