//! Telling a damaged write-ahead segment from a torn one (`wal.rs`).
//!
//! Replay stops at the first frame that does not check. After a power cut
//! that is the torn last batch, and nothing acknowledged is lost; after a
//! bad sector it may be an acknowledged frame, and stopping there would go
//! on without every event after it and hand their seqs to new events. This
//! file finds the proof of the second case, if the segment holds it.

use serde::Deserialize;

use super::RECORD_VERSION;
use super::wal::{FRAME_HEAD, HEADER_LEN, MAX_FRAMES_PER_BATCH, checksum};

/// A frame of the epoch that checks and proves an earlier one damaged.
#[derive(Debug)]
pub(super) struct Damage {
    /// Where it starts in the frames' bytes.
    pub(super) offset: usize,
    pub(super) position: u64,
}

/// Whether the frame at `failed`, the first that does not check, was
/// acknowledged: true when a frame of the epoch further on holds a
/// position at least [`MAX_FRAMES_PER_BATCH`] past it. A later batch wrote
/// that frame, and the writer only begins a batch once the one before it
/// is synced and answered (a failed batch empties the segment before the
/// next one writes). A power cut tears only the last batch, whose frames
/// may land in any order, so a frame that checks after one that does not
/// is no proof by itself.
///
/// `failed_at_most` bounds the failed frame's position from above: it is
/// exactly the position after the last frame taken, and for the epoch's
/// first frame one past the database's durable position (a checkpoint
/// comes before each new epoch), when known; else the position below the
/// first later frame of the epoch, found first.
///
/// The failed frame's length may be damaged too, so later frames are
/// looked for at every offset whose body would begin with the record's
/// version byte. A candidate's position is read first, so that frames which
/// could prove nothing (an older epoch's, whose positions are lower) or
/// could not be of the epoch are not decoded; only one that decodes to
/// exactly its length is hashed; and the bytes decoded and hashed are
/// bounded, so hostile bytes cannot make the search quadratic.
///
/// Damage in the last `MAX_FRAMES_PER_BATCH` positions is not caught.
pub(super) fn acknowledged_damage(
    epoch: &[u8; 16],
    bytes: &[u8],
    failed: usize,
    failed_at_most: Option<u64>,
    budget: &mut usize,
) -> Option<Damage> {
    // The failed frame's position or a bound above it, if known; else the
    // first later frame of the epoch gives one.
    let mut failed_at_most = failed_at_most;
    let window = (bytes.len() / FRAME_HEAD) as u64;
    let mut from = failed + 1;
    while let Some(at) = next_candidate(bytes, from) {
        from = at + 1;
        let proves = |bound: u64, position: u64| {
            // A frame of the epoch lies within as many positions of the
            // failed one as frames fit in what follows it: random bytes
            // read as a position almost never do.
            position >= bound.saturating_add(MAX_FRAMES_PER_BATCH)
                && position <= bound.saturating_add(window)
        };
        let wanted = |position| failed_at_most.is_none_or(|bound| proves(bound, position));
        let Some((position, len)) = checking_frame(epoch, bytes, at, wanted, budget) else {
            if *budget == 0 {
                gave_up(failed);
                return None;
            }
            continue;
        };
        match failed_at_most {
            Some(bound) if proves(bound, position) => {
                return Some(Damage {
                    offset: at,
                    position,
                });
            }
            Some(_) => {}
            None => failed_at_most = Some(position.saturating_sub(1)),
        }
        from = at + len;
    }
    None
}

/// Where replay may go on after the frame at `failed`, which does not
/// check, when the database holds it durably: the offset of the first frame
/// of the epoch that checks after it, if its position is above `taken` (the
/// last frame read) and at most `most` (one past the database's durable
/// position), so that every position skipped is one the database holds.
/// Frames of one epoch are written in position order, so the first frame
/// that checks is the only one looked at: if it is out of range, so is
/// every later one the writer wrote.
pub(super) fn next_frame_within(
    epoch: &[u8; 16],
    bytes: &[u8],
    failed: usize,
    (taken, most): (Option<u64>, u64),
    budget: &mut usize,
) -> Option<usize> {
    if taken.is_some_and(|taken| taken >= most) {
        return None;
    }
    let mut from = failed + 1;
    while let Some(at) = next_candidate(bytes, from) {
        from = at + 1;
        if let Some((position, _)) = checking_frame(epoch, bytes, at, |_| true, budget) {
            let within = taken.is_none_or(|t| position > t) && position <= most;
            return within.then_some(at);
        }
        if *budget == 0 {
            gave_up(failed);
            return None;
        }
    }
    None
}

/// Bytes the searches of one read may decode and hash, all of them
/// together: candidates can nest, and hostile bytes can make each one
/// decode far, or to exactly its length, so the work is bounded to stay
/// linear however many frames fail. Past it a search gives up, and the
/// replay stops at the failed frame.
pub(super) fn search_budget(bytes: &[u8]) -> usize {
    bytes.len().saturating_mul(2).max(1 << 20)
}

fn gave_up(failed: usize) {
    tracing::warn!(
        at = HEADER_LEN as usize + failed,
        "gave up looking for frames that check after one that does not"
    );
}

/// The next offset from `from` that could begin a frame: its body would
/// begin with the record's version byte (the failed frame's length may be
/// damaged too, so every offset is a candidate).
fn next_candidate(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from + FRAME_HEAD..)
        .and_then(|rest| memchr::memchr(RECORD_VERSION, rest))
        .map(|found| from + found)
}

/// The position and length of the frame of `epoch` at `at`, if one is
/// there. Its position is read first, so that a candidate `wanted` refuses
/// is not decoded; only a body that decodes to exactly one record is
/// hashed (bytes that merely look like a frame head name lengths of up to
/// the whole segment). The bytes decoded and hashed are taken from
/// `budget`; at 0 the caller gives up.
fn checking_frame(
    epoch: &[u8; 16],
    bytes: &[u8],
    at: usize,
    wanted: impl FnOnce(u64) -> bool,
    budget: &mut usize,
) -> Option<(u64, usize)> {
    let len: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
    let body = usize::try_from(u32::from_le_bytes(len))
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| bytes.get(at + FRAME_HEAD..at + FRAME_HEAD + n))?;
    let position = leading_varint(&body[1..])?;
    if !wanted(position) {
        return None;
    }
    let mut decoder = postcard::Deserializer::from_bytes(&body[1..]);
    let record = RecordView::deserialize(&mut decoder);
    let rest = decoder.finalize().unwrap_or_default();
    let hashed = if record.is_ok() && rest.is_empty() {
        body.len()
    } else {
        0
    };
    *budget = budget.saturating_sub(body.len() - 1 - rest.len() + hashed);
    if *budget == 0 || hashed == 0 || bytes[at + 4..at + FRAME_HEAD] != checksum(epoch, len, body) {
        return None;
    }
    record
        .ok()
        .map(|record| (record.position, FRAME_HEAD + body.len()))
}

/// A [`WalRecord`] decoded in place: what the damage search checks a
/// candidate against (its bytes borrowed, so a bad candidate costs no copy).
/// Fields other than the position are decoded only to check the shape.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RecordView<'a> {
    position: u64,
    plan_id: [u8; 16],
    seq: u64,
    event: &'a [u8],
    idempotency: Option<(&'a str, [u8; 32])>,
    outbox: Vec<(&'a str, [u8; 16])>,
}

/// The unsigned LEB128 varint (postcard's `u64`) at the start of `bytes`.
pub(super) fn leading_varint(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
