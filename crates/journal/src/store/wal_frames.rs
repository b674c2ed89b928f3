//! Tests of the segment's frames and file: round trips, torn tails,
//! flipped bytes, older epochs, and damage to acknowledged frames.

use super::*;
use crate::store::wal_damage::leading_varint;

fn record(position: u64, payload_len: usize) -> WalRecord {
    WalRecord {
        position,
        plan_id: [7; 16],
        seq: position,
        event: vec![position as u8; payload_len],
        idempotency: position
            .is_multiple_of(2)
            .then(|| (format!("key-{position}"), [3; 32])),
        outbox: vec![("peer-a".into(), [position as u8; 16])],
    }
}

fn frames(epoch: &[u8; 16], records: &[WalRecord]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for r in records {
        encode_frame(epoch, r, &mut out);
        ends.push(out.len());
    }
    (out, ends)
}

#[test]
fn frames_round_trip() {
    let epoch = [9; 16];
    let records: Vec<_> = (1..=5).map(|p| record(p, 100 * p as usize)).collect();
    let (bytes, ends) = frames(&epoch, &records);
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 4096]);
    let (decoded, used) = decode_frames(&epoch, &padded, Path::new("t"), None).unwrap();
    assert_eq!(decoded, records);
    assert_eq!(used, *ends.last().unwrap());
}

/// The event bytes written as bytes encode exactly as serde's default
/// for a `Vec<u8>` (a sequence), which wrote the frames before; and a
/// frame encoded behind others is the frame encoded alone.
#[test]
fn frames_keep_the_sequence_encoding() {
    #[derive(Serialize)]
    struct AsSequence<'a> {
        position: u64,
        plan_id: [u8; 16],
        seq: u64,
        event: &'a Vec<u8>,
        idempotency: &'a Option<(String, [u8; 32])>,
        outbox: &'a Vec<(String, [u8; 16])>,
    }
    let epoch = [5; 16];
    for r in [
        record(1, 0),
        record(2, 127),
        record(3, 128),
        record(4, 1300),
    ] {
        let mut expected = vec![RECORD_VERSION];
        expected.extend(
            postcard::to_stdvec(&AsSequence {
                position: r.position,
                plan_id: r.plan_id,
                seq: r.seq,
                event: &r.event,
                idempotency: &r.idempotency,
                outbox: &r.outbox,
            })
            .unwrap(),
        );
        let mut alone = Vec::new();
        encode_frame(&epoch, &r, &mut alone);
        assert_eq!(&alone[FRAME_HEAD..], expected.as_slice());
        let len = u32::try_from(expected.len()).unwrap().to_le_bytes();
        assert_eq!(alone[..4], len);
        assert_eq!(alone[4..FRAME_HEAD], checksum(&epoch, len, &expected));
        let mut behind = vec![0xAA; 10];
        encode_frame(&epoch, &r, &mut behind);
        assert_eq!(&behind[10..], alone.as_slice());
    }
}

/// A tail torn at any byte of the last frame: every earlier record
/// replays, the torn one does not.
#[test]
fn a_torn_tail_at_every_offset_keeps_the_earlier_records() {
    let epoch = [1; 16];
    let records: Vec<_> = (10..=13).map(|p| record(p, 300)).collect();
    let (bytes, ends) = frames(&epoch, &records);
    let last_start = ends[ends.len() - 2];
    for cut in last_start..bytes.len() {
        // What a crash leaves: the frame's first bytes, then zeros.
        let mut torn = bytes[..cut].to_vec();
        torn.resize(bytes.len() + 64, 0);
        let (decoded, used) = decode_frames(&epoch, &torn, Path::new("t"), None).unwrap();
        assert_eq!(decoded, records[..3], "cut at {cut}");
        assert_eq!(used, last_start);
    }
}

/// A flipped bit anywhere in a frame stops the replay at that frame.
#[test]
fn a_flipped_byte_stops_replay_at_that_frame() {
    let epoch = [2; 16];
    let records: Vec<_> = (1..=4).map(|p| record(p, 50)).collect();
    let (bytes, ends) = frames(&epoch, &records);
    let (start, end) = (ends[1], ends[2]);
    for at in start..end {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        let (decoded, _) = decode_frames(&epoch, &damaged, Path::new("t"), None).unwrap();
        assert_eq!(decoded, records[..2], "flipped byte {at}");
    }
}

