//! Fan-out: how committed events reach live readers.
//!
//! The store's writer publishes each committed event once ([`Fanout`]): on
//! one channel for followers of every plan, and on the channel of the
//! event's plan, if anyone follows that plan. A follower ([`crate::follow`])
//! first replays from storage, then reads its channel; when it falls behind
//! (the channel lagged, or it saw a gap) it goes back to storage. So a slow
//! reader never blocks the writer or other readers, and never skips an event.
//!
//! Why a channel per plan: with one channel, every event woke every
//! follower of every plan just to be filtered out, so followers of a quiet
//! plan cost CPU in proportion to everyone else's appends.
//!
//! The invariants, all kept under one lock:
//! - an event goes to a plan's channel in commit order, and only once it
//!   is committed (the writer publishes after the commit);
//! - a plan's tombstone also goes to that plan's channel, since its
//!   followers must see the deletion (the tombstone itself is an event of
//!   the system journal);
//! - a plan's channel exists exactly while it has a receiver: the last
//!   [`Subscription`] of a plan to go drops its channel, so the map holds
//!   the followed plans and no more.
//!
//! Memory: a broadcast channel allocates its ring up front, and a receiver
//! that stops reading keeps the events it has not read alive until the ring
//! wraps. So one followed plan costs [`PLAN_FANOUT_CAPACITY`] slots, and
//! pins at most that many of its events; the all-plans channel, one ring of
//! [`FANOUT_CAPACITY`]. Streams are capped by `max_streams`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast::{self, error::RecvError};
use uuid::Uuid;

use crate::Event;
use crate::store::admin::SYSTEM_PLAN;
use crate::store::redact::REDACTED_TYPE;
use crate::store::{AsyncStore, StoreError};

/// Events buffered per receiver of the all-plans channel before a slow one
/// lags and catches up from storage.
pub(crate) const FANOUT_CAPACITY: usize = 4096;
/// The same for one plan's channel: smaller, since there is one per
/// followed plan (each slot about 40 bytes up front, and at most this many
/// events pinned by a follower that stopped reading). Still several group
/// commits of one plan at 64 clients before a follower lags.
pub(crate) const PLAN_FANOUT_CAPACITY: usize = 256;

/// Largest payload (its canonical text) the fan-out carries. A follower
/// that stops reading keeps what its channel holds alive until it lags: a
/// count of events, so their size must be bounded too. A larger event goes
/// out without its payload ([`Published::Trimmed`]), and its followers read
/// it from storage, where it was committed before it was published.
pub const INLINE_PAYLOAD_BYTES: usize = 16 * 1024;

/// What a channel carries: a committed event, whole or without its payload.
/// Dereferences to the event either way.
#[derive(Debug, Clone)]
pub enum Published {
    /// With the count of redactions published before it: a follower that
    /// reaches it after another one was published takes it from storage,
    /// since its payload may have been erased since.
    Whole(Arc<Event>, u64),
    /// The event with a `null` payload: every other member as committed.
    Trimmed(Arc<Event>),
}

impl Published {
    pub(crate) fn of(event: Arc<Event>, redactions: u64) -> Published {
        if event.payload.get().len() <= INLINE_PAYLOAD_BYTES {
            return Published::Whole(event, redactions);
        }
        // Every member but the payload, which is not copied.
        Published::Trimmed(Arc::new(Event {
            id: event.id,
            plan_id: event.plan_id,
            seq: event.seq,
            event_type: event.event_type.clone(),
            actor: event.actor.clone(),
            payload: serde_json::value::RawValue::NULL.to_owned(),
            payload_hash: event.payload_hash,
            prev_hash: event.prev_hash,
            signature: event.signature,
            key_id: event.key_id.clone(),
            created_at: event.created_at,
            position: event.position,
            redacted: event.redacted,
        }))
    }

    /// The whole event, or `None` when only storage has its payload.
    pub fn whole(self) -> Option<Arc<Event>> {
        match self {
            Published::Whole(event, _) => Some(event),
            Published::Trimmed(_) => None,
        }
    }
}

impl std::ops::Deref for Published {
    type Target = Event;

    fn deref(&self) -> &Event {
        match self {
            Published::Whole(event, _) | Published::Trimmed(event) => event,
        }
    }
}

/// Committed events, in commit order, per plan and for all plans. Cheap to
/// clone: every clone is the same fan-out.
#[derive(Clone)]
pub struct Fanout(Arc<Shared>);

struct Shared {
    all: broadcast::Sender<Published>,
    plans: Mutex<HashMap<Uuid, broadcast::Sender<Published>>>,
    plan_capacity: usize,
    rereads: Mutex<Rereads>,
    redactions: AtomicU64,
}

