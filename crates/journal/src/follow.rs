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

    /// The next page from storage, and whether more may follow it. Pages
    /// are bounded in bytes too: a follower holds its page while its client
    /// reads it, however slowly.
    async fn read_page(
        &self,
        store: &AsyncStore,
        after: u64,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let source = self.clone();
        store
            .run(move |s| match source {
                Source::Plan(plan) => s.plan_events_page(&plan, after, READ_PAGE, READ_PAGE_BYTES),
                Source::All(_) => s.events_page(after, READ_PAGE, READ_PAGE_BYTES),
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
                let (page, more) = match source.read_page(&store, cursor).await {
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
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::chain::CanonicalPayload;
    use crate::keys::Keyring;
    use crate::store::{AppendRequest, Store};

    fn request(plan_id: Uuid, n: u64) -> AppendRequest {
        AppendRequest {
            plan_id,
            event_type: "step.started".into(),
            actor: None,
            payload: CanonicalPayload::new(&json!({ "n": n })),
            expected_seq: None,
            idempotency: None,
        }
    }

    /// A follower of `plan` from its start.
    fn follow_plan(
        store: &AsyncStore,
        fanout: &crate::fanout::Fanout,
        plan: Uuid,
    ) -> std::pin::Pin<Box<impl Stream<Item = Result<Followed, Interrupted>>>> {
        Box::pin(follow(
            store.clone(),
            fanout.subscribe_plan(plan),
            Source::Plan(plan),
            0,
            CancellationToken::new(),
            Arc::default(),
        ))
    }

    /// The follower lags through a deletion (its channel overflowed before
    /// the tombstone came), so only storage can tell it the plan was deleted.
    async fn lag_through_deletion() -> Vec<Result<u64, String>> {
        let dir = tempfile::tempdir().unwrap();
        // A tiny channel: a handful of appends makes the follower lag.
        let fanout = crate::fanout::Fanout::with_capacity(2, 2);
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
        let store = AsyncStore::new(store);
        let plan = Uuid::new_v4();
        for n in 0..3 {
            store.append(request(plan, n)).await.unwrap();
        }
        let mut followed = follow_plan(&store, &fanout, plan);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(
                followed
                    .next()
                    .await
                    .unwrap()
                    .map(|f| f.cursor)
                    .map_err(|e| format!("{e:?}")),
            );
        }
        // More of the plan than its channel holds, then the deletion.
        for n in 3..6 {
            store.append(request(plan, n)).await.unwrap();
        }
        store.delete_plan(plan, json!("test")).await.unwrap();
        // Its id is never used again.
        assert!(matches!(
            store.append(request(plan, 0)).await,
            Err(crate::store::AppendError::PlanDeleted { .. })
        ));
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), followed.next())
            .await
            .expect("the follower was left silent")
            .expect("the follower ended without an item");
        seen.push(next.map(|f| f.cursor).map_err(|e| format!("{e:?}")));
        drop(followed);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
        seen
    }

    /// A store with the default fan-out; the writer lives as long as the
    /// caller keeps it.
    fn open_store() -> (
        tempfile::TempDir,
        crate::fanout::Fanout,
        AsyncStore,
        crate::store::Writer,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let fanout = crate::fanout::fanout();
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) =
            Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
        (dir, fanout, AsyncStore::new(store), writer)
    }

    /// Erases the payload of `plan`'s event 1, and waits until `watch`
    /// (a follower of every plan) sees the redaction's record, which is
    /// published after the redaction commits.
    async fn redact_first(store: &AsyncStore, plan: Uuid, watch: &mut Subscription) {
        let outcomes = store
            .redact(vec![crate::store::redact::Redaction {
                plan_id: plan,
                seq: 1,
                reason: "test".into(),
                by: crate::store::redact::RedactedBy::Retention,
            }])
            .await
            .unwrap();
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        while watch.recv().await.unwrap().event_type != crate::store::redact::REDACTED_TYPE {}
    }

    /// Pages from storage end at READ_PAGE_BYTES, well before READ_PAGE
    /// events when events are large; a page cut by bytes is not taken for
    /// the head, so a follower (of one plan, and of all) catching up over
    /// many such pages gets every event once, in order, then live ones.
    #[tokio::test]
    async fn catching_up_over_pages_cut_by_bytes_misses_nothing() {
        let (_dir, fanout, store, _writer) = open_store();
        let plan = Uuid::new_v4();
        let big = |n: u64| AppendRequest {
            payload: CanonicalPayload::new(&json!({ "n": n, "fill": "x".repeat(100_000) })),
            ..request(plan, n)
        };
        for n in 0..40 {
            store.append(big(n)).await.unwrap();
        }
        let (page, more) = store
            .run(move |s| s.plan_events_page(&plan, 0, READ_PAGE, READ_PAGE_BYTES))
            .await
            .unwrap();
        assert!(more && page.len() == 11, "a page of {} events", page.len());
        let mut count = 40;
        for source in [Source::Plan(plan), Source::All(TypeFilter::default())] {
            let receiver = match &source {
                Source::Plan(plan) => fanout.subscribe_plan(*plan),
                Source::All(_) => fanout.subscribe_all(),
            };
            let followed = follow(
                store.clone(),
                receiver,
                source,
                0,
                CancellationToken::new(),
                Arc::default(),
            );
            let mut followed = Box::pin(followed);
            for n in 1..=count {
                // A page cut by bytes taken for the head would wait here.
                let next = tokio::time::timeout(Duration::from_secs(10), followed.next())
                    .await
                    .unwrap_or_else(|_| panic!("event {n} never came"));
                assert_eq!(next.unwrap().unwrap().event.seq, n);
            }
            store.append(big(count)).await.unwrap();
            count += 1;
            // Too large for the channel: it came trimmed, and the
            // follower read it whole from storage.
            let live = followed.next().await.unwrap().unwrap();
            assert_eq!(live.event.seq, count);
            assert!(live.event.payload.get().len() > 100_000);
        }
        let (page, more) = store
            .run(move |s| s.plan_events_page(&plan, count, READ_PAGE, READ_PAGE_BYTES))
            .await
            .unwrap();
        assert!(page.is_empty() && !more);
    }

    /// Followers of an event too large for the channel share one read of
    /// it from storage: one `Arc`, so one encoded frame.
    #[tokio::test]
    async fn followers_of_a_large_event_share_one_read() {
        let (_dir, fanout, store, _writer) = open_store();
        let plan = Uuid::new_v4();
        let mut of_plan = fanout.subscribe_plan(plan);
        let mut of_all = fanout.subscribe_all();
        let appended = store
            .append(AppendRequest {
                payload: CanonicalPayload::new(&json!({ "fill": "x".repeat(100_000) })),
                ..request(plan, 0)
            })
            .await
            .unwrap();
        // Published after the append is answered: wait for it.
        let (a, b) = (of_plan.recv().await.unwrap(), of_all.recv().await.unwrap());
        assert!(matches!(a, Published::Trimmed(_)) && matches!(b, Published::Trimmed(_)));
        let (a, b) = (
            of_plan.whole(&a, &store).await.unwrap().unwrap(),
            of_all.whole(&b, &store).await.unwrap().unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b), "each follower read it again");
        assert_eq!(a.payload.get(), appended.event.payload.get());
        assert_eq!(a.signature, appended.event.signature);

        // Once the payload is erased, a follower that reaches the event
        // later gets it as storage holds it now, not the shared read.
        let trimmed = Published::of(appended.event.clone(), 0);
        redact_first(&store, plan, &mut of_all).await;
        let later = of_plan.whole(&trimmed, &store).await.unwrap().unwrap();
        assert!(
            later.redacted && later.payload.get() == "null",
            "{}",
            later.payload.get()
        );
    }

    /// A follower that reaches an event after it was redacted gets it as
    /// storage holds it now, though the channel held it whole.
    #[tokio::test]
    async fn an_event_redacted_while_in_the_channel_goes_out_redacted() {
        let (_dir, fanout, store, _writer) = open_store();
        let plan = Uuid::new_v4();
        let mut followed = follow_plan(&store, &fanout, plan);
        // Caught up (nothing stored): the follower now waits on the channel.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), followed.next())
                .await
                .is_err()
        );
        let mut watch = fanout.subscribe_all();
        store.append(request(plan, 0)).await.unwrap();
        // Published whole; the follower has not read it yet.
        let first = watch.recv().await.unwrap();
        assert!(matches!(first, Published::Whole(..)));
        redact_first(&store, plan, &mut watch).await;
        let sent = followed.next().await.unwrap().unwrap();
        assert_eq!(sent.event.seq, 1);
        assert!(
            sent.event.redacted,
            "the payload went out after its redaction"
        );
        assert_eq!(sent.event.payload.get(), "null");
    }

    #[tokio::test]
    async fn a_lagging_follower_notices_its_plan_was_deleted() {
        let seen = lag_through_deletion().await;
        assert_eq!(seen[..3], [Ok(1), Ok(2), Ok(3)]);
        assert!(
            seen[3].as_ref().is_err_and(|e| e.contains("PlanDeleted")),
            "{seen:?}"
        );
    }
}
