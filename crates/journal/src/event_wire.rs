//! An event's wire form (`serde_json::to_string(&event)`), written directly
//! into a reused buffer.
//!
//! Offline verification asks of every line of an export whether it is
//! exactly what logbook writes; serializing each event again through serde
//! (a fresh string, hex and UUIDs formatted through `fmt`) was a large part
//! of the offline check. The members and their order are fixed by
//! [`Event`]'s derive; what remains is to spell each value as serde_json
//! does. serde_json stays the reference: the tests compare the two.

use std::fmt::Write;

use crate::event::Event;

/// Appends `event`'s wire form to `out`: byte for byte what
/// `serde_json::to_string(event)` returns.
pub fn write_wire(event: &Event, out: &mut String) {
    out.push_str("{\"id\":\"");
    uuid(out, &event.id);
    out.push_str("\",\"plan_id\":\"");
    uuid(out, &event.plan_id);
    write!(out, "\",\"seq\":{},\"type\":", event.seq).expect("writing to a String");
    string(out, &event.event_type);
    out.push_str(",\"actor\":");
    match &event.actor {
        Some(actor) => string(out, actor),
        None => out.push_str("null"),
    }
    out.push_str(",\"payload\":");
    out.push_str(event.payload.get());
    out.push_str(",\"payload_hash\":\"");
    hex(out, &event.payload_hash);
    out.push_str("\",\"prev_hash\":");
    match &event.prev_hash {
        Some(prev) => {
            out.push('"');
            hex(out, prev);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"signature\":\"");
    hex(out, &event.signature);
    out.push_str("\",\"key_id\":");
    string(out, &event.key_id);
    out.push_str(",\"created_at\":\"");
    event.created_at.push_to(out);
    out.push('"');
    if event.redacted {
        out.push_str(",\"redacted\":true");
    }
    out.push('}');
}

/// A JSON string as serde_json writes it. Text with nothing to escape (the
/// usual type, actor and key id) is copied as is; anything else goes
/// through serde_json itself.
pub(crate) fn string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(text).expect("a string always serializes"));
    }
}

/// Lowercase hex, appended without a temporary string.
pub(crate) fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// A UUID hyphenated in lowercase, as its serde form spells it.
pub(crate) fn uuid(out: &mut String, id: &uuid::Uuid) {
    let mut buf = uuid::Uuid::encode_buffer();
    out.push_str(id.hyphenated().encode_lower(&mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;
    use proptest::prelude::*;
    use serde_json::value::RawValue;
    use uuid::Uuid;

    fn wire(event: &Event) -> String {
        let mut out = String::from("left as is:");
        write_wire(event, &mut out);
        out.split_off("left as is:".len())
    }

    proptest! {
        #[test]
        fn matches_serde_json(
            actor in proptest::option::of(any::<String>()),
            event_type in any::<String>(),
            key_id in any::<String>(),
            seq in any::<u64>(),
            millis in 0i64..253_402_300_799_999,
            id in any::<u128>(),
            plan in any::<u128>(),
            hash in any::<[u8; 32]>(),
            prev in proptest::option::of(any::<[u8; 32]>()),
            signature in any::<[u8; 32]>(),
            payload in prop_oneof![
                Just("null".to_string()),
                Just(r#"{"a":[1,"\u0007é"],"b":{}}"#.to_string()),
                "[a-z]{0,40}".prop_map(|s| format!(r#"{{"s":"{s}"}}"#)),
            ],
            redacted in any::<bool>(),
        ) {
            let event = Event {
                id: Uuid::from_u128(id),
                plan_id: Uuid::from_u128(plan),
                seq,
                event_type,
                actor,
                payload: RawValue::from_string(payload).unwrap(),
                payload_hash: hash,
                prev_hash: prev,
                signature,
                key_id,
                created_at: Timestamp(millis),
                position: 7,
                redacted,
            };
            prop_assert_eq!(wire(&event), serde_json::to_string(&event).unwrap());
        }
    }

    #[test]
    fn escapes_as_serde_json_does() {
        for text in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "\u{0}\u{1f}\n",
            "\u{7f}é😀\u{2028}",
        ] {
            let mut out = String::new();
            string(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }
}
