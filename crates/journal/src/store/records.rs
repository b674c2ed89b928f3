//! Record types and their encoding: a format-version byte, then postcard.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{EventKey, RECORD_VERSION, StoreError};
use crate::event::{Event, Timestamp};

/// What a plan's chain ends in. Kept per plan so an append never scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHead {
    pub last_seq: u64,
    pub last_signature: [u8; 32],
    pub count: u64,
    pub first_at: i64,
    pub last_at: i64,
}

/// An event record as read, whatever its version: `payload` is `None` once
/// the event was redacted (only version [`REDACTED_EVENT_VERSION`] records
/// lack it).
#[derive(Serialize, Deserialize)]
pub(super) struct EventRecord {
    pub(super) id: [u8; 16],
    pub(super) event_type: String,
    pub(super) actor: Option<String>,
    pub(super) payload: Option<String>,
    pub(super) payload_hash: [u8; 32],
    pub(super) prev_hash: Option<[u8; 32]>,
    pub(super) signature: [u8; 32],
    pub(super) key_id: String,
    pub(super) created_at: i64,
    pub(super) position: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct IdempotencyRecord {
    pub(super) fingerprint: [u8; 32],
    pub(super) seq: u64,
}

/// Version 1 of an event record: the payload is always there. Appends still
/// write this version, so a store without redactions stays readable by
/// older builds.
#[derive(Deserialize)]
struct EventRecordV1 {
    id: [u8; 16],
    event_type: String,
    actor: Option<String>,
    payload: String,
    payload_hash: [u8; 32],
    prev_hash: Option<[u8; 32]>,
    signature: [u8; 32],
    key_id: String,
    created_at: i64,
    position: u64,
}

/// An event record of either version, borrowing its strings from the
/// stored bytes: a whole-chain walk reads every field once and keeps
/// none, so it builds no owned [`Event`]. Decodes exactly the bytes
/// [`decode_event`] does, with the same errors (postcard reads `&str` and
/// `String` alike; `the_record_view_decodes_as_the_owned_decoder` pins it). Its field
/// order is also version 2's, which this type decodes directly.
#[derive(Deserialize)]
pub(super) struct EventRecordView<'a> {
    pub(super) id: [u8; 16],
    pub(super) event_type: &'a str,
    #[serde(borrow)]
    pub(super) actor: Option<&'a str>,
    #[serde(borrow)]
    pub(super) payload: Option<&'a str>,
    pub(super) payload_hash: [u8; 32],
    pub(super) prev_hash: Option<[u8; 32]>,
    pub(super) signature: [u8; 32],
    pub(super) key_id: &'a str,
    pub(super) created_at: i64,
    /// Decoded even where unused (the walk): a record cut short in it is
    /// refused, as [`decode_event`] refuses it.
    pub(super) position: u64,
}

/// [`EventRecordV1`], borrowed.
#[derive(Deserialize)]
struct EventRecordV1View<'a> {
    id: [u8; 16],
    event_type: &'a str,
    #[serde(borrow)]
    actor: Option<&'a str>,
    payload: &'a str,
    payload_hash: [u8; 32],
    prev_hash: Option<[u8; 32]>,
    signature: [u8; 32],
    key_id: &'a str,
    created_at: i64,
    position: u64,
}

/// [`decode_event`], borrowing the strings.
pub(super) fn decode_event_view(bytes: &[u8]) -> Result<EventRecordView<'_>, StoreError> {
    match bytes.split_first() {
        Some((&REDACTED_EVENT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("corrupt event record: {e}")))
        }
        _ => {
            let v1: EventRecordV1View<'_> = decode(bytes)?;
            Ok(EventRecordView {
                id: v1.id,
                event_type: v1.event_type,
                actor: v1.actor,
                payload: Some(v1.payload),
                payload_hash: v1.payload_hash,
                prev_hash: v1.prev_hash,
                signature: v1.signature,
                key_id: v1.key_id,
                created_at: v1.created_at,
                position: v1.position,
            })
        }
    }
}

/// Version byte of an event record whose payload may be absent. Written
/// only by a redaction, so only redacted events carry it; an older build
/// refuses such a record ("unknown version") rather than guess.
pub(super) const REDACTED_EVENT_VERSION: u8 = 2;

/// Decodes an event record of either version.
pub(super) fn decode_event(bytes: &[u8]) -> Result<EventRecord, StoreError> {
    match bytes.split_first() {
        Some((&REDACTED_EVENT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("corrupt event record: {e}")))
        }
        _ => {
            let v1: EventRecordV1 = decode(bytes)?;
            Ok(EventRecord {
                id: v1.id,
                event_type: v1.event_type,
                actor: v1.actor,
                payload: Some(v1.payload),
                payload_hash: v1.payload_hash,
                prev_hash: v1.prev_hash,
                signature: v1.signature,
                key_id: v1.key_id,
                created_at: v1.created_at,
                position: v1.position,
            })
        }
    }
}

