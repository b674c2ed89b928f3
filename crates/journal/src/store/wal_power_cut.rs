//! The write-ahead segment against a power cut, at the store level: the
//! files are copied as the disk holds them while the store runs (redb's
//! `None` commits since the last checkpoint are then missing from the
//! copy), and the copy is opened as the next start would.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable};
use uuid::Uuid;

use super::{
    AppendRequest, Appended, AsyncStore, Fault, Health, Idempotency, POSITIONS, Store, StoreError,
};
use crate::chain::{CanonicalPayload, log_entry};
use crate::keys::Keyring;
use logbook_tlog::merkle::{StreamingRoot, leaf_hash};

pub(super) fn request(plan: Uuid, n: u64, key: bool) -> AppendRequest {
    AppendRequest {
        plan_id: plan,
        event_type: "step.done".into(),
        actor: None,
        payload: CanonicalPayload::new(&serde_json::json!({ "n": n, "pad": "x".repeat(200) })),
        expected_seq: None,
        idempotency: key.then(|| Idempotency {
            key: format!("key-{n}"),
            fingerprint: [n as u8; 32],
        }),
    }
}

/// Appends `per_plan` events to each plan, all at once, so that the
/// writer takes them in batches of many appends over several plans.
async fn append_round(
    store: &AsyncStore,
    plans: &[Uuid],
    from: u64,
    per_plan: u64,
) -> Vec<Appended> {
    let mut calls = Vec::new();
    for n in from..from + per_plan {
        for plan in plans {
            let store = store.clone();
            let req = request(*plan, n, n.is_multiple_of(3));
            calls.push(tokio::spawn(async move { store.append(req).await }));
        }
    }
    let mut acked = Vec::new();
    for call in calls {
        acked.push(call.await.unwrap().unwrap());
    }
    acked
}

/// Keeps `store`'s writer from checkpointing when idle, so that a copy of
/// its files is what a power cut would leave.
pub(super) fn no_idle_checkpoint(store: &Store) {
    store
        .stats
        .no_idle_checkpoint
        .store(true, Ordering::Relaxed);
}

/// A store in a fresh temp dir, whose writer never checkpoints when idle
/// (so that a copy of its files is what a power cut would leave).
struct Fresh {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    keyring: Arc<Keyring>,
    store: AsyncStore,
    writer: super::Writer,
}

fn fresh_store() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (store, writer) = Store::open(&path, keyring.clone(), crate::fanout::fanout()).unwrap();
    no_idle_checkpoint(&store);
    Fresh {
        dir,
        path,
        keyring,
        store: AsyncStore::new(store),
        writer,
    }
}

/// The files of the store at `path` as the disk holds them right now,
/// copied into a new dir (what a power cut leaves); then the store stops.
async fn power_cut(
    dir: &tempfile::TempDir,
    path: &std::path::Path,
    store: AsyncStore,
    writer: super::Writer,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let cut = tempfile::tempdir().unwrap();
    let cut_path = cut.path().join("j.redb");
    std::fs::copy(path, &cut_path).unwrap();
    std::fs::copy(dir.path().join("j.wal"), cut.path().join("j.wal")).unwrap();
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
    (cut, cut_path)
}

pub(super) fn last_position_on_disk(path: &std::path::Path) -> u64 {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let positions = txn.open_table(POSITIONS).unwrap();
    positions.last().unwrap().map_or(0, |(k, _)| k.value())
}

