//! An event's wire form (`serde_json::to_string(&event)`), written directly
//! into a reused buffer, and read back from an export line
//! ([`WireEvent::read`], in `event_wire_read.rs`).
//!
//! Offline verification asks of every line of an export whether it is
//! exactly what logbook writes; serializing each event again through serde
//! (a fresh string, hex and UUIDs formatted through `fmt`) was a large part
//! of the offline check. The members and their order are fixed by
//! [`Event`]'s derive; what remains is to spell each value as serde_json
//! does. serde_json stays the reference: the tests compare the two.

use std::fmt::Write;

use logbook_base::canonical::MAX_SAFE_INTEGER;
use uuid::Uuid;

use crate::chain::{BrokenReason, ChainLink, Signable, SignatureScratch, signable_check};
use crate::event::{Event, Timestamp};
use crate::keys::Keyring;

/// An event's fields as its wire form carries them, the text ones borrowed
/// (from an [`Event`], or from the export line they were read from), so a
/// line can be checked without building an owned [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireEvent<'a> {
    pub id: Uuid,
    pub plan_id: Uuid,
    pub seq: u64,
    pub event_type: &'a str,
    pub actor: Option<&'a str>,
    /// The payload's text as it stands in the line (`null` once redacted).
    pub payload: &'a str,
    pub payload_hash: [u8; 32],
    pub prev_hash: Option<[u8; 32]>,
    pub signature: [u8; 32],
    pub key_id: &'a str,
    pub created_at: Timestamp,
    pub redacted: bool,
}

impl<'a> WireEvent<'a> {
    pub fn of(event: &'a Event) -> WireEvent<'a> {
        WireEvent {
            id: event.id,
            plan_id: event.plan_id,
            seq: event.seq,
            event_type: &event.event_type,
            actor: event.actor.as_deref(),
            payload: event.payload.get(),
            payload_hash: event.payload_hash,
            prev_hash: event.prev_hash,
            signature: event.signature,
            key_id: &event.key_id,
            created_at: event.created_at,
            redacted: event.redacted,
        }
    }

    /// The object the event's HMAC covers ([`Signable::of`] for an [`Event`]).
    pub fn signable(&self) -> Signable<'_> {
        Signable {
            v: crate::chain::SIGNATURE_VERSION,
            plan_id: &self.plan_id,
            seq: self.seq,
            id: &self.id,
            event_type: self.event_type,
            actor: self.actor,
            created_at: self.created_at,
            payload_hash: &self.payload_hash,
            prev_hash: &self.prev_hash,
            key_id: self.key_id,
        }
    }

    /// What the chain's in-order rules read ([`ChainLink::of`] for an [`Event`]).
    pub fn link(&self) -> ChainLink {
        ChainLink {
            seq: self.seq,
            prev_hash: self.prev_hash,
            signature: self.signature,
            created_at: self.created_at,
            redacted: self.redacted,
            payload_hash: self.payload_hash,
        }
    }

    /// The event's entry in its plan's log ([`crate::chain::log_entry`]).
    pub fn log_entry(&self) -> String {
        crate::chain::log_entry_of(&self.signable().canonical(), &self.signature)
    }

    /// The HMAC check at `signed_at`, as a walk that dates the signature
    /// later than the event's own date makes it again
    /// ([`crate::chain::signature_check`] for an [`Event`]).
    pub fn signature_check(
        &self,
        signed_at: Timestamp,
        keyring: &Keyring,
    ) -> Result<(), BrokenReason> {
        let mut scratch = SignatureScratch::default();
        signable_check(
            &self.signable(),
            &self.signature,
            signed_at,
            keyring,
            &mut scratch,
        )
    }

    /// Appends the wire form to `out`: byte for byte what
    /// `serde_json::to_string` returns for the [`Event`] of these fields.
    pub fn write(&self, out: &mut String) {
        self.write_head(out);
        out.push_str(self.payload);
        self.write_tail(out);
    }

    /// The wire form up to the payload's text.
    pub fn write_head(&self, out: &mut String) {
        out.push_str("{\"id\":\"");
        uuid(out, &self.id);
        out.push_str("\",\"plan_id\":\"");
        uuid(out, &self.plan_id);
        write!(out, "\",\"seq\":{},\"type\":", self.seq).expect("writing to a String");
        string(out, self.event_type);
        out.push_str(",\"actor\":");
        match self.actor {
            Some(actor) => string(out, actor),
            None => out.push_str("null"),
        }
        out.push_str(",\"payload\":");
    }

    /// What follows the payload's text in the wire form.
    pub fn write_tail(&self, out: &mut String) {
        out.push_str(",\"payload_hash\":\"");
        hex(out, &self.payload_hash);
        out.push_str("\",\"prev_hash\":");
        optional_hex(out, self.prev_hash.as_ref());
        out.push_str(",\"signature\":\"");
        hex(out, &self.signature);
        out.push_str("\",\"key_id\":");
        string(out, self.key_id);
        out.push_str(",\"created_at\":\"");
        self.created_at.push_to(out);
        out.push('"');
        if self.redacted {
            out.push_str(",\"redacted\":true");
        }
        out.push('}');
    }
}

