//! Federation between real daemons: subscribe, publish, journal events,
//! acks, wildcard filtering, a receiver that goes away and comes back, and
//! dead messages with a manual retry.

mod federation_common;

use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Two daemons that know each other through `[[peers]]`.
fn pair(alpha_fed: &str, beta_fed: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, alpha_fed, &peer_config("beta", pb, &kb));
    let beta = Node::start("beta", pb, beta_fed, &peer_config("alpha", pa, &ka));
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

async fn append(node: &Node, plan: &str, event_type: &str, payload: Value) -> Value {
    let (status, body) = node
        .post(
            &format!("/api/plans/{plan}/events"),
            &json!({"type": event_type, "payload": payload}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn all_delivered(node: &Node, expected: usize) -> Vec<Value> {
    wait_for("every outbound message delivered", WAIT, || async {
        let out = node.messages("direction=outbound").await;
        (out.len() == expected && out.iter().all(|m| m["status"] == "delivered")).then_some(out)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_publish_ack_and_wildcards() {
    let (alpha, beta) = pair("", "");

    // The identity document carries what a peer needs to pin this instance.
    let (status, doc) = alpha.get("/api/v1/federation/instance").await;
    assert_eq!(status, 200);
    assert_eq!(doc["instanceId"], "alpha");
    assert_eq!(doc["keyId"], key_id(&test_key("alpha")));
    assert!(
        doc["publicKey"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    for field in ["name", "protocolVersion", "capabilities"] {
        assert!(!doc[field].is_null(), "{field}");
    }

    subscribe(&beta, "alpha", "step.>").await;
    let (_, subs) = alpha.get("/api/v1/federation/events/subscriptions").await;
    assert_eq!(
        subs["subscriptions"],
        json!([{"direction": "inbound", "peer": "beta", "eventType": "step.>", "createdAt": subs["subscriptions"][0]["createdAt"]}])
    );
    let (_, subs) = beta.get("/api/v1/federation/events/subscriptions").await;
    assert_eq!(subs["subscriptions"][0]["direction"], "outbound");
    assert_eq!(subs["subscriptions"][0]["peer"], "alpha");

    // Published: one matches, one does not (and is never even queued).
    let (status, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "step.custom.done", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    let (status, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "plan.created", "payload": {"n": 2}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["messages"], json!([]));

    // Journal appends are delivered automatically, whole; non-matching ones are not.
    let plan = "0192f3a4-5b6c-7d8e-9f00-112233445566";
    append(&alpha, plan, "plan.created", json!({"x": 1})).await;
    let started = append(&alpha, plan, "step.started", json!({"x": 2})).await;
    append(&alpha, plan, "bank.message", json!({"x": 3})).await;

    let out = all_delivered(&alpha, 2).await;
    assert!(
        out.iter()
            .all(|m| m["peer"] == "beta" && m["attempts"] == 1 && m["lastError"].is_null())
    );

    let inbound = beta.messages("direction=inbound").await;
    let types: Vec<&str> = inbound
        .iter()
        .map(|m| m["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["step.custom.done", "step.started"]);
    assert_eq!(inbound[0]["payload"], json!({"n": 1}));
    assert_eq!(inbound[0]["continuity"], Value::Null);
    // The journal event arrives whole, with its chain fields.
    assert_eq!(inbound[1]["payload"], started);
    assert_eq!(inbound[1]["payload"]["seq"], 2);
    // seq 2 is the first event beta saw of this plan: flagged as a gap, not silently accepted.
    assert_eq!(inbound[1]["continuity"]["status"], "gap");
    // The message ids agree on both sides.
    let (sent, got) = (message_ids(&out), message_ids(&inbound));
    assert_eq!(sent, got);
    // Nothing was sent the other way.
    assert!(beta.messages("direction=outbound").await.is_empty());

    // Unsubscribing stops delivery on the sending side.
    let (status, body) = beta
        .post(
            "/api/v1/federation/events/unsubscribe",
            &json!({"peer": "alpha", "eventType": "step.>"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "step.custom.done", "payload": {}}),
        )
        .await;
    assert_eq!(body["messages"], json!([]));

    // The stream of received events resumes after Last-Event-ID and filters
    // by pattern: `types=`, as on the journal's stream, and its old name
    // `eventType=` alike.
    for filter in ["types=step.started", "eventType=step.started"] {
        let response = beta
            .http
            .get(beta.url(&format!("/api/v1/federation/events/stream?{filter}")))
            .header("last-event-id", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{filter}");
        let mut response = response;
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("id: 2\n"), "{filter}: {text}");
        assert!(!text.contains("step.custom.done"), "{filter}: {text}");
        // A frame is the message as the listing shows it, payload included.
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let framed: Value = serde_json::from_str(data).unwrap();
        assert_eq!(framed, inbound[1], "{filter}");
    }
    // A bad pattern is named by the parameter it came in; both names at once are refused.
    for (query, named) in [
        ("types=step..x", "types"),
        ("eventType=step..x", "eventType"),
        ("types=step.*&eventType=step.*", "not both"),
    ] {
        let (status, body) = beta
            .get(&format!("/api/v1/federation/events/stream?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(named),
            "{query}: {body}"
        );
    }
    // A cursor past the last received message names both, as the journal
    // streams do.
    let (status, body) = beta.get("/api/v1/federation/events/stream?after=999").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:cursor-beyond-head");
    assert_eq!(body["cursor"], 999, "{body}");
    assert!(body["head"].as_u64().is_some_and(|h| h < 999), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_added_by_fingerprint_is_fetched_and_pinned() {
    let (pa, pb) = (free_port(), free_port());
    let alpha = Node::start("alpha", pa, "", &peer_config("beta", pb, &test_key("beta")));
    let beta = Node::start("beta", pb, "", "");
    let path = "/api/v1/federation/peers";
    // A wrong fingerprint is refused and nothing is stored.
    let wrong = key_fingerprint(&test_key("mallory"));
    let (status, body) = beta
        .post(
            path,
            &json!({"instanceId": "alpha", "baseUrl": alpha.url(""), "fingerprint": wrong}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(beta.get(path).await.1["peers"], json!([]));
    let fingerprint = key_fingerprint(&test_key("alpha"));
    let (status, body) = beta
        .post(
            path,
            &json!({"instanceId": "alpha", "baseUrl": alpha.url("/"), "fingerprint": fingerprint}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["fingerprint"], fingerprint);
    assert_eq!(body["status"], "active");
    subscribe(&beta, "alpha", "plan.*").await;

    // A suspended peer receives nothing, but what is meant for it meanwhile
    // (a published message, a journal event) stays queued: a resume
    // delivers it, and suspending loses nothing.
    let (status, _) = alpha
        .post(
            "/api/v1/federation/peers/beta/status",
            &json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "plan.created", "payload": {}}),
        )
        .await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    let plan = "0192f3a4-5b6c-7d8e-9f00-aabbccdd0001";
    append(&alpha, plan, "plan.created", json!({"while": "suspended"})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        beta.messages("direction=inbound").await.len(),
        0,
        "delivered while suspended"
    );
    let (status, _) = alpha
        .post(
            "/api/v1/federation/peers/beta/status",
            &json!({"status": "active"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "plan.created", "payload": {"k": 1}}),
        )
        .await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    // A payload whose canonical form outgrows max_body_bytes (`1e22` is
    // written `1e+22`) is refused, not queued for a peer that would refuse
    // it for good.
    let numbers = vec!["1e22"; (1024 * 1024 - 100) / 5].join(",");
    let grows = format!(r#"{{"eventType":"plan.created","payload":[{numbers}]}}"#);
    let (status, body) = alpha
        .post_text("/api/v1/federation/events/publish", &grows)
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:payload-too-large");
    all_delivered(&alpha, 3).await;
    assert_eq!(beta.messages("direction=inbound").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_back_gets_every_event_once_in_order() {
    let fast_retry = "retry_initial_ms = 200\nretry_max_secs = 2";
    let (alpha, mut beta) = pair(fast_retry, "");
    subscribe(&beta, "alpha", "step.>").await;
    beta.stop();

    let plan = "0192f3a4-5b6c-7d8e-9f00-aabbccddeeff";
    for n in 1..=500 {
        append(&alpha, plan, "step.completed", json!({"n": n})).await;
    }
    beta.restart();
    all_delivered(&alpha, 500).await;

    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 500, "exactly once");
    for (i, m) in inbound.iter().enumerate() {
        assert_eq!(m["payload"]["seq"], i as u64 + 1, "in order");
        assert_eq!(m["payload"]["payload"]["n"], i as u64 + 1);
        assert_eq!(m["continuity"]["status"], "ok", "chain continues at {i}");
    }
    let (_, anomalies) = beta.get("/api/v1/federation/events/continuity").await;
    assert_eq!(anomalies["anomalies"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_goes_dead_after_max_attempts_and_manual_retry_delivers_it() {
    let (alpha, mut beta) = pair(
        "max_attempts = 3\nretry_initial_ms = 100\nretry_max_secs = 1",
        "",
    );
    subscribe(&beta, "alpha", "exception.raised").await;
    beta.stop();
    let (_, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "exception.raised", "payload": {"why": "x"}}),
        )
        .await;
    let id = body["messages"][0]["messageId"]
        .as_str()
        .unwrap()
        .to_string();

    let dead = wait_for("the message to go dead", WAIT, || async {
        let dead = alpha
            .messages("direction=outbound&status=dead&peer=beta")
            .await;
        (dead.len() == 1).then(|| dead[0].clone())
    })
    .await;
    assert_eq!(dead["messageId"], id);
    assert_eq!(dead["attempts"], 3);
    assert!(!dead["lastError"].as_str().unwrap().is_empty());

    beta.restart();
    // Dead stays dead without an admin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alpha.messages("direction=outbound&status=dead").await.len(),
        1
    );
    let (status, body) = alpha
        .post(
            "/api/v1/federation/events/messages/retry",
            &json!({"messageId": id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["requeued"], 1);
    all_delivered(&alpha, 1).await;
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0]["messageId"], id);
}
