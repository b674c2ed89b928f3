//! Tests of the group-commit writer, driven batch by batch.

use super::*;
use crate::store::QUEUE_BYTES;
use crate::store::writer::Reply;
use crate::store::{Idempotency, Store};
use uuid::Uuid;

/// A writer loop over `store`'s database, driven by the test itself,
/// with a write-ahead segment at `segment` or none.
fn writer_loop(store: &Store, fanout: Fanout, segment: Option<std::path::PathBuf>) -> WriterLoop {
    WriterLoop {
        fed: store.fed.clone(),
        db: store.db.clone(),
        keyring: store.keyring.clone(),
        fanout,
        position: 0,
        stats: Arc::new(WriterStats::default()),
        retry: RETRY_FIRST,
        segment: segment.map(|path| Segment::open(&path, None).unwrap().0),
    }
}

/// One batch mixing every outcome for one plan: a new event, a retry of
/// it with the same key (in the same batch), the key reused for another
/// request, a stale `expected_seq`, and a correct one. Each caller gets
/// its own answer, seqs and positions stay contiguous, and only the new
/// events reach the fan-out, in commit order.
#[tokio::test]
async fn a_batch_with_mixed_outcomes_answers_each_caller() {
    mixed_outcomes(false).await;
}

/// The same through the write-ahead segment, where the rows are
/// written while the frames go to disk.
#[tokio::test]
async fn a_batch_with_mixed_outcomes_answers_each_caller_through_the_segment() {
    mixed_outcomes(true).await;
}

