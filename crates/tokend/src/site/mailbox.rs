//! A site's mailbox: a bounded queue with many senders and one receiver,
//! as tokio's `mpsc` channel, made for a thousand sites that are idle most
//! of the time. Every configured site keeps its mailbox open, parked or
//! not: tokio's channel allocates its cache-padded state and a first block
//! of 32 slots up front (0.8 KiB a site, by heaptrack at 1000 sites); an
//! empty mailbox here is one allocation of about 170 bytes, and its queue
//! grows only while messages wait.
//!
//! A mailbox with no receiver waiting on it (a parked site's) can instead
//! ring a [`Doorbell`] shared by many: its first message (or its last
//! sender going) puts the mailbox's tag there, and one task waits on the
//! doorbell for them all, instead of holding a waiting future (and its
//! allocation) per mailbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, Semaphore, TryAcquireError};

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// Free places: a sender takes one before it queues, the receiver
    /// gives it back as it takes the message. Closed with the mailbox.
    room: Semaphore,
    /// Told when a message is queued or the last sender goes.
    arrived: Notify,
}

struct Queue<T> {
    items: VecDeque<T>,
    senders: usize,
    closed: bool,
    /// Rung (and cleared) by the next message or the last sender's drop.
    bell: Option<Bell>,
}

/// How a mailbox is told apart at its doorbell: a name and a number its
/// owner gave it.
pub(crate) type Tag = (Arc<str>, u64);

/// A mailbox's place at a doorbell.
struct Bell {
    door: Arc<Doorbell>,
    tag: Tag,
}

impl Bell {
    fn ring(self) {
        let Bell { door, tag } = self;
        door.rung
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tag);
        door.ringing.notify_one();
    }
}

/// Where idle mailboxes say that something arrived (see the module text).
#[derive(Default)]
pub(crate) struct Doorbell {
    rung: Mutex<Vec<Tag>>,
    ringing: Notify,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Doorbell")
    }
}

impl Doorbell {
    /// The tags of the mailboxes that rang since the last call, waiting
    /// for one. Cancel-safe: tags are taken only by the call that returns
    /// them.
    pub(crate) async fn rung(&self) -> Vec<Tag> {
        loop {
            let tags =
                std::mem::take(&mut *self.rung.lock().unwrap_or_else(PoisonError::into_inner));
            if !tags.is_empty() {
                return tags;
            }
            // `notify_one` keeps its wake-up for a waiter not yet waiting.
            self.ringing.notified().await;
        }
    }
}

impl<T> Shared<T> {
    fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `v` in a place already taken; `Err(v)` once closed.
    fn push(&self, v: T) -> Result<(), T> {
        let mut q = self.queue();
        if q.closed {
            return Err(v);
        }
        q.items.push_back(v);
        let bell = q.bell.take();
        drop(q);
        self.arrived.notify_one();
        if let Some(bell) = bell {
            bell.ring();
        }
        Ok(())
    }
}

/// Why [`Sender::try_send`] did not queue its message (which it gives back).
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    Full(T),
    Closed(T),
}

/// The sending end; clones share the mailbox.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving end. Dropping it closes the mailbox and drops what waits
/// in it (its callers' reply channels with it).
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// A mailbox of `capacity` places.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            senders: 1,
            closed: false,
            bell: None,
        }),
        room: Semaphore::new(capacity),
        arrived: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.queue().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut q = self.0.queue();
        q.senders -= 1;
        let last = q.senders == 0;
        let bell = if last { q.bell.take() } else { None };
        drop(q);
        if last {
            self.0.arrived.notify_one();
        }
        if let Some(bell) = bell {
            bell.ring();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Sender")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Receiver")
    }
}

impl<T> Sender<T> {
    /// Queues `v`, waiting while the mailbox is full; `Err(v)` once it is
    /// closed.
    pub(crate) async fn send(&self, v: T) -> Result<(), T> {
        match self.0.room.acquire().await {
            Ok(place) => place.forget(),
            Err(_) => return Err(v),
        }
        self.0.push(v)
    }

    /// Queues `v` if there is a free place.
    pub(crate) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        match self.0.room.try_acquire() {
            Ok(place) => place.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(v)),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(v)),
        }
        self.0.push(v).map_err(TrySendError::Closed)
    }
}