/// Frames of another epoch (an emptied segment's leftovers) never replay.
#[test]
fn frames_of_an_older_epoch_do_not_replay() {
    let (old, _) = frames(&[1; 16], &[record(1, 10), record(2, 10)]);
    let (decoded, used) = decode_frames(&[2; 16], &old, Path::new("t"), None).unwrap();
    assert!(decoded.is_empty());
    assert_eq!(used, 0);
}

/// A file: frames written, committed, reopened; a reset empties it, and
/// frames written but abandoned are gone after the reset too.
#[test]
fn a_segment_file_keeps_committed_frames_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.wal");
    let (mut segment, records) = Segment::open(&path, None).unwrap();
    assert!(records.is_empty() && segment.is_empty());
    let size = std::fs::metadata(&path).unwrap().len();
    assert!((MIN_SEGMENT_BYTES..=SEGMENT_BYTES).contains(&size));
    let batch = [record(1, 20), record(2, 20)];
    assert!(segment.prepare(&batch));
    segment.write_pending().unwrap();
    segment.sync_pending().unwrap();
    segment.committed();
    drop(segment);
    let (mut segment, records) = Segment::open(&path, None).unwrap();
    assert_eq!(records, batch);
    assert!(segment.prepare(&[record(3, 20)]));
    segment.write_pending().unwrap();
    assert!(segment.abandoned());
    assert!(segment.needs_reset);
    segment.reset().unwrap();
    drop(segment);
    let (segment, records) = Segment::open(&path, None).unwrap();
    assert!(records.is_empty() && segment.is_empty());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
}

/// Records out of order in frames that check are damage, not a tail.
#[test]
fn a_position_gap_between_frames_fails_closed() {
    let epoch = [3; 16];
    let (bytes, _) = frames(&epoch, &[record(1, 10), record(3, 10)]);
    let e = decode_frames(&epoch, &bytes, Path::new("j.wal"), None).unwrap_err();
    assert!(e.to_string().contains("j.wal"), "{e}");
}

/// Frames of one batch per position, as the writer writes them at one
/// client, `n` of them from position 1.
fn many(epoch: &[u8; 16], n: u64) -> (Vec<WalRecord>, Vec<u8>, Vec<usize>) {
    let records: Vec<_> = (1..=n).map(|p| record(p, 40)).collect();
    let (bytes, ends) = frames(epoch, &records);
    (records, bytes, ends)
}

/// A damaged frame followed by frames a later batch wrote (more than a
/// batch's worth of positions on) was acknowledged: the segment does not
/// open, whether the damage is in the body or in the length, or in the
/// epoch's first frame.
#[test]
fn damage_before_a_later_batch_fails_closed() {
    let epoch = [4; 16];
    let n = MAX_FRAMES_PER_BATCH + 20;
    let (_, bytes, ends) = many(&epoch, n);
    // Frame 5 (position 5) starts at ends[3]; frame 1 at 0.
    for (start, flip, what) in [
        (ends[3] + FRAME_HEAD + 7, 0x01, "body"),
        (ends[3], 0x01, "length, low bit"),
        // A length past the end of the bytes: what a bad sector's garbage
        // most often reads as.
        (ends[3] + 3, 0x80, "length, high bit"),
        (0, 0x01, "first"),
    ] {
        let mut damaged = bytes.clone();
        damaged[start] ^= flip;
        damaged.extend_from_slice(&[0; 512]);
        let e = decode_frames(&epoch, &damaged, Path::new("j.wal"), None).unwrap_err();
        assert!(
            e.to_string().contains("lost an acknowledged event"),
            "{what}: {e}"
        );
    }
}

/// A power cut tears the last batch, whose frames may reach the disk in
/// any order: a frame that checks after one that does not, within a
/// batch's worth of positions, is the torn tail and replay stops there.
#[test]
fn a_torn_last_batch_with_later_frames_that_check_still_opens() {
    let epoch = [6; 16];
    let n = 40;
    let (records, bytes, ends) = many(&epoch, n);
    let mut torn = bytes.clone();
    // Frame 31 never reached the disk; frames 32..=40 did.
    torn[ends[29]..ends[30]].fill(0);
    let (decoded, used) = decode_frames(&epoch, &torn, Path::new("j.wal"), None).unwrap();
    assert_eq!(decoded, records[..30]);
    assert_eq!(used, ends[29]);
    // The same with the rest of a full batch after the hole, but not more.
    let n = MAX_FRAMES_PER_BATCH;
    let (records, bytes, ends) = many(&epoch, n);
    let mut torn = bytes.clone();
    torn[..ends[0]].fill(0);
    let (decoded, _) = decode_frames(&epoch, &torn, Path::new("j.wal"), None).unwrap();
    assert!(decoded.is_empty(), "{}", records.len());
}