/// Every acknowledged event is in `store` exactly as acknowledged; chains,
/// Merkle roots and pages verify.
pub(super) fn assert_all_back(store: &Store, plans: &[Uuid], acked: &[Appended]) {
    let mut by_plan: HashMap<Uuid, Vec<&Appended>> = HashMap::new();
    for a in acked {
        by_plan.entry(a.event.plan_id).or_default().push(a);
    }
    let keyring = store.keyring();
    for plan in plans {
        let events = store.plan_events_after(plan, 0, 10_000).unwrap();
        let mut mine = by_plan.remove(plan).unwrap();
        mine.sort_by_key(|a| a.event.seq);
        assert_eq!(events.len(), mine.len(), "plan {plan}");
        let mut reference = StreamingRoot::new();
        for (stored, a) in events.iter().zip(&mine) {
            assert_eq!(
                (stored.id, stored.seq, stored.position, stored.signature),
                (a.event.id, a.event.seq, a.event.position, a.event.signature)
            );
            reference.push(leaf_hash(log_entry(stored).as_bytes()));
            let (size, root) = store.tree(plan).root(Some(stored.seq)).unwrap().unwrap();
            assert_eq!((size, root), (stored.seq, reference.root()));
        }
        assert!(store.verify_plan(plan, &keyring).unwrap().is_valid());
        for after in [0, 20, 31, 33] {
            let page = store
                .verify_page(plan, after, 16, usize::MAX, &keyring)
                .unwrap()
                .unwrap();
            assert!(page.report.is_valid(), "page after {after}");
        }
    }
}

/// Batches over three plans, crossing the tree buffer's 32-leaf flush,
/// with idempotency keys; a checkpoint in the middle (the compaction);
/// then a power cut: redb on disk has lost every batch after the
/// checkpoint, and the next open puts every one of them back from the
/// segment. Retries with the same key return the originals, and the next
/// append continues each chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_event() {
    let Fresh {
        dir,
        path,
        keyring,
        store,
        writer,
    } = fresh_store();
    let plans = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
    let mut acked = append_round(&store, &plans, 0, 20).await;
    // A checkpoint: the first 60 events are durable in redb alone.
    store.compact().await.unwrap();
    let checkpointed = acked.len() as u64;
    acked.extend(append_round(&store, &plans, 20, 15).await);
    acked.extend(append_round(&store, &plans, 35, 5).await);
    assert_eq!(acked.len(), 120);
    let batches = store
        .run(|s| Ok::<_, StoreError>(s.stats.commits.load(Ordering::Relaxed)))
        .await
        .unwrap();
    assert!(
        batches < 120,
        "the appends were batched ({batches} commits)"
    );

    // The power cut: the files as the disk holds them right now.
    let (_cut, cut_path) = power_cut(&dir, &path, store, writer).await;
    let on_disk = last_position_on_disk(&cut_path);
    assert_eq!(
        on_disk, checkpointed,
        "redb on disk holds the checkpoint and nothing after it"
    );

    let (store, writer) = Store::open(&cut_path, keyring.clone(), crate::fanout::fanout()).unwrap();
    assert_eq!(store.last_position().unwrap(), 120);
    assert_all_back(&store, &plans, &acked);
    let store = AsyncStore::new(store);
    // An idempotent retry of an append that only the segment kept (one
    // with a key; concurrent appends land in any order) returns the
    // original event, replayed.
    let payload_n = |a: &Appended| {
        serde_json::from_str::<serde_json::Value>(a.event.payload.get()).unwrap()["n"]
            .as_u64()
            .unwrap()
    };
    let original = acked
        .iter()
        .filter(|a| a.event.plan_id == plans[1] && a.event.position > checkpointed)
        .find(|a| payload_n(a).is_multiple_of(3))
        .expect("a keyed append after the checkpoint");
    let n = payload_n(original);
    let retry = store.append(request(plans[1], n, true)).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.event.id, original.event.id);
    // The next append continues the chain where the segment left it.
    let next = store.append(request(plans[1], 1000, false)).await.unwrap();
    assert_eq!((next.event.seq, next.event.position), (41, 121));
    let last = acked
        .iter()
        .filter(|a| a.event.plan_id == plans[1])
        .max_by_key(|a| a.event.seq)
        .unwrap();
    assert_eq!(next.event.prev_hash, Some(last.event.signature));
    acked.push(next);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
    // A clean stop checkpointed: redb alone holds everything.
    assert_eq!(last_position_on_disk(&cut_path), 121);
    let (store, writer) = Store::open(&cut_path, keyring, crate::fanout::fanout()).unwrap();
    assert_all_back(&store, &plans, &acked);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A handle taken down by an I/O fault loses its `None` commits: the
