//! The configured sites by name: each one's settings, and its actor while
//! it runs, or its state while it is parked.
//!
//! A site's actor starts the first time the site is asked for: a daemon
//! with a thousand sites is ready as fast as one with one. An actor with
//! nothing under way for a moment parks: it hands its state to its slot
//! here and ends, so an idle site costs its settings and its tokens, not a
//! task and a mailbox. The next message starts it again from that state
//! (no store read), and one timer for the whole daemon starts the parked
//! sites whose refresh-ahead is due.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::JumpWatch;
use crate::config::{Config, SiteConfig};
use crate::site::{Deps, Msg, Parked, SiteHandle};

#[derive(Debug)]
pub(crate) struct Sites {
    inner: Mutex<Inner>,
    /// What every site's actor is given.
    deps: Arc<Deps>,
    /// Told when a parked site's wake time is the new earliest, and when
    /// the sites are dropped (the timer task then ends).
    wakes_changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Sites retired by a reload that may still be finishing a token call.
    retired: Vec<SiteHandle>,
    /// When parked sites' refresh-ahead is due: one entry per parked site
    /// that has one.
    wakes: BTreeSet<(Instant, String)>,
    /// The daemon is stopping: no site parks or is woken any more.
    stopping: bool,
}

/// A configured site: its settings, and its actor or its parked state.
#[derive(Debug)]
struct Slot {
    config: Arc<SiteConfig>,
    run: Run,
}

#[derive(Debug)]
enum Run {
    /// Not asked for since it was configured: its login is in the store.
    Unstarted,
    Running(SiteHandle),
    Parked(Box<Parked>),
}

/// A site's line in `status`: known here, or to be asked of its actor.
#[derive(Debug)]
pub(crate) enum Status {
    Known(token_proto::SiteStatus),
    Ask(SiteHandle),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sites {
    /// No sites yet ([`Sites::apply`] brings them), and the timer task that
    /// wakes parked ones: call from within the tokio runtime.
    pub(crate) fn new(deps: Arc<Deps>) -> Arc<Sites> {
        let sites = Arc::new(Sites {
            inner: Mutex::default(),
            deps,
            wakes_changed: Arc::default(),
        });
        tokio::spawn(wake_parked(
            Arc::downgrade(&sites),
            sites.wakes_changed.clone(),
        ));
        sites
    }

    pub(crate) fn deps(&self) -> &Deps {
        &self.deps
    }

    /// The actor of the site `name` (started now if it has none), or
    /// `None` when no such site is configured.
    pub(crate) fn get(self: &Arc<Self>, name: &str) -> Option<SiteHandle> {
        lock(&self.inner).started(name, self)
    }

    /// Every site's line in `status`, by name: a parked site's now, the
    /// others' from their actor (started if it was not: its login is read
    /// from the store first).
    pub(crate) fn statuses(self: &Arc<Self>) -> Vec<Status> {
        let mut inner = lock(&self.inner);
        let mut names: Vec<String> = inner.slots.keys().cloned().collect();
        names.sort();
        names
            .iter()
            .filter_map(|name| inner.status(name, self))
            .collect()
    }

    /// The site's line in `status` (as [`Sites::statuses`]), or `None`
    /// when no such site is configured.
    pub(crate) fn status(self: &Arc<Self>, name: &str) -> Option<Status> {
        lock(&self.inner).status(name, self)
    }

    /// Takes `state` into the slot of `name` if the actor parking is still
    /// the slot's (`actor`: its end signal) and its mailbox is empty. The
    /// mailbox is closed: a sender that finds it closed asks here again,
    /// and the parked actor hands on what was sent before the close.
    pub(crate) fn park(
        &self,
        name: &str,
        actor: &Arc<tokio::sync::Semaphore>,
        rx: &mut tokio::sync::mpsc::Receiver<Box<Msg>>,
        state: impl FnOnce() -> Box<Parked>,
    ) -> bool {
        let mut inner = lock(&self.inner);
        let Inner {
            slots,
            wakes,
            stopping,
            ..
        } = &mut *inner;
        let Some(slot) = slots.get_mut(name).filter(|_| !*stopping) else {
            return false;
        };
        match &slot.run {
            Run::Running(h) if h.is(actor) && rx.is_empty() => {}
            _ => return false,
        }
        rx.close();
        let parked = state();
        if let Some(at) = parked.wake {
            if wakes.first().is_none_or(|(first, _)| at < *first) {
                self.wakes_changed.notify_one();
            }
            wakes.insert((at, name.to_owned()));
        }
        slot.run = Run::Parked(parked);
        true
    }

    /// Starts the parked sites whose refresh-ahead is due (`all`: every one
    /// with a plan, since the wall clock jumped: each actor plans again from
    /// the wall clock); returns when the next one is.
    fn wake_due(self: &Arc<Self>, all: bool) -> Option<Instant> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        while let Some((at, name)) = inner.wakes.first().cloned() {
            if at > now && !all {
                return Some(at);
            }
            inner.wakes.pop_first();
            // Its actor sees the refresh due and makes it.
            inner.started(&name, self);
        }
        None
    }

