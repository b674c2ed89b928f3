//! Property-based fuzzing (proptest, stable Rust) of every parser that takes
//! outside input: type names and patterns, timestamps and
//! plan ids, the federation messages, and, against the real binary, the
//! append body and the SSE cursor (`Last-Event-ID`, `?after=`).
//!
//! Properties: no input panics; what parses round-trips; what is invalid is
//! refused with an error (and over HTTP with a 4xx problem+json, never a 5xx).
//! CI runs a bounded number of cases per property; `PROPTEST_CASES=N` raises
//! it (docs/testing.md says how to run it for an hour).

mod common;

use common::{Daemon, DaemonOpts, assert_problem, new_plan, send};
use logbook_base::canonical::canonical_json;
use logbook_federation::inbox;
use logbook_federation::message::{EventAck, EventMessage, signing_input};
use logbook_journal::event::{Timestamp, parse_plan_id};
use logbook_journal::registry::{MAX_TYPE_LEN, TypeFilter, TypePattern, validate_type_name};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// `cases` per property in CI, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
        "[a-z.*>_0-9]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Object keys: mostly the ones the parsers know, sometimes anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "actor", "payload", "expected_seq", "messageId", "instanceId",
            "eventType", "timestamp", "keyId", "signature", "correlationId", "received",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// A type name that follows the rules: dot-separated `[a-z][a-z0-9_]*`.
fn type_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z][a-z0-9_]{0,6}", 1..5).prop_map(|s| s.join("."))
}

