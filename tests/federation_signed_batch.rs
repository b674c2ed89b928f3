//! Signed batches on the receiving side: one signature over the digests of
//! every message, one signed ack for all. A batch whose message was changed
//! after signing, whose manifest was re-signed by another key, or that is
//! addressed to another instance, is refused whole and stores nothing.
//! Every spelling of a message (canonical, taken as it came, or not) is
//! stored as the same content.

mod federation_common;

use federation_common::*;
use logbook_federation::batch::{self, BatchAck, Item};
use logbook_federation::message::verify_value;
use serde_json::{Value, json};
use uuid::Uuid;

const EVENT: &str = "/api/v1/federation/incoming/event";

fn receiver() -> Node {
    Node::start(
        "beta",
        free_port(),
        "",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    )
}

fn signed_batch(key_name: &str, recipient: &str, ids: &[Uuid]) -> Value {
    let key = test_key(key_name);
    let items = ids
        .iter()
        .enumerate()
        .map(|(n, id)| Item {
            message_id: *id,
            event_type: "audit.note",
            payload: json!({"n": n}).to_string().into(),
        })
        .collect();
    let (body, _) =
        batch::sign(&key, &key_id(&key), "mallory", recipient, items, now_ms()).unwrap();
    serde_json::from_str(&body).unwrap()
}

async fn stored(node: &Node) -> usize {
    node.messages("direction=inbound").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_batch_is_verified_whole_and_acked_once() {
    let beta = receiver();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();

    // A message changed after signing no longer matches its digest.
    let mut tampered = signed_batch("mallory", "beta", &ids);
    tampered["messages"][1]["payload"]["n"] = json!(7);
    let (status, body) = beta.post(EVENT, &tampered).await;
    assert_eq!(status, 401, "{body}");
    // A manifest signed by another key than the pinned one.
    let (status, body) = beta.post(EVENT, &signed_batch("beta", "beta", &ids)).await;
    assert_eq!(status, 401, "{body}");
    // Addressed to another instance.
    let (status, body) = beta
        .post(EVENT, &signed_batch("mallory", "gamma", &ids))
        .await;
    assert_eq!(status, 401, "{body}");
    // A message that names another timestamp than its manifest.
    let mut skewed = signed_batch("mallory", "beta", &ids);
    skewed["messages"][0]["timestamp"] = json!(1);
    let (status, body) = beta.post(EVENT, &skewed).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(stored(&beta).await, 0, "a refused batch stores nothing");

    // The intact batch is stored, and one ack signed by beta lists every id.
    let good = signed_batch("mallory", "beta", &ids);
    let (status, answer) = beta.post(EVENT, &good).await;
    assert_eq!(status, 200, "{answer}");
    assert!(verify_value(&answer, &test_key("beta").to_public_key()));
    let ack: BatchAck = serde_json::from_value(answer).unwrap();
    assert_eq!(ack.correlation_id.to_string(), good["batch"]["batchId"]);
    assert_eq!((ack.recipient_id.as_str(), ack.received), ("mallory", true));
    assert_eq!(ack.messages, ids);
    assert_eq!(stored(&beta).await, 3);

    // Each message stays verifiable alone with the manifest.
    let manifest = &good["batch"];
    assert!(verify_value(manifest, &test_key("mallory").to_public_key()));
    for (i, m) in good["messages"].as_array().unwrap().iter().enumerate() {
        assert_eq!(manifest["messages"][i], json!(batch::digest(m)));
    }

    // A redelivery in a new batch is acked again and stored once.
    let (status, answer) = beta
        .post(EVENT, &signed_batch("mallory", "beta", &ids))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stored(&beta).await, 3);
}

/// A signed batch of `messages` (their texts as given) from mallory to
/// beta, each listed by the digest of its parsed value (the reference
/// rule: RFC 8785 of the message), the manifest signed by mallory.
fn batch_of_texts(messages: &[String]) -> String {
    let key = test_key("mallory");
    let mut manifest = batch::Manifest {
        batch_id: Uuid::new_v4(),
        instance_id: "mallory".into(),
        recipient_id: "beta".into(),
        timestamp: TIMESTAMP.with(|t| *t),
        key_id: key_id(&key),
        messages: messages
            .iter()
            .map(|m| batch::digest(&serde_json::from_str(m).unwrap()))
            .collect(),
        signature: String::new(),
    };
    let input =
        logbook_federation::message::signing_input(&serde_json::to_value(&manifest).unwrap());
    manifest.signature = logbook_federation::message::sign_bytes(&key, input.as_bytes()).unwrap();
    format!(
        r#"{{"batch":{},"messages":[{}]}}"#,
        serde_json::to_string(&manifest).unwrap(),
        messages.join(",")
    )
}

