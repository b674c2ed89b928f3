//! The write-ahead segment around the writer's other jobs and a backup,
//! with appends not yet checkpointed before them: a power cut after a
//! deletion or a redaction, and a backup taken meanwhile (see
//! `wal_power_cut.rs` for the harness).

use std::sync::Arc;

use uuid::Uuid;

use super::wal_power_cut::{assert_all_back, last_position_on_disk, no_idle_checkpoint, request};
use super::{AppendError, AppendRequest, Appended, AsyncStore, Store};
use crate::chain::CanonicalPayload;
use crate::keys::Keyring;

struct Running {
    dir: tempfile::TempDir,
    keyring: Arc<Keyring>,
    store: AsyncStore,
    writer: super::Writer,
}

impl Running {
    fn start() -> Running {
        Running::start_with(&super::StoreOptions::default())
    }

    fn start_with(options: &super::StoreOptions) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
        let (store, writer) = Store::open_with(
            &dir.path().join("j.redb"),
            keyring.clone(),
            crate::fanout::fanout(),
            options,
        )
        .unwrap();
        no_idle_checkpoint(&store);
        Running {
            dir,
            keyring,
            store: AsyncStore::new(store),
            writer,
        }
    }

    async fn append_n(&self, plan: Uuid, from: u64, count: u64) -> Vec<Appended> {
        let mut acked = Vec::new();
        for n in from..from + count {
            acked.push(self.store.append(request(plan, n, false)).await.unwrap());
        }
        acked
    }

    /// Redacts `plan`'s event `seq`, which must succeed.
    async fn redact(&self, plan: Uuid, seq: u64) {
        self.store.redact_for_test(plan, seq).await;
    }

    /// The files as the disk holds them now, as a power cut leaves them.
    fn cut(&self) -> tempfile::TempDir {
        copy_files(self.dir.path())
    }

    async fn stop(self) -> (tempfile::TempDir, Arc<Keyring>) {
        drop(self.store);
        tokio::task::spawn_blocking(move || self.writer.shutdown())
            .await
            .unwrap();
        (self.dir, self.keyring)
    }
}

/// A copy of the store's files in `dir`, as a power cut would leave them.
fn copy_files(dir: &std::path::Path) -> tempfile::TempDir {
    let cut = tempfile::tempdir().unwrap();
    for name in ["j.redb", "j.wal"] {
        std::fs::copy(dir.join(name), cut.path().join(name)).unwrap();
    }
    cut
}

pub(super) async fn open(
    path: std::path::PathBuf,
    keyring: Arc<Keyring>,
) -> (Store, super::Writer) {
    tokio::task::spawn_blocking(move || Store::open(&path, keyring, crate::fanout::fanout()))
        .await
        .unwrap()
        .unwrap()
}

pub(super) async fn close(store: Store, writer: super::Writer) {
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// Appends only the segment holds, then a plan's deletion, then more
/// appends, then a power cut: the deleted plan stays deleted (its id
/// refused), and every acknowledged event of the other plan is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_after_appends_in_the_segment_survives_a_power_cut() {
    let run = Running::start();
    let (gone, kept) = (Uuid::from_u128(31), Uuid::from_u128(32));
    run.append_n(gone, 0, 5).await;
    let mut acked = run.append_n(kept, 0, 5).await;
    let deleted = run
        .store
        .delete_plan(gone, serde_json::json!({ "test": true }))
        .await
        .unwrap();
    assert_eq!(deleted.head.last_seq, 5);
    acked.extend(run.append_n(kept, 5, 3).await);
    let cut = run.cut();
    let (_dir, keyring) = run.stop().await;

    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    assert_eq!(store.head(&gone).unwrap(), None);
    assert_eq!(
        store.last_position().unwrap(),
        acked.last().unwrap().event.position
    );
    assert_all_back(&store, &[kept], &acked);
    let store = AsyncStore::new(store);
    let refused = store.append(request(gone, 99, false)).await;
    assert!(
        matches!(refused, Err(AppendError::PlanDeleted { .. })),
        "{refused:?}"
    );
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A payload erased while its event was in the segment only: no byte of
/// it is left in the segment, and after a power cut the event is back
/// redacted, not with its payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_leaves_no_payload_in_the_segment_and_survives_a_power_cut() {
    let run = Running::start();
    let plan = Uuid::from_u128(33);
    let secret = "secret-7f3a9c-do-not-keep";
    let mut acked = run.append_n(plan, 0, 3).await;
    let with_secret = run
        .store
        .append(AppendRequest {
            payload: CanonicalPayload::new(&serde_json::json!({ "card": secret })),
            ..request(plan, 3, false)
        })
        .await
        .unwrap();
    acked.push(with_secret.clone());
    acked.extend(run.append_n(plan, 4, 3).await);
    let holds_secret = |wal: &std::path::Path| {
        let bytes = std::fs::read(wal).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
    };
    assert!(
        holds_secret(&run.dir.path().join("j.wal")),
        "the frame holds the payload before the redaction"
    );
    run.redact(plan, with_secret.event.seq).await;
    acked.extend(run.append_n(plan, 7, 2).await);
    let cut = run.cut();
    assert!(!holds_secret(&cut.path().join("j.wal")));
    let (_dir, keyring) = run.stop().await;

    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    let events = store.plan_events_after(&plan, 0, 100).unwrap();
    assert_eq!(events.len(), 9);
    let erased = &events[with_secret.event.seq as usize - 1];
    assert_eq!(erased.id, with_secret.event.id);
    assert!(erased.redacted && !erased.payload.get().contains(secret));
    for (stored, a) in events.iter().zip(&acked) {
        assert_eq!(
            (stored.id, stored.signature),
            (a.event.id, a.event.signature)
        );
    }
    assert!(
        store
            .verify_plan(&plan, &store.keyring())
            .unwrap()
            .is_valid()
    );
    close(store, writer).await;
}

