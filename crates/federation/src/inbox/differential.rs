//! The receiver's fast path for a signed batch's messages held to the path
//! it replaced (before ebe8ad5 and c882b06): a message's digest was
//! `digest` of its parsed tree, and its payload was checked and stored as
//! `validate_event` of the parsed payload. For every message text, the new
//! path (`batch::digest_and_payload`, then `checked_payload`) must give the
//! same digest, the same stored payload bytes or the same refusal, and the
//! same content digest. The texts are canonical ones (the fast path) and
//! ones canonical but for one detail: escapes, number spellings, member
//! order, whitespace, duplicate names, deep nesting, big integers.

use logbook_journal::registry::MAX_TYPE_LEN;
use logbook_journal::validate::validate_event;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::batch::digest_and_payload;
use super::checked_payload;
use crate::batch::digest;
use crate::message::EventMessage;

/// What the receiver decided about one message text: its digest, and the
/// payload it stores (or why it refuses it) with the content digest.
#[derive(Debug, PartialEq)]
struct Decision {
    digest: String,
    stored: Result<(String, [u8; 32]), String>,
    /// Whether the payload was kept as it came (only the new path says).
    fast: bool,
}

/// The members `Head` (a batch message) requires: texts without them are
/// refused before either path is taken.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Head {
    message_id: serde::de::IgnoredAny,
    instance_id: String,
    recipient_id: String,
    event_type: serde::de::IgnoredAny,
    payload: serde::de::IgnoredAny,
    timestamp: i64,
    key_id: String,
}

/// The message as `verify_signed_batch` builds it from its tree, or None
/// where both paths refuse it before they part (not JSON, wrong members).
fn message(text: &str) -> Option<(Value, EventMessage)> {
    let value: Value = serde_json::from_str(text).ok()?;
    Head::deserialize(&value).ok()?;
    let mut with_signature = value.clone();
    with_signature
        .as_object_mut()?
        .insert("signature".into(), Value::String(String::new()));
    let m = serde_json::from_value(with_signature).ok()?;
    Some((value, m))
}

fn old_path(value: &Value, m: &EventMessage) -> Decision {
    let stored = validate_event(&m.event_type, &m.payload, MAX_TYPE_LEN)
        .map(|c| (c.json.get().to_string(), m.content_digest()))
        .map_err(|e| format!("{e:?}"));
    Decision {
        digest: digest(value),
        stored,
        fast: false,
    }
}

fn new_path(text: &str, value: &Value, m: &EventMessage) -> Decision {
    let (digest, canonical) = digest_and_payload(text, value).expect("a message that parsed");
    let stored = checked_payload(m, canonical)
        .map(|payload| {
            let content = m.content_digest_of_canonical(&payload);
            (payload, content)
        })
        .map_err(|e| format!("{e:?}"));
    Decision {
        digest,
        stored,
        fast: canonical
            .is_some_and(|c| logbook_base::canonical_check::SurelyCanonical::scan(c).is_some()),
    }
}

/// Both paths on `text`; None where neither is taken. Panics on a
/// difference.
fn compare(text: &str) -> Option<Decision> {
    let (value, m) = message(text)?;
    let old = old_path(&value, &m);
    let new = new_path(text, &value, &m);
    assert_eq!(
        (&old.digest, &old.stored),
        (&new.digest, &new.stored),
        "{text}"
    );
    Some(new)
}

/// A batch message around `payload`, members in JCS order.
fn canonical_message(event_type: &str, payload: &str) -> String {
    format!(
        r#"{{"eventType":{},"instanceId":"alpha","keyId":"k1","messageId":"0192f3a4-5b6c-7d8e-9f00-0123456789ab","payload":{payload},"recipientId":"beta","timestamp":1796159236814}}"#,
        serde_json::to_string(event_type).unwrap()
    )
}

/// Numbers spelled every way a peer might: canonical, other spellings of
/// the same value, 16+ digits, beyond 2^53, floats.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "1",
    "1.0",
    "1e2",
    "1E2",
    "1e+2",
    "100",
    "-7",
    "0.1",
    "1e-7",
    "1e21",
    "1e+21",
    "123456789012345",
    "1234567890123456",
    "-1234567890123456",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "-9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "9007199254740993.0",
    "1e19",
    "4.5e15",
    "1.5",
    "5e-324",
    "1.7976931348623157e308",
];

/// Strings as a peer might spell them: plain, with escapes JCS writes or
/// does not (`\u00e9` for é, `\/`, upper-case hex), controls, surrogates.
const STRINGS: &[&str] = &[
    r#""a""#,
    r#""é""#,
    r#""\u00e9""#,
    r#""/""#,
    r#""\/""#,
    r#""\n""#,
    r#""\u000a""#,
    r#""\u001f""#,
    r#""\u001F""#,
    r#""\u007f""#,
    "\"\u{7f}\"",
    r#""\"\\""#,
    r#""😀""#,
    r#""\ud83d\ude00""#,
    r#""\ud800""#,
    r#""\u2028""#,
    "\"\u{2028}\"",
    r#""\b\f\r\t""#,
    r#""""#,
];

