//! Chain continuity of received journal events: per origin plan, the last
//! event seen and every event seen, to tell the next link from a gap, a
//! fork or a duplicate.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BytesTable;
use crate::store::{StoreError, decode, encode};

/// How a received journal event relates to what we saw before from its
/// origin plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContinuityKind {
    /// The next event of the chain: seq is last + 1 and prev_hash is the last signature.
    Ok,
    /// One or more events are missing before this one.
    Gap,
    /// Another event with the same seq (or a different predecessor) was seen: the chain forked.
    Fork,
    /// The same event (same signature) arrived again in another message.
    Duplicate,
}

impl ContinuityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContinuityKind::Ok => "ok",
            ContinuityKind::Gap => "gap",
            ContinuityKind::Fork => "fork",
            ContinuityKind::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Continuity {
    pub kind: ContinuityKind,
    pub plan_id: [u8; 16],
    pub seq: u64,
    /// The seq the chain expected next (last seen + 1).
    pub expected_seq: u64,
    /// The earlier message holding the conflicting event (forks, duplicates).
    pub conflicts_with: Option<[u8; 16]>,
}

/// The chain link of a journal event carried in a message's payload.
#[derive(Debug, Clone, Copy)]
pub struct JournalLink {
    pub plan_id: Uuid,
    pub seq: u64,
    pub prev_hash: Option<[u8; 32]>,
    pub signature: [u8; 32],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OriginEvent {
    signature: [u8; 32],
    message_id: [u8; 16],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OriginHead {
    last_seq: u64,
    last_signature: [u8; 32],
}

fn origin_plan_key(origin: &str, plan: &Uuid) -> Vec<u8> {
    let mut key = origin.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(plan.as_bytes());
    key
}

fn origin_event_key(origin: &str, plan: &Uuid, seq: u64) -> Vec<u8> {
    let mut key = origin_plan_key(origin, plan);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Classifies a received journal event against what this origin plan sent
/// before, and records it. Both sides of a fork stay stored as evidence.
pub(super) fn check_continuity(
    events: &mut BytesTable<'_>,
    heads: &mut BytesTable<'_>,
    origin: &str,
    link: &JournalLink,
    message_id: &[u8; 16],
) -> Result<Continuity, StoreError> {
    let head_key = origin_plan_key(origin, &link.plan_id);
    let head: Option<OriginHead> = heads
        .get(head_key.as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    let expected_seq = head.as_ref().map_or(1, |h| h.last_seq + 1);
    let event_key = origin_event_key(origin, &link.plan_id, link.seq);
    let seen: Option<OriginEvent> = events
        .get(event_key.as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    let continuity = |kind, conflicts_with| Continuity {
        kind,
        plan_id: link.plan_id.into_bytes(),
        seq: link.seq,
        expected_seq,
        conflicts_with,
    };
    if let Some(seen) = seen {
        let kind = if seen.signature == link.signature {
            ContinuityKind::Duplicate
        } else {
            ContinuityKind::Fork
        };
        return Ok(continuity(kind, Some(seen.message_id)));
    }
    let kind = match &head {
        None if link.seq == 1 && link.prev_hash.is_none() => ContinuityKind::Ok,
        Some(h) if link.seq == h.last_seq + 1 && link.prev_hash == Some(h.last_signature) => {
            ContinuityKind::Ok
        }
        // The next seq, but not built on the event we hold: another branch.
        Some(h) if link.seq == h.last_seq + 1 => ContinuityKind::Fork,
        Some(h) if link.seq <= h.last_seq => ContinuityKind::Gap, // an older event we never saw
        _ => ContinuityKind::Gap,
    };
    // With a fork at the head, name the event it conflicts with.
    let conflicts_with = if kind == ContinuityKind::Fork {
        let prev_key = origin_event_key(origin, &link.plan_id, link.seq - 1);
        events
            .get(prev_key.as_slice())?
            .map(|v| decode::<OriginEvent>(v.value()))
            .transpose()?
            .map(|e| e.message_id)
    } else {
        None
    };
    events.insert(
        event_key.as_slice(),
        encode(&OriginEvent {
            signature: link.signature,
            message_id: *message_id,
        })
        .as_slice(),
    )?;
    if head.as_ref().is_none_or(|h| link.seq > h.last_seq) {
        heads.insert(
            head_key.as_slice(),
            encode(&OriginHead {
                last_seq: link.seq,
                last_signature: link.signature,
            })
            .as_slice(),
        )?;
    }
    Ok(continuity(kind, conflicts_with))
}
