//! Limits on what a known peer may send: a control request carries exactly
//! `{"eventType": pattern}` and is charged to the byte rate limit, and a
//! batch larger than the message burst is charged in full.

mod federation_common;

use federation_common::*;
use logbook::federation::message::EventMessage;
use serde_json::{Value, json};
use uuid::Uuid;

const EVENT: &str = "/api/v1/federation/incoming/event";
const SUBSCRIBE: &str = "/api/v1/federation/incoming/subscribe";
const UNSUBSCRIBE: &str = "/api/v1/federation/incoming/unsubscribe";

/// A message from mallory to beta, signed with mallory's test key.
fn signed(event_type: &str, payload: Value) -> EventMessage {
    let key = test_key("mallory");
    EventMessage::signed(
        &key,
        &key_id(&key),
        "mallory",
        "beta",
        Uuid::new_v4(),
        event_type,
        payload,
        now_ms(),
    )
    .unwrap()
}

fn beta(federation: &str) -> Node {
    Node::start(
        "beta",
        free_port(),
        federation,
        &peer_config("mallory", free_port(), &test_key("mallory")),
    )
}

async fn post(node: &Node, path: &str, body: &Value) -> (u16, Option<u64>, Value) {
    let response = node.http.post(node.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_request_carries_only_its_pattern() {
    let beta = beta("");
    for (path, event_type) in [
        (SUBSCRIBE, "federation.subscribe"),
        (UNSUBSCRIBE, "federation.unsubscribe"),
    ] {
        let extra = signed(event_type, json!({"eventType": "audit.>", "note": "x"}));
        let (status, _, body) = post(&beta, path, &json!(extra)).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["type"], "urn:logbook:problem:invalid-payload");
        let not_object = signed(event_type, json!(["audit.>"]));
        let (status, _, body) = post(&beta, path, &json!(not_object)).await;
        assert_eq!(status, 422, "{path}: {body}");
    }
    let good = signed("federation.subscribe", json!({"eventType": "audit.>"}));
    let (status, _, body) = post(&beta, SUBSCRIBE, &json!(good)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_requests_are_charged_to_the_byte_limit() {
    // About 25 bytes a request, 40 bytes of burst, 1 byte/s: the second
    // request is over the byte limit (the message limit is far away).
    let beta = beta("peer_bytes_per_sec = 1\npeer_bytes_burst = 40");
    let first = signed("federation.subscribe", json!({"eventType": "audit.a"}));
    let (status, _, body) = post(&beta, SUBSCRIBE, &json!(first)).await;
    assert_eq!(status, 200, "{body}");
    let second = signed("federation.subscribe", json!({"eventType": "audit.b"}));
    let (status, retry_after, body) = post(&beta, SUBSCRIBE, &json!(second)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["title"], "Too many bytes", "{body}");
    assert!(retry_after.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_the_burst_is_charged_in_full() {
    let beta = beta("rate_limit_per_sec = 1\nrate_limit_burst = 2");
    let batch: Vec<EventMessage> = (0..8)
        .map(|n| signed("audit.note", json!({"n": n})))
        .collect();
    // A full bucket lets it through...
    let (status, _, body) = post(&beta, EVENT, &json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    // ...but it cost 8, not 2: the next message waits for the debt.
    let next = signed("audit.note", json!({"n": 8}));
    let (status, retry_after, body) = post(&beta, EVENT, &json!(next)).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.unwrap() >= 4, "{retry_after:?}: {body}");
}