/// Trimmed events read back from storage, by store-wide position: the
/// first follower to need one reads it, and every other one takes the same
/// `Arc` (so the same encoded frame), as a whole event from the channel
/// would have been shared. Bounded in bytes, oldest out first; a follower
/// that finds its event gone reads it from storage itself.
#[derive(Default)]
struct Rereads {
    cells: HashMap<u64, Reread>,
    /// Reads done, oldest first, with their payloads' bytes.
    read: std::collections::VecDeque<(u64, usize, Reread)>,
    bytes: usize,
}

/// One reread: empty while the first follower reads it; `None` when
/// storage no longer held that very event.
type Reread = Arc<tokio::sync::OnceCell<Option<Arc<Event>>>>;
/// Payload bytes of reread events kept.
const REREAD_BYTES: usize = 16 << 20;
/// Rereads tracked before abandoned ones are swept.
const REREADS_SWEEP: usize = 4096;

impl Rereads {
    /// Records that `reread`, of `position`, was read (`bytes` of
    /// payload, or nothing found), dropping the oldest reads past the
    /// budget. Only the cell recorded is ever removed: the map may hold a
    /// newer one for the same position.
    fn done(&mut self, position: u64, reread: &Reread, bytes: Option<usize>) {
        let Some(bytes) = bytes else {
            self.forget(position, reread);
            return;
        };
        self.read.push_back((position, bytes, reread.clone()));
        self.bytes += bytes;
        while self.bytes > REREAD_BYTES {
            let Some((old, old_bytes, cell)) = self.read.pop_front() else {
                break;
            };
            self.forget(old, &cell);
            self.bytes -= old_bytes;
        }
    }

    fn forget(&mut self, position: u64, reread: &Reread) {
        if self
            .cells
            .get(&position)
            .is_some_and(|r| Arc::ptr_eq(r, reread))
        {
            self.cells.remove(&position);
        }
    }

    /// Forgets every read: a redaction may have erased one's payload.
    fn clear(&mut self) {
        *self = Rereads::default();
    }
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("all_receivers", &self.0.all.receiver_count())
            .field("plan_channels", &self.plan_channels())
            .finish()
    }
}

/// The daemon's fan-out.
pub fn fanout() -> Fanout {
    Fanout::with_capacity(FANOUT_CAPACITY, PLAN_FANOUT_CAPACITY)
}

impl Fanout {
    /// A fan-out whose channels buffer `all` and `plan` events per receiver.
    pub fn with_capacity(all: usize, plan: usize) -> Fanout {
        Fanout(Arc::new(Shared {
            all: broadcast::channel(all).0,
            plans: Mutex::default(),
            plan_capacity: plan,
            rereads: Mutex::default(),
            redactions: AtomicU64::new(0),
        }))
    }

    /// Every committed event from now on.
    pub fn subscribe_all(&self) -> Subscription {
        Subscription {
            receiver: self.0.all.subscribe(),
            fanout: self.clone(),
            plan: None,
        }
    }

    /// Every committed event of `plan` from now on, and its tombstone.
    pub fn subscribe_plan(&self, plan: Uuid) -> Subscription {
        let capacity = self.0.plan_capacity;
        let receiver = self
            .plans()
            .entry(plan)
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        Subscription {
            receiver,
            fanout: self.clone(),
            plan: Some(plan),
        }
    }

    /// Publishes committed events, in commit order. No receivers is fine:
    /// nobody is following.
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) {
        let plans = self.plans();
        for event in events {
            if event.plan_id == SYSTEM_PLAN && event.event_type == REDACTED_TYPE {
                // Published after the redaction committed: no reread, and
                // no whole event published before it, is handed out again.
                self.rereads().clear();
                self.0.redactions.fetch_add(1, Ordering::AcqRel);
            }
            self.send(&plans, Published::of(event, self.redactions()));
        }
    }

    /// Publishes the tombstone of `deleted`: to every follower of the system
    /// journal, and to those of the deleted plan, which it ends.
    pub fn publish_tombstone(&self, tombstone: Arc<Event>, deleted: Uuid) {
        let plans = self.plans();
        // Always whole: a follower reads it to learn its plan is gone.
        let tombstone = Published::Whole(tombstone, self.redactions());
        self.send(&plans, tombstone.clone());
        if let Some(sender) = plans.get(&deleted) {
            let _ = sender.send(tombstone);
        }
    }

    /// Redactions published so far.
    fn redactions(&self) -> u64 {
        self.0.redactions.load(Ordering::Acquire)
    }

    /// Plans followed now.
    pub fn plan_channels(&self) -> usize {
        self.plans().len()
    }

    fn send(&self, plans: &HashMap<Uuid, broadcast::Sender<Published>>, event: Published) {
        if self.0.all.receiver_count() > 0 {
            let _ = self.0.all.send(event.clone());
        }
        if let Some(sender) = plans.get(&event.plan_id) {
            let _ = sender.send(event);
        }
    }

    fn plans(&self) -> MutexGuard<'_, HashMap<Uuid, broadcast::Sender<Published>>> {
        // Nothing under this lock can leave the map inconsistent.
        self.0.plans.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rereads(&self) -> MutexGuard<'_, Rereads> {
        self.0.rereads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A follower's end of the fan-out: the all-plans channel or one plan's.
