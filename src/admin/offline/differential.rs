//! The fast line reader against serde_json, on the same lines: for every
//! line `parse_line` (which tries `WireEvent::read` first) gives exactly
//! what `parse_serde` (every line's path before it) gives: the same fields,
//! payload verdict and leaf, or the same error. And the fast reader never
//! takes a line serde_json refuses. Lines are logbook's own with nasty
//! payloads, types, actors and key ids, then mutated, truncated, reordered,
//! duplicated, escaped and respelled. `PROPTEST_CASES=N` raises the count.

use proptest::prelude::*;

use logbook_base::proptest_support::{self, cases};

use super::*;
use crate::http::append_body::differential::PAYLOADS;
use logbook_base::canonical::sha256;
use logbook_journal::event::Timestamp;

const SECRET: &[u8] = b"differential-secret-differential";

fn keyring() -> &'static Keyring {
    static KEYRING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    KEYRING.get_or_init(|| Keyring::from_secret(SECRET.to_vec()))
}

/// What a parse gives the walk, as text: equal texts, equal walks.
fn shown(parsed: &Result<Parsed, String>) -> String {
    match parsed {
        Ok(p) => format!("{:?} {:?} {:?} {:?}", p.plan_id, p.link, p.payload, p.leaf),
        Err(e) => format!("error {e}"),
    }
}

/// Holds the contract for one line under every keyring and leaf setting;
/// true when the fast reader took it.
fn check(line: &str) -> bool {
    let mut taken = false;
    for with_key in [None, Some(keyring())] {
        for with_leaf in [false, true] {
            let (mut expected, mut scratch) = (String::new(), SignatureScratch::default());
            let slow = parse_serde(line, with_key, with_leaf, &mut expected, &mut scratch);
            let fast = parse_fast(line, with_key, with_leaf, &mut expected, &mut scratch);
            if let Some(fast) = &fast {
                taken = true;
                assert!(fast.fast);
                assert!(
                    slow.is_ok(),
                    "the fast reader took a line serde refuses: {line:?}: {}",
                    shown(&slow)
                );
                // The recheck reads the line again, as accepted.
                let at = Timestamp(i64::MAX / 2);
                assert_eq!(
                    recheck(line, true, at, keyring()),
                    recheck(line, false, at, keyring()),
                    "{line:?}"
                );
            }
            let both = parse_line(line, with_key, with_leaf, &mut expected, &mut scratch);
            assert_eq!(shown(&both), shown(&slow), "{line:?}");
        }
    }
    taken
}

/// A line as logbook writes it, signed with the test key.
struct Shape<'a> {
    event_type: &'a str,
    actor: Option<&'a str>,
    key_id: Option<&'a str>,
    prev: bool,
    redacted: bool,
    millis: i64,
}

const SHAPES: &[Shape<'static>] = &[
    Shape {
        event_type: "step.done",
        actor: None,
        key_id: None,
        prev: true,
        redacted: false,
        millis: 1_700_000_000_123,
    },
    Shape {
        event_type: "plan.created",
        actor: Some("me"),
        key_id: None,
        prev: false,
        redacted: false,
        millis: 0,
    },
    Shape {
        event_type: "step.done",
        actor: None,
        key_id: None,
        prev: true,
        redacted: true,
        millis: 1_700_000_000_123,
    },
    Shape {
        event_type: "",
        actor: Some(""),
        key_id: None,
        prev: true,
        redacted: false,
        millis: 253_402_300_799_999,
    },
    Shape {
        event_type: "é😀\u{2028}",
        actor: Some("ü\u{7f}"),
        key_id: None,
        prev: true,
        redacted: false,
        millis: 1,
    },
    Shape {
        event_type: "q\"uote",
        actor: Some("back\\slash"),
        key_id: None,
        prev: true,
        redacted: false,
        millis: 2,
    },
    Shape {
        event_type: "tab\there",
        actor: Some("nul\u{0}"),
        key_id: None,
        prev: true,
        redacted: false,
        millis: 3,
    },
    Shape {
        event_type: "step.done",
        actor: None,
        key_id: Some("0a1b2c3d"),
        prev: true,
        redacted: false,
        millis: 4,
    },
    Shape {
        event_type: "step.done",
        actor: None,
        key_id: Some(""),
        prev: true,
        redacted: false,
        millis: 5,
    },
    Shape {
        event_type: "step.done",
        actor: None,
        key_id: Some("k\"\\"),
        prev: true,
        redacted: false,
        millis: 6,
    },
    Shape {
        event_type: "a\",\"key_id\":\"b",
        actor: Some("\",\"payload\":1,\"x\":\""),
        key_id: Some("\",\"created_at\":\""),
        prev: false,
        redacted: false,
        millis: 7,
    },
];

