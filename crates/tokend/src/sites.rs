//! The configured sites: a registry task that owns every site's slot, its
//! settings and its mailbox, with its actor while it runs, or its parked
//! state while it does not.
//!
//! A site's mailbox is made when the site is configured and lives as long
//! as the site: a [`SiteHandle`] is its sender and nothing else. While no
//! actor runs, the mailbox waits in the site's slot, parked on the
//! registry's one doorbell (no task or future per idle site); the first
//! message that arrives on it starts the site's actor (from the store the first time, from its parked
//! state after that), which takes the mailbox with the message. A daemon
//! with a thousand sites is ready as fast as one with one.
//!
//! An actor with nothing under way for a moment parks: its task ends and
//! hands the registry its state, its OAuth client and its mailbox
//! ([`Exit::Parked`]); an idle site costs its settings, its tokens and an
//! empty mailbox, not a task. The registry keeps the parked sites' wake
//! times and starts each one whose refresh-ahead is due. Once the daemon is
//! stopping it starts nothing: the waiting mailboxes are dropped, so their
//! callers hear that the daemon is stopping.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::JumpWatch;
use crate::config::{Config, SiteConfig};
use crate::site::held::Held;
use crate::site::mailbox::Doorbell;
use crate::site::{self, Deps, Exit, Mailbox, Msg, Parked, SiteHandle};

/// The daemon's side of the registry: the sites' mailboxes by name, and the
/// registry task's command channel.
#[derive(Debug)]
pub(crate) struct Sites {
    /// Each configured site's handle (the same for the site's whole life,
    /// parked or running) and the settings installed with it.
    handles: Directory,
    commands: mpsc::UnboundedSender<Command>,
    /// What every site's actor is given.
    deps: Arc<Deps>,
}

/// A site's line in `status`: known here, or to be asked of its actor.
#[derive(Debug)]
pub(crate) enum Status {
    Known(token_proto::SiteStatus),
    Ask(SiteHandle),
}

/// What the registry task is asked to do.
#[derive(Debug)]
enum Command {
    /// A reload's changes, in order.
    Apply(Vec<Change>),
    /// The `status` lines of one site, or of every site (by name).
    Status {
        only: Option<String>,
        reply: oneshot::Sender<Vec<Status>>,
    },
    /// Start nothing from now on; answered once every actor has ended.
    Stop(oneshot::Sender<()>),
    /// The names of the running (or parked) sites (tests).
    #[cfg(test)]
    Names {
        parked: bool,
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// One site's change in a reload.
#[derive(Debug)]
enum Change {
    /// A site new to the registry (or one whose provider, client or scopes
    /// changed: the one it replaces is retired), with its mailbox.
    New {
        config: Arc<SiteConfig>,
        handle: SiteHandle,
        mailbox: Mailbox,
        held: Arc<Held>,
    },
    /// New settings that keep the site's identity.
    Settings(Arc<SiteConfig>),
    Removed(String),
}

/// The sites' handles by name, each with the settings installed with it:
/// changed together, under one lock, by [`Sites::apply`]. One for the
/// daemon, held by [`Sites`], the registry task and the sites' [`Deps`] (a
/// token exchange asks its `subject_site` through it). It holds senders
/// only: no site holds the registry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Directory(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    entries: RwLock<HashMap<Arc<str>, Entry>>,
    /// A count of the changes to `entries`: a connection thread keeps a
    /// site's settings and cell while it stays (`handlers::get::Kept`).
    /// On a line of its own, which only a change writes.
    changes: Padded<AtomicU64>,
}

/// A value alone on its cache lines (128 bytes: two lines, as the
/// adjacent-line prefetcher fetches them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// The entries, being changed: the count of changes goes up as it is let go.
struct Changing<'a> {
    entries: std::sync::RwLockWriteGuard<'a, HashMap<Arc<str>, Entry>>,
    changes: &'a AtomicU64,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.changes.fetch_add(1, Ordering::Release);
    }
}

