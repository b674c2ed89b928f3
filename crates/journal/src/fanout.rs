//! Fan-out: how committed events reach live readers.
//!
//! The store's writer publishes each committed event once on a broadcast
//! channel ([`Fanout`]). A follower ([`crate::follow`]) first replays from
//! storage, then reads the channel; when it falls behind (the channel lagged,
//! or it saw a gap) it goes back to storage. So a slow reader never blocks
//! the writer or other readers, and never skips an event.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::broadcast;

use crate::Event;

/// Committed events, in commit order.
pub type Fanout = broadcast::Sender<Arc<Event>>;

/// Events buffered per receiver before a slow one lags and catches up from storage.
pub(crate) const FANOUT_CAPACITY: usize = 4096;

pub fn fanout() -> Fanout {
    broadcast::channel(FANOUT_CAPACITY).0
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub connected: AtomicU64,
    pub catch_ups: AtomicU64,
}
