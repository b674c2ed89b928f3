//! Federation under attack and at the edges: replayed control requests,
//! acks that must not mark anything delivered, a message the peer refuses
//! inside a batch, journal events at the size limits, and peers that do not
//! speak our protocol version.

mod federation_common;

use std::io::{Read, Write};
use std::time::Duration;

use federation_common::*;
use logbook_federation::message::{EventAck, EventMessage, sign_bytes, signing_input};
use serde_json::{Value, json};
use uuid::Uuid;

const EVENT: &str = "/api/v1/federation/incoming/event";
const ACK: &str = "/api/v1/federation/incoming/event/ack";
const SUBSCRIBE: &str = "/api/v1/federation/incoming/subscribe";
const UNSUBSCRIBE: &str = "/api/v1/federation/incoming/unsubscribe";
const WAIT: Duration = Duration::from_secs(60);

/// A message from `from`, signed with the test key named `from`.
fn signed(from: &str, id: Uuid, event_type: &str, payload: Value) -> EventMessage {
    let key = test_key(from);
    EventMessage::signed(
        &key,
        &key_id(&key),
        from,
        "beta",
        id,
        event_type,
        payload,
        now_ms(),
    )
    .unwrap()
}

fn control(event_type: &str, pattern: &str) -> EventMessage {
    signed(
        "mallory",
        Uuid::new_v4(),
        event_type,
        json!({"eventType": pattern}),
    )
}

