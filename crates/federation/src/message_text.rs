//! The RFC 8785 texts of a batch message and of a message's content,
//! written directly from canonical payload text.
//!
//! The outbox stores each payload as canonical JSON, and a sender's delivery
//! worker put every message of a batch through a `serde_json::Value` (parse
//! the payload, build the message, canonicalize it to hash it, copy it into
//! the body, serialize the body): most of its CPU per message. A message's
//! members are fixed, so their sorted order is too; what remains is to
//! spell each value as JCS does. The generic serializer stays the
//! reference: the tests compare the two on arbitrary strings and payloads,
//! and `docs/vectors/federation.json` pins the bytes.

use std::fmt::Write;

use logbook_base::canonical::MAX_SAFE_INTEGER;
use logbook_journal::event_wire::{string, uuid};
use uuid::Uuid;

/// The members of a message in a signed batch (an `EventMessage` without
/// `signature`); `payload` must be canonical text.
pub(crate) struct BatchMessage<'a> {
    pub(crate) message_id: Uuid,
    pub(crate) instance_id: &'a str,
    pub(crate) recipient_id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) key_id: &'a str,
}

/// Appends `m`'s canonical text to `out`, or returns `false` (and leaves
/// `out` as it was) for a timestamp JCS would not spell as plain digits.
pub(crate) fn batch_message(m: &BatchMessage<'_>, out: &mut String) -> bool {
    if m.timestamp.unsigned_abs() > MAX_SAFE_INTEGER {
        return false;
    }
    // Members in JCS order (all names ASCII): eventType, instanceId, keyId,
    // messageId, payload, recipientId, timestamp.
    out.push_str("{\"eventType\":");
    string(out, m.event_type);
    out.push_str(",\"instanceId\":");
    string(out, m.instance_id);
    out.push_str(",\"keyId\":");
    string(out, m.key_id);
    out.push_str(",\"messageId\":\"");
    uuid(out, &m.message_id);
    out.push_str("\",\"payload\":");
    out.push_str(m.payload);
    out.push_str(",\"recipientId\":");
    string(out, m.recipient_id);
    write!(out, ",\"timestamp\":{}}}", m.timestamp).expect("writing to a String");
    true
}

/// The canonical text of a message's content (what
/// `EventMessage::content_digest` hashes); `payload` must be canonical text.
pub(crate) fn content(
    message_id: &Uuid,
    instance_id: &str,
    event_type: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(payload.len() + 128);
    // JCS order: eventType, instanceId, messageId, payload.
    out.push_str("{\"eventType\":");
    string(&mut out, event_type);
    out.push_str(",\"instanceId\":");
    string(&mut out, instance_id);
    out.push_str(",\"messageId\":\"");
    uuid(&mut out, message_id);
    out.push_str("\",\"payload\":");
    out.push_str(payload);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::signing_input;
    use logbook_base::canonical::canonical_json;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Any text, and often text that needs escapes.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\"\\\\a-z\\x7f-\\u{a0}\\u{2028}\\u{fffd}😀]{0,12}",
        ]
    }

    /// Any JSON value, numbers of every kind included.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_batch_message_matches_the_generic_serializer(
            id in any::<u128>(),
            instance_id in text(),
            recipient_id in text(),
            event_type in text(),
            key_id in text(),
            payload in json_value(),
            timestamp in -(MAX_SAFE_INTEGER as i64)..=(MAX_SAFE_INTEGER as i64),
        ) {
            let message_id = Uuid::from_u128(id);
            let canonical = canonical_json(&payload);
            let reference = signing_input(&json!({
                "messageId": message_id,
                "instanceId": instance_id,
                "recipientId": recipient_id,
                "eventType": event_type,
                "payload": payload,
                "timestamp": timestamp,
                "keyId": key_id,
            }));
            let m = BatchMessage {
                message_id,
                instance_id: &instance_id,
                recipient_id: &recipient_id,
                event_type: &event_type,
                payload: &canonical,
                timestamp,
                key_id: &key_id,
            };
            let mut out = String::from("kept:");
            prop_assert!(batch_message(&m, &mut out));
            prop_assert_eq!(out.strip_prefix("kept:").unwrap(), reference);
        }

        #[test]
        fn content_matches_the_generic_serializer(
            id in any::<u128>(),
            instance_id in text(),
            event_type in text(),
            payload in json_value(),
        ) {
            let message_id = Uuid::from_u128(id);
            let reference = canonical_json(&json!({
                "messageId": message_id,
                "instanceId": instance_id,
                "eventType": event_type,
                "payload": payload,
            }));
            let text = content(&message_id, &instance_id, &event_type, &canonical_json(&payload));
            prop_assert_eq!(text, reference);
        }
    }

    #[test]
    fn a_timestamp_beyond_plain_digits_is_left_to_the_caller() {
        let mut out = String::from("kept");
        let m = BatchMessage {
            message_id: Uuid::nil(),
            instance_id: "a",
            recipient_id: "b",
            event_type: "t",
            payload: "{}",
            timestamp: 1 << 53,
            key_id: "k",
        };
        assert!(!batch_message(&m, &mut out));
        assert_eq!(out, "kept");
        let m = BatchMessage {
            timestamp: -((1 << 53) - 1),
            ..m
        };
        assert!(batch_message(&m, &mut out));
    }
}