/// A backup taken while redb on disk lacks the appends the segment holds
/// (redb's `None` commits) still holds every acknowledged one: it copies
/// the committed state, not the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_appends_the_segment_has_not_checkpointed() {
    let run = Running::start();
    let plans = [Uuid::from_u128(34), Uuid::from_u128(35)];
    let mut acked = run.append_n(plans[0], 0, 6).await;
    acked.extend(run.append_n(plans[1], 0, 6).await);
    let on_disk = run.cut();
    assert_eq!(
        last_position_on_disk(&on_disk.path().join("j.redb")),
        0,
        "redb's file lacks the appends"
    );
    let backup_dir = run.dir.path().to_path_buf();
    let (mut file, _rows) = run
        .store
        .run(move |s| s.backup_to_unnamed(&backup_dir))
        .await
        .unwrap();
    let (_dir, keyring) = run.stop().await;

    let restored = tempfile::tempdir().unwrap();
    let path = restored.path().join("j.redb");
    let mut to = std::fs::File::create(&path).unwrap();
    std::io::copy(&mut file, &mut to).unwrap();
    drop(to);
    let (store, writer) = open(path, keyring).await;
    assert_eq!(store.last_position().unwrap(), 12);
    assert_all_back(&store, &plans, &acked);
    close(store, writer).await;
}

/// A power cut in the middle of a checkpoint: redb's `Immediate` commit is
/// on disk but the segment's header still has the old epoch, so every
/// frame names an event redb already holds. The open checks them all
/// against redb, writes nothing new, and the next append continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_between_checkpoint_and_emptying_opens() {
    let run = Running::start();
    let plans = [Uuid::from_u128(36), Uuid::from_u128(37)];
    let mut acked = run.append_n(plans[0], 0, 8).await;
    acked.extend(run.append_n(plans[1], 0, 8).await);
    let segment_before = run.cut();
    // Any exclusive job checkpoints first; deleting no plan changes nothing else.
    let nothing = run
        .store
        .delete_plan(Uuid::from_u128(99), serde_json::json!({}))
        .await;
    assert!(matches!(nothing, Err(super::admin::DeleteError::NotFound)));
    let cut = run.cut();
    std::fs::copy(
        segment_before.path().join("j.wal"),
        cut.path().join("j.wal"),
    )
    .unwrap();
    let (_dir, keyring) = run.stop().await;
    assert_eq!(last_position_on_disk(&cut.path().join("j.redb")), 16);

    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    assert_eq!(store.last_position().unwrap(), 16);
    assert_all_back(&store, &plans, &acked);
    let store = AsyncStore::new(store);
    let next = store.append(request(plans[1], 8, false)).await.unwrap();
    assert_eq!((next.event.seq, next.event.position), (9, 17));
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// A second store opened on a data dir a running one holds (a second
/// daemon, or `tokens create` offline) is refused before it touches the
/// segment: the running store's frames stay byte for byte, and a power
/// cut afterwards still gets every acknowledged event back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_running_store_leaves_its_segment_alone() {
    let run = Running::start();
    let plan = Uuid::from_u128(38);
    let acked = run.append_n(plan, 0, 7).await;
    let path = run.dir.path().join("j.redb");
    let wal = run.dir.path().join("j.wal");
    let before = std::fs::read(&wal).unwrap();

    let second = Store::open(&path, run.keyring.clone(), crate::fanout::fanout());
    let refused = second.err().expect("a second store opened");
    assert!(refused.to_string().contains("already open"), "{refused}");
    let token = super::admin::StoredToken {
        id: "t1".into(),
        name: "offline".into(),
        sha256: [1; 32],
        scopes: vec![super::admin::Scope::Read],
        created_at: 0,
    };
    let offline = super::admin::insert_token_offline(&path, &token);
    assert!(offline.is_err(), "an offline write opened a running store");
    assert!(
        std::fs::read(&wal).unwrap() == before,
        "the segment changed"
    );

    let cut = run.cut();
    let (_dir, keyring) = run.stop().await;
    assert_eq!(last_position_on_disk(&cut.path().join("j.redb")), 0);
    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    assert_all_back(&store, &[plan], &acked);
    close(store, writer).await;
}

