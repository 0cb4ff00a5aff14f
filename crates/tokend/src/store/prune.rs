//! Logins of removed sites. A site deleted from the config keeps its
//! stored login for a grace (`[daemon] prune_after`, [`PRUNE_AFTER`] by
//! default: an edit undone within it, or a config restored from a backup,
//! finds the login again); after it, the daemon revokes the tokens where
//! the provider allows (it remembers the site's settings while it runs) and
//! deletes the login from the store. `token logout NAME` reaches a removed
//! site's login at once.
//!
//! What was configured, and since when a site is gone, is kept in
//! `removed-sites.json` in the state directory (site names only, no
//! secret), so a site removed while no daemon ran is noticed at the next
//! start and a daemon restart does not restart the grace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, SiteConfig};

/// How long a removed site's login stays in the store by default.
pub(crate) const PRUNE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often the daemon looks for logins whose grace is over.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What is persisted.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Book {
    /// The sites in the config as last read (good or broken).
    #[serde(default)]
    configured: BTreeSet<String>,
    /// Sites no longer in the config, and since when (Unix s).
    #[serde(default)]
    removed: BTreeMap<String, u64>,
}

/// The removed sites whose logins are still in the store.
#[derive(Debug)]
pub(crate) struct Removed {
    /// `removed-sites.json`; `None` keeps the book in memory (tests).
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Read from `path` when first needed: a start notes its config after
    /// "ready" (a thousand names are read and compared off a cold get's way).
    book: Option<Book>,
    /// The last settings of the removed sites this daemon saw.
    configs: HashMap<String, Arc<SiteConfig>>,
}

/// A removed site's login to forget: its name, and its last settings when
/// this daemon saw them (to revoke with).
pub(crate) type Gone = (String, Option<Arc<SiteConfig>>);

impl Removed {
    /// The book in `path`, read when first needed (an unreadable one starts
    /// empty: at worst a removal is noticed at the next reload instead of
    /// now).
    pub(crate) fn open(path: Option<PathBuf>) -> Removed {
        Removed {
            path,
            inner: Mutex::default(),
        }
    }

    /// The book and the removed sites' settings, the book read if it was not.
    fn parts<'a>(
        &self,
        inner: &'a mut Inner,
    ) -> (&'a mut Book, &'a mut HashMap<String, Arc<SiteConfig>>) {
        let path = self.path.as_ref();
        let book = inner.book.get_or_insert_with(|| {
            path.and_then(|p| std::fs::read(p).ok())
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default()
        });
        (book, &mut inner.configs)
    }

    /// Takes note of the config now served (`new`, replacing `old`) at
    /// Unix second `now`: a site no longer in it is removed from now on
    /// (unless it already was), one back in it is not. Whether a site was
    /// removed.
    pub(crate) fn note(&self, old: &Config, new: &Config, now: u64) -> bool {
        let mut inner = super::lock(&self.inner);
        let (book, configs) = self.parts(&mut inner);
        // The common case, at every start of a thousand sites: the same
        // sites as noted before, none removed (compared without a copy).
        if new.broken.is_empty()
            && book.removed.is_empty()
            && configs.is_empty()
            && book.configured.iter().eq(new.sites.keys())
        {
            return false;
        }
        let names: BTreeSet<String> = new.sites.keys().chain(new.broken.keys()).cloned().collect();
        // Written again only when it changed (compared, not serialized:
        // a thousand sites are noted at every start).
        let mut changed = book.configured != names;
        let mut any = false;
        for name in book.configured.difference(&names) {
            any = true;
            if let std::collections::btree_map::Entry::Vacant(e) = book.removed.entry(name.clone())
            {
                e.insert(now);
                changed = true;
            }
            if let Some(cfg) = old.sites.get(name) {
                configs.insert(name.clone(), cfg.clone());
            }
        }
        let removed = book.removed.len();
        book.removed.retain(|name, _| !names.contains(name));
        changed |= book.removed.len() != removed;
        configs.retain(|name, _| !names.contains(name));
        book.configured = names;
        if changed {
            self.persist(book);
        }
        any
    }

    /// The removed sites whose grace (`after`) is over at Unix second `now`.
    pub(crate) fn due(&self, now: u64, after: Duration) -> Vec<Gone> {
        let mut inner = super::lock(&self.inner);
        let (book, configs) = self.parts(&mut inner);
        book.removed
            .iter()
            .filter(|(_, &since)| now >= since.saturating_add(after.as_secs()))
            .map(|(name, _)| (name.clone(), configs.get(name).cloned()))
            .collect()
    }

    /// Whether `name` is a removed site.
    #[cfg(test)]
    pub(crate) fn contains(&self, name: &str) -> bool {
        let mut inner = super::lock(&self.inner);
        self.parts(&mut inner).0.removed.contains_key(name)
    }

    /// The last settings of `name` if it is a removed site this daemon saw.
    pub(crate) fn config(&self, name: &str) -> Option<Arc<SiteConfig>> {
        super::lock(&self.inner).configs.get(name).cloned()
    }

    /// `name`'s login is forgotten: it is no longer tracked.
    pub(crate) fn forgotten(&self, name: &str) {
        let mut inner = super::lock(&self.inner);
        let (book, configs) = self.parts(&mut inner);
        configs.remove(name);
        if book.removed.remove(name).is_some() {
            self.persist(book);
        }
    }

    /// Best effort, written whole (0600, never through a planted link) and
    /// renamed into place.
    fn persist(&self, book: &Book) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let written = serde_json::to_vec_pretty(book)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                crate::platform::create_private_file(&tmp)?.write_all(&bytes)
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::debug!("cannot write {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(std::path::Path::new("/c.toml"), text)
    }

    const A: &str = "[site.a]\ntoken_url = \"https://a.example/token\"\nauthorize_url = \"https://a.example/auth\"\nclient_id = \"c\"\n";
    const B: &str = "[site.b]\ntoken_url = \"https://b.example/token\"\nauthorize_url = \"https://b.example/auth\"\nclient_id = \"c\"\n";

    #[test]
    fn a_removed_site_is_due_after_the_grace_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("removed-sites.json");
        let both = config(&format!("{A}{B}"));
        let only_a = config(A);
        let r = Removed::open(Some(path.clone()));
        r.note(&Config::default(), &both, 100);
        r.note(&both, &only_a, 200);
        let week = PRUNE_AFTER;
        assert!(r.due(200 + week.as_secs() - 1, week).is_empty());
        let due = r.due(200 + week.as_secs(), week);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "b");
        assert_eq!(due[0].1.as_ref().unwrap().name, "b");
        // A restart keeps the date (and knows no settings to revoke with).
        let again = Removed::open(Some(path.clone()));
        again.note(&Config::default(), &only_a, 5_000);
        let due = again.due(200 + week.as_secs(), week);
        assert_eq!((due[0].0.as_str(), due[0].1.is_none()), ("b", true));
        // Back in the config: no longer removed.
        again.note(&only_a, &both, 6_000);
        assert!(!again.contains("b"));
        // Removed while no daemon ran: noticed at the next start.
        let third = Removed::open(Some(path));
        third.note(&Config::default(), &only_a, 7_000);
        assert!(third.contains("b"));
        third.forgotten("b");
        assert!(!third.contains("b"));
    }
}
