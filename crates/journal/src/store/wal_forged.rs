//! Frames written by someone other than the writer: the frame's checksum
//! is keyless, so anyone who can write `journal.wal` can make frames that
//! check. Replay must refuse an event that the chain's HMAC does not vouch
//! for, rather than take it in, sign it into the plan's log and federate
//! it (see `replay.rs`); and an offline command, which has no keyring,
//! must not put back events at all.

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use super::wal::{HEADER_LEN, WalRecord, decode_frames, encode_frame};
use super::wal_jobs::{close, open};
use super::wal_power_cut::{assert_all_back, last_position_on_disk};
use super::wal_torn::run_then_cut;
use super::{Store, decode_event, encode_event, event_from_record, event_key};
use crate::chain::CanonicalPayload;
use crate::keys::{Keyring, key_id};

/// Rewrites every frame of the segment at `wal` through `edit`, with
/// checksums that check, as an attacker who can write the file would.
fn rewrite_frames(wal: &Path, mut edit: impl FnMut(&mut WalRecord)) {
    let mut bytes = std::fs::read(wal).unwrap();
    let epoch: [u8; 16] = bytes[8..24].try_into().unwrap();
    let start = HEADER_LEN as usize;
    let (mut records, used) = decode_frames(&epoch, &bytes[start..], wal, None).unwrap();
    assert!(!records.is_empty(), "the segment holds frames");
    let mut frames = Vec::new();
    for record in &mut records {
        edit(record);
        encode_frame(&epoch, record, &mut frames);
    }
    bytes[start..start + used.max(frames.len())].fill(0);
    bytes[start..start + frames.len()].copy_from_slice(&frames);
    std::fs::write(wal, bytes).unwrap();
}

/// The payload of the event at `seq` of `plan` replaced by `payload`; its
/// hash updated too when `rehash`. The signature is left as it was: only
/// the HMAC key could make a new one.
fn replace_payload(record: &mut WalRecord, payload: &serde_json::Value, rehash: bool) {
    let plan = Uuid::from_bytes(record.plan_id);
    let key = event_key(&plan, record.seq);
    let mut event = event_from_record(&key, decode_event(&record.event).unwrap()).unwrap();
    let forged = CanonicalPayload::new(payload);
    event.payload = forged.json;
    if rehash {
        event.payload_hash = forged.hash;
    }
    record.event = encode_event(&event);
}

/// The last frame of a cut made after three appends (each its own batch,
/// none checkpointed) is altered, with a checksum that checks: the store
/// refuses to open, names what failed, and changes nothing on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_event_in_the_segment_refuses_the_open() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let plan = Uuid::from_u128(61);
    // A new payload with its hash (only the HMAC can tell), and one
    // without (the payload hash tells).
    for (rehash, reason) in [(true, "(signature)"), (false, "(payload_hash)")] {
        let run = tempfile::tempdir().unwrap();
        let appends = [(plan, 0), (plan, 1), (plan, 2)];
        let (_, cut) = run_then_cut(&run.path().join("j.redb"), &keyring, &appends).await;
        let wal = cut.path().join("j.wal");
        rewrite_frames(&wal, |record| {
            if record.seq == 3 {
                replace_payload(
                    record,
                    &serde_json::json!({ "n": 2, "to": "mallory" }),
                    rehash,
                );
            }
        });
        let before = std::fs::read(&wal).unwrap();
        let db = cut.path().join("j.redb");
        let refused = Store::open(&db, keyring.clone(), crate::fanout::fanout())
            .err()
            .expect("a forged frame was put back");
        let message = refused.to_string();
        assert!(
            message.contains("does not verify") && message.contains(reason),
            "{message}"
        );
        assert!(message.contains(&format!("{plan}/3")), "{message}");
        // One transaction: the two genuine events before it are not put
        // back either, and the segment is left for the operator.
        assert_eq!(last_position_on_disk(&db), 0);
        assert!(
            std::fs::read(&wal).unwrap() == before,
            "the segment changed"
        );
    }
}