/// The check is exact at its bound: the frame MAX_FRAMES_PER_BATCH
/// positions after the failed one proves it acknowledged, the one before
/// does not.
#[test]
fn the_damage_bound_is_one_batch() {
    let epoch = [8; 16];
    let (_, bytes, ends) = many(&epoch, 3 + MAX_FRAMES_PER_BATCH);
    // Frame 3 fails: position 3 + MAX_FRAMES_PER_BATCH is the last frame.
    let mut damaged = bytes.clone();
    damaged[ends[1] + FRAME_HEAD] ^= 0x80;
    assert!(decode_frames(&epoch, &damaged, Path::new("t"), None).is_err());
    let without_last = &damaged[..ends[ends.len() - 2]];
    let (decoded, _) = decode_frames(&epoch, without_last, Path::new("t"), None).unwrap();
    assert_eq!(decoded.len(), 2);
}

/// Through a segment file: acknowledged batches, one of them damaged on
/// disk, refuse the open; the scan over a whole emptied segment of old
/// frames finds nothing.
#[test]
fn a_segment_file_with_a_damaged_acknowledged_frame_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.wal");
    let (mut segment, _) = Segment::open(&path, None).unwrap();
    let batch_of = |from: u64, n: u64| (from..from + n).map(|p| record(p, 200)).collect::<Vec<_>>();
    let mut from = 1;
    for n in [MAX_FRAMES_PER_BATCH, 3, MAX_FRAMES_PER_BATCH] {
        assert!(segment.prepare(&batch_of(from, n)));
        segment.write_pending().unwrap();
        segment.sync_pending().unwrap();
        segment.committed();
        from += n;
    }
    drop(segment);
    // A byte of the second batch's first frame rots.
    let (_, first) = frames(&[0; 16], &batch_of(1, MAX_FRAMES_PER_BATCH));
    let rotten = HEADER_LEN + first.len() as u64 + FRAME_HEAD as u64 + 20;
    let flip = || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, rotten).unwrap();
        file.write_all_at(&[byte[0] ^ 0x10], rotten).unwrap();
    };
    flip();
    let e = Segment::open(&path, None).unwrap_err();
    assert!(e.to_string().contains("lost an acknowledged event"), "{e}");
    // Restored, then emptied: the old frames are all there, of another epoch.
    flip();
    let (mut segment, records) = Segment::open(&path, None).unwrap();
    assert_eq!(records.len() as u64, from - 1);
    segment.reset().unwrap();
    drop(segment);
    let (_, records) = Segment::open(&path, None).unwrap();
    assert!(records.is_empty());
}

/// The position read ahead of the checksum is postcard's encoding of it.
#[test]
fn the_leading_varint_is_postcards_u64() {
    for n in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
        let bytes = postcard::to_stdvec(&n).unwrap();
        assert_eq!(leading_varint(&bytes), Some(n));
    }
    assert_eq!(leading_varint(&[0x80; 3]), None);
    assert_eq!(leading_varint(&[]), None);
}

/// With the database's durable position known, the epoch's first frame is
/// bounded by it: damaged, it is proved acknowledged by a frame exactly
/// MAX_FRAMES_PER_BATCH positions past it, not by one before; and frames
/// at or below the durable position prove no loss.
#[test]
fn the_durable_position_bounds_the_epochs_first_frame() {
    let epoch = [10; 16];
    let durable = 500;
    let records: Vec<_> = (durable + 1..=durable + MAX_FRAMES_PER_BATCH + 1)
        .map(|p| record(p, 30))
        .collect();
    let (bytes, ends) = frames(&epoch, &records);
    let mut damaged = bytes.clone();
    damaged[FRAME_HEAD + 3] ^= 0x20;
    let e = decode_frames(&epoch, &damaged, Path::new("t"), Some(durable)).unwrap_err();
    assert!(e.to_string().contains("lost an acknowledged event"), "{e}");
    // Without the last frame, the furthest is MAX_FRAMES_PER_BATCH - 1 on.
    let short = &damaged[..ends[ends.len() - 2]];
    let (decoded, used) = decode_frames(&epoch, short, Path::new("t"), Some(durable)).unwrap();
    assert!(decoded.is_empty() && used == 0);
    // Durable in the database, the damaged frame is not needed: replay
    // goes on from the next frame, which the database holds too.
    let (decoded, _) = decode_frames(&epoch, &damaged, Path::new("t"), Some(durable + 2)).unwrap();
    assert_eq!(decoded, records[1..]);
}