impl WireEvent<'_> {
    /// Appends the event's RFC 8785 text to `out`: its members sorted, each
    /// spelled as JCS does, so `canonical_json` of the wire form, when the
    /// payload's text is canonical (an event's is: it is stored as its
    /// canonical form). `false`, with `out` as it was, for a seq JCS would
    /// not spell as plain digits. The outbox stores this, so that a
    /// delivery worker hashes and sends it without canonicalizing it again.
    pub fn write_canonical(&self, out: &mut String) -> bool {
        if self.seq > MAX_SAFE_INTEGER {
            return false;
        }
        // JCS order (all names ASCII): actor, created_at, id, key_id,
        // payload, payload_hash, plan_id, prev_hash, redacted, seq,
        // signature, type.
        out.push_str("{\"actor\":");
        match self.actor {
            Some(actor) => string(out, actor),
            None => out.push_str("null"),
        }
        out.push_str(",\"created_at\":\"");
        self.created_at.push_to(out);
        out.push_str("\",\"id\":\"");
        uuid(out, &self.id);
        out.push_str("\",\"key_id\":");
        string(out, self.key_id);
        out.push_str(",\"payload\":");
        out.push_str(self.payload);
        out.push_str(",\"payload_hash\":\"");
        hex(out, &self.payload_hash);
        out.push_str("\",\"plan_id\":\"");
        uuid(out, &self.plan_id);
        out.push_str("\",\"prev_hash\":");
        optional_hex(out, self.prev_hash.as_ref());
        if self.redacted {
            out.push_str(",\"redacted\":true");
        }
        write!(out, ",\"seq\":{},\"signature\":\"", self.seq).expect("writing to a String");
        hex(out, &self.signature);
        out.push_str("\",\"type\":");
        string(out, self.event_type);
        out.push('}');
        true
    }
}

/// Appends `event`'s wire form to `out`: byte for byte what
/// `serde_json::to_string(event)` returns.
pub fn write_wire(event: &Event, out: &mut String) {
    WireEvent::of(event).write(out);
}

/// A JSON string as serde_json writes it, which is also how RFC 8785
/// spells it. Text with nothing to escape (the usual type, actor and key
/// id) is copied as is; anything else goes through serde_json itself.
pub fn string(out: &mut String, text: &str) {
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

/// A hash as a quoted lowercase hex string, or `null`.
pub(crate) fn optional_hex(out: &mut String, hash: Option<&[u8; 32]>) {
    match hash {
        Some(hash) => {
            out.push('"');
            hex(out, hash);
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

/// A UUID hyphenated in lowercase, as its serde form spells it.
pub fn uuid(out: &mut String, id: &Uuid) {
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
            seq in prop_oneof![any::<u64>(), 0..=MAX_SAFE_INTEGER + 1],
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
            let mut canonical = String::from("left as is:");
            let written = WireEvent::of(&event).write_canonical(&mut canonical);
            prop_assert_eq!(written, seq <= MAX_SAFE_INTEGER);
            if written {
                let reference = logbook_base::canonical::canonical_json(
                    &serde_json::to_value(&event).unwrap(),
                );
                prop_assert_eq!(canonical.split_off("left as is:".len()), reference);
            } else {
                prop_assert_eq!(canonical, "left as is:");
            }
        }
    }

    /// `write_canonical` at the edges the proptest reaches only by chance:
    /// seq 0, 2^53 - 1 and 2^53 (the fallback), no actor, a redacted copy,
    /// names and key ids that need escapes, a payload with escapes.
    #[test]
    fn canonical_copies_at_the_edges_match_the_generic_serializer() {
        let payloads = [r#"{"a":"\n\u001f","é":[-1,1e+21]}"#, "null"];
        let texts = ["", "k\"1", "\u{1}é\u{2028}😀", "\u{7f}/"];
        for seq in [0, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1] {
            for (actor, key_id) in [(None, texts[1]), (Some(texts[2]), texts[3])] {
                for (payload, redacted) in [(payloads[0], false), (payloads[1], true)] {
                    let event = Event {
                        id: Uuid::from_u128(7),
                        plan_id: Uuid::from_u128(u128::MAX),
                        seq,
                        event_type: texts[2].to_string(),
                        actor: actor.map(str::to_string),
                        payload: RawValue::from_string(payload.to_string()).unwrap(),
                        payload_hash: [0xab; 32],
                        prev_hash: (seq > 0).then_some([1; 32]),
                        signature: [0; 32],
                        key_id: key_id.to_string(),
                        created_at: Timestamp(0),
                        position: 0,
                        redacted,
                    };
                    let mut out = String::new();
                    let written = WireEvent::of(&event).write_canonical(&mut out);
                    assert_eq!(written, seq <= MAX_SAFE_INTEGER, "seq {seq}");
                    if written {
                        let reference = logbook_base::canonical::canonical_json(
                            &serde_json::to_value(&event).unwrap(),
                        );
                        assert_eq!(out, reference);
                        assert!(logbook_base::canonical_check::is_canonical(&out));
                    }
                }
            }
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