/// writer puts them back from the segment before the reopened handle
/// serves anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_handle_gets_the_segment_back() {
    // `dir` lives to the end: the writer reopens the files in it.
    let Fresh {
        dir: _dir,
        store,
        writer,
        ..
    } = fresh_store();
    let plans = [Uuid::from_u128(5), Uuid::from_u128(6)];
    let acked = append_round(&store, &plans, 0, 40).await;
    let failure = StoreError::with_fault("injected".into(), Fault::Io);
    store
        .run(move |s| {
            assert_eq!(s.db.failed(&failure), Some(Health::Failed));
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let health = store.health();
        if health == Health::Ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer did not reopen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store
        .run(move |s| {
            assert_eq!(s.last_position()?, 80);
            assert_all_back(s, &plans, &acked);
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A batch whose redb commit fails after its frames were synced is
/// answered with the error, and a power cut before the next checkpoint
/// does not bring it back: its frames were zeroed. The next append takes
/// the position the failed one would have had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_does_not_come_back_after_a_power_cut() {
    a_failed_batch_does_not_come_back(|stats| &stats.fail_next_commit).await;
}

/// The same when writing the batch's rows fails after its frames were
/// written and their writeback started, before they were synced: the
/// frames may be on disk already, and are zeroed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_rows_failed_does_not_come_back_after_a_power_cut() {
    a_failed_batch_does_not_come_back(|stats| &stats.fail_next_rows).await;
}

/// The same when the data sync of the batch's frames fails, after its
/// rows were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_sync_failed_does_not_come_back_after_a_power_cut() {
    a_failed_batch_does_not_come_back(|stats| &stats.fail_next_sync).await;
}

async fn a_failed_batch_does_not_come_back(
    switch: fn(&super::WriterStats) -> &std::sync::atomic::AtomicBool,
) {
    let Fresh {
        dir,
        path,
        keyring,
        store,
        writer,
    } = fresh_store();
    let plan = Uuid::from_u128(9);
    let mut acked = append_round(&store, &[plan], 0, 10).await;
    switch(store.stats()).store(true, Ordering::Relaxed);
    let failed = store.append(request(plan, 100, true)).await;
    assert!(failed.is_err(), "the injected failure reached the caller");
    let power_cut = |to: &std::path::Path| {
        std::fs::copy(&path, to.join("j.redb")).unwrap();
        std::fs::copy(dir.path().join("j.wal"), to.join("j.wal")).unwrap();
    };
    let cut = tempfile::tempdir().unwrap();
    power_cut(cut.path());
    let next = store.append(request(plan, 101, false)).await.unwrap();
    assert_eq!((next.event.seq, next.event.position), (11, 11));
    let cut_after = tempfile::tempdir().unwrap();
    power_cut(cut_after.path());
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();

    acked.push(next);
    tokio::task::spawn_blocking(move || {
        // Before the failed append was retried over, and after.
        for (cut, last) in [(cut, 10), (cut_after, 11)] {
            let path = cut.path().join("j.redb");
            let (reopened, w) =
                Store::open(&path, keyring.clone(), crate::fanout::fanout()).unwrap();
            assert_eq!(reopened.last_position().unwrap(), last);
            let upto: Vec<Appended> = acked.iter().take(last as usize).cloned().collect();
            assert_all_back(&reopened, &[plan], &upto);
            drop(reopened);
            w.shutdown();
        }
    })
    .await
    .unwrap();
}

/// A segment that does not fit the database beside it (another store's,
/// or one left after `journal.redb` was replaced by an older copy) refuses
/// the open, naming the segment, whether its events clash with the
/// database's or leave a gap after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_does_not_fit_refuses_the_open() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let plan = Uuid::from_u128(9);
    // Store A: 5 events checkpointed, 5 more in its segment only.
    let a = tempfile::tempdir().unwrap();
    let (store, writer) = Store::open(
        &a.path().join("j.redb"),
        keyring.clone(),
        crate::fanout::fanout(),
    )
    .unwrap();
    no_idle_checkpoint(&store);
    let store = AsyncStore::new(store);
    append_round(&store, &[plan], 0, 5).await;
    store.compact().await.unwrap();
    append_round(&store, &[plan], 5, 5).await;
    let segment_of_a = std::fs::read(a.path().join("j.wal")).unwrap();
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
    for (events_in_b, why) in [(7, "clash"), (3, "gap")] {
        let b = tempfile::tempdir().unwrap();
        let path = b.path().join("j.redb");
        let (store, writer) = Store::open(&path, keyring.clone(), crate::fanout::fanout()).unwrap();
        let store = AsyncStore::new(store);
        append_round(&store, &[plan], 0, events_in_b).await;
        drop(store);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
        std::fs::write(b.path().join("j.wal"), &segment_of_a).unwrap();
        let refused = Store::open(&path, keyring.clone(), crate::fanout::fanout())
            .err()
            .unwrap_or_else(|| panic!("a {why} opened"));
        assert!(refused.to_string().contains("j.wal"), "{why}: {refused}");
        // Nothing was written: the database still ends where it did.
        assert_eq!(last_position_on_disk(&path), events_in_b, "{why}");
    }
}

