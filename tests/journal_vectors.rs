//! The journal format's test vectors (`docs/vectors/journal-v1.json`).
//!
//! The library must reproduce every value in the file byte for byte, every
//! negative vector must break exactly where the file says, and the running
//! daemon must canonicalize, hash and sign the vector payloads the same way.
//! `docs/vectors/verify_journal_vectors.py` checks the same file with an
//! independent implementation.
//!
//! After a deliberate change to the vectors (never to the v1 format itself),
//! `LOGBOOK_WRITE_VECTORS=1 cargo test --test journal_vectors` rewrites the
//! file; review the diff before committing it.

#[path = "ports/mod.rs"]
mod ports;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logbook_base::canonical::check_numbers;
use logbook_journal::Event;
use logbook_journal::chain::{CanonicalPayload, Signable, verify_all};
use logbook_journal::event::Timestamp;
use logbook_journal::keys::{Keyring, key_id, legacy_key_id};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

/// The vector keys: (name, secret text). The HMAC key is the secret's UTF-8 bytes.
const KEYS: [(&str, &str); 2] = [
    ("current", "logbook-test-vectors-v1-current-secret"),
    ("retired", "logbook-test-vectors-v1-retired-secret"),
];

const PLAN_A: &str = "01943ad6-c020-76ca-83c8-90c1d3ac94af";
const PLAN_B: &str = "0194be97-b180-71fb-bca3-a17039263059";

struct Input {
    plan_id: &'static str,
    seq: u64,
    id: &'static str,
    event_type: &'static str,
    actor: Option<&'static str>,
    created_at: &'static str,
    /// Index into [`KEYS`] of the key that signs this event.
    key: usize,
    /// Whether the event names its key by the legacy id, SHA-256(key)[..4],
    /// as events written before the current `key_id` did (they keep it).
    legacy_id: bool,
    /// The payload exactly as a client would send it: unsorted keys,
    /// escapes and number spellings that canonicalization must normalize.
    payload_json: &'static str,
}

const INPUTS: [Input; 7] = [
    Input {
        plan_id: PLAN_A,
        seq: 1,
        id: "01943ad7-aa80-752e-bca9-6513269e0d37",
        event_type: "plan.created",
        actor: Some("alice"),
        created_at: "2025-01-06T09:00:00.000Z",
        key: 0,
        legacy_id: true,
        payload_json: r#"{"title": "Quarterly close", "owner": {"team": "finance", "name": "Zo\u00eb"}, "amount": 1250.50, "tags": ["q1", "close"]}"#,
    },
    Input {
        plan_id: PLAN_A,
        seq: 2,
        id: "01943ae5-dc4a-7a6a-8317-d23f128b2f33",
        event_type: "step.completed",
        actor: Some("Renée 🚀"),
        created_at: "2025-01-06T09:15:30.250Z",
        key: 0,
        legacy_id: true,
        payload_json: r#"{"z": 1, "numbers": [1.0, 1e21, 1E15, 0.1, -0.0, 1e-7, 0.000001, 5e-324, 1.7976931348623157e308, 9007199254740991, -9007199254740991, -42, 3.14159, 2.5e-5, 123456789.125], "text": "caf\u00e9 ☕ \"quoted\" \ud83d\ude00", "\ue000": "private use key", "😀": "emoji key", "A": null, "é": true, "a": false}"#,
    },
    Input {
        plan_id: PLAN_A,
        seq: 3,
        id: "01943ae5-dc4b-7892-8606-95315d9dc9f8",
        event_type: "plan.approved",
        actor: None,
        created_at: "2025-01-06T09:15:30.251Z",
        key: 0,
        legacy_id: true,
        payload_json: "{}",
    },
    Input {
        plan_id: PLAN_A,
        seq: 4,
        id: "019441dc-01cf-70ed-ba38-36f681e74ef5",
        event_type: "exception.raised",
        actor: Some("system"),
        created_at: "2025-01-07T17:42:05.007Z",
        key: 0,
        legacy_id: true,
        payload_json: r#"{"message": "tab\there nul\u0000 unit\u001f del\u007f ls\u2028 back\\slash \/slash\r\n\b\f", "list": [], "nested": {"b": {"d": 4, "c": 3}, "a": [{"y": 2, "x": 1}], "": "empty key"}}"#,
    },
    Input {
        plan_id: PLAN_B,
        seq: 1,
        id: "0194bece-a000-7099-8580-6b0d6f03675a",
        event_type: "ledger.transaction",
        actor: Some("bank-gateway"),
        created_at: "2025-02-01T00:00:00.000Z",
        key: 1,
        legacy_id: true,
        payload_json: r#"{"ref": "\u00dc-2025-0001", "currency": "EUR", "amount": -0.5}"#,
    },
    Input {
        plan_id: PLAN_B,
        seq: 2,
        id: "0194bece-a7cf-711e-8f67-8d111738f7d9",
        event_type: "plan.closed",
        actor: Some(""),
        created_at: "2025-02-01T00:00:01.999Z",
        key: 0,
        legacy_id: true,
        payload_json: r#"[3, "two", {"b": 1, "a": 0}, [], null]"#,
    },
    Input {
        plan_id: PLAN_B,
        seq: 3,
        id: "01954fd8-7a40-7c3e-9a51-3f0e2d6b8c11",
        event_type: "ledger.transaction",
        actor: Some("bank-gateway"),
        created_at: "2025-03-01T08:30:00.000Z",
        key: 0,
        legacy_id: false,
        payload_json: r#"{"ref": "\u00dc-2025-0002", "currency": "EUR", "amount": 12}"#,
    },
];

