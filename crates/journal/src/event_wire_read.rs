//! An export line read back into its fields ([`WireEvent::read`]), borrowed
//! from the line, in one pass and without serde_json's generic machinery.
//!
//! The reader takes the form [`WireEvent::write`] produces (members in
//! their fixed order, strings that need no escape) and declines anything
//! else, returning `None`; a caller then reads the line with serde_json,
//! which also names what is wrong with it. The reader is fast, not the
//! judge of exactness (it takes an id or hash in upper case, say): a
//! caller that must accept only logbook's own spelling compares
//! `write(read(line))` with the line (see `admin/offline.rs`).

use uuid::Uuid;

use crate::event::Timestamp;
use crate::event_wire::WireEvent;

/// The text of a `Timestamp` (`2026-01-02T03:04:05.678Z`).
const TIME_LEN: usize = 24;
/// A 32-byte hash in hex.
const HASH_LEN: usize = 64;
/// A hyphenated UUID.
const UUID_LEN: usize = 36;
/// Digits of `u64::MAX`.
const MAX_SEQ_DIGITS: usize = 20;

impl<'a> WireEvent<'a> {
    /// The fields of a line of exactly [`WireEvent::write`]'s form whose
    /// type, actor and key id need no escape; `None` for any other line
    /// (which may still be valid: read it with serde_json). The members
    /// before the payload are read from the front, those after it from the
    /// back, so the payload is delimited without scanning it: whether it
    /// is JSON at all is for the caller's payload check to say.
    pub fn read(line: &'a str) -> Option<WireEvent<'a>> {
        let mut head = Front { text: line, at: 0 };
        head.lit("{\"id\":\"")?;
        let id = head.uuid()?;
        head.lit("\",\"plan_id\":\"")?;
        let plan_id = head.uuid()?;
        head.lit("\",\"seq\":")?;
        let seq = head.seq()?;
        head.lit(",\"type\":\"")?;
        let event_type = head.plain_string()?;
        head.lit(",\"actor\":")?;
        let actor = match head.lit("null") {
            Some(()) => None,
            None => {
                head.lit("\"")?;
                Some(head.plain_string()?)
            }
        };
        head.lit(",\"payload\":")?;

        let mut tail = Back {
            text: line,
            start: head.at,
            end: line.len(),
        };
        tail.lit("}")?;
        let redacted = tail.lit(",\"redacted\":true").is_some();
        tail.lit("\"")?;
        let created_at = Timestamp::parse(tail.take(TIME_LEN)?)?;
        tail.lit("\",\"created_at\":\"")?;
        let key_id = tail.plain_string()?;
        tail.lit("\",\"key_id\":\"")?;
        let signature = hash(tail.take(HASH_LEN)?)?;
        tail.lit(",\"signature\":\"")?;
        let prev_hash = match tail.lit("null") {
            Some(()) => None,
            None => {
                tail.lit("\"")?;
                let prev = hash(tail.take(HASH_LEN)?)?;
                tail.lit("\"")?;
                Some(prev)
            }
        };
        tail.lit("\",\"prev_hash\":")?;
        let payload_hash = hash(tail.take(HASH_LEN)?)?;
        tail.lit(",\"payload_hash\":\"")?;
        let payload = &line[tail.start..tail.end];
        if payload.is_empty() {
            return None;
        }
        Some(WireEvent {
            id,
            plan_id,
            seq,
            event_type,
            actor,
            payload,
            payload_hash,
            prev_hash,
            signature,
            key_id,
            created_at,
            redacted,
        })
    }
}

/// Reads from the front of the line.
struct Front<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Front<'a> {
    fn lit(&mut self, expected: &str) -> Option<()> {
        self.text[self.at..].starts_with(expected).then(|| {
            self.at += expected.len();
        })
    }

    fn take(&mut self, len: usize) -> Option<&'a str> {
        let taken = self.text.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(taken)
    }

    fn uuid(&mut self) -> Option<Uuid> {
        Uuid::try_parse(self.take(UUID_LEN)?).ok()
    }

    /// Decimal digits as serde_json writes a `u64`: no sign, no leading
    /// zero, no overflow.
    fn seq(&mut self) -> Option<u64> {
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > MAX_SEQ_DIGITS || (len > 1 && rest[0] == b'0') {
            return None;
        }
        let seq = self.take(len)?.parse().ok()?;
        Some(seq)
    }

    /// The rest of a string whose opening quote was read, up to and past
    /// its closing quote: only text that needs no escape.
    fn plain_string(&mut self) -> Option<&'a str> {
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest.iter().position(|&b| b == b'"')?;
        let body = self.take(len)?;
        self.at += 1;
        plain(body).then_some(body)
    }
}

/// Reads from the back of what the front left.
struct Back<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