async fn mixed_outcomes(through_segment: bool) {
    use crate::chain::CanonicalPayload;
    let dir = tempfile::tempdir().unwrap();
    let fanout = crate::fanout::fanout();
    let mut published = fanout.subscribe_all();
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
    let plan = Uuid::new_v4();
    let request = |n: u64, expected_seq: Option<u64>, key: Option<&str>| AppendRequest {
        plan_id: plan,
        event_type: "step.started".into(),
        actor: None,
        payload: CanonicalPayload::new(&serde_json::json!({ "n": n })),
        expected_seq,
        idempotency: key.map(|key| Idempotency {
            key: key.into(),
            fingerprint: [n as u8; 32],
        }),
    };
    let batch_requests = [
        request(1, Some(0), Some("k")), // new: seq 1
        request(1, Some(0), Some("k")), // same key, same request: replay of seq 1
        request(2, None, Some("k")),    // same key, other request: conflict
        request(3, Some(0), None),      // stale expected_seq: conflict, head 1
        request(4, Some(1), None),      // new: seq 2
    ];
    let mut batch = Vec::new();
    let mut answers = Vec::new();
    for req in batch_requests {
        let (reply, answer) = oneshot::channel();
        batch.push((req, Reply::unqueued(reply)));
        answers.push(answer);
    }
    let segment = through_segment.then(|| dir.path().join("batch.wal"));
    let mut writer_loop = writer_loop(&store, fanout, segment);
    writer_loop.commit_batch(&mut batch);
    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(answer.await.unwrap());
    }
    let created = |o: &Result<Appended, AppendError>| {
        o.as_ref()
            .map(|a| (a.event.seq, a.event.position, a.replayed))
            .map_err(|e| format!("{e:?}"))
    };
    assert_eq!(created(&outcomes[0]), Ok((1, 1, false)));
    assert_eq!(created(&outcomes[1]), Ok((1, 1, true)));
    assert_eq!(
        outcomes[1].as_ref().unwrap().event.id,
        outcomes[0].as_ref().unwrap().event.id
    );
    assert!(matches!(
        outcomes[2],
        Err(AppendError::IdempotencyConflict { seq: 1 })
    ));
    assert!(matches!(
        outcomes[3],
        Err(AppendError::SeqConflict {
            expected: 0,
            head: 1
        })
    ));
    assert_eq!(created(&outcomes[4]), Ok((2, 2, false)));
    assert_eq!(writer_loop.stats.appends.load(Ordering::Relaxed), 2);
    assert_eq!(writer_loop.stats.last_batch_size.load(Ordering::Relaxed), 5);
    assert_eq!(published.try_recv().unwrap().seq, 1);
    assert_eq!(published.try_recv().unwrap().seq, 2);
    assert!(
        published.try_recv().is_err(),
        "replays are not published again"
    );
    // A retry in a later batch finds the idempotency row the staged
    // rows of the first one wrote.
    let (reply, answer) = oneshot::channel();
    writer_loop.commit_batch(&mut vec![(
        request(1, Some(0), Some("k")),
        Reply::unqueued(reply),
    )]);
    let retried = answer.await.unwrap();
    assert_eq!(created(&retried), Ok((1, 1, true)));
    assert_eq!(
        retried.unwrap().event.id,
        outcomes[0].as_ref().unwrap().event.id
    );
    assert_eq!(store.head(&plan).unwrap().unwrap().last_seq, 2);
    assert_eq!(store.last_position().unwrap(), 2);
    let keyring = store.keyring();
    assert!(store.verify_plan(&plan, &keyring).unwrap().is_valid());
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A batch that fails after its frames were written is answered with
/// its error; when zeroing those frames fails too, the answer says that
/// the append may come back after a crash, instead of leaving the
/// caller to believe nothing was written.
#[tokio::test]
async fn a_failed_batch_whose_frames_stay_says_so() {
    use crate::chain::CanonicalPayload;
    let dir = tempfile::tempdir().unwrap();
    let fanout = crate::fanout::fanout();
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
    let mut writer_loop = writer_loop(&store, fanout, Some(dir.path().join("batch.wal")));
    let mut details = Vec::new();
    for fail_zeroing in [false, true] {
        writer_loop.segment.as_mut().unwrap().fail_zeroing = fail_zeroing;
        writer_loop
            .stats
            .fail_next_commit
            .store(true, Ordering::Relaxed);
        let request = AppendRequest {
            plan_id: Uuid::new_v4(),
            event_type: "step.started".into(),
            actor: None,
            payload: CanonicalPayload::new(&serde_json::json!({ "n": 1 })),
            expected_seq: None,
            idempotency: None,
        };
        let (reply, answer) = oneshot::channel();
        writer_loop.commit_batch(&mut vec![(request, Reply::unqueued(reply))]);
        match answer.await.unwrap() {
            Err(AppendError::Storage(e)) => details.push(e.to_string()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(details[0], "injected commit failure");
    assert!(
        details[1].starts_with("injected commit failure; erasing the batch's write-ahead frames failed too, so the append may still appear after a crash"),
        "{details:?}"
    );
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// Batches of appends to one plan that cross the tree buffer's flush
/// (every 32 leaves), with the head row written once per batch: every
/// root matches the one computed from the events, and pages verify.
#[tokio::test]
async fn batches_across_tree_flushes_keep_the_tree() {
    use crate::chain::{CanonicalPayload, log_entry};
    use logbook_tlog::merkle::{StreamingRoot, leaf_hash};
    let dir = tempfile::tempdir().unwrap();
    let fanout = crate::fanout::fanout();
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
    let plan = Uuid::new_v4();
    let mut writer_loop = writer_loop(&store, fanout, None);
    for size in [70, 10, 32] {
        let mut batch = Vec::new();
        for n in 0..size {
            let (reply, _answer) = oneshot::channel();
            let req = AppendRequest {
                plan_id: plan,
                event_type: "step.done".into(),
                actor: None,
                payload: CanonicalPayload::new(&serde_json::json!({ "n": n })),
                expected_seq: None,
                idempotency: None,
            };
            batch.push((req, Reply::unqueued(reply)));
        }
        writer_loop.commit_batch(&mut batch);
    }
    let events = store.plan_events_after(&plan, 0, 1000).unwrap();
    assert_eq!(events.len(), 112);
    let mut reference = StreamingRoot::new();
    for event in &events {
        reference.push(leaf_hash(log_entry(event).as_bytes()));
        let (size, root) = store.tree(&plan).root(Some(event.seq)).unwrap().unwrap();
        assert_eq!((size, root), (event.seq, reference.root()), "size {size}");
    }
    let keyring = store.keyring();
    for after in [0, 31, 64, 95, 111] {
        let page = store
            .verify_page(&plan, after, 40, usize::MAX, &keyring)
            .unwrap()
            .unwrap();
        assert!(
            page.report.is_valid(),
            "page after {after}: {:?}",
            page.report
        );
    }
    assert!(store.verify_plan(&plan, &keyring).unwrap().is_valid());
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A write outside the writer (federation intake, tokens) that fails
/// with an I/O fault takes the handle down; the idle writer is woken to
/// reopen it, with no append to prompt it, and appends work again.
#[tokio::test]
async fn a_failure_outside_the_writer_wakes_it_to_reopen() {
    use crate::chain::CanonicalPayload;
    let dir = tempfile::tempdir().unwrap();
    let fanout = crate::fanout::fanout();
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
    let request = || AppendRequest {
        plan_id: Uuid::from_u128(7),
        event_type: "step.started".into(),
        actor: None,
        payload: CanonicalPayload::new(&serde_json::json!({})),
        expected_seq: None,
        idempotency: None,
    };
    store.append(request()).await.unwrap();
    // The writer is now idle, blocked waiting for a job.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let failure = StoreError::with_fault("injected".into(), Fault::Full);
    assert_eq!(store.db.failed(&failure), Some(Health::Full));
    assert_ne!(store.health(), Health::Ready);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while store.health() != Health::Ready {
        assert!(Instant::now() < deadline, "the writer did not reopen");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let appended = store.append(request()).await.unwrap();
    assert_eq!(appended.event.seq, 2);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A plan whose head row no longer decodes (damage to that plan's rows)
/// refuses its own appends; another plan's append in the same batch is
/// committed and answered, not failed with it.
#[tokio::test]
async fn a_damaged_head_row_refuses_its_plans_appends_not_the_batch() {
    use crate::chain::CanonicalPayload;
    let dir = tempfile::tempdir().unwrap();
    let fanout = crate::fanout::fanout();
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout.clone()).unwrap();
    let (damaged, healthy) = (Uuid::new_v4(), Uuid::new_v4());
    let request = |plan_id| AppendRequest {
        plan_id,
        event_type: "step.started".into(),
        actor: None,
        payload: CanonicalPayload::new(&serde_json::json!({ "n": 1 })),
        expected_seq: None,
        idempotency: None,
    };
    let mut writer_loop = writer_loop(&store, fanout, None);
    let (reply, answer) = oneshot::channel();
    writer_loop.commit_batch(&mut vec![(request(damaged), Reply::unqueued(reply))]);
    answer.await.unwrap().unwrap();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(super::super::HEADS)
            .unwrap()
            .insert(&damaged.into_bytes(), [0xFF; 7].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let (first, to_damaged) = oneshot::channel();
    let (second, to_healthy) = oneshot::channel();
    writer_loop.commit_batch(&mut vec![
        (request(damaged), Reply::unqueued(first)),
        (request(healthy), Reply::unqueued(second)),
    ]);
    assert!(
        matches!(to_damaged.await.unwrap(), Err(AppendError::Storage(_))),
        "the damaged plan's append is refused"
    );
    let appended = to_healthy
        .await
        .unwrap()
        .expect("the other plan's append commits");
    assert_eq!(appended.event.seq, 1);
    assert_eq!(store.head(&healthy).unwrap().unwrap().last_seq, 1);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// An append waits for room in `QUEUE_BYTES` before it is queued, and
/// gives its share back with its answer: the queue is bounded by bytes
/// whatever its callers do, not only by its count.
#[tokio::test]
async fn an_append_waits_for_room_in_the_queue_by_bytes() {
    use crate::chain::CanonicalPayload;
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let fanout = crate::fanout::fanout();
    let (store, writer) = Store::open(&dir.path().join("j.redb"), keyring, fanout).unwrap();
    let store = Arc::new(store);
    let plan = Uuid::new_v4();
    // Room for 10 bytes; this append has 19 (payload 7, type 12).
    let held = store
        .queued_bytes
        .clone()
        .acquire_many_owned(u32::try_from(QUEUE_BYTES - 10).unwrap())
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .append(AppendRequest {
                    plan_id: plan,
                    event_type: "step.started".into(),
                    actor: None,
                    payload: CanonicalPayload::new(&serde_json::json!({ "n": 1 })),
                    expected_seq: None,
                    idempotency: None,
                })
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "appended without room in the queue");
    assert_eq!(store.queue_depth(), 0, "queued without room");
    drop(held);
    assert_eq!(waiting.await.unwrap().unwrap().event.seq, 1);
    assert_eq!(
        store.queued_bytes.available_permits(),
        QUEUE_BYTES,
        "the answered append's share came back"
    );
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}