fn signed_line(shape: &Shape<'_>, payload: &str) -> String {
    let mut wire = WireEvent {
        id: Uuid::from_u128(0xabcdef),
        plan_id: Uuid::from_u128(1),
        seq: if shape.prev { 2 } else { 1 },
        event_type: shape.event_type,
        actor: shape.actor,
        payload,
        payload_hash: sha256(payload.as_bytes()),
        prev_hash: shape.prev.then_some([0x5a; 32]),
        signature: [0; 32],
        key_id: shape.key_id.unwrap_or(keyring().current_id()),
        created_at: Timestamp(shape.millis),
        redacted: shape.redacted,
    };
    wire.signature = wire.signable().sign(SECRET);
    let mut line = String::new();
    wire.write(&mut line);
    line
}

fn corpus() -> &'static [String] {
    static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut lines = Vec::new();
        for shape in SHAPES {
            for payload in PAYLOADS {
                lines.push(signed_line(shape, payload));
            }
            lines.push(signed_line(shape, "null"));
        }
        for depth in [1, 63, 64, 65, 126, 127, 128, 129, 200] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            lines.push(signed_line(&SHAPES[0], &deep));
            let deep = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            lines.push(signed_line(&SHAPES[0], &deep));
        }
        lines
    })
}

/// The lines of the corpus the fast reader takes.
fn taken() -> &'static [String] {
    static TAKEN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAKEN.get_or_init(|| {
        let taken: Vec<String> = corpus().iter().filter(|l| check(l)).cloned().collect();
        assert!(taken.len() > 200, "only {} lines taken", taken.len());
        taken
    })
}

#[test]
fn nasty_lines_hold_the_contract() {
    // Most payloads of the corpus are canonical or nearly: the fast
    // reader takes the canonical ones and serde_json judges the rest.
    let taken = taken().len();
    assert!(taken < corpus().len(), "{taken} of {}", corpus().len());
}

#[test]
fn truncated_lines_hold_the_contract() {
    for line in taken().iter().step_by(37) {
        for end in (0..line.len()).filter(|&e| line.is_char_boundary(e)) {
            assert!(!check(&line[..end]), "a truncated line was taken");
        }
    }
}

/// The members of a line in order, split where the wire form puts commas
/// between them (the payload, between `payload` and `payload_hash`, kept whole).
fn members(line: &str) -> Vec<String> {
    let inner = &line[1..line.len() - 1];
    let at = inner.find(",\"payload\":").unwrap();
    let tail = inner.find(",\"payload_hash\":").unwrap();
    let mut out: Vec<String> = Vec::new();
    for part in [&inner[..at], &inner[tail..]] {
        let mut rest = part.trim_start_matches(',');
        // Member names are known and unescaped; split before each.
        while let Some(next) = [
            ",\"plan_id\"",
            ",\"seq\"",
            ",\"type\"",
            ",\"actor\"",
            ",\"prev_hash\"",
            ",\"signature\"",
            ",\"key_id\"",
            ",\"created_at\"",
            ",\"redacted\"",
        ]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        {
            out.push(rest[..next].to_string());
            rest = &rest[next + 1..];
        }
        out.push(rest.to_string());
        if out.len() < 6 {
            out.push(inner[at + 1..tail].to_string());
        }
    }
    out
}

fn joined(members: &[String]) -> String {
    format!("{{{}}}", members.join(","))
}

#[test]
fn members_reordered_duplicated_dropped_or_added_hold_the_contract() {
    let mut lines = 0;
    for line in taken().iter().step_by(11) {
        let m = members(line);
        assert_eq!(joined(&m), *line, "the split is exact");
        for i in 0..m.len() {
            let mut dropped = m.clone();
            dropped.remove(i);
            let mut doubled = m.clone();
            doubled.insert(i, m[i].clone());
            let mut added = m.clone();
            added.insert(i, "\"extra\":1".into());
            let mut swapped = m.clone();
            swapped.swap(i, (i + 1) % m.len());
            for other in [dropped, doubled, added, swapped] {
                let other = joined(&other);
                if other != *line {
                    assert!(!check(&other), "{other}");
                    lines += 1;
                }
            }
        }
    }
    assert!(lines > 1000, "{lines}");
}

