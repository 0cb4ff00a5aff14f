//! The actor's store writes, off the actor: a save runs in a task of its
//! own (one at a time, in order), so a keyring that is slow to answer (an
//! unlock prompt, a hung Secret Service) stalls neither `status` nor the
//! callers the tokens in hand serve. A token call whose result must be
//! saved first (a rotated refresh token reaches the store before the new
//! access token is handed out) is withheld until its save has answered:
//! its callers wait for it, anyone else is served the token held before.
//! A save that fails (past the store's deadline, or refused) is said in
//! `status` and in every token handed out, and tried again. A logout's
//! delete is one of these writes: queued after the save under way, run
//! off the actor, said in `status` and tried again when it fails.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::flight::Need;
use super::Actor;
use crate::clock::whole;
use crate::site::state::Current;
use crate::store::{Record, StoreError};

/// How long after a failed save it is tried again (unless a new change
/// saves sooner).
pub(super) const SAVE_RETRY: Duration = Duration::from_secs(30);

/// What the store is to hold of the site: the login in memory, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum Write {
    #[default]
    Save,
    Delete,
}

/// A write (a save or a delete) under way.
pub(super) struct Saving {
    /// Writes started so far, this one included.
    pub(super) id: u64,
    kind: Write,
    pub(super) task: JoinHandle<Result<(), StoreError>>,
}

/// A token call's result that its save must reach the store before it is
/// handed out.
pub(super) struct Withheld {
    /// The need it serves, and the token held for it before it landed
    /// (served meanwhile).
    pub(super) need: Need,
    pub(super) before: Option<Current>,
    /// The save that carries it.
    pub(super) save: u64,
    pub(super) then: Then,
}

/// What a withheld result does once saved.
pub(super) enum Then {
    /// Answers the waiters of the flight numbered `seq`.
    Answer(u64),
    /// Ends the login it finished.
    Login,
}

impl Actor {
    /// Has the login in memory written to the store: now, or after the
    /// save under way. Returns the number of the save that carries it.
    pub(super) fn persist(&mut self) -> u64 {
        self.write(Write::Save)
    }

    /// Has the login deleted from the store: now, or after the save under
    /// way (which must not land after it).
    pub(super) fn erase(&mut self) {
        self.write(Write::Delete);
    }

    /// The latest write asked for wins: a save after a delete saves.
    fn write(&mut self, kind: Write) -> u64 {
        self.want = kind;
        self.save_retry = None;
        if self.saving.is_some() {
            self.save_again = true;
            return self.saves + 1;
        }
        self.start_save();
        self.saves
    }

    fn start_save(&mut self) {
        self.saves += 1;
        let store = self.deps.store.clone();
        let name = self.name.clone();
        let kind = self.want;
        let task = match kind {
            Write::Save => {
                let record = self.record(self.now());
                tokio::spawn(async move { store.save(&name, &record).await })
            }
            Write::Delete => tokio::spawn(async move { store.delete(&name).await }),
        };
        self.saving = Some(Saving {
            id: self.saves,
            kind,
            task,
        });
    }

    /// What is persisted of the login in memory.
    fn record(&self, now: f64) -> Record {
        // The access token too, so a restart serves it without a provider call.
        let access = self.st.access.as_ref();
        Record {
            identity: self.cfg.identity(),
            access_token: access.map(|c| c.token.clone()),
            token_type: access.map(|c| c.token_type.clone()),
            expires_at: access.and_then(|c| c.expires_at),
            refresh_token: self.st.refresh.clone(),
            scopes: self.st.scopes.clone(),
            saved_at: whole(now),
            dpop_key: self.dpop.as_ref().map(|d| d.key.to_stored()),
            id_token: self.st.id_token.as_ref().map(|t| t.token.clone()),
            id_token_expires_at: self.st.id_token.as_ref().map(|t| t.expires_at),
        }
    }

    /// Holds a token call's result back from callers until the save
    /// numbered `save` has answered.
    pub(super) fn withhold(&mut self, need: Need, before: Option<Current>, save: u64, then: Then) {
        self.withheld = Some(Box::new(Withheld {
            need,
            before,
            save,
            then,
        }));
    }

    /// A save answered. A failure is logged and kept as the site's error
    /// (memory still has the login; a restart would lose it) and the save
    /// is tried again later. A result withheld for this save is handed out
    /// either way.
    pub(super) fn saved(&mut self, result: Result<Result<(), StoreError>, tokio::task::JoinError>) {
        let Some(done) = self.saving.take() else {
            return;
        };
        match result.unwrap_or_else(|source| Err(StoreError::Task { source })) {
            Ok(()) => {
                if self.st.last_error.is_some() && self.st.last_error == self.st.unsaved {
                    self.st.last_error = None;
                }
                self.st.unsaved = None;
            }
            Err(e) => {
                let store = self.deps.store.name();
                let msg = match done.kind {
                    Write::Save => format!("cannot persist the login to the {store} store: {e}"),
                    Write::Delete => format!(
                        "cannot remove the login from the {store} store ({e}): a restart would find it again"
                    ),
                };
                tracing::error!(site = %self.name, "{msg}; tried again in {} s", SAVE_RETRY.as_secs());
                self.st.last_error = Some(msg.clone());
                self.st.unsaved = Some(msg);
                self.save_retry = Some(tokio::time::Instant::now() + SAVE_RETRY);
            }
        }
        if std::mem::take(&mut self.save_again) {
            self.save_retry = None;
            self.start_save();
        }
        if let Some(w) = self.withheld.take_if(|w| w.save <= done.id) {
            match w.then {
                Then::Answer(seq) => self.answer(&w.need, seq, None),
                Then::Login => self.login_done(),
            }
        }
        self.settle_logouts();
    }

    /// A failed save's retry is due.
    pub(super) fn save_retry_due(&mut self) {
        self.save_retry = None;
        if self.saving.is_none() {
            tracing::info!(site = %self.name, "writing the login to the store again");
            self.start_save();
        }
    }
}