/// A forged event appended after the genuine ones, linked to the last
/// one's signature, with a made-up signature: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_added_to_the_segment_refuses_the_open() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let plan = Uuid::from_u128(62);
    let run = tempfile::tempdir().unwrap();
    let (_, cut) = run_then_cut(
        &run.path().join("j.redb"),
        &keyring,
        &[(plan, 0), (plan, 1)],
    )
    .await;
    let wal = cut.path().join("j.wal");
    let mut last = None;
    rewrite_frames(&wal, |record| last = Some(record.clone()));
    let last = last.unwrap();
    let key = event_key(&plan, last.seq);
    let mut event = event_from_record(&key, decode_event(&last.event).unwrap()).unwrap();
    event.prev_hash = Some(event.signature);
    event.seq += 1;
    event.position += 1;
    event.id = Uuid::from_u128(0xf0);
    event.signature = [0x5a; 32];
    let forged = WalRecord {
        position: last.position + 1,
        seq: last.seq + 1,
        event: encode_event(&event),
        ..last
    };
    let mut bytes = std::fs::read(&wal).unwrap();
    let epoch: [u8; 16] = bytes[8..24].try_into().unwrap();
    let (_, used) = decode_frames(&epoch, &bytes[HEADER_LEN as usize..], &wal, None).unwrap();
    let mut frame = Vec::new();
    encode_frame(&epoch, &forged, &mut frame);
    let at = HEADER_LEN as usize + used;
    bytes[at..at + frame.len()].copy_from_slice(&frame);
    std::fs::write(&wal, bytes).unwrap();

    let db = cut.path().join("j.redb");
    let refused = Store::open(&db, keyring.clone(), crate::fanout::fanout())
        .err()
        .expect("a forged frame was put back");
    assert!(
        refused.to_string().contains(&format!("{plan}/3"))
            && refused.to_string().contains("(signature)"),
        "{refused}"
    );
    assert_eq!(last_position_on_disk(&db), 0);
}

/// After a key rotation, frames signed with the old key before it was
/// retired still replay: the keyring verifies them with the retired key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_signed_before_a_key_rotation_replay() {
    let old = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let plans = [Uuid::from_u128(63), Uuid::from_u128(64)];
    let run = tempfile::tempdir().unwrap();
    let appends = [(plans[0], 0), (plans[1], 0), (plans[0], 1), (plans[1], 1)];
    let (acked, cut) = run_then_cut(&run.path().join("j.redb"), &old, &appends).await;
    let mut rotated = Keyring::from_secret(b"a newer key".to_vec());
    rotated.add_verification_key(b"test".to_vec()).unwrap();
    assert!(rotated.retire(&key_id(b"test"), crate::event::Timestamp::now()));
    let db = cut.path().join("j.redb");
    assert_eq!(last_position_on_disk(&db), 0);
    let (store, writer) = open(db, Arc::new(rotated)).await;
    assert_all_back(&store, &plans, &acked);
    close(store, writer).await;
}

/// `tokens create` offline has no keyring, so it cannot verify what the
/// segment holds: with events the database lacks it refuses, leaving the
/// segment as it was; once the daemon has put them back, it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_write_refuses_a_segment_it_cannot_verify() {
    let keyring = Arc::new(Keyring::from_secret(b"test".to_vec()));
    let plan = Uuid::from_u128(65);
    let run = tempfile::tempdir().unwrap();
    let (acked, cut) = run_then_cut(
        &run.path().join("j.redb"),
        &keyring,
        &[(plan, 0), (plan, 1)],
    )
    .await;
    let db = cut.path().join("j.redb");
    let wal = cut.path().join("j.wal");
    let before = std::fs::read(&wal).unwrap();
    let token = super::admin::StoredToken {
        id: "t1".into(),
        name: "offline".into(),
        sha256: [1; 32],
        scopes: vec![super::admin::Scope::Read],
        created_at: 0,
    };
    let refused = super::admin::insert_token_offline(&db, &token)
        .expect_err("an offline write put back events it could not verify");
    assert!(refused.to_string().contains("Start it once"), "{refused}");
    assert!(
        std::fs::read(&wal).unwrap() == before,
        "the segment changed"
    );
    assert_eq!(last_position_on_disk(&db), 0);

    let (store, writer) = open(db.clone(), keyring).await;
    assert_all_back(&store, &[plan], &acked);
    close(store, writer).await;
    assert!(matches!(
        super::admin::insert_token_offline(&db, &token),
        Ok(Ok(()))
    ));
}