    /// Brings the sites in line with `new` (replacing `old`): a site whose
    /// provider, client or scopes changed is retired (its task ends before
    /// its successor touches the store), one with other changes gets its
    /// new settings.
    pub(crate) fn apply(self: &Arc<Self>, old: &Config, new: &Config) {
        let mut inner = lock(&self.inner);
        let Inner {
            slots,
            retired,
            wakes,
            ..
        } = &mut *inner;
        retired.retain(|s| !s.is_finished());
        let mut replanned = Vec::new();
        for (name, cfg) in &new.sites {
            let same = old
                .sites
                .get(name)
                .is_some_and(|c| c.identity() == cfg.identity());
            match slots.get_mut(name) {
                Some(slot) if same => {
                    if slot.config != *cfg {
                        slot.config = cfg.clone();
                        match &mut slot.run {
                            Run::Running(actor) => actor.set_config(cfg.clone()),
                            Run::Parked(parked) => {
                                // Woken, to plan its refresh with the new settings.
                                parked.reconfigured(name);
                                replanned.push(name);
                            }
                            Run::Unstarted => {}
                        }
                    }
                }
                before => {
                    if before.is_some() {
                        tracing::info!(site = %name, "site changed provider, client or scopes: its login is dropped");
                    } else {
                        tracing::info!(site = %name, "site configured");
                    }
                    if let Some(slot) = before {
                        retire(slot, retired, wakes);
                    }
                    // Its actor starts when the site is first asked for.
                    slots.insert(
                        name.clone(),
                        Slot {
                            config: cfg.clone(),
                            run: Run::Unstarted,
                        },
                    );
                }
            }
        }
        slots.retain(|name, slot| {
            let keep = new.sites.contains_key(name);
            if !keep {
                tracing::info!(site = %name, "site removed: its login is dropped");
                retire(slot, retired, wakes);
            }
            keep
        });
        for name in replanned {
            inner.started(name, self);
        }
    }

    /// Stops parking and waking sites (the daemon is stopping), and returns
    /// the actors running now and those retired and maybe still finishing:
    /// the ones to stop. A parked site has nothing under way.
    pub(crate) fn stop(&self) -> Vec<SiteHandle> {
        let mut inner = lock(&self.inner);
        inner.stopping = true;
        inner.wakes.clear();
        inner
            .slots
            .values()
            .filter_map(|slot| match &slot.run {
                Run::Running(h) => Some(h.clone()),
                _ => None,
            })
            .chain(inner.retired.iter().cloned())
            .collect()
    }

    /// The names of the sites whose actor is running (tests).
    #[cfg(test)]
    pub(crate) fn running_names(&self) -> Vec<String> {
        self.names(|run| matches!(run, Run::Running(_)))
    }

