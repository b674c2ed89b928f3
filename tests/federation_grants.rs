//! Least privilege between peers, and messages bound to their recipient:
//! a peer subscribes only to what the local admin granted it, never
//! receives the system journal, holds a bounded number of subscriptions,
//! and a signed message captured on its way to one instance is refused by
//! another that trusts the same sender.

mod federation_common;

use std::process::Command;
use std::time::Duration;

use federation_common::*;
use logbook_federation::message::{EventAck, EventMessage, sign_bytes, signing_input};
use serde_json::{Value, json};
use uuid::Uuid;

const SUBSCRIBE: &str = "/api/v1/federation/incoming/subscribe";
const UNSUBSCRIBE: &str = "/api/v1/federation/incoming/unsubscribe";
const WAIT: Duration = Duration::from_secs(60);
const SYSTEM_PLAN: &str = "00000000-0000-0000-0000-000000000000";

/// A subscribe request from mallory (test key) for `recipient`.
fn subscribe_request(recipient: &str, pattern: &str) -> EventMessage {
    let key = test_key("mallory");
    EventMessage::signed(
        &key,
        &key_id(&key),
        "mallory",
        recipient,
        Uuid::new_v4(),
        "federation.subscribe",
        json!({"eventType": pattern}),
        now_ms(),
    )
    .unwrap()
}