/// Member names, some equal once unescaped, some ordered differently by
/// UTF-16 and by UTF-8.
const NAMES: &[&str] = &[
    r#""a""#,
    r#""b""#,
    r#""\u0061""#,
    r#""A""#,
    r#""é""#,
    r#""\u00e9""#,
    r#""😀""#,
    "\"\u{ff61}\"",
    r#""payload""#,
    r#""""#,
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(list).prop_map(str::to_string)
}

/// Optional whitespace, mostly none.
fn space() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\n\t")]
}

/// JSON texts (and a few that are not) built from the pieces above, with
/// members in any order and names that may repeat.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => pick(NUMBERS),
        3 => pick(STRINGS),
        1 => pick(&["true", "false", "null"]),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec((inner.clone(), space()), 0..5).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(item, ws)| format!("{ws}{item}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            proptest::collection::vec((pick(NAMES), inner, space()), 0..5).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(name, value, ws)| format!("{name}:{ws}{value}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A message text: canonical (its payload canonicalized) or as generated,
/// its members sometimes out of order or spaced.
fn message_text() -> impl Strategy<Value = String> {
    (
        json_text(),
        any::<bool>(),
        pick(&["step.done", "Step", "a.b.c", "é.x"]),
        0..4u8,
    )
        .prop_map(|(payload, canonicalize, event_type, shape)| {
            let payload = match (canonicalize, serde_json::from_str::<Value>(&payload)) {
                (true, Ok(value)) => logbook_base::canonical::canonical_json(&value),
                _ => payload,
            };
            let text = canonical_message(&event_type, &payload);
            match shape {
                // Whitespace around and inside the message.
                1 => format!(" {}", text.replacen(",\"payload\":", ", \"payload\" :", 1)),
                // Member order: payload first.
                2 => text
                    .replacen(&format!(",\"payload\":{payload}"), "", 1)
                    .replacen('{', &format!("{{\"payload\":{payload},"), 1),
                _ => text,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_fast_path_decides_every_message_as_the_old_one(text in message_text()) {
        compare(&text);
    }
}

/// The brief's hostile messages, one detail away from canonical, and the
/// plain ones the fast path is for (it must be taken for those).
#[test]
fn hostile_and_plain_messages_are_decided_as_before() {
    let fast = [
        r#"{"a":1}"#,
        r#"{"a":"é","b":[1,-2,{"c":null}]}"#,
        r#"{"n":123456789012345}"#,
        "[]",
        "null",
    ];
    for payload in fast {
        let decided = compare(&canonical_message("step.done", payload)).unwrap();
        assert!(decided.fast, "{payload} takes the fast path");
        assert_eq!(decided.stored.unwrap().0, payload);
    }
    let slow = [
        // Canonical, but the plain scan declines: escapes, 16 digits, floats.
        r#"{"a":"\n"}"#,
        r#"{"a":"\u001f"}"#,
        r#"{"n":1234567890123456}"#,
        r#"{"n":9007199254740991}"#,
        r#"{"n":9007199254740992}"#,
        r#"{"n":1.5}"#,
        r#"{"n":1e+21}"#,
        // Not canonical.
        r#"{"a":"\u00e9"}"#,
        r#"{"a":"\/"}"#,
        r#"{"n":1.0}"#,
        r#"{"n":1e2}"#,
        r#"{"n":-0}"#,
        r#"{"n":9007199254740993}"#,
        r#"{"n":18446744073709551616}"#,
        r#"{"b":1,"a":2}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        r#"{ "a":1}"#,
    ];
    for payload in slow {
        let decided = compare(&canonical_message("step.done", payload)).unwrap();
        assert!(!decided.fast, "{payload} is not taken as it came");
    }
    // Refused alike: an integer beyond 2^53 - 1, a bad type. (Written as a
    // float, `9007199254740993.0`, it is a double to both paths; the HTTP
    // edge refuses it before, `refuse_unsafe_numbers`.)
    for payload in [r#"{"n":9007199254740992}"#, r#"{"n":-9007199254740993}"#] {
        let decided = compare(&canonical_message("step.done", payload)).unwrap();
        assert!(decided.stored.is_err(), "{payload}");
    }
    let decided = compare(&canonical_message("Step", r#"{"a":1}"#)).unwrap();
    assert!(decided.stored.is_err());
    // A lone surrogate is not JSON serde_json takes: neither path is reached.
    assert!(compare(&canonical_message("step.done", r#""\ud800""#)).is_none());
    // Deeper than the plain scan follows (64), canonical: the old path.
    let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
    let decided = compare(&canonical_message("step.done", &deep)).unwrap();
    assert!(!decided.fast);
    assert_eq!(decided.stored.unwrap().0, deep);
    // A `signature` member, whitespace around the message, payload first.
    assert!(
        message(r#"{"eventType":"a","instanceId":"alpha","keyId":"k1","messageId":"0192f3a4-5b6c-7d8e-9f00-0123456789ab","payload":1,"recipientId":"beta","signature":"","timestamp":1}"#)
            .is_none(),
        "refused by Head before either path"
    );
    compare(&format!(" {} ", canonical_message("step.done", "{}"))).unwrap();
}