/// A damaged frame whose event the database holds durably (a durable
/// commit other than a checkpoint, such as the heads log's, does not empty
/// the segment) does not end the replay: the frames after it, up to the
/// last, are read. Without it, answered events after the damage were
/// dropped unless a frame MAX_FRAMES_PER_BATCH positions further proved it.
#[test]
fn damage_the_database_holds_durably_is_skipped() {
    let epoch = [11; 16];
    let records: Vec<_> = (1..=1400).map(|p| record(p, 30)).collect();
    let (bytes, ends) = frames(&epoch, &records);
    let damage = |bytes: &mut Vec<u8>, position: usize| {
        bytes[ends[position - 2] + FRAME_HEAD + 2] ^= 0x10;
    };
    let mut one = bytes.clone();
    damage(&mut one, 300);
    let without = |skipped: &[u64]| -> Vec<WalRecord> {
        records
            .iter()
            .filter(|r| !skipped.contains(&r.position))
            .cloned()
            .collect()
    };
    let (decoded, used) = decode_frames(&epoch, &one, Path::new("t"), Some(500)).unwrap();
    assert_eq!(decoded, without(&[300]));
    assert_eq!(used, bytes.len());
    // Held exactly at the durable position, and two damaged frames.
    let (decoded, _) = decode_frames(&epoch, &one, Path::new("t"), Some(300)).unwrap();
    assert_eq!(decoded, without(&[300]));
    let mut two = one.clone();
    damage(&mut two, 450);
    let (decoded, _) = decode_frames(&epoch, &two, Path::new("t"), Some(500)).unwrap();
    assert_eq!(decoded, without(&[300, 450]));
    // Not durable, or not known to be: the frame is needed, and position
    // 1400 proves it was answered.
    let lost = |durable| {
        let e = decode_frames(&epoch, &one, Path::new("t"), durable).unwrap_err();
        assert!(e.to_string().contains("lost an acknowledged event"), "{e}");
    };
    lost(Some(299));
    lost(None);
    // A damaged frame and the next: the first is durable, the second not.
    let mut pair = one.clone();
    damage(&mut pair, 301);
    let e = decode_frames(&epoch, &pair, Path::new("t"), Some(300)).unwrap_err();
    assert!(e.to_string().contains("lost an acknowledged event"), "{e}");
    // Without a proof, the replay stops at the frame it needs.
    let short = &pair[..ends[1000]];
    let (decoded, _) = decode_frames(&epoch, short, Path::new("t"), Some(300)).unwrap();
    assert_eq!(
        decoded,
        without(&[300]).into_iter().take(299).collect::<Vec<_>>()
    );
}

/// The frames of answered batches are read back when the writer reopens
/// its handle: one that no longer checks is an error, not a shorter list.
#[test]
fn a_committed_frame_that_no_longer_checks_fails_the_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.wal");
    let (mut segment, _) = Segment::open(&path, None).unwrap();
    assert!(segment.prepare(&[record(1, 20), record(2, 20), record(3, 20)]));
    segment.write_pending().unwrap();
    segment.sync_pending().unwrap();
    segment.committed();
    assert_eq!(segment.committed_records(None).unwrap().0.len(), 3);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xFF], HEADER_LEN + FRAME_HEAD as u64 + 5)
        .unwrap();
    let e = segment.committed_records(None).unwrap_err();
    assert!(e.to_string().contains("lost an acknowledged event"), "{e}");
    // With the frame's event durable in the database, it is not needed.
    let (records, end) = segment.committed_records(Some(1)).unwrap();
    assert_eq!(
        records.iter().map(|r| r.position).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(end, segment.end);
    // Not durable: still damage.
    assert!(segment.committed_records(Some(0)).is_err());
}
