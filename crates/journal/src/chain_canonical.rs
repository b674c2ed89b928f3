//! The signed object's RFC 8785 text, written directly.
//!
//! The writer signs every event on its single thread, and a generic JCS
//! serializer (which builds and sorts a map first) took most of the 5 µs
//! a signature cost. The signed object has a fixed set of members, so its
//! sorted order is fixed too; what remains is to spell each value as JCS
//! does. The generic serializer stays the reference: the tests compare the
//! two on arbitrary strings, and `docs/vectors` pin the bytes.

use std::fmt::Write;

use logbook_base::canonical::MAX_SAFE_INTEGER;

use crate::chain::Signable;
use crate::event_wire::{hex, optional_hex, uuid};

/// `signable`'s canonical text, or `None` when a value falls outside what
/// this writer spells (a seq beyond 2^53 - 1), so the caller uses the
/// generic serializer.
pub(crate) fn write(signable: &Signable<'_>) -> Option<String> {
    let mut out = String::with_capacity(384);
    write_into(signable, &mut out).then_some(out)
}

/// [`write`] appending to `out`, a buffer a caller reuses; `false` (and
/// `out` untouched) where `write` gives `None`.
pub(crate) fn write_into(signable: &Signable<'_>, out: &mut String) -> bool {
    if signable.seq > MAX_SAFE_INTEGER {
        return false;
    }
    // Members in JCS order (UTF-16 code units; all names are ASCII):
    // actor, created_at, id, key_id, payload_hash, plan_id, prev_hash,
    // seq, type, v.
    out.push_str("{\"actor\":");
    match signable.actor {
        Some(actor) => string(out, actor),
        None => out.push_str("null"),
    }
    out.push_str(",\"created_at\":\"");
    signable.created_at.push_to(out);
    out.push_str("\",\"id\":\"");
    uuid(out, signable.id);
    out.push_str("\",\"key_id\":");
    string(out, signable.key_id);
    out.push_str(",\"payload_hash\":\"");
    hex(out, signable.payload_hash);
    out.push_str("\",\"plan_id\":\"");
    uuid(out, signable.plan_id);
    out.push_str("\",\"prev_hash\":");
    optional_hex(out, signable.prev_hash.as_ref());
    write!(out, ",\"seq\":{},\"type\":", signable.seq).expect("writing to a String");
    string(out, signable.event_type);
    write!(out, ",\"v\":{}}}", signable.v).expect("writing to a String");
    true
}

/// A JSON string as JCS spells it: `"` and `\` escaped, the control
/// characters as `\b \t \n \f \r` or `\u00xx` (lowercase hex), everything
/// else as is. serde_json's string writer does exactly this.
fn string(out: &mut String, text: &str) {
    crate::event_wire::string(out, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn generic(s: &Signable<'_>) -> String {
        serde_json_canonicalizer::to_string(s).unwrap()
    }

    proptest! {
        #[test]
        fn matches_the_generic_serializer(
            actor in proptest::option::of(any::<String>()),
            event_type in any::<String>(),
            key_id in "[ -~\\u{80}-\\u{10ffff}]{0,20}",
            seq in 0u64..=MAX_SAFE_INTEGER,
            millis in 0i64..253_402_300_799_999,
            id in any::<u128>(),
            plan in any::<u128>(),
            hash in any::<[u8; 32]>(),
            prev in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let (id, plan) = (Uuid::from_u128(id), Uuid::from_u128(plan));
            let s = Signable {
                v: 1,
                plan_id: &plan,
                seq,
                id: &id,
                event_type: &event_type,
                actor: actor.as_deref(),
                created_at: Timestamp(millis),
                payload_hash: &hash,
                prev_hash: &prev,
                key_id: &key_id,
            };
            prop_assert_eq!(write(&s).unwrap(), generic(&s));
        }
    }

    #[test]
    fn control_characters_and_a_seq_beyond_2_pow_53() {
        let (id, plan) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut s = Signable {
            v: 1,
            plan_id: &plan,
            seq: MAX_SAFE_INTEGER,
            id: &id,
            event_type: "a.b",
            actor: Some("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/\u{7f}\u{2028}é😀"),
            created_at: Timestamp(0),
            payload_hash: &[0xab; 32],
            prev_hash: &None,
            key_id: "k",
        };
        assert_eq!(write(&s).unwrap(), generic(&s));
        s.seq = MAX_SAFE_INTEGER + 1;
        assert_eq!(write(&s), None);
    }
}
