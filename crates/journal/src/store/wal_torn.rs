//! A power cut that tears a batch at the start of the segment, then a
//! second power cut: frames of the torn batch that did reach the disk
//! must never replay after the next run's frames (see `wal_power_cut.rs`
//! for the harness).
//!
//! A batch's frames are one `pwrite` and one `fdatasync`; until the sync
//! completes the kernel may write its pages back in any order, so a cut can
//! leave the batch's first page unwritten and later pages written. The next
//! open then finds no frame that checks. If it kept the epoch, the next
//! run's frames (same epoch, from the same offset, and, in a steady load,
//! the same size and the same positions) would end exactly where a stale
//! frame of the torn batch begins, and a replay after a second cut would
//! read on into it: the store then refuses to open (the stale event does
//! not extend the chain) or brings back an event no client was ever told
//! was stored.

use std::sync::Arc;

use uuid::Uuid;

use super::wal::HEADER_LEN;
use super::wal_power_cut::{assert_all_back, last_position_on_disk, no_idle_checkpoint, request};
use super::{Appended, AsyncStore, Store};
use crate::keys::Keyring;

/// Opens the store at `path`, appends `appends` (plan, n) one by one, each
/// its own batch, and returns what was acknowledged and a copy of the files
/// as the disk held them then (redb's `None` commits missing from it).
pub(super) async fn run_then_cut(
    path: &std::path::Path,
    keyring: &Arc<Keyring>,
    appends: &[(Uuid, u64)],
) -> (Vec<Appended>, tempfile::TempDir) {
    let (store, writer) = Store::open(path, keyring.clone(), crate::fanout::fanout()).unwrap();
    no_idle_checkpoint(&store);
    let store = AsyncStore::new(store);
    let mut acked = Vec::new();
    for (plan, n) in appends {
        acked.push(store.append(request(*plan, *n, false)).await.unwrap());
    }
    let cut = tempfile::tempdir().unwrap();
    let dir = path.parent().unwrap();
    std::fs::copy(path, cut.path().join("j.redb")).unwrap();
    std::fs::copy(dir.join("j.wal"), cut.path().join("j.wal")).unwrap();
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
    (acked, cut)
}

/// The files a cut leaves when a batch of `appends` is in flight with
/// nothing before it in the segment, and its first page never reached the
/// disk: no frame checks, but frames after that page do, in the segment's
/// current epoch. (The appends are made one by one and the page zeroed
/// afterwards: the frames' bytes are the same as one batch's.)
async fn torn_first_batch(keyring: &Arc<Keyring>, appends: &[(Uuid, u64)]) -> tempfile::TempDir {
    let run = tempfile::tempdir().unwrap();
    let (_, cut) = run_then_cut(&run.path().join("j.redb"), keyring, appends).await;
    let wal = cut.path().join("j.wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let page = HEADER_LEN as usize..2 * HEADER_LEN as usize;
    bytes[page.clone()].fill(0);
    assert!(
        bytes[page.end..page.end + 4096].iter().any(|b| *b != 0),
        "frames of the torn batch lie after its first page"
    );
    std::fs::write(&wal, bytes).unwrap();
    assert_eq!(last_position_on_disk(&cut.path().join("j.redb")), 0);
    cut
}

/// The second run appends to the same plan as the torn batch did: its
/// frames end where a stale frame of the torn batch begins, with the next
/// position. After a second cut the store must open with exactly the
/// second run's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_first_batch_does_not_refuse_the_open_after_the_next_cut() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let plan = Uuid::from_u128(21);
    let torn: Vec<_> = (0..30).map(|n| (plan, n)).collect();
    let cut = torn_first_batch(&keyring, &torn).await;

    // The next start: nothing to replay; the plan starts again.
    let (acked, second_cut) = run_then_cut(&cut.path().join("j.redb"), &keyring, &torn[..15]).await;
    assert_eq!(acked.last().unwrap().event.position, 15);

    let path = second_cut.path().join("j.redb");
    let opened = tokio::task::spawn_blocking({
        let keyring = keyring.clone();
        move || Store::open(&path, keyring, crate::fanout::fanout())
    })
    .await
    .unwrap();
    let (store, writer) = opened.unwrap_or_else(|e| {
        panic!("the store refused to open after two cuts: {e}");
    });
    assert_eq!(store.last_position().unwrap(), 15);
    assert_all_back(&store, &[plan], &acked);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// The torn batch also held the first events of another plan, which no
/// client was ever told were stored. The second run appends to the first
/// plan only; after a second cut the other plan's stale frames follow the
/// second run's by position and extend an empty chain, so a replay that
/// read on would create that plan. It must not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_first_batch_does_not_come_back_after_the_next_cut() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let (plan, other) = (Uuid::from_u128(22), Uuid::from_u128(23));
    let mut torn: Vec<_> = (0..15).map(|n| (plan, n)).collect();
    torn.extend((0..15).map(|n| (other, n)));
    let cut = torn_first_batch(&keyring, &torn).await;

    let (acked, second_cut) = run_then_cut(&cut.path().join("j.redb"), &keyring, &torn[..15]).await;

    let path = second_cut.path().join("j.redb");
    let (store, writer) = tokio::task::spawn_blocking({
        let keyring = keyring.clone();
        move || Store::open(&path, keyring, crate::fanout::fanout())
    })
    .await
    .unwrap()
    .unwrap();
    let (last, other_head) = (store.last_position().unwrap(), store.head(&other).unwrap());
    assert_eq!(
        (last, other_head.map(|h| h.last_seq)),
        (15, None),
        "events of the torn batch came back"
    );
    assert_all_back(&store, &[plan], &acked);
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}