thread_local! {
    /// One timestamp for a test's batches: every message must carry its manifest's.
    static TIMESTAMP: i64 = now_ms();
}

/// A batch message's text, members in JCS order around `payload` as given.
fn message_text(id: Uuid, payload: &str) -> String {
    format!(
        r#"{{"eventType":"audit.note","instanceId":"mallory","keyId":"{}","messageId":"{id}","payload":{payload},"recipientId":"beta","timestamp":{}}}"#,
        key_id(&test_key("mallory")),
        TIMESTAMP.with(|t| *t),
    )
}

/// The receiver keeps a canonical message's payload as it came and
/// canonicalizes any other: the two must store the same content, so a
/// message first received in one spelling is a redelivery (acked, stored
/// once) in the other, either way round; payloads the plain scan declines
/// (escapes, 16 digits, depth) and spellings one detail away from canonical
/// are stored as their canonical form; what the old receiver refused is
/// refused with the same problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_message_is_stored_as_the_same_content() {
    let beta = receiver();
    // (canonical spelling, another spelling of the same value)
    let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
    let pairs = [
        (r#"{"a":"é"}"#, r#"{"a":"\u00e9"}"#),
        (r#"{"a":"/"}"#, r#"{"a":"\/"}"#),
        (r#"{"n":1}"#, r#"{"n":1.0}"#),
        (r#"{"n":100}"#, r#"{"n":1e2}"#),
        (r#"{"n":0}"#, r#"{"n":-0}"#),
        (r#"{"a":2,"b":1}"#, r#"{"b":1,"a":2}"#),
        (r#"{"a":"\n"}"#, r#"{"a":"\u000a"}"#),
        (r#"{"n":1234567890123456}"#, r#"{"n":1234567890123456.0}"#),
        (r#"{"n":1e+21}"#, r#"{"n":1e21}"#),
        (r#"{"x":"😀"}"#, r#"{"x":"\ud83d\ude00"}"#),
        (deep.as_str(), &format!("[ {}", &deep[1..])),
    ];
    let mut count = 0;
    for (canonical, other) in pairs {
        assert_eq!(
            logbook_base::canonical::canonical_json(&serde_json::from_str(other).unwrap()),
            canonical
        );
        for (first, second) in [(canonical, other), (other, canonical)] {
            let id = Uuid::new_v4();
            let (status, body) = beta
                .post_text(EVENT, &batch_of_texts(&[message_text(id, first)]))
                .await;
            assert_eq!(status, 200, "{first}: {body}");
            count += 1;
            let (status, body) = beta
                .post_text(EVENT, &batch_of_texts(&[message_text(id, second)]))
                .await;
            assert_eq!(status, 200, "{second} after {first}: {body}");
            let inbound = beta.messages("direction=inbound").await;
            assert_eq!(inbound.len(), count, "{second} after {first}: stored once");
            let value: Value = serde_json::from_str(canonical).unwrap();
            assert!(inbound.iter().any(|m| m["payload"] == value));
        }
    }
    // Whitespace around a message's members, and members out of order.
    let id = Uuid::new_v4();
    let spaced = message_text(id, r#"{"a":1}"#).replacen(",\"payload\":", " , \"payload\" : ", 1);
    let (status, body) = beta.post_text(EVENT, &batch_of_texts(&[spaced])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = beta
        .post_text(EVENT, &batch_of_texts(&[message_text(id, r#"{"a":1}"#)]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored(&beta).await, count + 1);

    // Refused as before: an integer beyond 2^53 - 1, canonical or not (at
    // the edge), and a canonical message with a bad type (in the inbox,
    // after the fast path took its payload).
    let bad_type = message_text(Uuid::new_v4(), r#"{"a":1}"#).replace("audit.note", "Audit");
    let cases = [
        (
            message_text(Uuid::new_v4(), r#"{"n":9007199254740992}"#),
            "unsafe-integer",
        ),
        (
            message_text(Uuid::new_v4(), r#"{"n":9007199254740993}"#),
            "unsafe-integer",
        ),
        (bad_type, "invalid-type"),
    ];
    for (text, kind) in cases {
        let good = message_text(Uuid::new_v4(), "{}");
        let (status, body) = beta.post_text(EVENT, &batch_of_texts(&[good, text])).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["type"].as_str().unwrap().ends_with(kind), "{body}");
    }
    assert_eq!(
        stored(&beta).await,
        count + 1,
        "a refused batch stores nothing"
    );
}