// ---- type names and patterns ----------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn type_names_follow_the_grammar(name in prop_oneof![type_name(), any::<String>(), "[a-z0-9_.]{0,20}"]) {
        let by_hand = !name.is_empty()
            && name.len() <= MAX_TYPE_LEN
            && name.split('.').all(|s| {
                s.starts_with(|c: char| c.is_ascii_lowercase())
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        prop_assert_eq!(validate_type_name(&name, MAX_TYPE_LEN).is_ok(), by_hand, "{:?}", name);
    }

    #[test]
    fn patterns_round_trip_or_are_refused(text in prop_oneof![any::<String>(), "[a-z.*>_]{0,16}"]) {
        match TypePattern::parse(&text) {
            Ok(pattern) => {
                prop_assert_eq!(pattern.as_string(), text.clone());
                prop_assert_eq!(TypePattern::parse(&pattern.as_string()), Ok(pattern));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // A filter is a comma list of patterns; it must never panic either.
        let _ = TypeFilter::parse(&text);
    }

    #[test]
    fn patterns_match_what_they_should(
        name in type_name(),
        wild in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let segments: Vec<&str> = name.split('.').collect();
        let exact = TypePattern::parse(&name).expect("a valid name is a pattern");
        prop_assert!(exact.matches(&name));
        // `*` in any one place still matches.
        let mut starred = segments.clone();
        starred[wild.index(segments.len())] = "*";
        let starred = TypePattern::parse(&starred.join(".")).expect("starred pattern");
        prop_assert!(starred.matches(&name));
        // `prefix.>` matches exactly the names longer than the prefix.
        let k = cut.index(segments.len());
        let tail = if k == 0 { ">".to_string() } else { format!("{}.>", segments[..k].join(".")) };
        let tail = TypePattern::parse(&tail).expect("tail pattern");
        prop_assert!(tail.matches(&name));
        if k > 0 {
            prop_assert!(!tail.matches(&segments[..k].join(".")), "`>` needs one more segment");
        }
        // A pattern never matches a name of another length without `>`.
        let longer = format!("{name}.x");
        prop_assert!(!exact.matches(&longer));
        prop_assert!(!starred.matches(&longer));
    }
}

// ---- timestamps, plan ids (the config file: src/config/fuzz.rs) ----------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn timestamps_have_one_spelling(millis in -62_135_596_800_000i64..253_402_300_799_999, text in any::<String>()) {
        let t = Timestamp(millis);
        prop_assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        if let Some(parsed) = Timestamp::parse(&text) {
            prop_assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn plan_ids_round_trip(bytes in any::<[u8; 16]>(), text in any::<String>()) {
        let id = Uuid::from_bytes(bytes);
        prop_assert_eq!(parse_plan_id(&id.to_string()), Some(id));
        prop_assert_eq!(parse_plan_id(&id.to_string().to_uppercase()), Some(id));
        prop_assert_eq!(parse_plan_id(&id.simple().to_string()), None);
        if let Some(parsed) = parse_plan_id(&text) {
            prop_assert_eq!(parsed.to_string(), text.to_lowercase());
        }
    }
}

// ---- federation messages ---------------------------------------------------

/// The inbox parses each message from its text as received (borrowed).
fn parse_message(value: &Value) -> Result<EventMessage, inbox::InboxError> {
    let text = serde_json::to_string(value).expect("serializes");
    let raw = serde_json::value::RawValue::from_string(text).expect("valid JSON");
    inbox::parse_message(&raw)
}

fn event_message() -> impl Strategy<Value = EventMessage> {
    (
        any::<[u8; 16]>(),
        any::<String>(),
        type_name(),
        json_value(),
        any::<i64>(),
        any::<String>(),
        "[A-Za-z0-9+/=]{0,40}",
        prop::option::of(any::<String>()),
    )
        .prop_map(
            |(id, instance, event_type, payload, timestamp, key_id, signature, recipient)| {
                EventMessage {
                    message_id: Uuid::from_bytes(id),
                    instance_id: instance,
                    recipient_id: recipient,
                    event_type,
                    payload,
                    timestamp,
                    key_id,
                    signature,
                }
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn event_messages_round_trip(message in event_message()) {
        let value = serde_json::to_value(&message).expect("serializes");
        prop_assert_eq!(parse_message(&value).expect("parses"), message.clone());
        let text = serde_json::to_string(&message).expect("serializes");
        prop_assert_eq!(serde_json::from_str::<EventMessage>(&text).expect("parses"), message);
        // The signed bytes are the canonical object without `signature`.
        let input = signing_input(&value);
        let signed: Value = serde_json::from_str(&input).expect("canonical JSON parses");
        prop_assert!(signed.get("signature").is_none());
        prop_assert_eq!(canonical_json(&signed), input);
    }

    #[test]
    fn a_message_missing_or_adding_a_member_is_refused(
        message in event_message(),
        drop in any::<prop::sample::Index>(),
        extra in "[a-zA-Z]{1,12}",
    ) {
        let Value::Object(map) = serde_json::to_value(&message).expect("serializes") else {
            unreachable!("a message is an object");
        };
        let mut missing = map.clone();
        let gone = missing.keys().nth(drop.index(map.len())).cloned().expect("a member");
        missing.remove(&gone);
        // `recipientId` alone is optional here (protocol v1); the inbox's
        // recipient check refuses its absence unless v1 is accepted.
        let parsed = parse_message(&Value::Object(missing));
        prop_assert_eq!(parsed.is_ok(), gone == "recipientId", "without {}", gone);
        if !map.contains_key(&extra) {
            let mut added = map;
            added.insert(extra.clone(), json!(1));
            prop_assert!(parse_message(&Value::Object(added)).is_err(), "with {}", extra);
        }
    }

    /// Any JSON at all: the parsers answer, and never panic. What they
    /// accept is an object and a complete message; any other JSON value is
    /// refused (serde alone would fill a message from an array).
    #[test]
    fn any_json_is_parsed_or_refused(value in json_value()) {
        match (parse_message(&value), &value) {
            (Ok(message), Value::Object(_)) => {
                prop_assert_eq!(serde_json::to_value(&message).expect("serializes"), value.clone());
            }
            (Ok(_), _) => prop_assert!(false, "a non-object was parsed as a message: {}", value),
            (Err(_), _) => {}
        }
        if let (Ok(ack), Value::Object(_)) = (serde_json::from_value::<EventAck>(value.clone()), &value) {
            prop_assert_eq!(serde_json::to_value(&ack).expect("serializes"), value.clone());
        }
        let _ = signing_input(&value);
    }

    #[test]
    fn acks_round_trip(
        ids in any::<([u8; 16], [u8; 16])>(),
        instance in any::<String>(),
        recipient in prop::option::of(any::<String>()),
        received in any::<bool>(),
        timestamp in any::<i64>(),
        key_id in any::<String>(),
    ) {
        let ack = EventAck {
            message_id: Uuid::from_bytes(ids.0),
            correlation_id: Uuid::from_bytes(ids.1),
            instance_id: instance,
            recipient_id: recipient,
            received,
            timestamp,
            key_id,
            signature: "c2ln".into(),
        };
        let text = serde_json::to_string(&ack).expect("serializes");
        prop_assert_eq!(serde_json::from_str::<EventAck>(&text).expect("parses"), ack);
    }
}

// ---- over HTTP: the append body and the SSE cursor -------------------------

/// An append body: usually an object with the known members (valid or
/// not), sometimes any JSON at all.
fn append_body() -> impl Strategy<Value = Value> {
    let event_type = prop_oneof![
        prop::sample::select(vec!["step.started", "plan.created", "step.completed"])
            .prop_map(|t| json!(t)),
        type_name().prop_map(|t| json!(t)),
        json_value(),
    ];
    let member = |v: BoxedStrategy<Value>| prop::option::weighted(0.7, v);
    prop_oneof![
        4 => (
            member(event_type.boxed()),
            member(prop_oneof![any::<String>().prop_map(Value::String), json_value()].boxed()),
            member(json_value().boxed()),
            member(prop_oneof![(0u64..3).prop_map(Value::from), json_value()].boxed()),
            prop::option::weighted(0.1, (key(), json_value())),
        )
            .prop_map(|(t, actor, payload, seq, extra)| {
                let mut map = Map::new();
                for (k, v) in [("type", t), ("actor", actor), ("payload", payload), ("expected_seq", seq)] {
                    if let Some(v) = v {
                        map.insert(k.to_string(), v);
                    }
                }
                if let Some((k, v)) = extra {
                    map.insert(k, v);
                }
                Value::Object(map)
            }),
        1 => json_value(),
    ]
}

#[test]
fn append_bodies_get_201_or_a_4xx_problem() {
    let daemon = Daemon::start(DaemonOpts::default());
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let plan = new_plan();
    let mut runner = TestRunner::new(config(96));
    let result = runner.run(&append_body(), |body| {
        rt.block_on(async {
            let before = daemon
                .head(plan)
                .await
                .map_or(0, |h| h["head_seq"].as_u64().unwrap());
            let resp = send(
                daemon
                    .post(&format!("/api/plans/{plan}/events"))
                    .json(&body),
            )
            .await;
            let after = daemon
                .head(plan)
                .await
                .map_or(0, |h| h["head_seq"].as_u64().unwrap());
            if resp.status == 201 {
                prop_assert!(body.is_object(), "a non-object was appended: {}", body);
                prop_assert_eq!(&resp.json["type"], &body["type"]);
                prop_assert_eq!(resp.json["seq"].as_u64(), Some(before + 1));
                prop_assert_eq!(after, before + 1);
            } else {
                prop_assert!(
                    matches!(resp.status, 400 | 409 | 422),
                    "{} for {}: {}",
                    resp.status,
                    body,
                    resp.text
                );
                assert_problem(&resp, resp.status);
                prop_assert_eq!(after, before, "a refused append changed the plan");
                if !body.is_object() {
                    prop_assert_eq!(resp.status, 422, "{}", resp.text);
                }
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Whatever was accepted forms a valid chain.
    rt.block_on(async {
        if daemon.head(plan).await.is_some() {
            common::assert_chain_valid(&daemon, plan).await;
        }
    });
}

#[test]
fn raw_append_bodies_never_get_a_5xx() {
    let daemon = Daemon::start(DaemonOpts::default());
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let plan = new_plan();
    let bytes = prop_oneof![
        any::<Vec<u8>>(),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        // Valid JSON cut short, or with a byte flipped.
        (json_value(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, b)| {
            let mut bytes = v.to_string().into_bytes();
            let at = i.index(bytes.len());
            if b % 2 == 0 {
                bytes.truncate(at)
            } else {
                bytes[at] = b
            }
            bytes
        }),
    ];
    let mut runner = TestRunner::new(config(96));
    let result = runner.run(&bytes, |body| {
        rt.block_on(async {
            let resp = send(
                daemon
                    .post(&format!("/api/plans/{plan}/events"))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
            prop_assert!(
                resp.status < 500,
                "{} for {:?}: {}",
                resp.status,
                String::from_utf8_lossy(&body),
                resp.text
            );
            if resp.status >= 400 {
                assert_problem(&resp, resp.status);
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// What a cursor is: ASCII digits without a leading zero (`0` itself
/// aside), a value that fits in a u64; a header's around optional spaces.
fn cursor_value(text: &str, header: bool) -> Option<u64> {
    let digits = if header {
        text.trim_matches([' ', '\t'])
    } else {
        text
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

#[test]
fn sse_cursors_are_digits_or_refused() {
    let daemon = Daemon::start(DaemonOpts::default());
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let plan = new_plan();
    const HEAD: u64 = 3;
    rt.block_on(async {
        for n in 0..HEAD {
            daemon
                .append_ok(plan, common::event_body("step.started", n))
                .await;
        }
    });
    let text = prop_oneof![
        (0..=HEAD + 2).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[+-]?[0-9]{0,21}",
        "[0-9 \t]{0,8}",
        "[ -~]{0,24}",
    ];
    let mut runner = TestRunner::new(config(96));
    let result = runner.run(&(text, any::<bool>()), |(text, as_header)| {
        rt.block_on(async {
            let path = format!("/api/plans/{plan}/events/stream");
            let request = if as_header {
                daemon.get(&path).header("last-event-id", text.clone())
            } else {
                let query: String = url_encode(&text);
                daemon.get(&format!("{path}?after={query}"))
            };
            let Ok(response) = request.send().await else {
                return Err(TestCaseError::fail(format!("no answer for {text:?}")));
            };
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            // Dropping the response closes an accepted stream.
            drop(response);
            let expected = cursor_value(&text, as_header);
            match expected {
                Some(n) if n <= HEAD => prop_assert_eq!(status, 200, "{:?}", text),
                Some(_) => prop_assert_eq!(status, 409, "{:?}", text),
                None => prop_assert_eq!(status, 400, "{:?}", text),
            }
            if status != 200 {
                prop_assert_eq!(content_type, "application/problem+json");
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Percent-encodes every byte that is not unreserved.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