/// A segment holding events beside no database at all (the journal was
/// deleted after a crash, to start fresh) would begin a new journal with
/// the old one's first events: the open refuses, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_without_its_database_refuses_the_open() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let old = tempfile::tempdir().unwrap();
    let (store, writer) = Store::open(
        &old.path().join("j.redb"),
        keyring.clone(),
        crate::fanout::fanout(),
    )
    .unwrap();
    no_idle_checkpoint(&store);
    let store = AsyncStore::new(store);
    append_round(&store, &[Uuid::from_u128(4)], 0, 3).await;
    // Copied before the shutdown's checkpoint empties it: positions 1 to 3.
    let segment = std::fs::read(old.path().join("j.wal")).unwrap();
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let path = fresh.path().join("j.redb");
    std::fs::write(fresh.path().join("j.wal"), &segment).unwrap();
    let refused = Store::open(&path, keyring.clone(), crate::fanout::fanout())
        .err()
        .expect("an orphan segment opened");
    assert!(
        refused.to_string().contains("holds 3 acknowledged events"),
        "{refused}"
    );
    assert!(!path.exists(), "nothing is created");
    // Moved aside, the directory starts a new journal.
    std::fs::remove_file(fresh.path().join("j.wal")).unwrap();
    let (store, writer) = Store::open(&path, keyring, crate::fanout::fanout()).unwrap();
    assert_eq!(store.last_position().unwrap(), 0);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A bad sector in the first frame after a checkpoint, with more than a
/// batch's worth of acknowledged events after it: the next start refuses
/// the store instead of going on without them (the bound on the failed
/// frame's position comes from redb's durable position here, since no
/// frame of the epoch checks before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_acknowledged_frame_refuses_the_next_start() {
    let Fresh {
        dir,
        path,
        keyring,
        store,
        writer,
    } = fresh_store();
    let plan = [Uuid::from_u128(9)];
    append_round(&store, &plan, 0, 5).await;
    store.compact().await.unwrap();
    let acked = append_round(&store, &plan, 5, super::wal::MAX_FRAMES_PER_BATCH + 40).await;
    assert!(acked.iter().all(|a| !a.replayed));
    let (cut, cut_path) = power_cut(&dir, &path, store, writer).await;
    // One byte of the first frame's body rots.
    {
        use std::os::unix::fs::FileExt;
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(cut.path().join("j.wal"))
            .unwrap();
        let at = super::wal::HEADER_LEN + 36 + 10;
        let mut byte = [0u8];
        wal.read_exact_at(&mut byte, at).unwrap();
        wal.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
    }
    let Err(e) = Store::open(&cut_path, keyring, crate::fanout::fanout()) else {
        panic!("a segment that lost an acknowledged event opened");
    };
    assert!(e.to_string().contains("lost an acknowledged event"), "{e}");
}
