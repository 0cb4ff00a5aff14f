//! The actor's side of its published answer to a plain `get`
//! (`site::held`): published when the actor serves that answer, taken back
//! once it is no longer what the actor would answer.

use std::sync::Arc;

use token_proto::TokenReply;

use super::flight::Need;
use super::Actor;
use crate::refresh::{serve_margin, Expiring};
use crate::site::held::Held;

impl Actor {
    /// The actor, publishing to `cell` (a new actor's own cell is one
    /// nobody reads).
    pub(crate) fn publishing_to(mut self, cell: Arc<Held>) -> Actor {
        self.cell = cell;
        self
    }

    /// Publishes `reply`, just served for `need`, when it is what every
    /// plain `get` gets: the site's own token, nothing to tell the caller,
    /// no logout or stop under way, no renewal due. Called for a token
    /// served before: a site asked once (most of a thousand) keeps no
    /// second copy of its answer.
    pub(super) fn publish(&self, need: &Need, reply: &TokenReply) {
        if *need != Need::Own
            || reply.warning.is_some()
            || reply.dpop_proof.is_some()
            || reply.token.is_some()
            || self.stopping
            || !self.logouts.is_empty()
        {
            return;
        }
        let Some(cur) = self.held(need) else {
            return;
        };
        let margin = serve_margin(cur.lifetime(), self.cfg.refresh_before);
        let now = self.now();
        let plan = self.st.next_refresh(&self.cfg, now);
        if plan.is_some_and(|at| at < now) {
            // Its renewal is due: the reply says "now" until it lands.
            return;
        }
        self.cell.publish(reply, &self.cfg, margin, plan);
    }

    /// Takes the published answer back when the actor would answer
    /// otherwise now: another token, other settings, another renewal
    /// plan, a note for the caller (the login is not saved, the provider
    /// granted fewer scopes), a logout or stop under way.
    pub(super) fn recheck(&self) {
        let Some(ready) = self.cell.current() else {
            return;
        };
        let r = ready.reply();
        let same_token = self.held(&Need::Own).is_some_and(|cur| {
            cur.token.expose() == r.access_token
                && cur.expires_at == r.expires_at
                && cur.token_type == r.token_type
                && cur.scopes == r.scopes
        });
        let same = same_token
            && Arc::ptr_eq(ready.cfg(), &self.cfg)
            && self.st.unsaved.is_none()
            && !self.st.tell_narrower
            && !self.stopping
            && self.logouts.is_empty()
            && self.st.next_refresh(&self.cfg, self.now()) == ready.plan();
        if !same {
            self.cell.clear();
        }
    }
}
