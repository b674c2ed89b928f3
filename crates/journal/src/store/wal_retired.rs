//! A retired key at replay: an event it signed after its retirement, or
//! backdated behind a newer event, is refused when the write-ahead segment
//! is replayed, as a verify of the open store would refuse it. Whoever
//! holds a leaked retired key and can write `journal.wal` could otherwise
//! have a forgery put back, signed into the plan's log and federated.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::admin::SYSTEM_PLAN;
use super::wal::{HEADER_LEN, WalRecord, decode_frames, encode_frame};
use super::wal_jobs::{close, open};
use super::wal_power_cut::{last_position_on_disk, no_idle_checkpoint, request};
use super::{AppendRequest, AsyncStore, Store, Writer, encode_event};
use crate::Event;
use crate::chain::{CanonicalPayload, Signable};
use crate::event::Timestamp;
use crate::keys::{Keyring, key_id};
use crate::retirements::KEY_ROTATED;

const OLD: &[u8] = b"the retired key";
const NEW: &[u8] = b"the key that replaced it";
const THIRD: &[u8] = b"the key after the old one signed again";

/// The new key signs; the old one verifies (no window: the daemon hands
/// the store a keyring before it has read any rotation record).
fn rotated() -> Arc<Keyring> {
    let mut keyring = Keyring::from_secret(NEW.to_vec());
    keyring.add_verification_key(OLD.to_vec()).unwrap();
    Arc::new(keyring)
}

fn rotation_record() -> AppendRequest {
    AppendRequest {
        plan_id: SYSTEM_PLAN,
        event_type: KEY_ROTATED.into(),
        actor: Some("logbook-admin".into()),
        payload: CanonicalPayload::new(&json!({ "old_key_id": key_id(OLD) })),
        expected_seq: None,
        idempotency: None,
    }
}

/// A clean stop: the writer checkpoints and empties the segment.
async fn stop(store: AsyncStore, writer: Writer) {
    drop(store);
    tokio::task::spawn_blocking(move || writer.shutdown())
        .await
        .unwrap();
}

/// Appends one at a time, a few ms apart, so that every date differs.
async fn append(store: &AsyncStore, request: AppendRequest) -> Event {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Arc::unwrap_or_clone(store.append(request).await.unwrap().event)
}

/// The event after `last`, signed with the old key and dated `at`.
fn forged_after(last: &Event, at: Timestamp) -> Event {
    let mut event = last.clone();
    event.id = Uuid::from_u128(0xbad);
    event.seq += 1;
    event.position += 1;
    event.prev_hash = Some(last.signature);
    event.key_id = key_id(OLD);
    event.created_at = at;
    event.signature = Signable::of(&event).sign(OLD);
    event
}

/// Writes `event` as the next frame of the segment beside `db`, with a
/// checksum that checks, as anyone who can write the file could.
fn add_frame(db: &Path, event: &Event) {
    let wal = db.with_extension("wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let epoch: [u8; 16] = bytes[8..24].try_into().unwrap();
    let (_, used) = decode_frames(&epoch, &bytes[HEADER_LEN as usize..], &wal, None).unwrap();
    let record = WalRecord {
        position: event.position,
        plan_id: event.plan_id.into_bytes(),
        seq: event.seq,
        event: encode_event(event),
        idempotency: None,
        outbox: Vec::new(),
    };
    let mut frame = Vec::new();
    encode_frame(&epoch, &record, &mut frame);
    let at = HEADER_LEN as usize + used;
    bytes[at..at + frame.len()].copy_from_slice(&frame);
    std::fs::write(&wal, bytes).unwrap();
}

/// The open fails, saying `why`, and puts nothing back.
fn assert_refused(db: &Path, keyring: &Arc<Keyring>, event: &Event, why: &str) {
    let positions = last_position_on_disk(db);
    let refused = Store::open(db, keyring.clone(), crate::fanout::fanout())
        .err()
        .expect("an event forged with a retired key was put back");
    let message = refused.to_string();
    assert!(
        message.contains(&event.plan_id.to_string()) && message.contains(why),
        "{message}"
    );
    assert_eq!(last_position_on_disk(db), positions, "nothing was put back");
}

const SIGNATURE: &str = "does not verify (signature";

/// The rotation record is in the database (a clean stop after it): the
/// old key's forgery dated after it, and one backdated behind the plan's
/// newer event (the predecessor the database holds), are both refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_keys_forgery_in_the_segment_refuses_the_open() {
    let plan = Uuid::from_u128(71);
    for backdated in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("j.redb");
        let (store, writer) = open(db.clone(), Arc::new(Keyring::from_secret(OLD.to_vec()))).await;
        let store = AsyncStore::new(store);
        let first = append(&store, request(plan, 0, false)).await;
        store.replace_keyring(Keyring::clone(&rotated()));
        let retired = append(&store, rotation_record()).await;
        let newer = append(&store, request(plan, 1, false)).await;
        assert!(first.created_at < retired.created_at && retired.created_at < newer.created_at);
        stop(store, writer).await;

        let at = if backdated {
            // Within the window, but before the event it follows.
            first.created_at
        } else {
            Timestamp(newer.created_at.0 + 1)
        };
        let mut forged = forged_after(&newer, at);
        forged.position = retired.position.max(newer.position) + 1;
        add_frame(&db, &forged);
        assert_refused(&db, &rotated(), &forged, SIGNATURE);
    }
}

