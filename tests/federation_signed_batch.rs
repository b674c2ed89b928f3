//! Signed batches on the receiving side: one signature over the digests of
//! every message, one signed ack for all. A batch whose message was changed
//! after signing, whose manifest was re-signed by another key, or that is
//! addressed to another instance, is refused whole and stores nothing.

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