/// A batch whose redb commit fails with an I/O fault after its frames
/// were synced: the handle is taken down and reopened, and the reopen's
/// replay puts back the batches that committed but not the failed one,
/// whose append was told it failed. The next append takes its position,
/// and a power cut then brings back exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failing_with_an_io_fault_is_not_replayed_by_the_reopen() {
    an_io_fault_is_not_replayed_by_the_reopen(|stats| &stats.fail_next_commit).await;
}

/// The same when writing the batch's rows fails with an I/O fault, after
/// its frames were written and before they were synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_failing_with_an_io_fault_are_not_replayed_by_the_reopen() {
    an_io_fault_is_not_replayed_by_the_reopen(|stats| &stats.fail_next_rows).await;
}

async fn an_io_fault_is_not_replayed_by_the_reopen(
    switch: fn(&super::WriterStats) -> &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let run = Running::start();
    let plan = Uuid::from_u128(39);
    let mut acked = run.append_n(plan, 0, 10).await;
    let stats = run.store.stats();
    stats.injected_fault_is_io.store(true, Ordering::Relaxed);
    switch(stats).store(true, Ordering::Relaxed);
    let failed = run.store.append(request(plan, 100, true)).await;
    assert!(failed.is_err(), "the injected failure reached the caller");
    // The writer answers, then takes the handle down, then waits at least
    // `RETRY_FIRST` before it reopens: out of service, then back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for in_service in [false, true] {
        while (run.store.health() == super::Health::Ready) != in_service {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not take the handle down and reopen it"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let next = run.store.append(request(plan, 101, false)).await.unwrap();
    assert_eq!((next.event.seq, next.event.position), (11, 11));
    acked.push(next);
    let cut = run.cut();
    let (_dir, keyring) = run.stop().await;

    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    assert_eq!(store.last_position().unwrap(), 11);
    assert_all_back(&store, &[plan], &acked);
    close(store, writer).await;
}

/// The segment is made private again at every open, as the database is,
/// whatever mode it was left with (copied in, or changed by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segment_is_private_again_after_an_open() {
    use std::os::unix::fs::PermissionsExt;
    let run = Running::start();
    run.append_n(Uuid::from_u128(41), 0, 3).await;
    let (dir, keyring) = run.stop().await;
    let wal = dir.path().join("j.wal");
    assert_eq!(mode(&wal), 0o600, "made private");
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (store, writer) = open(dir.path().join("j.redb"), keyring).await;
    assert_eq!(mode(&wal), 0o600, "private again after the open");
    close(store, writer).await;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
}