/// The rotation record is itself only in the segment (no checkpoint since):
/// its window applies to the frames after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_record_in_the_segment_windows_the_frames_after_it() {
    let plan = Uuid::from_u128(72);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.redb");
    let (store, writer) = open(db.clone(), Arc::new(Keyring::from_secret(OLD.to_vec()))).await;
    let store = AsyncStore::new(store);
    append(&store, request(plan, 0, false)).await;
    stop(store, writer).await;

    let (store, writer) = open(db.clone(), rotated()).await;
    no_idle_checkpoint(&store);
    let store = AsyncStore::new(store);
    append(&store, rotation_record()).await;
    let newer = append(&store, request(plan, 1, false)).await;
    // A power cut: the segment holds both, the database neither.
    let cut = tempfile::tempdir().unwrap();
    let cut_db = cut.path().join("j.redb");
    let cut_wal = cut_db.with_extension("wal");
    std::fs::copy(&db, &cut_db).unwrap();
    std::fs::copy(db.with_extension("wal"), &cut_wal).unwrap();
    stop(store, writer).await;
    assert_eq!(last_position_on_disk(&cut_db), 1);
    let genuine = std::fs::read(&cut_wal).unwrap();

    let mut forged = forged_after(&newer, Timestamp(newer.created_at.0 + 1));
    forged.position = newer.position + 1;
    add_frame(&cut_db, &forged);
    assert_refused(&cut_db, &rotated(), &forged, SIGNATURE);

    // Without the forgery, the same segment replays: the rotation record
    // and the new key's event come back.
    std::fs::write(&cut_wal, genuine).unwrap();
    let (store, writer) = open(cut_db.clone(), rotated()).await;
    let back = store.plan_events_after(&plan, 0, 10).unwrap();
    assert_eq!(back.last().map(|e| e.signature), Some(newer.signature));
    close(store, writer).await;
}

/// A date inside the window does not help a forgery: replay knows that
/// its frame comes after the record of its key's retirement, which the
/// writer appends after it stopped signing with that key. So it is refused
/// in a plan with no newer event, as the first event of a new plan, and in
/// a deleted plan, whose id is never used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_dated_inside_the_window_is_refused_by_its_place() {
    let (dormant, fresh, gone) = (
        Uuid::from_u128(73),
        Uuid::from_u128(74),
        Uuid::from_u128(75),
    );
    for plan in [dormant, fresh, gone] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("j.redb");
        let (store, writer) = open(db.clone(), Arc::new(Keyring::from_secret(OLD.to_vec()))).await;
        let store = AsyncStore::new(store);
        let first = append(&store, request(dormant, 0, false)).await;
        append(&store, request(gone, 0, false)).await;
        store.delete_plan(gone, json!("test")).await.unwrap();
        store.replace_keyring(Keyring::clone(&rotated()));
        let retired = append(&store, rotation_record()).await;
        stop(store, writer).await;

        // After `first`, before the retirement: inside the window.
        let at = Timestamp(first.created_at.0 + 1);
        assert!(at < retired.created_at);
        let mut forged = forged_after(&first, at);
        if plan != dormant {
            forged.plan_id = plan;
            forged.seq = 1;
            forged.prev_hash = None;
            forged.signature = Signable::of(&forged).sign(OLD);
        }
        forged.position = retired.position + 1;
        add_frame(&db, &forged);
        let why = if plan == gone {
            "which was deleted"
        } else {
            SIGNATURE
        };
        assert_refused(&db, &rotated(), &forged, why);
    }
}

/// A key retired, put back to sign again, and retired again: what it
/// signed in between replays, since the last record of its retirement that
/// proves itself counts (helper-73 found the first one counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_retired_twice_replays_what_it_signed_in_between() {
    let plan = Uuid::from_u128(76);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.redb");
    let (store, writer) = open(db.clone(), Arc::new(Keyring::from_secret(OLD.to_vec()))).await;
    let store = AsyncStore::new(store);
    append(&store, request(plan, 0, false)).await;
    store.replace_keyring(Keyring::clone(&rotated()));
    append(&store, rotation_record()).await;
    stop(store, writer).await;

    // The old key signs again (its file put back), then is retired again.
    let mut again = Keyring::from_secret(OLD.to_vec());
    again.add_verification_key(NEW.to_vec()).unwrap();
    let (store, writer) = open(db.clone(), Arc::new(again)).await;
    no_idle_checkpoint(&store);
    let store = AsyncStore::new(store);
    let signed_again = append(&store, request(plan, 1, false)).await;
    assert_eq!(signed_again.key_id, key_id(OLD));
    let mut third = Keyring::from_secret(THIRD.to_vec());
    third.add_verification_key(OLD.to_vec()).unwrap();
    third.add_verification_key(NEW.to_vec()).unwrap();
    store.replace_keyring(third.clone());
    append(&store, rotation_record()).await;
    let last = append(&store, request(plan, 2, false)).await;
    // A power cut: the segment holds the last three records.
    let cut = tempfile::tempdir().unwrap();
    let cut_db = cut.path().join("j.redb");
    std::fs::copy(&db, &cut_db).unwrap();
    std::fs::copy(db.with_extension("wal"), cut_db.with_extension("wal")).unwrap();
    stop(store, writer).await;

    let (store, writer) = open(cut_db, Arc::new(third)).await;
    let back = store.plan_events_after(&plan, 0, 10).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[2].signature, last.signature);
    close(store, writer).await;
}
