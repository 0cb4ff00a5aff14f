//! The OS keyring (Secret Service on Linux, Keychain on macOS, Credential
//! Manager on Windows) through the `keyring` crate, one entry per site
//! (service [`namespace`]: `tokend`, user = site name, secret = the record
//! as JSON); on Linux through `super::secret_service`, which keeps one
//! connection open and writes the same entries. The keyring API blocks, so
//! every call runs on the blocking pool.
//!
//! The keyring is the user's, shared by every daemon of the user, while the
//! one-daemon lock is the state directory's: a daemon started with another
//! state directory (`XDG_STATE_HOME`, a container or a test sharing the
//! session's Secret Service) holds a lock of its own. So the entries are the
//! state directory's too: the default state directory's daemon uses service
//! `tokend`, any other `tokend:PATH` (PATH: its state directory, resolved).
//! Two daemons on one keyring then never touch each other's logins, and the
//! lock that keeps one daemon per state directory keeps one per namespace.
//!
//! Windows Credential Manager refuses secrets over 2560 bytes of UTF-16
//! (1280 characters); a Microsoft Entra refresh token with the record's other
//! fields is larger. There a large record is split: the site's entry holds
//! `tokend-chunks:GEN:N`, and entries `SITE#GEN.1`..`SITE#GEN.N` hold the
//! parts. A new generation is written before the header that points to it,
//! and the old one deleted after, so a crash never leaves a torn record.
//!
//! A call the daemon stopped waiting for (see `super::DEADLINE`) still runs
//! on its blocking thread: calls of one site take turns on a lock, and a
//! write that was overtaken by a newer one is skipped, so a keyring that
//! wakes up late never puts an older record over a newer one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Record, StoreError};

/// The keyring service of the default state directory's daemon.
const SERVICE: &str = "tokend";

/// The keyring service of the daemon whose state directory is `state_dir`:
/// [`SERVICE`] for the platform's default one (under the home directory,
/// whatever `XDG_STATE_HOME` says), `tokend:PATH` for any other.
pub(crate) fn namespace(state_dir: &Path, home: &Path) -> String {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let default = if cfg!(windows) {
        resolve(home).join("AppData").join("Local").join("tokend")
    } else if cfg!(target_os = "macos") {
        resolve(home)
            .join("Library")
            .join("Application Support")
            .join("tokend")
    } else {
        resolve(home).join(".local").join("state").join("tokend")
    };
    let here = resolve(state_dir);
    if here == default {
        SERVICE.to_owned()
    } else {
        format!("{SERVICE}:{}", here.display())
    }
}

/// The most a keyring secret may hold, in UTF-16 bytes.
#[cfg(windows)]
const MAX_SECRET: usize = 2560;
#[cfg(not(windows))]
const MAX_SECRET: usize = usize::MAX;

/// The prefix of a header entry.
const CHUNKS: &str = "tokend-chunks:";
/// More parts than this is not a record of ours, and is not written.
const MAX_PARTS: usize = 64;

/// How a record's text is laid out in entries.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// It fits in the site's entry.
    Whole(String),
    /// A header for the site's entry and the parts, in order.
    Split { header: String, parts: Vec<String> },
}

/// Splits `text` so that no entry exceeds `max` UTF-16 bytes.
fn layout(text: &str, max: usize, generation: u64) -> Layout {
    let units = |s: &str| s.encode_utf16().count() * 2;
    if units(text) <= max {
        return Layout::Whole(text.to_owned());
    }
    let mut parts = Vec::new();
    let mut part = String::new();
    for c in text.chars() {
        if units(&part) + c.len_utf16() * 2 > max {
            parts.push(std::mem::take(&mut part));
        }
        part.push(c);
    }
    parts.push(part);
    Layout::Split {
        header: format!("{CHUNKS}{generation}:{}", parts.len()),
        parts,
    }
}

