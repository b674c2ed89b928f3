//! Following the journal: replay from a cursor, then live, with no gap and no
//! duplicate however appends race with the replay.
//!
//! The invariant: the receiver is subscribed *before* storage is read, and
//! every event on the channel is already committed. So any event the replay
//! missed is on the channel, and any event the channel dropped (lag) is in
//! storage. The follower tracks the last key it emitted and only ever emits
//! `last + 1`; anything else sends it back to storage.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::StreamStats;
use crate::journal::Event;
use crate::journal::registry::TypeFilter;
use crate::journal::store::{READ_PAGE, Store, StoreError};

/// What to follow.
#[derive(Debug, Clone)]
pub enum Source {
    /// One plan; the cursor is the plan's seq.
    Plan(Uuid),
    /// Every plan, filtered by type; the cursor is the store-wide position.
    All(TypeFilter),
}

impl Source {
    fn key(&self, event: &Event) -> u64 {
        match self {
            Source::Plan(_) => event.seq,
            Source::All(_) => event.position,
        }
    }

    /// Whether the event advances this source's cursor at all.
    fn covers(&self, event: &Event) -> bool {
        match self {
            Source::Plan(plan) => event.plan_id == *plan,
            Source::All(_) => true,
        }
    }

    /// Whether the event is sent to the client.
    fn emits(&self, event: &Event) -> bool {
        match self {
            Source::Plan(_) => true,
            Source::All(filter) => filter.matches(&event.event_type),
        }
    }

    async fn read_page(&self, store: &Store, after: u64) -> Result<Vec<Event>, StoreError> {
        let store = store.clone();
        let source = self.clone();
        tokio::task::spawn_blocking(move || match source {
            Source::Plan(plan) => store.events(&plan, after, READ_PAGE),
            Source::All(_) => store.events_after_position(after, READ_PAGE),
        })
        .await
        .map_err(|e| StoreError::from_join(&e))?
    }
}

/// An emitted event with the cursor value that resumes right after it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub cursor: u64,
    pub event: Arc<Event>,
}

/// Streams events of `source` with cursor > `after`: first from storage,
/// then live. `receiver` must have been subscribed before the caller checked
/// `after` against the head. Ends when `shutdown` is cancelled, or after
/// yielding a storage error.
pub fn follow(
    store: Store,
    mut receiver: broadcast::Receiver<Arc<Event>>,
    source: Source,
    after: u64,
    shutdown: CancellationToken,
    stats: Arc<StreamStats>,
) -> impl Stream<Item = Result<Followed, StoreError>> {
    async_stream::stream! {
        let mut cursor = after;
        'catch_up: loop {
            // Replay from storage until a short page says we reached the head.
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let page = match source.read_page(&store, cursor).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                let short = page.len() < READ_PAGE;
                for event in page {
                    let key = source.key(&event);
                    debug_assert!(key > cursor, "storage returned an event at or before the cursor");
                    cursor = key;
                    if source.emits(&event) {
                        yield Ok(Followed { cursor, event: Arc::new(event) });
                    }
                }
                if short {
                    break;
                }
            }
            // Live: emit only the next key; anything else means we missed
            // something and must go back to storage.
            loop {
                let received = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    received = receiver.recv() => received,
                };
                match received {
                    Ok(event) if !source.covers(&event) => {}
                    Ok(event) => {
                        let key = source.key(&event);
                        if key <= cursor {
                            continue; // already replayed from storage
                        }
                        if key != cursor + 1 {
                            stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                            continue 'catch_up;
                        }
                        cursor = key;
                        if source.emits(&event) {
                            yield Ok(Followed { cursor, event });
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                        continue 'catch_up;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}
