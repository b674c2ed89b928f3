//! Following the journal: replay from a cursor, then live, with no gap and no
//! duplicate however appends race with the replay.
//!
//! The invariant: the receiver is subscribed *before* storage is read, and
//! every event on the channel is already committed. So any event the replay
//! missed is on the channel, and any event the channel dropped (lag) is in
//! storage. The follower tracks the last key it emitted and only ever emits
//! `last + 1`; anything else sends it back to storage, and so does an event
//! too large for the channel, which carries it without its payload.
//!
//! A plan can be deleted (over the admin socket), so a per-plan cursor can
//! outlive the chain it pointed into. (Its id is never used again now; a
//! store from before that rule can hold a chain that reused one.) A plan
//! follower therefore stops with [`Interrupted::PlanDeleted`] when it sees
//! its plan's tombstone, when storage is behind its cursor, or when the next
//! event does not link to the last one it emitted: never in silence.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Event;
use crate::fanout::{Published, StreamStats, Subscription};
use crate::registry::TypeFilter;
use crate::store::admin::{SYSTEM_PLAN, TOMBSTONE_TYPE};
use crate::store::{AsyncStore, READ_PAGE, READ_PAGE_BYTES, StoreError};

/// Rows a filtered follower's page reads at most (see [`Source::read_page`]).
const FILTERED_SCAN: usize = 8 * READ_PAGE;

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

    /// Whether `event` is the tombstone recording the deletion of the
    /// followed plan.
    fn is_own_tombstone(&self, event: &Event) -> bool {
        #[derive(serde::Deserialize)]
        struct Tombstone {
            plan_id: Uuid,
        }
        let Source::Plan(plan) = self else {
            return false;
        };
        event.plan_id == SYSTEM_PLAN
            && event.event_type == TOMBSTONE_TYPE
            && serde_json::from_str::<Tombstone>(event.payload.get())
                .is_ok_and(|t| t.plan_id == *plan)
    }

    /// For a plan: whether its head is now behind `cursor`, i.e. the plan
    /// was deleted (and perhaps started again) after the follower passed it.
    async fn head_behind(&self, store: &AsyncStore, cursor: u64) -> Result<bool, StoreError> {
        let Source::Plan(plan) = *self else {
            return Ok(false);
        };
        let head = store.run(move |s| s.head(&plan)).await?;
        Ok(head.map_or(0, |h| h.last_seq) < cursor)
    }

    /// The interruption of a plan follower whose plan was deleted after `cursor`.
    fn deleted(&self, cursor: u64) -> Interrupted {
        match self {
            Source::Plan(plan_id) => Interrupted::PlanDeleted {
                plan_id: *plan_id,
                cursor,
            },
            Source::All(_) => unreachable!("only plan sources are deleted"),
        }
    }

    /// The next page from storage, whether more may follow it, and the
    /// cursor it read up to (past events a type filter skipped). Pages are
    /// bounded in bytes too: a follower holds its page while its client
    /// reads it, however slowly. A filtered page reads at most
    /// [`FILTERED_SCAN`] rows, and the rows it skips only as far as their
    /// type: a filter that matches nothing moves through the journal in
    /// short, cheap reads, never in one long one.
    async fn read_page(
        &self,
        store: &AsyncStore,
        after: u64,
    ) -> Result<(Vec<Event>, bool, u64), StoreError> {
        let source = self.clone();
        let unread = move |(page, more)| (page, more, after);
        store
            .run(move |s| match source {
                Source::Plan(plan) => s
                    .plan_events_page(&plan, after, READ_PAGE, READ_PAGE_BYTES)
                    .map(unread),
                Source::All(filter) if filter.matches_all() => {
                    s.events_page(after, READ_PAGE, READ_PAGE_BYTES).map(unread)
                }
                Source::All(filter) => s.matching_events_page(
                    after,
                    &filter,
                    READ_PAGE,
                    READ_PAGE_BYTES,
                    FILTERED_SCAN,
                ),
            })
            .await
    }
}

/// An emitted event with the cursor value that resumes right after it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub cursor: u64,
    pub event: Arc<Event>,
}