impl std::ops::Deref for Changing<'_> {
    type Target = HashMap<Arc<str>, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl std::ops::DerefMut for Changing<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

/// A site in the [`Directory`]: its handle, the settings installed with
/// it, and its actor's published answer to a plain `get`.
#[derive(Debug)]
struct Entry {
    handle: SiteHandle,
    settings: Arc<SiteConfig>,
    held: Arc<Held>,
}

impl Entry {
    fn new(handle: SiteHandle, settings: Arc<SiteConfig>, held: Arc<Held>) -> Entry {
        Entry {
            handle,
            settings,
            held,
        }
    }
}

impl Directory {
    /// The handle of the site `name` (its actor starts with the first
    /// message it is sent), or `None` when no such site is configured.
    pub(crate) fn get(&self, name: &str) -> Option<SiteHandle> {
        read(&self.0.entries).get(name).map(|e| e.handle.clone())
    }

    /// [`Directory::get`] and the settings installed with the site.
    pub(crate) fn get_with_settings(&self, name: &str) -> Option<(SiteHandle, Arc<SiteConfig>)> {
        read(&self.0.entries)
            .get(name)
            .map(|e| (e.handle.clone(), e.settings.clone()))
    }

    /// The settings installed with the site `name` and its published
    /// answer to a plain `get` (`site::held`).
    pub(crate) fn held(&self, name: &str) -> Option<(Arc<SiteConfig>, Arc<Held>)> {
        read(&self.0.entries)
            .get(name)
            .map(|e| (e.settings.clone(), e.held.clone()))
    }

    /// The count of changes to the directory: the same while every site's
    /// settings and cell are.
    #[cfg(unix)]
    pub(crate) fn changes(&self) -> u64 {
        self.0.changes.0.load(Ordering::Acquire)
    }

