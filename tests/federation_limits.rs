//! Limits on what a known peer may send: a control request carries exactly
//! `{"eventType": pattern}` and is charged to the byte rate limit, and a
//! batch larger than the message burst is charged in full.

mod federation_common;

use federation_common::*;
use logbook_federation::message::EventMessage;
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
    let response = node
        .http
        .post(node.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
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

/// Opens a connection from `source` (any 127/8 address works on loopback)
/// and sends the head of a POST announcing a body it never sends.
async fn trickler(source: &str, node: &Node) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket
        .connect(format!("127.0.0.1:{}", node.port).parse().unwrap())
        .await
        .unwrap();
    let head = format!(
        "POST {EVENT} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n[",
        node.port
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    stream
}

/// The status code of the answer on `stream`, or None if it closed first.
async fn status_of(stream: &mut tokio::net::TcpStream) -> Option<u16> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_trickling_bodies_cannot_block_the_peers() {
    // Four permits; the request timeout is long, so only the intake's own
    // body deadline ends the trickle in time.
    let beta = beta("incoming_concurrency = 4\nrequest_timeout_secs = 90");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(trickler("127.0.0.2", &beta).await);
    }
    // Once the attacker holds what it can, a further request of its own is
    // refused at once (before the fix: because every permit was taken).
    let mut refused = None;
    for _ in 0..60 {
        let mut probe = trickler("127.0.0.2", &beta).await;
        let status = tokio::time::timeout(std::time::Duration::from_secs(2), status_of(&mut probe))
            .await
            .ok()
            .flatten();
        if status.is_some() {
            refused = status;
            break;
        }
        held.push(probe);
    }
    assert_eq!(refused, Some(503), "the attacker is capped");
    // A real peer, from another address, still gets through.
    let message = signed("audit.note", json!({"n": 1}));
    let (status, _, body) = post(&beta, EVENT, &json!(message)).await;
    assert_eq!(status, 200, "{body}");
    // A trickled body gets 408 after the intake's deadline (10 s), long
    // before the 90 s request timeout.
    let started = std::time::Instant::now();
    let mut timed_out = false;
    for stream in &mut held {
        if let Ok(Some(status)) =
            tokio::time::timeout(std::time::Duration::from_secs(60), status_of(stream)).await
            && status == 408
        {
            timed_out = true;
            break;
        }
    }
    assert!(timed_out, "a trickling body is cut off with 408");
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_verified_message_by_message_before_it_is_built() {
    let beta = beta("");
    // The first message's signature is wrong; the second is not even a
    // whole message. The signature is checked before any message is
    // built, and the first failure ends the batch: 401, not 400.
    let mut forged = json!(signed("audit.note", json!({"n": 1})));
    forged["payload"] = json!({"n": 2});
    let partial = json!({"instanceId": "mallory", "keyId": "k"});
    let (status, _, body) = post(&beta, EVENT, &json!([forged, partial])).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:bad-signature", "{body}");
    // After a good message, a partial one is still refused as malformed,
    // and the whole batch with it.
    let good = json!(signed("audit.note", json!({"n": 3})));
    let (status, _, body) = post(&beta, EVENT, &json!([good, partial])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["type"], "urn:logbook:problem:invalid-message",
        "{body}"
    );
    assert!(beta.messages("direction=inbound").await.is_empty());
}