pub struct Subscription {
    receiver: broadcast::Receiver<Published>,
    fanout: Fanout,
    /// For a plan: the plan whose channel to take out of the fan-out when
    /// this is the last receiver.
    plan: Option<Uuid>,
}

impl Subscription {
    /// The next event, as [`broadcast::Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Published, RecvError> {
        self.receiver.recv().await
    }

    /// The next event if one is waiting, as [`broadcast::Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<Published, broadcast::error::TryRecvError> {
        self.receiver.try_recv()
    }

    /// Whether a whole event published after `redactions` redactions can
    /// be sent as it is: no redaction was published since.
    pub fn current(&self, redactions: u64) -> bool {
        self.fanout.redactions() == redactions
    }

    /// The whole event of `trimmed`, read from `store` once for all the
    /// followers that need it. `None` when storage no longer holds that
    /// very event (the plan was deleted); the follower then goes back to
    /// storage itself, which says what happened.
    pub async fn whole(
        &self,
        trimmed: &Event,
        store: &AsyncStore,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        let position = trimmed.position;
        let reread = {
            let mut rereads = self.fanout.rereads();
            if rereads.cells.len() >= REREADS_SWEEP {
                // A read whose follower left before it ended, and that
                // nobody else waits for, stays empty: let it go.
                rereads
                    .cells
                    .retain(|_, r| r.initialized() || Arc::strong_count(r) > 1);
            }
            rereads.cells.entry(position).or_default().clone()
        };
        let (plan, seq, signature) = (trimmed.plan_id, trimmed.seq, trimmed.signature);
        let mut first = false;
        let event = reread
            .get_or_try_init(|| async {
                first = true;
                let page = store
                    .run(move |s| s.plan_events_after(&plan, seq - 1, 1))
                    .await?;
                Ok::<_, StoreError>(
                    page.into_iter()
                        .next()
                        .filter(|e| e.seq == seq && e.signature == signature)
                        .map(Arc::new),
                )
            })
            .await;
        let event = match event {
            Ok(event) => event.clone(),
            Err(e) => {
                // Not cached: the next follower tries again.
                self.fanout.rereads().forget(position, &reread);
                return Err(e);
            }
        };
        if first {
            let bytes = event.as_ref().map(|e| e.payload.get().len());
            self.fanout.rereads().done(position, &reread, bytes);
        }
        Ok(event)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(plan) = &self.plan else {
            return;
        };
        // Under the lock that subscribing takes, so no new receiver can
        // appear between the count and the removal. The entry is this
        // receiver's channel: only a channel without receivers is removed.
        let mut plans = self.fanout.plans();
        if plans.get(plan).is_some_and(|s| s.receiver_count() <= 1) {
            plans.remove(plan);
        }
    }
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub connected: AtomicU64,
    pub catch_ups: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::CanonicalPayload;
    use serde_json::json;

    fn event(plan_id: Uuid, seq: u64) -> Arc<Event> {
        let payload = CanonicalPayload::new(&json!({ "seq": seq }));
        Arc::new(Event {
            id: Uuid::new_v4(),
            plan_id,
            seq,
            event_type: "step.started".into(),
            actor: None,
            payload: payload.json,
            payload_hash: payload.hash,
            prev_hash: None,
            signature: [0; 32],
            key_id: "k".into(),
            created_at: crate::event::Timestamp(0),
            position: seq,
            redacted: false,
        })
    }

    #[test]
    fn a_plan_follower_receives_its_plan_only_and_in_order() {
        let fanout = fanout();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut of_a = fanout.subscribe_plan(a);
        let mut all = fanout.subscribe_all();
        fanout.publish([event(a, 1), event(b, 1), event(a, 2)]);
        assert_eq!(of_a.try_recv().unwrap().seq, 1);
        assert_eq!(of_a.try_recv().unwrap().seq, 2);
        assert!(
            of_a.try_recv().is_err(),
            "plan b's event reached a's follower"
        );
        let seen: Vec<_> = std::iter::from_fn(|| all.try_recv().ok())
            .map(|e| (e.plan_id, e.seq))
            .collect();
        assert_eq!(seen, [(a, 1), (b, 1), (a, 2)]);
    }

    /// A channel holds at most its capacity of events for a follower that
    /// stopped reading: a large event is carried without its payload.
    #[test]
    fn a_large_event_is_carried_without_its_payload() {
        let fanout = fanout();
        let plan = Uuid::new_v4();
        let mut follower = fanout.subscribe_plan(plan);
        let small = event(plan, 1);
        let large = Arc::new(Event {
            seq: 2,
            payload: CanonicalPayload::new(&json!({ "fill": "x".repeat(INLINE_PAYLOAD_BYTES) }))
                .json,
            ..Event::clone(&small)
        });
        fanout.publish([small.clone(), large.clone()]);
        let first = follower.try_recv().unwrap();
        assert_eq!(
            first.clone().whole().unwrap().payload.get(),
            small.payload.get()
        );
        let second = follower.try_recv().unwrap();
        assert!(matches!(second, Published::Trimmed(_)));
        assert_eq!(second.payload.get(), "null");
        assert_eq!((second.seq, second.signature), (large.seq, large.signature));
        assert!(second.whole().is_none());
    }

    #[test]
    fn rereads_keep_within_their_bytes_and_forget_what_was_not_found() {
        let mut rereads = Rereads::default();
        let read = |rereads: &mut Rereads, position, bytes| {
            let cell = Reread::default();
            rereads.cells.insert(position, cell.clone());
            rereads.done(position, &cell, bytes);
        };
        for position in 0..4 {
            read(&mut rereads, position, Some(REREAD_BYTES / 3));
        }
        assert!(rereads.bytes <= REREAD_BYTES);
        assert_eq!(rereads.cells.len(), 3);
        assert!(!rereads.cells.contains_key(&0), "the oldest went");
        read(&mut rereads, 9, None);
        assert!(!rereads.cells.contains_key(&9));
        // A newer cell of a position is not removed with an older one.
        let newer = Reread::default();
        rereads.cells.insert(1, newer.clone());
        read(&mut rereads, 20, Some(REREAD_BYTES / 3));
        assert!(
            rereads
                .cells
                .get(&1)
                .is_some_and(|r| Arc::ptr_eq(r, &newer))
        );
        rereads.clear();
        assert!(rereads.cells.is_empty() && rereads.bytes == 0);
    }

    #[test]
    fn a_tombstone_reaches_the_deleted_plans_followers_once() {
        let fanout = fanout();
        let (plan, system) = (Uuid::new_v4(), Uuid::nil());
        let mut of_plan = fanout.subscribe_plan(plan);
        let mut of_system = fanout.subscribe_plan(system);
        fanout.publish_tombstone(event(system, 7), plan);
        assert_eq!(of_plan.try_recv().unwrap().seq, 7);
        assert_eq!(of_system.try_recv().unwrap().seq, 7);
        assert!(of_plan.try_recv().is_err() && of_system.try_recv().is_err());
    }

    /// The map holds the followed plans: the last follower of a plan to go
    /// takes its channel out, and the others keep theirs working.
    #[test]
    fn a_plans_channel_lives_as_long_as_its_followers() {
        let fanout = fanout();
        let plan = Uuid::new_v4();
        let first = fanout.subscribe_plan(plan);
        let mut second = fanout.subscribe_plan(plan);
        for _ in 0..1000 {
            drop(fanout.subscribe_plan(Uuid::new_v4()));
        }
        assert_eq!(fanout.plan_channels(), 1);
        drop(first);
        fanout.publish([event(plan, 1)]);
        assert_eq!(second.try_recv().unwrap().seq, 1);
        drop(second);
        assert_eq!(fanout.plan_channels(), 0);
        // Followed again: a new channel that works.
        let mut again = fanout.subscribe_plan(plan);
        fanout.publish([event(plan, 2)]);
        assert_eq!(again.try_recv().unwrap().seq, 2);
    }

    /// Followers come and go while events are published: each receiver gets
    /// every event published after it subscribed, in order, and the map is
    /// empty once all are gone.
    #[test]
    fn subscribing_and_leaving_while_publishing_loses_nothing() {
        let fanout = fanout();
        let plan = Uuid::new_v4();
        let publisher = {
            let fanout = fanout.clone();
            std::thread::spawn(move || {
                for seq in 1..=20_000 {
                    fanout.publish([event(plan, seq)]);
                }
            })
        };
        let mut checked = 0;
        while !publisher.is_finished() {
            let mut follower = fanout.subscribe_plan(plan);
            let mut last = None;
            for _ in 0..50 {
                match follower.try_recv() {
                    Ok(e) => {
                        assert!(
                            last.is_none_or(|l| e.seq == l + 1),
                            "{last:?} then {}",
                            e.seq
                        );
                        last = Some(e.seq);
                        checked += 1;
                    }
                    Err(broadcast::error::TryRecvError::Empty) => std::thread::yield_now(),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => last = None,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        publisher.join().unwrap();
        assert!(checked > 0, "no follower saw an event");
        assert_eq!(fanout.plan_channels(), 0);
    }
}