/// `(generation, parts)` of a header entry; `None` for a whole record.
fn parse_header(text: &str) -> Option<Result<(u64, usize), String>> {
    let rest = text.strip_prefix(CHUNKS)?;
    let parsed = rest
        .split_once(':')
        .and_then(|(g, n)| Some((g.parse().ok()?, n.parse().ok()?)))
        .filter(|&(_, n)| (1..=MAX_PARTS).contains(&n))
        .ok_or_else(|| format!("the entry holds a bad chunk header `{rest}`"));
    Some(parsed)
}

fn part_name(site: &str, generation: u64, i: usize) -> String {
    format!("{site}#{generation}.{i}")
}

#[derive(Clone, Debug)]
pub(crate) struct KeyringStore {
    /// The service of every entry: see [`namespace`].
    service: Arc<str>,
    /// [`MAX_SECRET`], or less in tests of the split path.
    max_secret: usize,
    /// Each site's turn, and the number of the last write it made.
    turns: Arc<Mutex<HashMap<String, Turn>>>,
    /// Numbers the writes in the order the daemon asked for them.
    writes: Arc<AtomicU64>,
}

type Turn = Arc<Mutex<u64>>;

#[cfg(target_os = "linux")]
use super::secret_service::{get, remove};

#[cfg(target_os = "linux")]
fn set(service: &str, user: &str, text: &str) -> Result<(), keyring::Error> {
    super::secret_service::set(service, user, text)
}