/// Encodes `record` as a version 2 record with its payload erased.
pub(super) fn encode_redacted(mut record: EventRecord) -> Vec<u8> {
    record.payload = None;
    let mut out = vec![REDACTED_EVENT_VERSION];
    out.extend(postcard::to_stdvec(&record).expect("records always encode"));
    out
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends `value`'s record (version byte, then postcard) to `out`: the
/// bytes of [`encode`], written where they go. `postcard::to_stdvec`
/// starts from an empty `Vec` and doubles it, about nine reallocations for
/// a 1 KiB event, and its result was then copied once more.
pub(super) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    out.push(RECORD_VERSION);
    // postcard only fails on types it cannot represent; ours are all plain.
    postcard::serialize_with_flavor(value, AppendTo(out)).expect("records always encode");
}

/// An event's record, in one allocation of the right size.
pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    let strings = event.event_type.len()
        + event.actor.as_ref().map_or(0, String::len)
        + event.payload.get().len()
        + event.key_id.len();
    // The fixed fields, length prefixes and option tags take at most 200 bytes.
    let mut out = Vec::with_capacity(strings + 200);
    encode_into(&record_from_event(event), &mut out);
    out
}

/// A postcard output that appends to a borrowed `Vec`.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

pub(super) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError(format!("corrupt record: {e}")))
        }
        Some((v, _)) => Err(StoreError(format!(
            "record format version {v} is not known to this build (it knows {RECORD_VERSION})"
        ))),
        None => Err(StoreError("empty record".into())),
    }
}