fn vectors_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/vectors/journal-v1.json")
}

fn keyring(names: &[&str]) -> Keyring {
    let secret = |name: &str| {
        KEYS.iter()
            .find(|(n, _)| *n == name)
            .expect("a vector key")
            .1
            .as_bytes()
            .to_vec()
    };
    let mut keyring = Keyring::from_secret(secret(names[0]));
    for name in &names[1..] {
        keyring
            .add_verification_key(secret(name))
            .expect("distinct vector keys");
    }
    keyring
}

/// Builds and signs the positive chain exactly as the writer does, and
/// returns each event with its vector entry.
fn build_events() -> Vec<(Event, Value)> {
    let mut prev: HashMap<&str, [u8; 32]> = HashMap::new();
    INPUTS
        .iter()
        .map(|input| {
            let secret = KEYS[input.key].1.as_bytes();
            let value: Value =
                serde_json::from_str(input.payload_json).expect("vector payload is JSON");
            check_numbers(&value).expect("vector payloads stay within ±(2^53-1)");
            let payload = CanonicalPayload::new(&value);
            let mut event = Event {
                id: Uuid::parse_str(input.id).unwrap(),
                plan_id: Uuid::parse_str(input.plan_id).unwrap(),
                seq: input.seq,
                event_type: input.event_type.to_string(),
                actor: input.actor.map(str::to_string),
                payload: payload.json.clone(),
                payload_hash: payload.hash,
                prev_hash: prev.get(input.plan_id).copied(),
                signature: [0; 32],
                key_id: if input.legacy_id {
                    legacy_key_id(secret)
                } else {
                    key_id(secret)
                },
                created_at: Timestamp::parse(input.created_at).expect("vector time is canonical"),
                position: 0,
                redacted: false,
            };
            let signable = Signable::of(&event);
            let signing_input = signable.canonical();
            event.signature = signable.sign(secret);
            prev.insert(input.plan_id, event.signature);
            let entry = json!({
                "input": {
                    "plan_id": input.plan_id,
                    "seq": input.seq,
                    "id": input.id,
                    "type": input.event_type,
                    "actor": input.actor,
                    "created_at": input.created_at,
                    "key_id": event.key_id,
                    "payload_json": input.payload_json,
                },
                "payload_canonical": payload.json.get(),
                "payload_hash": hex(&payload.hash),
                "prev_hash": event.prev_hash.map(|h| hex(&h)),
                "signing_input": signing_input,
                "signature": hex(&event.signature),
                "event": serde_json::to_value(&event).unwrap(),
            });
            (event, entry)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Tamper = fn(&mut Vec<Event>);

/// A negative vector: a tampered copy of one plan's chain and where the
/// verifier must report the first break (`None`: the chain still verifies).
struct Negative {
    name: &'static str,
    description: &'static str,
    plan_id: &'static str,
    key_names: &'static [&'static str],
    /// A validity window the verifier knows: (key name, retired at).
    retired: Option<(&'static str, &'static str)>,
    tamper: Tamper,
    expected: Option<(u64, &'static str)>,
}

fn set_payload(event: &mut Event, json: &str) {
    event.payload = RawValue::from_string(json.to_string()).unwrap();
}

const BOTH_KEYS: &[&str] = &["current", "retired"];

fn negatives() -> Vec<Negative> {
    vec![
        Negative {
            name: "payload_edited",
            description: "seq 2's payload was edited; payload_hash no longer matches it",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| set_payload(&mut e[1], r#"{"a":false,"numbers":[],"z":2}"#),
            expected: Some((2, "payload_hash")),
        },
        Negative {
            name: "payload_and_hash_edited",
            description: "seq 2's payload was edited and payload_hash recomputed; the signature no longer matches",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| {
                let payload = CanonicalPayload::new(&json!({"z": 2}));
                set_payload(&mut e[1], payload.json.get());
                e[1].payload_hash = payload.hash;
            },
            expected: Some((2, "signature")),
        },
        Negative {
            name: "actor_edited",
            description: "seq 3's null actor was replaced by a name",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[2].actor = Some("mallory".into()),
            expected: Some((3, "signature")),
        },
        Negative {
            name: "created_at_edited",
            description: "seq 1's created_at moved by one millisecond",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[0].created_at = Timestamp(e[0].created_at.0 + 1),
            expected: Some((1, "signature")),
        },
        Negative {
            name: "type_edited",
            description: "seq 4's type was changed",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[3].event_type = "exception.resolved".into(),
            expected: Some((4, "signature")),
        },
        Negative {
            name: "id_edited",
            description: "seq 2's id was changed",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[1].id = Uuid::parse_str("01943ae5-dc4a-7a6a-8317-d23f128b2f34").unwrap(),
            expected: Some((2, "signature")),
        },
        Negative {
            name: "signature_edited",
            description: "one bit of seq 2's signature was flipped (seq 3's prev_hash is left alone, but seq 2 fails first)",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[1].signature[0] ^= 1,
            expected: Some((2, "signature")),
        },
        Negative {
            name: "prev_hash_edited",
            description: "one bit of seq 3's prev_hash was flipped",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[2].prev_hash.as_mut().unwrap()[31] ^= 1,
            expected: Some((3, "prev_hash")),
        },
        Negative {
            name: "first_prev_hash_set",
            description: "seq 1 claims a predecessor: its prev_hash must be null",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[0].prev_hash = Some([0; 32]),
            expected: Some((1, "prev_hash")),
        },
        Negative {
            name: "event_removed",
            description: "seq 2 was deleted; the verifier meets seq 3 where it expects seq 2",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| {
                e.remove(1);
            },
            expected: Some((3, "seq_gap")),
        },
        Negative {
            name: "events_swapped",
            description: "seq 2 and seq 3 were swapped in order",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e.swap(1, 2),
            expected: Some((3, "seq_gap")),
        },
        Negative {
            name: "event_removed_and_renumbered",
            description: "seq 2 was deleted and the later events renumbered; the renumbered seq 2 does not chain to seq 1",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| {
                e.remove(1);
                e[1].seq = 2;
                e[2].seq = 3;
            },
            expected: Some((2, "prev_hash")),
        },
        Negative {
            name: "unknown_key_id",
            description: "seq 1 names a key the verifier does not have",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| e[0].key_id = "00000000".into(),
            expected: Some((1, "missing-key")),
        },
        Negative {
            name: "retired_key_missing",
            description: "plan B verified with only the current key: seq 1 was signed with the retired key",
            plan_id: PLAN_B,
            key_names: &["current"],
            retired: None,
            tamper: |_| {},
            expected: Some((1, "missing-key")),
        },
        Negative {
            name: "rotated_chain_verifies",
            description: "plan B, untampered, with both keys: seq 1 (retired key, legacy id), seq 2 (current key, legacy id) and seq 3 (current key, current id) verify",
            plan_id: PLAN_B,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |_| {},
            expected: None,
        },
        Negative {
            name: "tail_truncated_not_detected",
            description: "seq 4 was deleted from the end: the chain alone cannot tell (a known limit, see the format document)",
            plan_id: PLAN_A,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| {
                e.pop();
            },
            expected: None,
        },
    ]
}

/// Negative vectors whose stored payload text matters, which a parsed JSON
/// value cannot show (it keeps one of two duplicate members, and loses the
/// spelling). They are written as `events_json`: the exact text of the events
/// array, as an export carries it.
fn text_negatives() -> Vec<Negative> {
    vec![
        Negative {
            name: "payload_duplicate_members",
            description: "seq 1's payload text repeats members before the signed ones: it parses (keeping the last) to the signed payload, but a reader keeping the first sees another amount",
            plan_id: PLAN_B,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| {
                set_payload(
                    &mut e[0],
                    r#"{"amount":1000000,"currency":"EUR","amount":-0.5,"ref":"Ü-2025-0001"}"#,
                )
            },
            expected: Some((1, "payload_not_canonical")),
        },
        Negative {
            name: "payload_not_canonical",
            description: "seq 1's payload text is the signed value spelled another way (members out of order, -0.50, a \\u escape): not JCS(parse(text))",
            plan_id: PLAN_B,
            key_names: BOTH_KEYS,
            retired: None,
            tamper: |e| {
                set_payload(
                    &mut e[0],
                    r#"{"ref":"\u00dc-2025-0001","currency":"EUR","amount":-0.50}"#,
                )
            },
            expected: Some((1, "payload_not_canonical")),
        },
    ]
}

/// Negative vectors in which the verifier knows when a key was retired.
fn window_negatives() -> Vec<Negative> {
    vec![
        Negative {
            name: "retired_key_after_its_window",
            description: "plan B with the retired key retired 1 ms before seq 1 was signed: seq 1 is outside its window",
            plan_id: PLAN_B,
            key_names: BOTH_KEYS,
            retired: Some(("retired", "2025-01-31T23:59:59.999Z")),
            tamper: |_| {},
            expected: Some((1, "signature")),
        },
        Negative {
            name: "retired_key_within_its_window",
            description: "plan B with the retired key retired exactly when seq 1 was signed: the window includes its end",
            plan_id: PLAN_B,
            key_names: BOTH_KEYS,
            retired: Some(("retired", "2025-02-01T00:00:00.000Z")),
            tamper: |_| {},
            expected: None,
        },
        Negative {
            name: "retired_key_backdated_behind_newer_event",
            description: "plan B's seq 3 re-signed with the retired key and dated inside its window, but before seq 2, which is dated after the window: the date that counts is the latest so far",
            plan_id: PLAN_B,
            key_names: BOTH_KEYS,
            retired: Some(("retired", "2025-02-01T00:00:01.000Z")),
            tamper: |e| {
                let secret = KEYS[1].1.as_bytes();
                e[2].created_at = Timestamp::parse("2025-02-01T00:00:00.500Z").unwrap();
                e[2].key_id = key_id(secret);
                e[2].signature = Signable::of(&e[2]).sign(secret);
            },
            expected: Some((3, "signature")),
        },
    ]
}

fn build_vectors() -> Value {
    let events = build_events();
    let chain = |plan: &str| -> Vec<Event> {
        events
            .iter()
            .filter(|(e, _)| e.plan_id.to_string() == plan)
            .map(|(e, _)| e.clone())
            .collect()
    };
    let as_text = text_negatives().into_iter().map(|n| (n, true));
    let windows = window_negatives().into_iter().map(|n| (n, false));
    let negatives: Vec<Value> = negatives()
        .into_iter()
        .map(|n| (n, false))
        .chain(as_text)
        .chain(windows)
        .map(|(n, as_text)| {
            let mut tampered = chain(n.plan_id);
            (n.tamper)(&mut tampered);
            // Serializing the events keeps each payload's text as it is.
            let (form, events) = if as_text {
                ("events_json", json!(serde_json::to_string(&tampered).unwrap()))
            } else {
                ("events", json!(tampered.iter().map(|e| serde_json::to_value(e).unwrap()).collect::<Vec<_>>()))
            };
            json!({
                "name": n.name,
                "description": n.description,
                "plan_id": n.plan_id,
                "key_ids": n.key_names.iter().map(|name| keyring(&[name]).current_id().to_string()).collect::<Vec<_>>(),
                form: events,
                "retired": n.retired.map(|(name, at)| json!({ keyring(&[name]).current_id(): at })),
                "expected": {
                    "chain_valid": n.expected.is_none(),
                    "broken_at": n.expected.map(|(seq, _)| seq),
                    "broken_reason": n.expected.map(|(_, reason)| reason),
                },
            })
        })
        .collect();
    json!({
        "format": "logbook journal v1",
        "description": "Test vectors for docs/journal-format.md. `events` are two plans' chains in seq order; `negative` are tampered chains with the verifier's expected verdict.",
        "keys": KEYS.iter().map(|(name, secret)| json!({
            "name": name,
            "secret": secret,
            "key_hex": hex(secret.as_bytes()),
            "key_id": key_id(secret.as_bytes()),
            "legacy_key_id": legacy_key_id(secret.as_bytes()),
        })).collect::<Vec<_>>(),
        "events": events.into_iter().map(|(_, entry)| entry).collect::<Vec<_>>(),
        "negative": negatives,
    })
}

fn read_vectors() -> Value {
    let text =
        std::fs::read_to_string(vectors_path()).expect("docs/vectors/journal-v1.json exists");
    serde_json::from_str(&text).expect("the vector file is JSON")
}

/// An event given as a parsed JSON value. The vector file shows it
/// pretty-printed; the text it stands for is the canonical one, which is
/// what the daemon stores and exports.
fn event_from(value: &Value) -> Event {
    // `Event.payload` is a RawValue, which deserializes only from text.
    let mut event: Event =
        serde_json::from_str(&value.to_string()).expect("a vector event parses as an Event");
    event.payload = CanonicalPayload::new(&value["payload"]).json;
    event
}

/// A negative vector's events: from `events_json` (exact text) or `events`.
fn negative_events(n: &Value) -> Vec<Event> {
    match n["events_json"].as_str() {
        Some(text) => serde_json::from_str(text).expect("events_json parses as events"),
        None => n["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(event_from)
            .collect(),
    }
}

#[test]
fn library_reproduces_the_vector_file() {
    let built = build_vectors();
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&built).unwrap();
        text.push('\n');
        std::fs::write(vectors_path(), text).unwrap();
    }
    let file = read_vectors();
    for (i, (built, file)) in built["events"]
        .as_array()
        .unwrap()
        .iter()
        .zip(file["events"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(built, file, "events[{i}] differs from the file");
    }
    assert_eq!(
        built, file,
        "the vector file differs from what the library computes"
    );
}

#[test]
fn vector_chains_verify_and_negatives_break_where_expected() {
    let file = read_vectors();
    let keys: HashMap<String, String> = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap().to_string(),
                k["secret"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let keyring_of = |ids: &[&str]| {
        let mut ring = Keyring::from_secret(keys[ids[0]].clone().into_bytes());
        for id in &ids[1..] {
            ring.add_verification_key(keys[*id].clone().into_bytes())
                .expect("distinct vector keys");
        }
        ring
    };
    let all_ids: Vec<&str> = keys.keys().map(String::as_str).collect();
    let full = keyring_of(&all_ids);

    let events: Vec<Event> = file["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| event_from(&v["event"]))
        .collect();
    for plan in [PLAN_A, PLAN_B] {
        let chain: Vec<&Event> = events
            .iter()
            .filter(|e| e.plan_id.to_string() == plan)
            .collect();
        let report = verify_all(chain.iter().copied(), &full);
        assert!(report.is_valid(), "plan {plan}: {report:?}");
        assert_eq!(report.verified, chain.len() as u64);
    }

    let file_negatives = file["negative"].as_array().unwrap();
    assert_eq!(
        file_negatives.len(),
        negatives().len() + text_negatives().len() + window_negatives().len()
    );
    for n in file_negatives {
        let name = n["name"].as_str().unwrap();
        let ids: Vec<&str> = n["key_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let chain = negative_events(n);
        let mut keyring = keyring_of(&ids);
        for (id, at) in n["retired"].as_object().into_iter().flatten() {
            let at = Timestamp::parse(at.as_str().unwrap()).expect("a canonical time");
            assert!(keyring.retire(id, at), "{name}: {id} is a verification key");
        }
        let report = verify_all(&chain, &keyring);
        let expected = &n["expected"];
        assert_eq!(
            Value::from(report.is_valid()),
            expected["chain_valid"],
            "{name}"
        );
        assert_eq!(
            json!(report.broken.map(|b| b.0)),
            expected["broken_at"],
            "{name}"
        );
        assert_eq!(
            json!(report.broken.map(|b| b.1.as_str())),
            expected["broken_reason"],
            "{name}"
        );
    }
}

/// The daemon, started on a loopback port with a fresh data dir.
struct Daemon {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_daemon(secret: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let port = ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .arg("serve")
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml"))
        .arg("--listen")
        .arg(&listen)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET")
        .env("LOGBOOK_HMAC_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the logbook binary starts");
    let mut daemon = Daemon {
        child,
        base: format!("http://{listen}"),
        _dir: dir,
    };
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{}/healthz", daemon.base)).send().await
            && r.status().is_success()
        {
            return daemon;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("the daemon exited during startup: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The daemon, given the vector payloads as raw text, stores exactly the
/// vector's canonical payloads and hashes, names the key as the vectors do,
/// and signs what the format says it signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_hashes_and_signs_like_the_vectors() {
    let file = read_vectors();
    let (_, secret) = KEYS[0];
    let daemon = start_daemon(secret).await;
    let client = client();
    let signer = keyring(&["current"]);
    let mut prev: HashMap<String, String> = HashMap::new();
    for vector in file["events"].as_array().unwrap() {
        let input = &vector["input"];
        let plan = input["plan_id"].as_str().unwrap();
        // Send the payload text unparsed, so the daemon sees the original spelling.
        let body = format!(
            r#"{{"type":{},"actor":{},"payload":{}}}"#,
            input["type"],
            input["actor"],
            input["payload_json"].as_str().unwrap()
        );
        let response = client
            .post(format!("{}/api/plans/{plan}/events", daemon.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", input["type"]);
        let text = response.text().await.unwrap();
        let stored: Value = serde_json::from_str(&text).unwrap();
        // Parsed from the response text itself, so the payload keeps the
        // daemon's exact spelling (a `Value` would re-encode it).
        let event: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(
            event.payload.get(),
            vector["payload_canonical"].as_str().unwrap()
        );
        assert_eq!(stored["payload_hash"], vector["payload_hash"]);
        assert_eq!(stored["key_id"].as_str(), Some(signer.current_id()));
        assert_eq!(stored["seq"], input["seq"]);
        assert_eq!(
            stored["prev_hash"].as_str(),
            prev.get(plan).map(String::as_str)
        );
        let expected_signature = hex(&Signable::of(&event).sign(secret.as_bytes()));
        assert_eq!(
            stored["signature"].as_str(),
            Some(expected_signature.as_str())
        );
        prev.insert(plan.to_string(), expected_signature);
    }
    for plan in [PLAN_A, PLAN_B] {
        let page: Value = client
            .get(format!("{}/api/plans/{plan}/events?verify=1", daemon.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["chain_valid"], true, "{page}");
        assert_eq!(page["broken_at"], Value::Null);
    }
}

/// Integers beyond ±(2^53-1) would canonicalize differently in other
/// languages, so the daemon refuses them instead of storing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refuses_integers_jcs_cannot_represent() {
    let daemon = start_daemon(KEYS[0].1).await;
    let client = client();
    let url = format!("{}/api/plans/{PLAN_A}/events", daemon.base);
    for number in [
        "9007199254740992",
        "-9007199254740992",
        // Beyond 64 bits serde_json would parse a double: caught from the text.
        "18446744073709551616",
        "123456789012345678901234567890",
    ] {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"type":"plan.created","payload":{{"n":[{number}]}}}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{number}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:logbook:problem:unsafe-integer",
            "{number}"
        );
    }
    let response = client
        .get(format!("{}/api/plans/{PLAN_A}", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "nothing was appended");
}

/// Migration of key ids: plan B's events name their keys by the legacy id
/// (seq 1 and 2) and by the current id (seq 3, the same key as seq 2). The
/// binary's offline verifier, given only the two secrets, accepts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_verifier_accepts_legacy_and_current_key_ids() {
    let file = read_vectors();
    let ids: Vec<&str> = file["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["input"]["plan_id"] == PLAN_B)
        .map(|v| v["event"]["key_id"].as_str().unwrap())
        .collect();
    let (current, retired) = (KEYS[0].1.as_bytes(), KEYS[1].1.as_bytes());
    let expected = [
        legacy_key_id(retired),
        legacy_key_id(current),
        key_id(current),
    ];
    assert_eq!(ids, expected);
    let export: String = file["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["input"]["plan_id"] == PLAN_B)
        .map(|v| serde_json::to_string(&event_from(&v["event"])).unwrap() + "\n")
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan-b.ndjson");
    std::fs::write(&path, export).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .arg("verify")
        .arg("--export")
        .arg(&path)
        .args(["--key-env", "VECTOR_CURRENT", "--key-env", "VECTOR_RETIRED"])
        .env("VECTOR_CURRENT", KEYS[0].1)
        .env("VECTOR_RETIRED", KEYS[1].1)
        .output()
        .expect("logbook verify runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: 3 events"), "{stdout}");
}
