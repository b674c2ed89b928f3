//! The follower against a real store: pages, lag, redaction, deletion.

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
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
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
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
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

/// A type filter that matches little: the follower reads past the rest
/// in pages of at most `FILTERED_SCAN` rows (each skipped row decoded only
/// as far as its type), emits exactly the matching events with their
/// positions, and goes live after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_little_reads_past_the_rest_in_bounded_pages() {
    let (_dir, fanout, store, _writer) = open_store();
    let plan = Uuid::new_v4();
    let total = 2 * FILTERED_SCAN as u64 + 10;
    // The second read finds nothing: the follower must move on past it.
    let wanted = [
        5,
        2 * FILTERED_SCAN as u64 + 3,
        2 * FILTERED_SCAN as u64 + 5,
    ];
    let typed = |n: u64| AppendRequest {
        event_type: if wanted.contains(&n) {
            "plan.approved"
        } else {
            "step.started"
        }
        .into(),
        ..request(plan, n)
    };
    // In order (one seq, one position each), a few hundred per commit.
    let mut n = 1;
    while n <= total {
        let batch: Vec<_> = (n..(n + 256).min(total + 1))
            .map(|i| store.append(typed(i)))
            .collect();
        n += batch.len() as u64;
        for appended in futures_util::future::join_all(batch).await {
            appended.unwrap();
        }
    }
    let by_type = |event: &Event| event.event_type.clone();
    let filter = TypeFilter::parse("plan.*").unwrap();
    // One bounded read: the first match, and the position read up to.
    let first = filter.clone();
    let (page, more, read_to) = store
        .run(move |s| s.matching_events_page(0, &first, READ_PAGE, READ_PAGE_BYTES, FILTERED_SCAN))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(by_type).collect::<Vec<_>>(),
        ["plan.approved"]
    );
    assert!(more);
    assert_eq!(read_to, FILTERED_SCAN as u64);

    let mut followed = Box::pin(follow(
        store.clone(),
        fanout.subscribe_all(),
        Source::All(filter),
        0,
        CancellationToken::new(),
        Arc::default(),
    ));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), followed.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap()
    };
    let mut positions = Vec::new();
    for _ in wanted {
        let f = next().await;
        assert_eq!(f.cursor, f.event.position);
        assert_eq!(f.event.event_type, "plan.approved");
        positions.push(f.event.seq);
    }
    // Positions and seqs are one here: a single plan, appended in order.
    assert_eq!(positions, wanted);
    store
        .append(AppendRequest {
            event_type: "plan.closed".into(),
            ..request(plan, total + 1)
        })
        .await
        .unwrap();
    let live = next().await;
    assert_eq!(
        (live.cursor, live.event.event_type.as_str()),
        (total + 1, "plan.closed")
    );
}