#[test]
fn respelled_values_hold_the_contract() {
    let line = &signed_line(&SHAPES[1], "{\"a\":1}");
    let id = "00000000-0000-0000-0000-000000abcdef";
    let time = "1970-01-01T00:00:00.000Z";
    assert!(line.contains(id) && check(line));
    for (from, to) in [
        ("\"seq\":1", "\"seq\":01"),
        ("\"seq\":1", "\"seq\":1.0"),
        ("\"seq\":1", "\"seq\":1e0"),
        ("\"seq\":1", "\"seq\":-1"),
        ("\"seq\":1", "\"seq\":18446744073709551616"),
        ("\"seq\":1", "\"seq\":99999999999999999999999999"),
        ("\"seq\":1", "\"seq\":\"1\""),
        ("\"type\":\"plan", "\"type\":\"\\u0070lan"),
        ("\"type\":\"plan", "\"\\u0074ype\":\"plan"),
        ("\"actor\":\"me\"", "\"actor\":\"m\\u0065\""),
        ("\"actor\":\"me\"", "\"actor\":\"m\\/e\""),
        ("\"prev_hash\":null", "\"prev_hash\":\"\""),
        (id, &id.to_uppercase()),
        (id, "00000000000000000000000000abcdef"),
        (id, "{00000000-0000-0000-0000-000000abcdef}"),
        (time, "1970-01-01T00:00:00Z"),
        (time, "1970-01-01T00:00:00.000+00:00"),
        (time, "1970-01-01t00:00:00.000Z"),
        (time, "1970-02-30T00:00:00.000Z"),
        (time, "1970-01-01T00:00:60.000Z"),
        ("{\"id\"", "{ \"id\""),
        // Not JSON: a member name of the payload lacks its opening quote.
        ("\"payload\":{\"a\"", "\"payload\":{#a\""),
        ("\"payload\":{\"a\"", "\"payload\":{a\""),
        (",\"payload\":", ",\"payload\" :"),
        (",\"payload\":", ",\"payload\": "),
        ("}", " }"),
    ] {
        let respelled = line.replacen(from, to, 1);
        assert_ne!(&respelled, line, "{from} → {to}");
        assert!(!check(&respelled), "{respelled}");
    }
    let mut upper_hex = line.clone();
    let at = upper_hex.find("\"signature\":\"").unwrap() + 13;
    upper_hex.replace_range(at..at + 64, &line[at..at + 64].to_uppercase());
    if upper_hex != *line {
        assert!(!check(&upper_hex), "{upper_hex}");
    }
    for end in ["} ", "}\u{0}", "}}", "},", "}\u{feff}"] {
        assert!(!check(&format!("{}{end}", &line[..line.len() - 1])));
    }
}

/// An event dated before the one accepted ahead of it has its HMAC checked
/// again at the walk's later date, by re-reading its line the way it was
/// first read: a key retired between the two dates no longer verifies it.
#[test]
fn backdated_lines_are_rechecked_on_both_paths() {
    const OTHER: &[u8] = b"differential-other-key-differential";
    let sign = |secret: &[u8], key_id: &str, seq: u64, prev, millis, event_type| {
        let payload = "{\"n\":1}";
        let mut wire = WireEvent {
            id: Uuid::from_u128(seq.into()),
            plan_id: Uuid::from_u128(1),
            seq,
            event_type,
            actor: None,
            payload,
            payload_hash: sha256(payload.as_bytes()),
            prev_hash: prev,
            signature: [0; 32],
            key_id,
            created_at: Timestamp(millis),
            redacted: false,
        };
        wire.signature = wire.signable().sign(secret);
        let mut line = String::new();
        wire.write(&mut line);
        (line, wire.signature)
    };
    let other_id = Keyring::from_secret(OTHER.to_vec())
        .current_id()
        .to_string();
    // Plain, then escaped (serde_json reads it, and reads it again).
    for event_type in ["step.done", "step\"done"] {
        let (first, signature) = sign(SECRET, keyring().current_id(), 1, None, 2_000, event_type);
        let (second, _) = sign(OTHER, &other_id, 2, Some(signature), 1_000, event_type);
        assert_eq!(
            WireEvent::read(&second).is_some(),
            event_type == "step.done"
        );
        let export = format!("{first}\n{second}\n");
        for retired in [false, true] {
            let mut keys = Keyring::from_secret(SECRET.to_vec());
            keys.add_verification_key(OTHER.to_vec()).unwrap();
            if retired {
                assert!(keys.retire(&other_id, Timestamp(1_500)));
            }
            let verified = verify_export(export.as_bytes(), Some(&keys), None).unwrap();
            let broken = matches!(
                &verified.chain,
                Outcome::Broken { seq: 2, line: 2, reason } if reason == "signature"
            );
            let valid = matches!(
                verified.chain,
                Outcome::Valid {
                    count: 2,
                    head_signature: Some(_),
                    redacted: 0,
                    ..
                }
            );
            assert!(
                if retired { broken } else { valid },
                "{event_type} retired {retired}: {:?}",
                verified.chain
            );
        }
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// Lines the fast reader takes, with a few bytes changed, inserted or
    /// removed (the edits most likely to slip through).
    #[test]
    fn mutated_lines_hold_the_contract(
        pick in any::<prop::sample::Index>(),
        edits in proptest_support::edits(b"{}[]\",:\\ 0123456789abcdefABCDEF-+.eEtrufalsnZT\x00\x1f\x7f"),
    ) {
        let line = proptest_support::apply(pick.get(taken()).clone().into_bytes(), edits);
        // The reader of an export takes text: other bytes never get here.
        if let Ok(line) = String::from_utf8(line) {
            check(&line);
        }
    }

    /// Generated strings in every text member, escaped where serde escapes.
    #[test]
    fn generated_strings_hold_the_contract(
        event_type in any::<String>(),
        actor in proptest::option::of(any::<String>()),
        payload in prop::sample::select(PAYLOADS.to_vec()),
        redacted in any::<bool>(),
    ) {
        let shape = Shape {
            event_type: &event_type,
            actor: actor.as_deref(),
            key_id: None,
            prev: true,
            redacted,
            millis: 1_700_000_000_000,
        };
        check(&signed_line(&shape, if redacted { "null" } else { payload }));
    }
}