/// Why a follower stopped before shutdown. It is the stream's last item.
#[derive(Debug, Clone)]
pub enum Interrupted {
    Storage(StoreError),
    /// The followed plan was deleted after `cursor`; its id may since have
    /// been used again from seq 1, a chain the cursor does not point into.
    PlanDeleted {
        plan_id: Uuid,
        cursor: u64,
    },
}

impl From<StoreError> for Interrupted {
    fn from(e: StoreError) -> Self {
        Interrupted::Storage(e)
    }
}

/// Moves the cursor past `event`, the one right after it, and returns what
/// the client gets, if anything. A plan event that does not link to the last
/// one emitted means the plan was deleted and started again.
fn advance(
    source: &Source,
    event: Arc<Event>,
    cursor: &mut u64,
    last_signature: &mut Option<[u8; 32]>,
) -> Result<Option<Followed>, Interrupted> {
    let relinks = matches!(source, Source::All(_))
        || last_signature.is_none()
        || event.prev_hash == *last_signature;
    if !relinks {
        return Err(source.deleted(*cursor));
    }
    *cursor = source.key(&event);
    *last_signature = Some(event.signature);
    Ok(source.emits(&event).then_some(Followed {
        cursor: *cursor,
        event,
    }))
}

/// Streams events of `source` with cursor > `after`: first from storage,
/// then live. `receiver` must have been subscribed before the caller checked
/// `after` against the head. Ends when `shutdown` is cancelled, or after
/// yielding an [`Interrupted`].
pub fn follow(
    store: AsyncStore,
    mut receiver: Subscription,
    source: Source,
    after: u64,
    shutdown: CancellationToken,
    stats: Arc<StreamStats>,
) -> impl Stream<Item = Result<Followed, Interrupted>> {
    async_stream::stream! {
        let mut cursor = after;
        // Signature of the last event emitted (plan sources): the next one
        // must link to it, or the plan was deleted and started again.
        let mut last_signature: Option<[u8; 32]> = None;
        'catch_up: loop {
            // Replay from storage until a page ends before its limits: the head.
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let (page, more, read_to) = match source.read_page(&store, cursor).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(e.into());
                        return;
                    }
                };
                if page.is_empty() && cursor > 0 {
                    match source.head_behind(&store, cursor).await {
                        Ok(false) => {}
                        Ok(true) => {
                            yield Err(source.deleted(cursor));
                            return;
                        }
                        Err(e) => {
                            yield Err(e.into());
                            return;
                        }
                    }
                }
                for event in page {
                    debug_assert!(
                        source.key(&event) > cursor,
                        "storage returned an event at or before the cursor"
                    );
                    match advance(&source, Arc::new(event), &mut cursor, &mut last_signature) {
                        Ok(Some(followed)) => yield Ok(followed),
                        Ok(None) => {}
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                }
                // Past what a type filter skipped (an all-plans cursor
                // needs no link to the event before it).
                cursor = cursor.max(read_to);
                if !more {
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
                    Ok(event) if source.is_own_tombstone(&event) => {
                        yield Err(source.deleted(cursor));
                        return;
                    }
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
                        // An event too large for the channel came without
                        // its payload, and one published before a redaction
                        // may have lost it since: either is read from
                        // storage, once for all its followers (unless it is
                        // not sent here).
                        let event = match event {
                            Published::Whole(event, redactions) if receiver.current(redactions) => {
                                event
                            }
                            Published::Whole(event, _) | Published::Trimmed(event)
                                if !source.emits(&event) =>
                            {
                                event
                            }
                            Published::Whole(stale, _) | Published::Trimmed(stale) => {
                                match receiver.whole(&stale, &store).await {
                                    Ok(Some(event)) => event,
                                    Ok(None) => continue 'catch_up,
                                    Err(e) => {
                                        yield Err(e.into());
                                        return;
                                    }
                                }
                            }
                        };
                        match advance(&source, event, &mut cursor, &mut last_signature) {
                            Ok(Some(followed)) => yield Ok(followed),
                            Ok(None) => {}
                            Err(e) => {
                                yield Err(e);
                                return;
                            }
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

#[cfg(test)]
mod tests;