pub(super) fn event_key(plan_id: &Uuid, seq: u64) -> EventKey {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(plan_id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn idempotency_key(plan_id: &Uuid, key: &str) -> Vec<u8> {
    let mut out = plan_id.as_bytes().to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}

pub(super) fn event_from_record(key: &EventKey, record: EventRecord) -> Result<Event, StoreError> {
    let plan_id = Uuid::from_slice(&key[..16]).expect("16 bytes");
    let seq = u64::from_be_bytes(key[16..].try_into().expect("8 bytes"));
    let redacted = record.payload.is_none();
    let payload = record.payload.unwrap_or_else(|| "null".into());
    Ok(Event {
        id: Uuid::from_bytes(record.id),
        plan_id,
        seq,
        event_type: record.event_type,
        actor: record.actor,
        payload: RawValue::from_string(payload)
            .map_err(|e| StoreError(format!("corrupt payload at {plan_id}/{seq}: {e}")))?,
        redacted,
        payload_hash: record.payload_hash,
        prev_hash: record.prev_hash,
        signature: record.signature,
        key_id: record.key_id,
        created_at: Timestamp(record.created_at),
        position: record.position,
    })
}

/// [`EventRecord`] borrowing from an [`Event`], so that writing a record
/// copies nothing but the encoded bytes. postcard encodes `&str` exactly as
/// `String`, so this must list the same fields in the same order.
#[derive(Serialize)]
pub(super) struct EventRecordRef<'a> {
    id: [u8; 16],
    event_type: &'a str,
    actor: Option<&'a str>,
    payload: &'a str,
    payload_hash: [u8; 32],
    prev_hash: Option<[u8; 32]>,
    signature: [u8; 32],
    key_id: &'a str,
    created_at: i64,
    position: u64,
}

pub(super) fn record_from_event(event: &Event) -> EventRecordRef<'_> {
    // Only a redaction writes a record without its payload.
    assert!(!event.redacted, "a redacted event is never written whole");
    EventRecordRef {
        id: event.id.into_bytes(),
        event_type: &event.event_type,
        actor: event.actor.as_deref(),
        payload: event.payload.get(),
        payload_hash: event.payload_hash,
        prev_hash: event.prev_hash,
        signature: event.signature,
        key_id: &event.key_id,
        created_at: event.created_at.0,
        position: event.position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_plan_then_seq() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert!(event_key(&a, 255) < event_key(&a, 256));
        assert!(event_key(&a, u64::MAX) < event_key(&b, 0));
    }

    fn sample_event() -> Event {
        Event {
            id: Uuid::from_u128(9),
            plan_id: Uuid::from_u128(1),
            seq: 4,
            event_type: "step.completed".into(),
            actor: Some("é".into()),
            payload: RawValue::from_string(r#"{"a":[1,"x"]}"#.into()).unwrap(),
            payload_hash: [1; 32],
            prev_hash: Some([2; 32]),
            signature: [3; 32],
            key_id: "abcd0123".into(),
            created_at: Timestamp(1_700_000_000_123),
            position: 77,
            redacted: false,
        }
    }

    #[test]
    fn borrowed_records_decode_as_owned_ones() {
        let event = sample_event();
        let key = event_key(&event.plan_id, event.seq);
        let back = event_from_record(
            &key,
            decode_event(&encode(&record_from_event(&event))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
        assert_eq!(back.position, 77);
    }

    /// The event record written in place is the record `postcard::to_stdvec`
    /// made behind the version byte: with and without an actor and a
    /// previous hash, with a small and a 2 KB payload.
    #[test]
    fn records_written_in_place_are_the_same_bytes() {
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
        for event in [
            sample_event(),
            Event {
                actor: None,
                prev_hash: None,
                payload: RawValue::from_string(big).unwrap(),
                ..sample_event()
            },
        ] {
            let mut expected = vec![RECORD_VERSION];
            expected.extend(postcard::to_stdvec(&record_from_event(&event)).unwrap());
            assert_eq!(encode_event(&event), expected);
            assert_eq!(encode(&record_from_event(&event)), expected);
        }
    }

    /// The borrowed view reads every record the owned decoder reads, to the
    /// same fields, and refuses every one it refuses with the same error.
    #[test]
    fn the_record_view_decodes_as_the_owned_decoder() {
        let event = Event {
            created_at: Timestamp(-1_700_000_000_123),
            position: 1 << 40,
            ..sample_event()
        };
        let v1 = encode(&record_from_event(&event));
        let v2 = encode_redacted(decode_event(&v1).unwrap());
        let mut v2_whole = vec![REDACTED_EVENT_VERSION];
        v2_whole.extend(postcard::to_stdvec(&decode_event(&v1).unwrap()).unwrap());
        for bytes in [&v1, &v2, &v2_whole] {
            let owned = decode_event(bytes).unwrap();
            let view = decode_event_view(bytes).unwrap();
            assert_eq!(view.id, owned.id);
            assert_eq!(view.event_type, owned.event_type);
            assert_eq!(view.actor, owned.actor.as_deref());
            assert_eq!(view.payload, owned.payload.as_deref());
            assert_eq!(view.payload_hash, owned.payload_hash);
            assert_eq!(view.prev_hash, owned.prev_hash);
            assert_eq!(view.signature, owned.signature);
            assert_eq!(view.key_id, owned.key_id);
            assert_eq!(view.created_at, owned.created_at);
            assert_eq!(view.position, owned.position);
        }
        assert_eq!(decode_event_view(&v2).unwrap().payload, None);
        // Every truncation, every version byte, invalid UTF-8 in a string.
        let mut bad: Vec<Vec<u8>> = (0..v1.len()).map(|n| v1[..n].to_vec()).collect();
        bad.extend((0..v2.len()).map(|n| v2[..n].to_vec()));
        bad.extend((0..=u8::MAX).map(|v| [&[v], &v1[1..]].concat()));
        let mut utf8 = v1.clone();
        let at = utf8.windows(4).position(|w| w == b"step").unwrap();
        utf8[at] = 0xff;
        bad.push(utf8);
        for bytes in &bad {
            let owned = decode_event(bytes).map(|r| r.id).map_err(|e| e.to_string());
            let view = decode_event_view(bytes)
                .map(|r| r.id)
                .map_err(|e| e.to_string());
            assert_eq!(view, owned, "{bytes:?}");
        }
    }

    #[test]
    fn a_redacted_record_keeps_everything_but_the_payload() {
        let event = Event {
            actor: None,
            payload: RawValue::from_string(r#"{"secret":"x"}"#.into()).unwrap(),
            prev_hash: None,
            ..sample_event()
        };
        let key = event_key(&event.plan_id, event.seq);
        let v1 = encode(&record_from_event(&event));
        assert_eq!(v1[0], 1, "appends still write version 1");
        let v2 = encode_redacted(decode_event(&v1).unwrap());
        assert_eq!(v2[0], REDACTED_EVENT_VERSION);
        assert!(!v2.windows(6).any(|w| w == b"secret"), "payload bytes gone");
        let back = event_from_record(&key, decode_event(&v2).unwrap()).unwrap();
        assert!(back.redacted);
        assert_eq!(back.payload.get(), "null");
        assert_eq!(back.payload_hash, event.payload_hash);
        assert_eq!(back.signature, event.signature);
        assert_eq!(back.position, 77);
        let json = serde_json::to_value(&back).unwrap();
        assert_eq!(json["payload"], serde_json::Value::Null);
        assert_eq!(json["redacted"], true);
        let mut future = v2.clone();
        future[0] = 3;
        assert!(decode_event(&future).is_err());
    }

    #[test]
    fn records_carry_a_version_byte() {
        let head = PlanHead {
            last_seq: 3,
            last_signature: [7; 32],
            count: 3,
            first_at: 1,
            last_at: 2,
        };
        let bytes = encode(&head);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<PlanHead>(&bytes).unwrap(), head);
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(
            decode::<PlanHead>(&future)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }
}