/// The patterns peers subscribed to on `node`.
async fn inbound_subscriptions(node: &Node) -> Vec<String> {
    let (status, body) = node.get("/api/v1/federation/events/subscriptions").await;
    assert_eq!(status, 200, "{body}");
    body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["direction"] == "inbound")
        .map(|s| {
            format!(
                "{}:{}",
                s["peer"].as_str().unwrap(),
                s["eventType"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_control_request_is_acknowledged_but_changes_nothing() {
    let beta = Node::start(
        "beta",
        free_port(),
        "",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    let subscribe = control("federation.subscribe", "audit.>");
    let (status, ack) = beta.post(SUBSCRIBE, &json!(subscribe)).await;
    assert_eq!(status, 200, "{ack}");
    let unsubscribe = control("federation.unsubscribe", "audit.>");
    let (status, ack) = beta.post(UNSUBSCRIBE, &json!(unsubscribe)).await;
    assert_eq!(status, 200, "{ack}");
    assert!(inbound_subscriptions(&beta).await.is_empty());
    let (status, ack) = beta
        .post(
            SUBSCRIBE,
            &json!(control("federation.subscribe", "audit.>")),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(inbound_subscriptions(&beta).await, ["mallory:audit.>"]);

    // Someone who captured the old unsubscribe replays it within the window:
    // it is acknowledged again, but must not end the newer subscription.
    let (status, ack) = beta.post(UNSUBSCRIBE, &json!(unsubscribe)).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["correlationId"], unsubscribe.message_id.to_string());
    assert_eq!(inbound_subscriptions(&beta).await, ["mallory:audit.>"]);

    // Its id reused for another request, or for an event, is refused.
    let reused = signed(
        "mallory",
        unsubscribe.message_id,
        "federation.unsubscribe",
        json!({"eventType": "audit.*"}),
    );
    let (status, body) = beta.post(UNSUBSCRIBE, &json!(reused)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:message-id-reused");
    let as_event = signed("mallory", subscribe.message_id, "audit.note", json!({}));
    let (status, body) = beta.post(EVENT, &json!(as_event)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(inbound_subscriptions(&beta).await, ["mallory:audit.>"]);
    // Control requests are not listed as received events.
    assert!(beta.messages("direction=inbound").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_requests_are_rate_limited() {
    let beta = Node::start(
        "beta",
        free_port(),
        "rate_limit_per_sec = 1\nrate_limit_burst = 2",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    let mut limited = None;
    for n in 0..6 {
        let request = control("federation.subscribe", &format!("audit.n{n}"));
        let response = beta
            .http
            .post(beta.url(SUBSCRIBE))
            .json(&request)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = limited.expect("a peer sending subscribe requests fast is rate-limited");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

/// `ack` re-signed with `key_name`'s key after its fields were changed.
fn resigned(mut ack: EventAck, key_name: &str) -> Value {
    ack.signature = String::new();
    let value = serde_json::to_value(&ack).unwrap();
    ack.signature = sign_bytes(&test_key(key_name), signing_input(&value).as_bytes()).unwrap();
    serde_json::to_value(ack).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_valid_positive_ack_from_the_recipient_marks_delivered() {
    // mallory's base URL has nobody listening: beta's worker never delivers.
    let peers = format!(
        "{}{}",
        peer_config("mallory", free_port(), &test_key("mallory")),
        peer_config("alpha", free_port(), &test_key("alpha"))
    );
    let beta = Node::start("beta", free_port(), "", &peers);
    let (status, body) = beta
        .post(
            SUBSCRIBE,
            &json!(control("federation.subscribe", "audit.>")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = beta
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "audit.note", "payload": {"k": 1}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id: Uuid = body["messages"][0]["messageId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let status_of = || async {
        let out = beta.messages("direction=outbound&peer=mallory").await;
        out[0]["status"].as_str().unwrap().to_string()
    };
    let ack_by = |who: &str| {
        let key = test_key(who);
        EventAck::signed(&key, &key_id(&key), who, Some("beta"), id, now_ms()).unwrap()
    };
    let good = json!(ack_by("mallory"));

    // A batch with one bad ack is refused whole: the good one marks nothing.
    let mut forged = json!(ack_by("mallory"));
    forged["signature"] = json!(ack_by("alpha").signature);
    let (status, body) = beta.post(ACK, &json!([good, forged])).await;
    assert_eq!(status, 401, "{body}");
    assert_ne!(status_of().await, "delivered");

    // An ack saying the message was not received.
    let mut negative = ack_by("mallory");
    negative.received = false;
    let (status, body) = beta.post(ACK, &resigned(negative, "mallory")).await;
    assert_eq!((status, &body["acknowledged"]), (200, &json!(0)), "{body}");
    assert_ne!(status_of().await, "delivered");

    // A valid ack from another peer for a message sent to mallory.
    let (status, body) = beta.post(ACK, &json!(ack_by("alpha"))).await;
    assert_eq!((status, &body["acknowledged"]), (200, &json!(0)), "{body}");
    assert_ne!(status_of().await, "delivered");

    // An ack claiming to be mallory's but signed by alpha.
    let mut claimed = ack_by("mallory");
    claimed.key_id = key_id(&test_key("alpha"));
    let (status, _) = beta.post(ACK, &resigned(claimed, "alpha")).await;
    assert_eq!(status, 401);
    assert_ne!(status_of().await, "delivered");

    let (status, body) = beta.post(ACK, &good).await;
    assert_eq!((status, &body["acknowledged"]), (200, &json!(1)), "{body}");
    assert_eq!(status_of().await, "delivered");
}

/// Two daemons that know each other through `[[peers]]`.
fn pair(alpha_conf: &str, beta_conf: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, alpha_conf, &peer_config("beta", pb, &kb));
    let beta = Node::start("beta", pb, beta_conf, &peer_config("alpha", pa, &ka));
    (alpha, beta)
}

async fn subscribe(node: &Node, peer: &str, pattern: &str) {
    let (status, body) = node
        .post(
            "/api/v1/federation/events/subscribe",
            &json!({"peer": peer, "eventType": pattern}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// `[[[…1…]]]`, `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_peer_refuses_does_not_take_its_batch_mates_down() {
    // beta refuses anything nested deeper than its limit; alpha accepts it.
    // Retries every second or so: beta has ~7 s to come back before the
    // first message could go dead while it is away.
    let (alpha, mut beta) = pair(
        "max_attempts = 8\nretry_initial_ms = 1000\nretry_max_secs = 1",
        "max_json_depth = 8",
    );
    subscribe(&beta, "alpha", "audit.>").await;
    // Queued while beta is away, the five go out as one batch when it is back.
    beta.stop();
    let publish = |payload: Value| {
        let alpha = &alpha;
        async move {
            let (status, body) = alpha
                .post(
                    "/api/v1/federation/events/publish",
                    &json!({"eventType": "audit.note", "payload": payload}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
    };
    for n in 1..=5 {
        let payload = if n == 3 {
            json!({"n": n, "poison": nested(20)})
        } else {
            json!({"n": n})
        };
        publish(payload).await;
    }
    beta.restart();
    let out = wait_for("every message delivered or dead", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        out.iter()
            .all(|m| m["status"] == "delivered" || m["status"] == "dead")
            .then_some(out)
    })
    .await;
    let statuses: Vec<&str> = out.iter().map(|m| m["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["delivered", "delivered", "dead", "delivered", "delivered"],
        "{out:#?}"
    );
    let got: Vec<Value> = beta
        .messages("direction=inbound")
        .await
        .iter()
        .map(|m| m["payload"]["n"].clone())
        .collect();
    assert_eq!(got, [json!(1), json!(2), json!(4), json!(5)], "in order");

    // Every request counts as an attempt at each message in it, the refused
    // batches too (those are not recorded on the messages themselves, so
    // they can be told apart): at least one batch with message 3 and a later
    // one was refused before they were sent one by one.
    let metrics = delivery_metrics(&alpha, "beta").await;
    let stored: u64 = out.iter().map(|m| m["attempts"].as_u64().unwrap()).sum();
    let attempts = metrics["logbook_federation_delivery_attempts_total"] as u64;
    let failures = metrics["logbook_federation_delivery_failures_total"] as u64;
    assert!(
        attempts >= stored + 2,
        "{metrics:?}, {stored} recorded attempts"
    );
    assert_eq!(attempts - failures, 4, "four deliveries: {metrics:?}");
    assert_eq!(metrics["logbook_federation_dead_letters_total"], 1.0);
}

/// `node`'s `logbook_federation_*` samples for `peer`, by metric name.
async fn delivery_metrics(node: &Node, peer: &str) -> std::collections::HashMap<String, f64> {
    let response = node.http.get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let label = format!("{{peer=\"{peer}\"}} ");
    response
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("logbook_federation_"))
        .filter_map(|l| l.split_once(&label))
        .map(|(name, value)| (name.to_string(), value.trim().parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_event_at_the_depth_limit_is_delivered() {
    let (alpha, beta) = pair("", "");
    subscribe(&beta, "alpha", "step.>").await;
    // The deepest payload the journal accepts (the body adds one level).
    let plan = "0192f3a4-5b6c-7d8e-9f00-0000000000d1";
    let payload = nested(31);
    let (status, event) = alpha
        .post(
            &format!("/api/plans/{plan}/events"),
            &json!({"type": "step.completed", "payload": payload}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let out = wait_for("a delivery attempt", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        out.first()
            .filter(|m| m["status"] == "delivered" || m["attempts"].as_u64() > Some(0))
            .cloned()
    })
    .await;
    assert_eq!(out["status"], "delivered", "{out}");
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound[0]["payload"], event);
}

/// Serves one fixed identity document to whoever connects, on a thread.
fn fake_instance(doc: Value) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = doc.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_another_protocol_version_is_not_pinned() {
    let key = test_key("mallory");
    let doc = |version: &str| {
        json!({
            "instanceId": "mallory",
            "name": "mallory",
            "publicKey": public_pem(&key),
            "keyId": key_id(&key),
            "fingerprint": key_fingerprint(&key),
            "protocolVersion": version,
            "capabilities": ["events"],
        })
    };
    let beta = Node::start("beta", free_port(), "", "");
    let path = "/api/v1/federation/peers";
    for version in ["logbook-federation/3", "logbook-federation/1"] {
        let port = fake_instance(doc(version));
        let (status, body) = beta
            .post(
                path,
                &json!({"instanceId": "mallory", "baseUrl": format!("http://127.0.0.1:{port}"), "fingerprint": key_fingerprint(&key)}),
            )
            .await;
        assert_eq!(status, 502, "{body}");
        // Why goes to the log only (adding a peer is not a probe).
        assert!(!body.to_string().contains(version), "{body}");
        let log = beta.log();
        assert!(
            log.contains("could not pin the peer's key") && log.contains(version),
            "{log}"
        );
        assert_eq!(beta.get(path).await.1["peers"], json!([]));
    }

    let port = fake_instance(doc("logbook-federation/2"));
    let (status, body) = beta
        .post(
            path,
            &json!({"instanceId": "mallory", "baseUrl": format!("http://127.0.0.1:{port}"), "fingerprint": key_fingerprint(&key)}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A failed pin answers a generic problem: no "connection refused", no
/// remote error text, nothing that would make `POST /peers` a network
/// probe. The details go to the log, with the peer's id and URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pin_tells_the_caller_nothing_about_the_network() {
    let beta = Node::start("beta", free_port(), "", "");
    let closed = free_port();
    let url = format!("http://127.0.0.1:{closed}");
    let (status, body) = beta
        .post(
            "/api/v1/federation/peers",
            &json!({"instanceId": "ghost", "baseUrl": url, "fingerprint": "ab".repeat(32)}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:pin-failed");
    let text = body.to_string().to_lowercase();
    for leak in [
        "refused",
        "connect",
        "error sending",
        &closed.to_string(),
        "127.0.0.1",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {body}");
    }
    // A peer that answers with an error: its text is not relayed either.
    let port = fake_instance(json!({"instanceId": "someone-else", "detail": "secret internals"}));
    let (status, body) = beta
        .post(
            "/api/v1/federation/peers",
            &json!({"instanceId": "ghost2", "baseUrl": format!("http://127.0.0.1:{port}"), "fingerprint": "ab".repeat(32)}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.to_string().contains("someone-else"), "{body}");
    let log = beta.log();
    assert!(
        log.lines()
            .any(|l| l.contains("could not pin the peer's key")
                && l.contains("ghost")
                && l.contains(&url)),
        "{log}"
    );
    assert!(log.contains("someone-else"), "{log}");
}