/// `logbook admin …` against `node`'s admin socket; returns the JSON answer.
fn admin(node: &Node, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .arg("admin")
        .arg("--socket")
        .arg(node.data_dir().join("admin.sock"))
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The inbound subscriptions on `node`, as "peer:pattern".
async fn inbound(node: &Node) -> Vec<String> {
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

async fn metrics(node: &Node) -> String {
    node.http
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_subscribes_only_to_what_the_admin_granted() {
    let beta = Node::start(
        "beta",
        free_port(),
        "",
        &peer_config_allowing("mallory", free_port(), &test_key("mallory"), &[]),
    );
    // Nothing granted: refused, recorded, and nothing stored.
    let response = beta
        .http
        .post(beta.url(SUBSCRIBE))
        .json(&subscribe_request("beta", "step.>"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:logbook:problem:subscription-not-allowed");
    assert!(inbound(&beta).await.is_empty());
    assert!(
        beta.log()
            .contains("refused a peer's subscription: not granted")
    );
    assert!(
        metrics(&beta).await.contains(
            r#"logbook_federation_subscriptions_refused_total{peer="mallory",reason="not_granted"} 1"#
        ),
        "{}",
        metrics(&beta).await
    );

    // The admin grants step.>: what it covers is accepted, wider is not.
    let granted = admin(&beta, &["peers", "allow", "mallory", "step.>"]);
    assert_eq!(granted["allow"], json!(["step.>"]));
    for pattern in ["step.*", "step.completed", "step.>"] {
        let (status, ack) = beta
            .post(SUBSCRIBE, &json!(subscribe_request("beta", pattern)))
            .await;
        assert_eq!(status, 200, "{pattern}: {ack}");
    }
    for pattern in [">", "*.completed", "plan.created"] {
        let (status, body) = beta
            .post(SUBSCRIBE, &json!(subscribe_request("beta", pattern)))
            .await;
        assert_eq!(status, 403, "{pattern}: {body}");
    }
    let mut subs = inbound(&beta).await;
    subs.sort();
    assert_eq!(
        subs,
        ["mallory:step.*", "mallory:step.>", "mallory:step.completed"]
    );
    // The listing shows the grants; taking them back is recorded too.
    let (_, peers) = beta.get("/api/v1/federation/peers").await;
    assert_eq!(peers["peers"][0]["allow"], json!(["step.>"]));
    let revoked = admin(&beta, &["peers", "disallow", "mallory", "step.>"]);
    assert_eq!(revoked["allow"], json!([]));
    let (status, _) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "step.failed")))
        .await;
    assert_eq!(status, 403);

    // Removed, then added again (here with another key under the same id):
    // a new peer, granted nothing, with none of the old subscriptions.
    // What was queued for it (it never answers) must not go to the new
    // holder of its id either.
    admin(&beta, &["peers", "allow", "mallory", ">"]);
    assert_eq!(inbound(&beta).await.len(), 3);
    let (status, body) = beta
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "step.completed", "payload": {"for": "the old mallory"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let queued = || async {
        let (_, body) = beta
            .get("/api/v1/federation/events/messages?direction=outbound&peer=mallory")
            .await;
        body["messages"].as_array().unwrap().len()
    };
    assert_eq!(queued().await, 1);
    admin(&beta, &["peers", "remove", "mallory"]);
    let (status, body) = beta
        .post(
            "/api/v1/federation/peers",
            &json!({
                "instanceId": "mallory",
                "baseUrl": "http://127.0.0.1:9",
                "publicKey": public_pem(&test_key("mallory-2")),
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "active", "{body}");
    assert_eq!(body["allow"], json!([]), "{body}");
    assert!(inbound(&beta).await.is_empty());
    assert_eq!(queued().await, 0, "the old life's queue was dropped");
    let (status, _) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "step.>")))
        .await;
    assert_eq!(status, 401, "the old key is no longer pinned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_peer_are_capped() {
    let beta = Node::start(
        "beta",
        free_port(),
        "max_subscriptions_per_peer = 2",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    for pattern in ["audit.a", "audit.b"] {
        let (status, ack) = beta
            .post(SUBSCRIBE, &json!(subscribe_request("beta", pattern)))
            .await;
        assert_eq!(status, 200, "{ack}");
    }
    let (status, body) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "audit.c")))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:subscription-limit");
    // One it already holds is fine (idempotent); after an unsubscribe there is room.
    let (status, _) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "audit.a")))
        .await;
    assert_eq!(status, 200);
    let key = test_key("mallory");
    let unsubscribe = EventMessage::signed(
        &key,
        &key_id(&key),
        "mallory",
        "beta",
        Uuid::new_v4(),
        "federation.unsubscribe",
        json!({"eventType": "audit.b"}),
        now_ms(),
    )
    .unwrap();
    let (status, _) = beta.post(UNSUBSCRIBE, &json!(unsubscribe)).await;
    assert_eq!(status, 200);
    let (status, _) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "audit.c")))
        .await;
    assert_eq!(status, 200);
    let mut subs = inbound(&beta).await;
    subs.sort();
    assert_eq!(subs, ["mallory:audit.a", "mallory:audit.c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_journal_never_reaches_a_peer_subscribed_to_everything() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, "", &peer_config("beta", pb, &kb));
    let beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    beta.subscribe("alpha", ">").await;
    // A system event on alpha (the grant change is recorded there), then a
    // plan event.
    admin(&alpha, &["peers", "allow", "beta", "audit.>"]);
    let plan = Uuid::new_v4();
    let (status, body) = alpha
        .post(
            &format!("/api/plans/{plan}/events"),
            &json!({"type": "step.completed", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let received = wait_for("the plan event at beta", WAIT, || async {
        let got = beta.messages("direction=inbound").await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    // Outbox rows are queued in the append's own transaction, so a system
    // event would be queued (and sent first) by now.
    let sent = alpha.messages("direction=outbound").await;
    for m in sent.iter().chain(&received) {
        assert_ne!(m["payload"]["plan_id"], SYSTEM_PLAN, "{m}");
        assert!(
            !m["eventType"].as_str().unwrap().starts_with("system."),
            "{m}"
        );
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(received[0]["payload"]["plan_id"], plan.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_replayed_to_a_third_instance_gets_401() {
    let mallory = || peer_config("mallory", free_port(), &test_key("mallory"));
    let beta = Node::start("beta", free_port(), "", &mallory());
    let gamma = Node::start("gamma", free_port(), "", &mallory());
    let request = subscribe_request("beta", "audit.>");
    let (status, ack) = beta.post(SUBSCRIBE, &json!(request)).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["recipientId"], "mallory");
    // gamma trusts mallory too, but the message names beta.
    let (status, body) = gamma.post(SUBSCRIBE, &json!(request)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:wrong-recipient");
    assert!(inbound(&gamma).await.is_empty());
    // An event captured for beta is refused the same way.
    let key = test_key("mallory");
    let event = EventMessage::signed(
        &key,
        &key_id(&key),
        "mallory",
        "beta",
        Uuid::new_v4(),
        "audit.note",
        json!({"n": 1}),
        now_ms(),
    )
    .unwrap();
    let (status, body) = gamma
        .post("/api/v1/federation/incoming/event", &json!(event))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(gamma.messages("direction=inbound").await.is_empty());
    // And so is an ack addressed to another instance.
    let ack = EventAck::signed(
        &key,
        &key_id(&key),
        "mallory",
        Some("beta"),
        Uuid::new_v4(),
        now_ms(),
    )
    .unwrap();
    let (status, body) = gamma
        .post("/api/v1/federation/incoming/event/ack", &json!(ack))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:wrong-recipient");
}

/// A protocol v1 message (no recipientId): refused by default, accepted
/// with `accept_protocol_v1`, and then answered with a v1 ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_messages_need_the_compatibility_switch() {
    let key = test_key("mallory");
    let v1 = || {
        let mut m = json!({
            "messageId": Uuid::new_v4(),
            "instanceId": "mallory",
            "eventType": "federation.subscribe",
            "payload": {"eventType": "audit.>"},
            "timestamp": now_ms(),
            "keyId": key_id(&key),
        });
        m["signature"] = json!(sign_bytes(&key, signing_input(&m).as_bytes()).unwrap());
        m
    };
    let strict = Node::start(
        "beta",
        free_port(),
        "",
        &peer_config("mallory", free_port(), &key),
    );
    let (status, body) = strict.post(SUBSCRIBE, &v1()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:recipient-missing");
    let lenient = Node::start(
        "beta",
        free_port(),
        "accept_protocol_v1 = true",
        &peer_config("mallory", free_port(), &key),
    );
    let (status, ack) = lenient.post(SUBSCRIBE, &v1()).await;
    assert_eq!(status, 200, "{ack}");
    assert!(ack.get("recipientId").is_none(), "{ack}");
}

/// `[[peers]] allow` is replaced at reload (admin grants are kept), and a
/// subscription no grant covers any more stops receiving events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_config_grants_and_revoked_subscriptions_stop() {
    let beta = Node::start(
        "beta",
        free_port(),
        "",
        &peer_config_allowing("mallory", free_port(), &test_key("mallory"), &["step.>"]),
    );
    let (status, ack) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "step.*")))
        .await;
    assert_eq!(status, 200, "{ack}");
    admin(&beta, &["peers", "allow", "mallory", "audit.>"]);
    let path = beta.data_dir().join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace(r#"allow = ["step.>"]"#, r#"allow = ["plan.*"]"#),
    )
    .unwrap();
    admin(&beta, &["reload"]);
    let (_, peers) = beta.get("/api/v1/federation/peers").await;
    assert_eq!(peers["peers"][0]["allow"], json!(["audit.>", "plan.*"]));
    let (status, _) = beta
        .post(
            SUBSCRIBE,
            &json!(subscribe_request("beta", "step.completed")),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = beta
        .post(SUBSCRIBE, &json!(subscribe_request("beta", "plan.*")))
        .await;
    assert_eq!(status, 200);
    // step.* is still listed, but routes nothing now; plan.* does.
    let plan = Uuid::new_v4();
    for event_type in ["step.completed", "plan.created"] {
        let (status, body) = beta
            .post(
                &format!("/api/plans/{plan}/events"),
                &json!({"type": event_type, "payload": {}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    assert!(inbound(&beta).await.contains(&"mallory:step.*".to_string()));
    let queued: Vec<String> = beta
        .messages("direction=outbound")
        .await
        .iter()
        .map(|m| m["eventType"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(queued, ["plan.created"]);
}