impl<'a> Back<'a> {
    fn lit(&mut self, expected: &str) -> Option<()> {
        self.text[self.start..self.end]
            .ends_with(expected)
            .then(|| {
                self.end -= expected.len();
            })
    }

    fn take(&mut self, len: usize) -> Option<&'a str> {
        let from = self.end.checked_sub(len).filter(|&f| f >= self.start)?;
        let taken = self.text.get(from..self.end)?;
        self.end = from;
        Some(taken)
    }

    /// A string's text whose closing quote was read, back to and past its
    /// opening quote: only text that needs no escape (so the opening quote
    /// is the nearest one).
    fn plain_string(&mut self) -> Option<&'a str> {
        let rest = &self.text.as_bytes()[self.start..self.end];
        let quote = self.start + rest.iter().rposition(|&b| b == b'"')?;
        let body = &self.text[quote + 1..self.end];
        self.end = quote + 1;
        plain(body).then_some(body)
    }
}

/// Text serde_json writes as is between quotes, as `event_wire::string`
/// decides it.
fn plain(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// 64 hex digits (in upper case too: the caller's exactness check refuses
/// those), through `hex`'s table, without a branch per digit.
fn hash(text: &str) -> Option<[u8; 32]> {
    logbook_base::hex::decode_array(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    fn plain_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z.]{0,12}",
            any::<String>(),
            Just("q\"uote".to_string()),
            Just("back\\slash".to_string()),
            Just("é😀\u{2028}\u{7f}".to_string()),
        ]
    }

    proptest! {
        /// Every line logbook writes is read back into its own fields,
        /// unless a string in it needs an escape (then serde_json reads it).
        #[test]
        fn reads_what_write_writes(
            actor in proptest::option::of(plain_text()),
            event_type in plain_text(),
            key_id in plain_text(),
            seq in any::<u64>(),
            millis in 0i64..253_402_300_799_999,
            id in any::<u128>(),
            hash in any::<[u8; 32]>(),
            prev in proptest::option::of(any::<[u8; 32]>()),
            signature in any::<[u8; 32]>(),
            payload in prop_oneof![
                Just("null".to_string()),
                Just("\"}\"".to_string()),
                Just(r#"{"a":[1,"\u0007é\","],"b":{},"key_id":"x"}"#.to_string()),
                "[a-z]{0,40}".prop_map(|s| format!(r#"{{"s":"{s}"}}"#)),
            ],
            redacted in any::<bool>(),
        ) {
            let event = Event {
                id: Uuid::from_u128(id),
                plan_id: Uuid::from_u128(!id),
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
            let line = serde_json::to_string(&event).unwrap();
            let plain_strings = [Some(&event.event_type), event.actor.as_ref(), Some(&event.key_id)]
                .into_iter()
                .flatten()
                .all(|s| plain(s));
            match WireEvent::read(&line) {
                Some(read) => prop_assert_eq!(read, WireEvent::of(&event)),
                None => prop_assert!(!plain_strings, "declined {}", line),
            }
        }
    }

    #[test]
    fn declines_other_spellings() {
        let line = r#"{"id":"00000000-0000-0000-0000-000000000007","plan_id":"00000000-0000-0000-0000-000000000001","seq":2,"type":"t","actor":null,"payload":{},"payload_hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","prev_hash":null,"signature":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","key_id":"k","created_at":"2026-01-02T03:04:05.678Z"}"#;
        let read = WireEvent::read(line).expect("logbook's own form");
        assert_eq!((read.seq, read.payload, read.key_id), (2, "{}", "k"));
        for (from, to) in [
            ("\"seq\":2", "\"seq\":02"),
            ("\"seq\":2", "\"seq\":-2"),
            ("\"seq\":2", "\"seq\":2.0"),
            ("\"seq\":2", "\"seq\":18446744073709551616"),
            ("\"type\":\"t\"", "\"type\":\"\\u0074\""),
            ("\"key_id\":\"k\"", "\"key_id\":\"\\u006b\""),
            ("\"payload_hash\":\"a", "\"payload_hash\":\"g"),
            ("\"signature\":\"b", "\"signature\":\"-"),
            ("\"prev_hash\":null", "\"prev_hash\":\"\""),
            ("\"payload\":{}", "\"payload\":"),
            ("\"actor\":null", "\"actor\":1"),
            (".678Z", ".678+00:00"),
            ("T03", "T24"),
            ("{\"id\"", " {\"id\""),
            ("\"}", "\",\"redacted\":false}"),
            ("\"}", "\"} "),
        ] {
            let other = line.replacen(from, to, 1);
            assert_ne!(other, line);
            assert_eq!(WireEvent::read(&other), None, "{other}");
        }
    }
}