    fn change(&self) -> Changing<'_> {
        Changing {
            entries: write(&self.0.entries),
            changes: &self.0.changes.0,
        }
    }
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sites {
    /// No sites yet ([`Sites::apply`] brings them), and the registry task:
    /// call from within the tokio runtime. The task ends when the `Sites`
    /// are dropped.
    pub(crate) fn new(deps: Arc<Deps>) -> Sites {
        let handles = deps.sites.clone();
        let (commands, rx) = mpsc::unbounded_channel();
        let registry = Registry {
            deps: deps.clone(),
            handles: handles.clone(),
            slots: HashMap::new(),
            running: JoinSet::new(),
            actors: HashMap::new(),
            doorbell: Arc::new(Doorbell::default()),
            wakes: BTreeSet::new(),
            generation: 0,
            stopping: None,
        };
        tokio::spawn(registry.run(rx));
        Sites {
            handles,
            commands,
            deps,
        }
    }

    pub(crate) fn deps(&self) -> &Deps {
        &self.deps
    }

    /// The handle of the site `name` (its actor starts with the first
    /// message it is sent), or `None` when no such site is configured, and
    /// the settings installed with it: what a request decides on (grant, `kube_token`,
    /// `dpop`) is the site's own, never the rest of the config's, which a
    /// reload replaces after the sites.
    pub(crate) fn get_with_settings(&self, name: &str) -> Option<(SiteHandle, Arc<SiteConfig>)> {
        self.handles.get_with_settings(name)
    }

    /// Every site's line in `status`, by name: a parked site's now, the
    /// others' from their actor (started if it was not: its login is read
    /// from the store first).
    pub(crate) async fn statuses(&self) -> Vec<Status> {
        self.ask_status(None).await
    }

    /// The site's line in `status` (as [`Sites::statuses`]), or `None`
    /// when no such site is configured.
    pub(crate) async fn status(&self, name: &str) -> Option<Status> {
        self.ask_status(Some(name.to_owned())).await.pop()
    }

    async fn ask_status(&self, only: Option<String>) -> Vec<Status> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Status { only, reply }).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Brings the sites in line with `new` (replacing `old`): a site whose
    /// provider, client or scopes changed is retired (its actor ends before
    /// its successor touches the store) and gets a new mailbox; one with
    /// other changes gets its new settings. The handles change at once;
    /// the registry takes the rest in order.
    pub(crate) fn apply(&self, old: &Config, new: &Config) {
        let mut handles = self.handles.change();
        // A start adds every site at once.
        let more = new.sites.len().saturating_sub(handles.len());
        handles.reserve(more);
        let mut changes = Vec::new();
        let mut added = Vec::new();
        for (name, cfg) in &new.sites {
            let before = old
                .sites
                .get(name)
                .filter(|_| handles.contains_key(name.as_str()));
            match before {
                Some(c) if c.identity() == cfg.identity() => {
                    if c != cfg {
                        if let Some(e) = handles.get_mut(name.as_str()) {
                            e.settings = cfg.clone();
                        }
                        changes.push(Change::Settings(cfg.clone()));
                    }
                }
                _ => {
                    if before.is_some() {
                        tracing::info!(site = %name, "site changed provider, client or scopes: its login is dropped");
                    } else {
                        added.push(name.as_str());
                    }
                    let (handle, mailbox) = site::mailbox(name);
                    let held = Arc::new(Held::default());
                    handles.insert(
                        handle.name_arc(),
                        Entry::new(handle.clone(), cfg.clone(), held.clone()),
                    );
                    changes.push(Change::New {
                        config: cfg.clone(),
                        handle,
                        mailbox,
                        held,
                    });
                }
            }
        }
        log_added(&added);
        // Every site of `new` has its handle now: with no more handles than
        // sites (a start, most reloads), there is none to remove.
        if handles.len() > new.sites.len() {
            handles.retain(|name, _| {
                let keep = new.sites.contains_key(&**name);
                if !keep {
                    tracing::info!(site = %name, "site removed: its login is dropped");
                    changes.push(Change::Removed(name.to_string()));
                }
                keep
            });
        }
        if !changes.is_empty() {
            // The registry ends only when `self` is dropped.
            let _ = self.commands.send(Command::Apply(changes));
        }
    }

    /// Stops every site: from now on the registry starts none, parked
    /// sites stay parked, running ones finish their token call under way
    /// (it lands and persists). Returns once every actor has ended.
    pub(crate) async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Stop(reply)).is_ok() {
            let _ = done.await;
        }
    }

    /// The names of the sites whose actor is running (tests).
    #[cfg(test)]
    pub(crate) async fn running_names(&self) -> Vec<String> {
        self.names(false).await
    }

    /// The names of the parked sites (tests).
    #[cfg(test)]
    pub(crate) async fn parked_names(&self) -> Vec<String> {
        self.names(true).await
    }

    #[cfg(test)]
    async fn names(&self, parked: bool) -> Vec<String> {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Names { parked, reply });
        answer.await.unwrap_or_default()
    }
}

/// A configured site.
#[derive(Debug)]
struct Slot {
    /// Which configuration of the site this is: an actor or a mailbox of
    /// an earlier one (retired by a reload) is told apart by it.
    generation: u64,
    config: Arc<SiteConfig>,
    handle: SiteHandle,
    /// Its actor's published answer (the same as in the directory).
    held: Arc<Held>,
    run: Run,
    /// Its mailbox while no actor runs, parked on [`Registry::doorbell`].
    waiting: Option<Mailbox>,
}

#[derive(Debug)]
enum Run {
    /// Not asked for since it was configured: its login is in the store.
    /// Its mailbox waits in the slot.
    Unstarted,
    Running,
    /// Its mailbox waits in the slot.
    Parked(Box<Parked>),
}