/// With `quick_repair`, the replay's durable commit records redb's
/// allocator state like every other durable commit: a crash right after a
/// replay then opens without redb's full repair walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_replay_needs_no_full_repair() {
    let options = super::StoreOptions { quick_repair: true };
    let run = Running::start_with(&options);
    run.append_n(Uuid::from_u128(51), 0, 10).await;
    let cut = run.cut();
    assert_eq!(last_position_on_disk(&cut.path().join("j.redb")), 0);
    let (_, keyring) = run.stop().await;

    // The next start replays the ten events; a crash follows at once.
    let path = cut.path().join("j.redb");
    let (store, writer) = tokio::task::spawn_blocking(move || {
        Store::open_with(&path, keyring, crate::fanout::fanout(), &options)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(store.last_position().unwrap(), 10);
    let crashed = copy_files(cut.path());
    close(store, writer).await;

    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = repaired.clone();
    let db = redb::Builder::new()
        .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed))
        .open(crashed.path().join("j.redb"))
        .unwrap();
    drop(db);
    assert!(
        !repaired.load(std::sync::atomic::Ordering::Relaxed),
        "the open after a crash following a replay ran redb's full repair"
    );
    assert_eq!(last_position_on_disk(&crashed.path().join("j.redb")), 10);
}

/// A crash right after a redaction commits leaves no byte of the erased
/// payload in the segment: the old frames are zeroed before the commit,
/// not after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_redaction_commits_leaves_no_payload_in_the_segment() {
    let run = Running::start();
    let plan = Uuid::from_u128(34);
    let secret = "secret-5d21e8-crash-after-commit";
    run.append_n(plan, 0, 2).await;
    let with_secret = run
        .store
        .append(AppendRequest {
            payload: CanonicalPayload::new(&serde_json::json!({ "card": secret })),
            ..request(plan, 2, false)
        })
        .await
        .unwrap();
    let holds_secret = |wal: &std::path::Path| {
        let bytes = std::fs::read(wal).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
    };
    assert!(holds_secret(&run.dir.path().join("j.wal")));
    let (crash, crashed) = std::sync::mpsc::channel();
    let dir = run.dir.path().to_path_buf();
    *run.store.stats().after_redaction_commit.lock().unwrap() =
        Some(super::TestHook(Box::new(move || {
            crash.send(copy_files(&dir)).unwrap();
        })));
    run.redact(plan, with_secret.event.seq).await;
    let cut = crashed.recv().unwrap();
    assert!(
        !holds_secret(&cut.path().join("j.wal")),
        "the erased payload is still in the segment when the redaction commits"
    );
    let (_dir, keyring) = run.stop().await;

    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    let events = store.plan_events_after(&plan, 0, 100).unwrap();
    assert_eq!(events.len(), 3);
    assert!(events[2].redacted && !events[2].payload.get().contains(secret));
    close(store, writer).await;
}

/// A compaction promises that no file keeps erased bytes: when zeroing the
/// segment after the rewrite fails, it answers with that error, not
/// success. A redaction whose wipe fails is still done (it committed), and
/// the next compaction wipes the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wipe_fails_the_compaction_but_not_the_redaction() {
    use std::sync::atomic::Ordering;
    let run = Running::start();
    let plan = Uuid::from_u128(61);
    run.append_n(plan, 0, 3).await;
    let stats = run.store.stats();

    stats.fail_next_wipe.store(true, Ordering::Relaxed);
    run.redact(plan, 2).await;

    stats.fail_next_wipe.store(true, Ordering::Relaxed);
    let failed = run
        .store
        .compact()
        .await
        .expect_err("a failed wipe fails it");
    assert!(
        failed
            .to_string()
            .contains("zeroing the write-ahead segment failed"),
        "{failed}"
    );
    run.store
        .compact()
        .await
        .expect("the next compaction wipes it");
    run.stop().await;
}

/// A redaction's wipe writes the segment's new header, and its sync fails
/// (an EIO leaves the page in the cache, marked clean, holding the new
/// epoch). Appends answered afterwards must not be framed under the old
/// epoch, which the next open would not read back: after a power cut that
/// keeps the cached header, every one of them is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_a_header_whose_sync_failed_survive_a_power_cut() {
    use std::sync::atomic::Ordering;
    let run = Running::start();
    let plan = Uuid::from_u128(62);
    let mut acked = run.append_n(plan, 0, 3).await;
    run.store
        .stats()
        .fail_next_header_sync
        .store(true, Ordering::Relaxed);
    run.redact(plan, 2).await;
    acked.extend(run.append_n(plan, 3, 5).await);
    let cut = run.cut();
    let (_dir, keyring) = run.stop().await;

    let (store, writer) = open(cut.path().join("j.redb"), keyring).await;
    assert_all_back(&store, &[plan], &acked);
    close(store, writer).await;
}