#[cfg(not(target_os = "linux"))]
fn get(service: &str, user: &str) -> Result<Option<String>, keyring::Error> {
    match keyring::Entry::new(service, user)?.get_password() {
        Ok(s) => Ok(Some(s)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(any(windows, target_os = "linux")))]
fn set(service: &str, user: &str, text: &str) -> Result<(), keyring::Error> {
    keyring::Entry::new(service, user)?.set_password(text)
}

/// As the `keyring` crate writes an entry (target `USER.SERVICE`, the
/// secret as UTF-16LE), but kept on this machine: the crate's entries are
/// `CRED_PERSIST_ENTERPRISE`, which a roaming profile copies to every
/// machine the user logs on to.
#[cfg(windows)]
fn set(service: &str, user: &str, text: &str) -> Result<(), keyring::Error> {
    crate::platform::write_local_credential(&format!("{user}.{service}"), user, text)
        .map_err(|e| keyring::Error::PlatformFailure(Box::new(e)))
}

#[cfg(not(target_os = "linux"))]
fn remove(service: &str, user: &str) -> Result<(), keyring::Error> {
    match keyring::Entry::new(service, user)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the parts a header entry points to (if it is one).
fn remove_parts(service: &str, site: &str, header: Option<&str>) -> Result<(), keyring::Error> {
    if let Some(Ok((generation, n))) = header.and_then(parse_header) {
        for i in 1..=n {
            remove(service, &part_name(site, generation, i))?;
        }
    }
    Ok(())
}

impl KeyringStore {
    /// The store of the daemon whose state directory is `state_dir`.
    pub(crate) fn of_state_dir(state_dir: &Path) -> KeyringStore {
        KeyringStore::new(&namespace(state_dir, &token_proto::home_dir()))
    }

    /// The store of the entries of keyring service `service` ([`namespace`]).
    pub(crate) fn new(service: &str) -> KeyringStore {
        KeyringStore {
            service: service.into(),
            max_secret: MAX_SECRET,
            turns: Arc::default(),
            writes: Arc::default(),
        }
    }

    fn turn(&self, site: &str) -> Turn {
        super::lock(&self.turns)
            .entry(site.to_owned())
            .or_default()
            .clone()
    }

    /// Runs a write of `site` in its turn, unless a newer write of the
    /// site has been made meanwhile (it was asked for later, so it wins).
    async fn write(
        &self,
        site: &str,
        f: impl FnOnce(&str, &str) -> Result<(), keyring::Error> + Send + 'static,
    ) -> Result<(), StoreError> {
        let number = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let turn = self.turn(site);
        let (service, site) = (self.service.clone(), site.to_owned());
        blocking(move || {
            let mut last = super::lock(&turn);
            if *last > number {
                return Ok(());
            }
            *last = number;
            f(&service, &site)
        })
        .await
    }

    pub(crate) async fn load(&self, site: &str) -> Result<Option<Record>, StoreError> {
        let turn = self.turn(site);
        let (service, site) = (self.service.clone(), site.to_owned());
        let text = blocking(move || {
            let _turn = super::lock(&turn);
            let Some(first) = get(&service, &site)? else {
                return Ok(Ok(None));
            };
            let (generation, n) = match parse_header(&first) {
                None => return Ok(Ok(Some(first))),
                Some(Err(e)) => return Ok(Err(e)),
                Some(Ok(h)) => h,
            };
            let mut text = String::new();
            for i in 1..=n {
                match get(&service, &part_name(&site, generation, i))? {
                    Some(part) => text.push_str(&part),
                    None => return Ok(Err(format!("part {i} of {n} of the record is missing"))),
                }
            }
            Ok(Ok(Some(text)))
        })
        .await?
        .map_err(StoreError::TornRecord)?;
        let Some(text) = text else { return Ok(None) };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StoreError::NotARecord { source })
    }

    pub(crate) async fn save(&self, site: &str, record: &Record) -> Result<(), StoreError> {
        let text = serde_json::to_string(record).map_err(|source| StoreError::Encode { source })?;
        let max = self.max_secret;
        // As many parts whatever the generation: checked before any write.
        if let Layout::Split { parts, .. } = layout(&text, max, 0) {
            if parts.len() > MAX_PARTS {
                return Err(StoreError::TooLarge {
                    bytes: text.len(),
                    parts: parts.len(),
                    max: MAX_PARTS,
                });
            }
        }
        self.write(site, move |service, site| {
            let old = get(service, site)?;
            let old_generation = match old.as_deref().and_then(parse_header) {
                Some(Ok((g, _))) => g,
                _ => 0,
            };
            match layout(&text, max, old_generation + 1) {
                Layout::Whole(text) => set(service, site, &text)?,
                Layout::Split { header, parts } => {
                    for (i, part) in parts.iter().enumerate() {
                        set(service, &part_name(site, old_generation + 1, i + 1), part)?;
                    }
                    set(service, site, &header)?;
                }
            }
            // The old generation's parts are unreachable now.
            remove_parts(service, site, old.as_deref())
        })
        .await
    }

    pub(crate) async fn delete(&self, site: &str) -> Result<(), StoreError> {
        self.write(site, |service, site| {
            let old = get(service, site)?;
            remove(service, site)?;
            remove_parts(service, site, old.as_deref())
        })
        .await
    }
}

/// Whether a keyring answers at all: a lookup of an entry that need not
/// exist either finds it or says it is not there.
pub(super) async fn reachable() -> Result<(), String> {
    let probe = tokio::task::spawn_blocking(|| match get(SERVICE, "tokend-probe") {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    });
    match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("it did not answer in 5 s".to_owned()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, keyring::Error> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| StoreError::Task { source })?
        .map_err(|source| StoreError::Keyring { source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Whether scripts/test runs a real keyring (gnome-keyring, and
    /// TOKEND_TEST_KEYRING=1); without one the test is skipped, loudly, and
    /// fails under TOKEND_TEST_STRICT=1 (tests/support's `require`, which
    /// this crate cannot use).
    fn keyring_under_test(test: &str) -> bool {
        if std::env::var_os("TOKEND_TEST_KEYRING").is_some() {
            return true;
        }
        let install =
            "run the tests through scripts/test (gnome-keyring on a private D-Bus session)";
        assert!(
            std::env::var("TOKEND_TEST_STRICT").as_deref() != Ok("1"),
            "no keyring, and TOKEND_TEST_STRICT=1 runs every test: {install}"
        );
        eprintln!("SKIPPED {test}: no keyring (to run it: {install})");
        false
    }

    /// What Windows Credential Manager accepts.
    const WINDOWS: usize = 2560;

    #[test]
    fn a_small_record_stays_whole() {
        assert_eq!(
            layout("{\"a\":1}", WINDOWS, 1),
            Layout::Whole("{\"a\":1}".into())
        );
    }

    #[test]
    fn a_6_kib_record_splits_into_parts_that_fit_and_join_back() {
        // Like an Entra refresh token: long base64url, plus some non-ASCII.
        let token: String = (0..6 * 1024)
            .map(|i| match i % 97 {
                0 => 'é',
                1 => '😀',
                n => (b'A' + (n % 26) as u8) as char,
            })
            .collect();
        let text = format!("{{\"refresh_token\":\"{token}\"}}");
        let Layout::Split { header, parts } = layout(&text, WINDOWS, 7) else {
            panic!("a 6 KiB record must be split")
        };
        assert!(parts.len() >= 5, "{} parts", parts.len());
        for p in &parts {
            assert!(p.encode_utf16().count() * 2 <= WINDOWS);
            assert!(!p.is_empty());
        }
        assert_eq!(parts.concat(), text);
        assert_eq!(parse_header(&header), Some(Ok((7, parts.len()))));
        assert_eq!(part_name("corp", 7, 2), "corp#7.2");
    }

    /// The split path against the real Secret Service (scripts/test runs
    /// gnome-keyring and sets TOKEND_TEST_KEYRING=1).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_split_record_round_trips_through_the_real_keyring() {
        if !keyring_under_test("a_split_record_round_trips_through_the_real_keyring") {
            return;
        }
        let store = KeyringStore {
            max_secret: 1024,
            ..KeyringStore::new(SERVICE)
        };
        let site = format!("split-test-{}", std::process::id());
        let record = |rt: &str| Record::refresh_only("i".into(), rt, vec![], 1);
        let big = "r".repeat(2 * 1024);
        store.save(&site, &record(&big)).await.unwrap();
        let back = store.load(&site).await.unwrap().unwrap();
        assert_eq!(back.refresh_token.unwrap().expose(), big);
        // A smaller one replaces it, and the old parts are gone.
        store.save(&site, &record("small")).await.unwrap();
        let back = store.load(&site).await.unwrap().unwrap();
        assert_eq!(back.refresh_token.unwrap().expose(), "small");
        let part = part_name(&site, 1, 1);
        let gone = tokio::task::spawn_blocking(move || get(SERVICE, &part).unwrap())
            .await
            .unwrap();
        assert_eq!(gone, None);
        store.delete(&site).await.unwrap();
        assert!(store.load(&site).await.unwrap().is_none());
    }

    #[test]
    fn the_default_state_dir_keeps_the_plain_service_and_any_other_has_its_own() {
        let home = tempfile::tempdir().unwrap();
        let rel = if cfg!(windows) {
            "AppData/Local/tokend"
        } else if cfg!(target_os = "macos") {
            "Library/Application Support/tokend"
        } else {
            ".local/state/tokend"
        };
        let default = home.path().join(rel);
        std::fs::create_dir_all(&default).unwrap();
        assert_eq!(namespace(&default, home.path()), "tokend");
        // The same directory by another path (a symlinked home) is the same.
        #[cfg(unix)]
        {
            let link = home.path().join("link");
            std::os::unix::fs::symlink(home.path(), &link).unwrap();
            assert_eq!(namespace(&link.join(rel), home.path()), "tokend");
        }
        let other = home.path().join("elsewhere").join("tokend");
        std::fs::create_dir_all(&other).unwrap();
        let resolved = std::fs::canonicalize(&other).unwrap();
        assert_eq!(
            namespace(&other, home.path()),
            format!("tokend:{}", resolved.display())
        );
    }

    /// Two daemons with different state directories on one real keyring:
    /// the same site name, two logins that do not touch each other.
    #[tokio::test(flavor = "multi_thread")]
    async fn two_state_dirs_on_one_keyring_keep_apart() {
        if !keyring_under_test("two_state_dirs_on_one_keyring_keep_apart") {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let (a, b) = (home.path().join("a"), home.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (a, b) = (
            KeyringStore::new(&namespace(&a, home.path())),
            KeyringStore::new(&namespace(&b, home.path())),
        );
        let site = format!("apart-test-{}", std::process::id());
        let record = |rt: &str| Record::refresh_only("i".into(), rt, vec![], 1);
        a.save(&site, &record("rt-a")).await.unwrap();
        b.save(&site, &record("rt-b")).await.unwrap();
        let rt = |r: Option<Record>| r.unwrap().refresh_token.unwrap().expose().to_owned();
        assert_eq!(rt(a.load(&site).await.unwrap()), "rt-a");
        assert_eq!(rt(b.load(&site).await.unwrap()), "rt-b");
        b.delete(&site).await.unwrap();
        assert_eq!(rt(a.load(&site).await.unwrap()), "rt-a");
        a.delete(&site).await.unwrap();
    }

    /// A record that would take more than [`MAX_PARTS`] entries is refused
    /// before anything is written (no keyring is touched here).
    #[tokio::test]
    async fn a_record_past_the_part_limit_is_refused_before_any_write() {
        let store = KeyringStore {
            max_secret: 64,
            ..KeyringStore::new("tokend:never-written")
        };
        let record = Record::refresh_only("i".into(), &"r".repeat(64 * 40), vec![], 1);
        let e = store.save("big", &record).await.unwrap_err();
        assert!(
            matches!(e, StoreError::TooLarge { max: MAX_PARTS, .. }),
            "{e}"
        );
        let said = e.to_string();
        assert!(said.contains("store = \"file\""), "{said}");
        assert!(!said.contains("rrrr"), "no secret in the error: {said}");
    }

    /// Linux: entries written over the kept connection are the ones the
    /// `keyring` crate writes and reads, both ways (a login saved by an
    /// earlier tokend is found). The other side is `secret-tool`, libsecret's
    /// own client, with the crate's attributes (keyring 3's
    /// secret_service.rs: `service`, `username`, `target`, `application =
    /// rust-keyring`); the build has no keyring backend to ask directly.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread")]
    async fn entries_are_the_keyring_crates_both_ways() {
        if !keyring_under_test("entries_are_the_keyring_crates_both_ways") {
            return;
        }
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        fn attributes<'a>(service: &'a str, user: &'a str) -> [&'a str; 6] {
            ["service", service, "username", user, "target", "default"]
        }
        fn tool_store(service: &str, user: &str, secret: &str) {
            let mut child = Command::new("secret-tool")
                .args(["store", "--label=written by keyring"])
                .args(attributes(service, user))
                .args(["application", "rust-keyring"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("secret-tool (apt-get install libsecret-tools)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(secret.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        }
        fn tool_lookup(service: &str, user: &str) -> Option<String> {
            let out = Command::new("secret-tool")
                .arg("lookup")
                .args(attributes(service, user))
                .output()
                .expect("secret-tool (apt-get install libsecret-tools)");
            out.status
                .success()
                .then(|| String::from_utf8(out.stdout).unwrap())
        }
        tokio::task::spawn_blocking(|| {
            let service = format!("tokend:compat-test-{}", std::process::id());
            tool_store(&service, "old", "written by keyring");
            assert_eq!(
                get(&service, "old").unwrap().as_deref(),
                Some("written by keyring")
            );
            set(&service, "old", "replaced here").unwrap();
            assert_eq!(
                tool_lookup(&service, "old").as_deref(),
                Some("replaced here")
            );
            set(&service, "new", "written here").unwrap();
            assert_eq!(
                tool_lookup(&service, "new").as_deref(),
                Some("written here")
            );
            remove(&service, "old").unwrap();
            remove(&service, "new").unwrap();
            assert_eq!(tool_lookup(&service, "old"), None);
            assert_eq!(get(&service, "new").unwrap(), None);
        })
        .await
        .unwrap();
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(parse_header("{\"x\":1}"), None);
        assert!(matches!(parse_header("tokend-chunks:1:0"), Some(Err(_))));
        assert!(matches!(parse_header("tokend-chunks:1:999"), Some(Err(_))));
        assert!(matches!(parse_header("tokend-chunks:x"), Some(Err(_))));
    }
}