impl<T> Receiver<T> {
    /// The next message; `None` once the mailbox is closed (or every
    /// sender is gone) and empty. Cancel-safe: a message is taken only by
    /// the call that returns it.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut q = self.0.queue();
                if let Some(v) = q.items.pop_front() {
                    drop(q);
                    self.0.room.add_permits(1);
                    return Some(v);
                }
                if q.closed || q.senders == 0 {
                    return None;
                }
            }
            // `notify_one` keeps its wake-up for a receiver not yet
            // waiting: a message queued since the check above is not missed.
            self.0.arrived.notified().await;
        }
    }

    /// The next message, if one waits.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let v = self.0.queue().items.pop_front();
        if v.is_some() {
            self.0.room.add_permits(1);
        }
        v
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.queue().items.is_empty()
    }

    /// Takes no more messages; those already queued can still be received.
    pub(crate) fn close(&mut self) {
        let mut q = self.0.queue();
        q.closed = true;
        q.bell = None;
        drop(q);
        self.0.room.close();
    }

    /// Rings `door` with `tag` when the next message arrives (or the last
    /// sender goes), once: at once if a message already waits. For a
    /// mailbox nobody receives on for now; [`Receiver::unpark`] undoes it.
    pub(crate) fn park(&mut self, door: &Arc<Doorbell>, tag: Tag) {
        let mut q = self.0.queue();
        let bell = Bell {
            door: door.clone(),
            tag,
        };
        if q.items.is_empty() && q.senders > 0 && !q.closed {
            // The room of its last messages goes: a thousand parked
            // mailboxes would each keep one allocation for nothing.
            q.items = VecDeque::new();
            q.bell = Some(bell);
        } else {
            drop(q);
            bell.ring();
        }
    }

    /// No doorbell rings for this mailbox any more.
    pub(crate) fn unpark(&mut self) {
        self.0.queue().bell = None;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
        let left = std::mem::take(&mut self.0.queue().items);
        drop(left);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_order_bounded_and_closed() {
        let (tx, mut rx) = channel(2);
        tx.send(1).await.unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert!(!rx.is_empty());
        rx.close();
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));
        assert_eq!(tx.send(5).await, Err(5));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_the_freed_place_and_the_receiver_wakes() {
        let (tx, mut rx) = channel(1);
        tx.send(1).await.unwrap();
        let tx2 = tx.clone();
        let late = tokio::spawn(async move { tx2.send(2).await });
        tokio::task::yield_now().await;
        assert!(!late.is_finished());
        assert_eq!(rx.recv().await, Some(1));
        late.await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(2));
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(3).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn the_last_sender_gone_ends_the_receiver_and_a_dropped_receiver_drops_the_queue() {
        let (tx, mut rx) = channel::<u8>(4);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), None);

        let (tx, rx) = channel(4);
        let (reply, answer) = tokio::sync::oneshot::channel::<()>();
        tx.send(reply).await.unwrap();
        drop(rx);
        assert!(
            answer.await.is_err(),
            "the queued reply channel was dropped"
        );
        assert!(tx.send(tokio::sync::oneshot::channel().0).await.is_err());
    }

    #[tokio::test]
    async fn a_parked_mailbox_rings_its_doorbell_once_and_not_after_unpark() {
        let door = Arc::new(Doorbell::default());
        let (tx, mut rx) = channel(4);
        let (tx2, mut rx2) = channel::<u8>(4);
        rx.park(&door, (Arc::from("a"), 1));
        rx2.park(&door, (Arc::from("b"), 2));
        let rung = tokio::spawn({
            let door = door.clone();
            async move { door.rung().await }
        });
        tokio::task::yield_now().await;
        assert!(!rung.is_finished());
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let tags = rung.await.unwrap();
        assert_eq!(
            tags,
            vec![(Arc::from("a"), 1)],
            "once, for the first message"
        );
        assert_eq!(rx.try_recv(), Some(1));

        rx2.unpark();
        tx2.send(3).await.unwrap();
        drop(tx2);
        // Parked with a message waiting: rung at once.
        rx.park(&door, (Arc::from("a"), 3));
        assert_eq!(door.rung().await, vec![(Arc::from("a"), 3)]);
        assert_eq!(rx2.try_recv(), Some(3));

        // The last sender going rings too.
        rx.unpark();
        assert_eq!(rx.try_recv(), Some(2));
        rx.park(&door, (Arc::from("a"), 4));
        drop(tx);
        assert_eq!(door.rung().await, vec![(Arc::from("a"), 4)]);
        assert_eq!(rx.recv().await, None);
    }
}