    /// The names of the parked sites (tests).
    #[cfg(test)]
    pub(crate) fn parked_names(&self) -> Vec<String> {
        self.names(|run| matches!(run, Run::Parked(_)))
    }

    #[cfg(test)]
    fn names(&self, which: impl Fn(&Run) -> bool) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner)
            .slots
            .iter()
            .filter(|(_, slot)| which(&slot.run))
            .map(|(name, _)| name.clone())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        // The timer task sees the sites gone and ends.
        self.wakes_changed.notify_one();
    }
}

impl Inner {
    fn status(&mut self, name: &str, sites: &Arc<Sites>) -> Option<Status> {
        let slot = self.slots.get(name)?;
        if let Run::Parked(p) = &slot.run {
            return Some(Status::Known(
                p.status(&slot.config, sites.deps.clock.now()),
            ));
        }
        self.started(name, sites).map(Status::Ask)
    }

    /// The actor of the site `name`, started if it has none: from its
    /// parked state, or (first start) after the actor it replaces, if that
    /// one is still finishing. An actor that ended on its own (a panic) is
    /// started again.
    fn started(&mut self, name: &str, sites: &Arc<Sites>) -> Option<SiteHandle> {
        let slot = self.slots.get_mut(name)?;
        let parked = match std::mem::replace(&mut slot.run, Run::Unstarted) {
            Run::Running(h) if !h.is_finished() => {
                slot.run = Run::Running(h.clone());
                return Some(h);
            }
            Run::Running(_) | Run::Unstarted => None,
            Run::Parked(p) => {
                if let Some(at) = p.wake {
                    self.wakes.remove(&(at, name.to_owned()));
                }
                Some(p)
            }
        };
        let before = match parked {
            Some(_) => None,
            None => self
                .retired
                .iter()
                .rev()
                .find(|r| r.name() == name && !r.is_finished())
                .cloned(),
        };
        let h = SiteHandle::start(
            slot.config.clone(),
            sites.deps.clone(),
            before.as_ref(),
            parked,
            Arc::downgrade(sites),
        );
        slot.run = Run::Running(h.clone());
        Some(h)
    }
}

/// Ends a slot's life: its actor is stopped (and kept in `retired` until it
/// has ended), its parked state dropped.
fn retire(slot: &mut Slot, retired: &mut Vec<SiteHandle>, wakes: &mut BTreeSet<(Instant, String)>) {
    match std::mem::replace(&mut slot.run, Run::Unstarted) {
        Run::Running(actor) => {
            actor.stop();
            retired.push(actor);
        }
        Run::Parked(p) => {
            if let Some(at) = p.wake {
                wakes.remove(&(at, slot.config.name.clone()));
            }
        }
        Run::Unstarted => {}
    }
}

/// The daemon's one timer for parked sites: starts each when its
/// refresh-ahead is due, and all of them when the wall clock jumped (a
/// resume: see [`crate::clock::WALL_TICK`]). Holds the sites only while it
/// works on them.
async fn wake_parked(sites: Weak<Sites>, changed: Arc<Notify>) {
    let mut watch: Option<JumpWatch> = None;
    loop {
        let Some(next) = sites.upgrade().map(|s| {
            let clock = &s.deps.clock;
            let jumped = watch
                .get_or_insert_with(|| JumpWatch::new(clock))
                .jumped(clock);
            if jumped {
                tracing::info!(
                    "the wall clock jumped ahead (a resume?): planning every refresh again"
                );
            }
            s.wake_due(jumped)
        }) else {
            return;
        };
        match next {
            Some(at) => {
                let tick = Instant::now() + crate::clock::WALL_TICK;
                tokio::select! {
                    () = tokio::time::sleep_until(at.min(tick)) => {}
                    () = changed.notified() => {}
                }
            }
            None => changed.notified().await,
        }
    }
}
