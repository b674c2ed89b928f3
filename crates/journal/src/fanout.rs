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
//! - a plan's channel exists while it has a receiver: a publish that finds
//!   none drops it, and a subscription drops the others that have none left,
//!   so the map holds at most twice the followed plans.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::Event;

/// Events buffered per receiver of the all-plans channel before a slow one
/// lags and catches up from storage.
pub(crate) const FANOUT_CAPACITY: usize = 4096;
/// The same for one plan's channel. Smaller, since a broadcast channel
/// allocates its whole ring up front (about 40 bytes a slot) and there is
/// one per followed plan: 10,000 followers of distinct plans hold 10,000.
/// It is still more than twenty group commits of one plan at 64 clients.
pub(crate) const PLAN_FANOUT_CAPACITY: usize = 512;

/// Committed events, in commit order, per plan and for all plans. Cheap to
/// clone: every clone is the same fan-out.
#[derive(Clone)]
pub struct Fanout(Arc<Shared>);

struct Shared {
    all: broadcast::Sender<Arc<Event>>,
    plans: Mutex<PlanChannels>,
    plan_capacity: usize,
}

#[derive(Default)]
struct PlanChannels {
    by_plan: HashMap<Uuid, broadcast::Sender<Arc<Event>>>,
    /// Channels left after the last sweep of those without a receiver.
    after_sweep: usize,
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
        }))
    }

    /// Every committed event from now on.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Event>> {
        self.0.all.subscribe()
    }

    /// Every committed event of `plan` from now on, and its tombstone.
    pub fn subscribe_plan(&self, plan: Uuid) -> broadcast::Receiver<Arc<Event>> {
        let mut plans = self.plans();
        // Followers that left leave a channel without receivers behind;
        // sweep them once the map has doubled since the last sweep.
        if plans.by_plan.len() >= 2 * plans.after_sweep.max(16) {
            plans
                .by_plan
                .retain(|_, sender| sender.receiver_count() > 0);
            plans.after_sweep = plans.by_plan.len();
        }
        let capacity = self.0.plan_capacity;
        plans
            .by_plan
            .entry(plan)
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe()
    }

    /// Publishes committed events, in commit order. No receivers is fine:
    /// nobody is following.
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) {
        let mut plans = None;
        for event in events {
            if self.0.all.receiver_count() > 0 {
                let _ = self.0.all.send(event.clone());
            }
            let plans = plans.get_or_insert_with(|| self.plans());
            if !plans.by_plan.is_empty() {
                send_to_plan(plans, event.plan_id, event);
            }
        }
    }

    /// Publishes the tombstone of `deleted`: to every follower of the system
    /// journal, and to those of the deleted plan, which it ends.
    pub fn publish_tombstone(&self, tombstone: Arc<Event>, deleted: Uuid) {
        self.publish([tombstone.clone()]);
        let mut plans = self.plans();
        send_to_plan(&mut plans, deleted, tombstone);
    }

    /// Plans with a channel: those followed, and perhaps some whose
    /// followers left since the last sweep.
    pub fn plan_channels(&self) -> usize {
        self.plans().by_plan.len()
    }

    fn plans(&self) -> MutexGuard<'_, PlanChannels> {
        // Nothing under this lock can leave the map inconsistent.
        self.0.plans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends `event` to `plan`'s channel, and drops the channel if it has no
/// receiver left. Subscribing takes the same lock, so none can be lost.
fn send_to_plan(plans: &mut PlanChannels, plan: Uuid, event: Arc<Event>) {
    if let Some(sender) = plans.by_plan.get(&plan)
        && sender.send(event).is_err()
    {
        plans.by_plan.remove(&plan);
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

    #[test]
    fn a_tombstone_reaches_the_deleted_plans_followers() {
        let fanout = fanout();
        let (plan, system) = (Uuid::new_v4(), Uuid::nil());
        let mut of_plan = fanout.subscribe_plan(plan);
        let mut of_system = fanout.subscribe_plan(system);
        fanout.publish_tombstone(event(system, 7), plan);
        assert_eq!(of_plan.try_recv().unwrap().seq, 7);
        assert_eq!(of_system.try_recv().unwrap().seq, 7);
    }

    #[test]
    fn channels_without_followers_are_dropped() {
        let fanout = fanout();
        let plan = Uuid::new_v4();
        drop(fanout.subscribe_plan(plan));
        assert_eq!(fanout.plan_channels(), 1);
        // The first publish that finds no receiver drops the channel...
        fanout.publish([event(plan, 1)]);
        assert_eq!(fanout.plan_channels(), 0);
        // ...and so does a sweep, for plans nobody appends to: the map stays
        // within twice the plans followed.
        let kept = fanout.subscribe_plan(plan);
        for _ in 0..1000 {
            drop(fanout.subscribe_plan(Uuid::new_v4()));
            assert!(fanout.plan_channels() <= 2 * 16 + 1);
        }
        fanout.publish([event(plan, 2)]);
        drop(kept);
    }

    #[test]
    fn a_resubscribed_plan_gets_a_working_channel() {
        let fanout = fanout();
        let plan = Uuid::new_v4();
        drop(fanout.subscribe_plan(plan));
        fanout.publish([event(plan, 1)]);
        let mut again = fanout.subscribe_plan(plan);
        fanout.publish([event(plan, 2)]);
        assert_eq!(again.try_recv().unwrap().seq, 2);
    }
}