/// An actor the registry runs.
#[derive(Debug)]
struct Actor {
    name: Arc<str>,
    generation: u64,
    /// Closed when it has ended: what a successor waits for before it
    /// touches the store.
    ended: Arc<Semaphore>,
}

/// A site's mailbox while no actor runs: it rings the registry's doorbell
/// with the slot's name and generation when a message arrives.
fn waiting(
    doorbell: &Arc<Doorbell>,
    handle: &SiteHandle,
    generation: u64,
    mut mailbox: Mailbox,
) -> Option<Mailbox> {
    mailbox.park(doorbell, (handle.name_arc(), generation));
    Some(mailbox)
}

/// The registry task's state: the only owner of the slots.
struct Registry {
    deps: Arc<Deps>,
    handles: Directory,
    /// By name: the same `Arc` as the slot's handle's (no copy a site).
    slots: HashMap<Arc<str>, Slot>,
    /// The running actors, current and retired.
    running: JoinSet<Exit>,
    actors: HashMap<tokio::task::Id, Actor>,
    /// Rung by the mailboxes of the sites with no actor (each waits in its
    /// slot) when a message arrives on one.
    doorbell: Arc<Doorbell>,
    /// When parked sites' refresh-ahead is due: one entry per parked site
    /// that has one.
    wakes: BTreeSet<(Instant, Arc<str>)>,
    generation: u64,
    /// The daemon is stopping: who waits for every actor to end.
    stopping: Option<Vec<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("slots", &self.slots.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // Timers run on the monotonic clock, which does not count a
        // suspend: while a refresh is planned, the wall clock is compared
        // with it every WALL_TICK, and a jump wakes every planned site.
        let mut watch = JumpWatch::new(&self.deps.clock);
        loop {
            let wake = self.wakes.first().map(|(at, _)| *at);
            let wake = wake.map(|at| at.min(Instant::now() + crate::clock::WALL_TICK));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    // The daemon is gone; so are the actors (the set aborts them).
                    None => return,
                },
                Some(done) = self.running.join_next_with_id() => self.exited(done),
                rung = self.doorbell.rung() => {
                    for (name, generation) in rung {
                        self.arrived(&name, generation);
                    }
                }
                () = async { match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                } } => {
                    let jumped = watch.jumped(&self.deps.clock);
                    if jumped {
                        tracing::info!(
                            "the wall clock jumped ahead (a resume?): planning every refresh again"
                        );
                    }
                    self.wake_due(jumped);
                }
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Apply(changes) => {
                // A start brings every site at once.
                let new = changes.iter().filter(|c| matches!(c, Change::New { .. }));
                self.slots.reserve(new.count());
                for change in changes {
                    self.change(change);
                }
            }
            Command::Status { only, reply } => {
                let mut names: Vec<&Arc<str>> = match &only {
                    Some(name) => self
                        .slots
                        .get_key_value(name.as_str())
                        .map(|(k, _)| k)
                        .into_iter()
                        .collect(),
                    None => self.slots.keys().collect(),
                };
                names.sort();
                let now = self.deps.clock.now();
                let lines = names
                    .into_iter()
                    .map(|name| {
                        let slot = &self.slots[&**name];
                        match &slot.run {
                            Run::Parked(p) => Status::Known(p.status(&slot.config, now)),
                            Run::Unstarted | Run::Running => Status::Ask(slot.handle.clone()),
                        }
                    })
                    .collect();
                let _ = reply.send(lines);
            }
            Command::Stop(reply) => {
                let waiters = self.stopping.get_or_insert_with(Vec::new);
                waiters.push(reply);
                self.wakes.clear();
                // Their callers hear that the daemon is stopping.
                for (name, slot) in &mut self.slots {
                    slot.waiting = None;
                    if matches!(slot.run, Run::Running) {
                        tell(name, &slot.handle, Msg::Stop);
                    }
                }
                self.stopped();
            }
            #[cfg(test)]
            Command::Names { parked, reply } => {
                let mut names: Vec<String> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| match s.run {
                        Run::Parked(_) => parked,
                        Run::Running => !parked,
                        Run::Unstarted => false,
                    })
                    .map(|(name, _)| name.to_string())
                    .collect();
                names.sort();
                let _ = reply.send(names);
            }
        }
    }

    fn change(&mut self, change: Change) {
        match change {
            Change::New {
                config,
                handle,
                mailbox,
                held,
            } => {
                let name = handle.name_arc();
                if let Some(before) = self.slots.remove(&name) {
                    self.retire(&name, before);
                }
                if self.stopping.is_some() {
                    // Its mailbox goes: its callers hear the daemon is stopping.
                    return;
                }
                self.generation += 1;
                let waiting = waiting(&self.doorbell, &handle, self.generation, mailbox);
                self.slots.insert(
                    name,
                    Slot {
                        generation: self.generation,
                        config,
                        handle,
                        held,
                        run: Run::Unstarted,
                        waiting,
                    },
                );
            }
            Change::Settings(config) => {
                let Some(slot) = self.slots.get_mut(config.name.as_str()) else {
                    return;
                };
                slot.config = config.clone();
                let name = slot.handle.name_arc();
                match &mut slot.run {
                    Run::Running => tell(&name, &slot.handle, Msg::Config(config)),
                    Run::Parked(parked) => {
                        if let Some(at) = parked.wake {
                            self.wakes.remove(&(at, name.clone()));
                        }
                        parked.reconfigured(&config, &self.deps.clock);
                        if let (Some(at), None) = (parked.wake, &self.stopping) {
                            self.wakes.insert((at, name));
                        }
                    }
                    Run::Unstarted => {}
                }
            }
            Change::Removed(name) => {
                if let Some(before) = self.slots.remove(name.as_str()) {
                    self.retire(&name, before);
                }
            }
        }
    }

    /// Ends a slot's life: its actor is stopped (it finishes its token call
    /// under way first), its parked state and its waiting mailbox dropped
    /// (its callers hear the site was reloaded).
    fn retire(&mut self, name: &str, slot: Slot) {
        if let Run::Parked(p) = &slot.run {
            if let Some(at) = p.wake {
                self.wakes.remove(&(at, slot.handle.name_arc()));
            }
        }
        tell(name, &slot.handle, Msg::Stop);
    }

    /// A message arrived on the mailbox of a site with no actor: its actor
    /// starts with it (from the parked state, or from the store after the
    /// actor it replaces has ended).
    fn arrived(&mut self, name: &str, generation: u64) {
        let Some(slot) = self
            .slots
            .get_mut(name)
            .filter(|s| s.generation == generation)
        else {
            // A retired site's: its mailbox went with its slot.
            return;
        };
        // None waiting: its actor runs (a ring from before it started), or
        // a stopping daemon has dropped the waiting mailboxes.
        let Some(mut mailbox) = slot.waiting.take() else {
            return;
        };
        mailbox.unpark();
        let Some(msg) = mailbox.try_recv() else {
            // Every sender gone, which the slot's own handle rules out.
            slot.waiting = waiting(&self.doorbell, &slot.handle, generation, mailbox);
            return;
        };
        let parked = match std::mem::replace(&mut slot.run, Run::Running) {
            Run::Parked(p) => {
                if let Some(at) = p.wake {
                    self.wakes.remove(&(at, slot.handle.name_arc()));
                }
                Some(p)
            }
            Run::Unstarted | Run::Running => None,
        };
        let after = match parked {
            Some(_) => None,
            None => self
                .actors
                .values()
                .find(|a| &*a.name == name && a.generation != generation)
                .map(|a| a.ended.clone()),
        };
        let ended = Arc::new(Semaphore::new(0));
        let task = self.running.spawn(site::run(site::Start {
            config: slot.config.clone(),
            deps: self.deps.clone(),
            mailbox,
            first: msg,
            parked,
            after,
            ended: ended.clone(),
            held: slot.held.clone(),
        }));
        self.actors.insert(
            task.id(),
            Actor {
                name: slot.handle.name_arc(),
                generation,
                ended,
            },
        );
    }

    /// An actor ended: parked (its slot takes its state, the mailbox waits
    /// again), or for good (stopped, retired, or a panic: then its site gets
    /// a new mailbox and starts from the store again).
    fn exited(&mut self, done: Result<(tokio::task::Id, Exit), tokio::task::JoinError>) {
        let (id, exit) = match done {
            Ok((id, exit)) => (id, Some(exit)),
            Err(e) => (e.id(), None),
        };
        let Some(actor) = self.actors.remove(&id) else {
            return;
        };
        let Actor {
            name, generation, ..
        } = actor;
        let stopping = self.stopping.is_some();
        let slot = self
            .slots
            .get_mut(&name)
            .filter(|s| s.generation == generation);
        match (slot, exit) {
            (Some(slot), _) if stopping => {
                // Gone with its mailbox: nothing starts it again.
                slot.run = Run::Unstarted;
            }
            (Some(slot), Some(Exit::Parked(state, mailbox))) => {
                tracing::trace!(site = %name, "parked");
                if let Some(at) = state.wake {
                    self.wakes.insert((at, slot.handle.name_arc()));
                }
                slot.run = Run::Parked(state);
                slot.waiting = waiting(&self.doorbell, &slot.handle, generation, mailbox);
            }
            (Some(slot), _) => {
                tracing::error!(site = %name, "the site's task ended unexpectedly; it starts again from the store with the next request");
                let (handle, mailbox) = site::mailbox(&name);
                let held = Arc::new(Held::default());
                self.handles.change().insert(
                    handle.name_arc(),
                    Entry::new(handle.clone(), slot.config.clone(), held.clone()),
                );
                slot.handle = handle;
                slot.held = held;
                slot.run = Run::Unstarted;
                slot.waiting = waiting(&self.doorbell, &slot.handle, generation, mailbox);
            }
            // Retired, or the daemon is stopping: gone with its mailbox.
            (None, _) => {}
        }
        self.stopped();
    }

    /// Answers who waits for the stop once no actor runs.
    fn stopped(&mut self) {
        if self.running.is_empty() {
            for reply in self
                .stopping
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
            {
                let _ = reply.send(());
            }
        }
    }

    /// Starts the parked sites whose refresh-ahead is due (`all`: every one
    /// with a plan, since the wall clock jumped: each actor plans again from
    /// the wall clock): each is sent a wake-up, which starts its actor as
    /// any message does.
    fn wake_due(&mut self, all: bool) {
        let now = Instant::now();
        while let Some((at, name)) = self.wakes.first().cloned() {
            if at > now && !all {
                return;
            }
            self.wakes.pop_first();
            if let Some(slot) = self.slots.get(&*name) {
                // A full mailbox starts the actor anyway.
                let _ = slot.handle.try_post(Msg::Wake);
            }
        }
    }
}

/// Sends `msg` to a site, saying so when the site's actor has ended.
fn tell(name: &str, handle: &SiteHandle, msg: Msg) {
    if handle.post(msg).is_err() {
        tracing::debug!(site = %name, "the site's actor has ended: nothing to tell it");
    }
}

/// New sites, in the log: each by name when a reload adds a few, one line
/// when a start configures many (a thousand lines, each a write to the log
/// file, were about 2 ms of a cold start; the names are at debug level).
fn log_added(added: &[&str]) {
    const NAMED: usize = 10;
    if added.len() <= NAMED {
        for name in added {
            tracing::info!(site = %name, "site configured");
        }
        return;
    }
    tracing::info!(
        sites = added.len(),
        "sites configured (each one's name at debug level)"
    );
    for name in added {
        tracing::debug!(site = %name, "site configured");
    }
}
