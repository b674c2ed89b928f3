//! The receiving side against crafted messages: every forgery or replay is
//! refused with the right status and stores nothing; redeliveries are acked
//! once more but stored once; federated journal events are checked for
//! chain continuity, and gaps and forks are flagged and kept.

mod federation_common;

use federation_common::*;
use logbook_federation::message::{EventAck, EventMessage};
use serde_json::{Value, json};
use uuid::Uuid;

const EVENT: &str = "/api/v1/federation/incoming/event";

/// `beta` with `mallory` (a test key) as an active peer.
fn receiver() -> Node {
    let port = free_port();
    Node::start(
        "beta",
        port,
        "rate_limit_per_sec = 1\nrate_limit_burst = 40",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    )
}

fn signed(
    from: &str,
    key_name: &str,
    id: Uuid,
    event_type: &str,
    payload: Value,
    timestamp: i64,
) -> EventMessage {
    let key = test_key(key_name);
    EventMessage::signed(
        &key,
        &key_id(&key),
        from,
        "beta",
        id,
        event_type,
        payload,
        timestamp,
    )
    .unwrap()
}

async fn stored(node: &Node) -> usize {
    node.messages("direction=inbound").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_replayed_messages_are_rejected_and_nothing_is_stored() {
    let beta = receiver();
    let id = Uuid::new_v4();
    let good = signed(
        "mallory",
        "mallory",
        id,
        "audit.note",
        json!({"a": 1}),
        now_ms(),
    );

    // A good message is stored and answered with an ack signed by beta.
    let (status, ack) = beta.post(EVENT, &json!(good)).await;
    assert_eq!(status, 200, "{ack}");
    let ack: EventAck = serde_json::from_value(ack).unwrap();
    assert_eq!(
        (ack.correlation_id, ack.instance_id.as_str(), ack.received),
        (id, "beta", true)
    );
    assert!(ack.verify(&test_key("beta").to_public_key()));
    assert!(!ack.verify(&test_key("mallory").to_public_key()));
    assert_eq!(stored(&beta).await, 1);

    // A redelivery (re-signed later, same content) is acked again, stored once.
    let again = signed(
        "mallory",
        "mallory",
        id,
        "audit.note",
        json!({"a": 1}),
        now_ms() + 5,
    );
    let (status, ack) = beta.post(EVENT, &json!(again)).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["correlationId"], id.to_string());
    assert_eq!(stored(&beta).await, 1);

    let problem_kind = |body: &Value| body["type"].as_str().unwrap_or_default().to_string();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "bad signature",
            {
                let mut m = json!(signed(
                    "mallory",
                    "mallory",
                    Uuid::new_v4(),
                    "audit.note",
                    json!({}),
                    now_ms()
                ));
                let sig = m["signature"].as_str().unwrap().to_string();
                let first = if sig.starts_with('A') { "B" } else { "A" };
                let flipped = format!("{first}{}", &sig[1..]);
                m["signature"] = json!(flipped);
                m
            },
            401,
            "bad-signature",
        ),
        (
            "signed with another key",
            json!(signed(
                "mallory",
                "alpha",
                Uuid::new_v4(),
                "audit.note",
                json!({}),
                now_ms()
            )),
            401,
            "bad-signature",
        ),
        (
            "unknown peer",
            json!(signed(
                "stranger",
                "mallory",
                Uuid::new_v4(),
                "audit.note",
                json!({}),
                now_ms()
            )),
            403,
            "unknown-peer",
        ),
        (
            "replayed messageId",
            json!(signed(
                "mallory",
                "mallory",
                id,
                "audit.note",
                json!({"a": 2}),
                now_ms()
            )),
            409,
            "message-id-reused",
        ),
        (
            "stale timestamp",
            json!(signed(
                "mallory",
                "mallory",
                Uuid::new_v4(),
                "audit.note",
                json!({}),
                now_ms() - 301_000
            )),
            401,
            "stale-timestamp",
        ),
        (
            "future timestamp",
            json!(signed(
                "mallory",
                "mallory",
                Uuid::new_v4(),
                "audit.note",
                json!({}),
                now_ms() + 301_000
            )),
            401,
            "stale-timestamp",
        ),
        (
            "payload changed after signing",
            {
                let mut m = json!(signed(
                    "mallory",
                    "mallory",
                    Uuid::new_v4(),
                    "audit.note",
                    json!({"amount": 10}),
                    now_ms()
                ));
                m["payload"]["amount"] = json!(1000);
                m
            },
            401,
            "bad-signature",
        ),
        (
            "type changed after signing",
            {
                let mut m = json!(signed(
                    "mallory",
                    "mallory",
                    Uuid::new_v4(),
                    "audit.note",
                    json!({}),
                    now_ms()
                ));
                m["eventType"] = json!("audit.other");
                m
            },
            401,
            "bad-signature",
        ),
        (
            "unknown field",
            {
                let mut m = json!(signed(
                    "mallory",
                    "mallory",
                    Uuid::new_v4(),
                    "audit.note",
                    json!({}),
                    now_ms()
                ));
                m["extra"] = json!(1);
                m
            },
            400,
            "invalid-message",
        ),
    ];
    for (what, body, expected, kind) in cases {
        let response = beta
            .http
            .post(beta.url(EVENT))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, expected, "{what}: {body}");
        assert_eq!(content_type, "application/problem+json", "{what}");
        assert_eq!(
            problem_kind(&body),
            format!("urn:logbook:problem:{kind}"),
            "{what}"
        );
        assert_eq!(stored(&beta).await, 1, "{what}: nothing stored");
    }
    // The original message is unchanged by the replay attempt.
    assert_eq!(
        beta.messages("direction=inbound").await[0]["payload"],
        json!({"a": 1})
    );

    // A suspended peer is refused like an unknown one.
    let (status, _) = beta
        .post(
            "/api/v1/federation/peers/mallory/status",
            &json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = beta
        .post(
            EVENT,
            &json!(signed(
                "mallory",
                "mallory",
                Uuid::new_v4(),
                "audit.note",
                json!({}),
                now_ms()
            )),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(stored(&beta).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_gets_429_with_retry_after() {
    let beta = receiver();
    let batch: Vec<Value> = (0..41)
        .map(|n| {
            json!(signed(
                "mallory",
                "mallory",
                Uuid::new_v4(),
                "audit.note",
                json!({"n": n}),
                now_ms()
            ))
        })
        .collect();
    // 40 fit in the burst.
    let (status, acks) = beta.post(EVENT, &json!(batch[..40])).await;
    assert_eq!(status, 200, "{acks}");
    assert_eq!(acks.as_array().unwrap().len(), 40);
    let response = beta
        .http
        .post(beta.url(EVENT))
        .json(&batch[40])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(stored(&beta).await, 40);
}

/// A journal event of `plan` as an origin would send it. The receiver cannot
/// check the origin's HMAC, only how the chain links.
fn journal_event(plan: &str, seq: u64, prev: Option<&str>, signature: &str) -> Value {
    json!({
        "id": Uuid::now_v7(),
        "plan_id": plan,
        "seq": seq,
        "type": "step.completed",
        "actor": null,
        "payload": {"seq": seq},
        "payload_hash": "00".repeat(32),
        "prev_hash": prev,
        "signature": signature,
        "key_id": "0badc0de",
        "created_at": "2026-01-02T03:04:05.678Z",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_events_pass_continuity_and_gaps_and_forks_are_flagged() {
    let beta = receiver();
    let plan = "0192f3a4-5b6c-7d8e-9f00-000000000001";
    let sig = |n: u8| format!("{n:02x}").repeat(32);
    let send = |event: Value| {
        let m = signed(
            "mallory",
            "mallory",
            Uuid::new_v4(),
            "step.completed",
            event,
            now_ms(),
        );
        let beta = &beta;
        async move {
            let (status, body) = beta.post(EVENT, &json!(m)).await;
            assert_eq!(status, 200, "{body}");
            m.message_id
        }
    };
    let first = send(journal_event(plan, 1, None, &sig(1))).await;
    let second = send(journal_event(plan, 2, Some(&sig(1)), &sig(2))).await;
    // seq 3 never arrives: 4 is a gap.
    let gap = send(journal_event(plan, 4, Some(&sig(3)), &sig(4))).await;
    // Another event at seq 2: a fork.
    let fork = send(journal_event(plan, 2, Some(&sig(1)), &sig(9))).await;

    let inbound = beta.messages("direction=inbound").await;
    let verdict = |id: Uuid| {
        inbound
            .iter()
            .find(|m| m["messageId"] == id.to_string())
            .map(|m| m["continuity"].clone())
            .unwrap()
    };
    assert_eq!(verdict(first)["status"], "ok");
    assert_eq!(verdict(second)["status"], "ok");
    assert_eq!(verdict(gap)["status"], "gap");
    assert_eq!(verdict(gap)["expectedSeq"], 3);
    assert_eq!(verdict(fork)["status"], "fork");
    assert_eq!(verdict(fork)["conflictsWith"], second.to_string());

    // Both sides of the fork are kept as evidence, and the anomalies are listed.
    assert_eq!(inbound.len(), 4);
    let (_, anomalies) = beta.get("/api/v1/federation/events/continuity").await;
    let flagged: Vec<(String, String)> = anomalies["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["messageId"].as_str().unwrap().to_string(),
                m["continuity"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        flagged,
        [
            (gap.to_string(), "gap".to_string()),
            (fork.to_string(), "fork".to_string())
        ]
    );
}

/// A peer's message is held to the journal's rules for JSON text: a
/// repeated member (which serde would resolve to the last one, while
/// another reader may take the first) or a whole number a double cannot
/// hold exactly is refused, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_json_from_a_peer_is_refused() {
    let beta = receiver();
    let good = signed(
        "mallory",
        "mallory",
        Uuid::new_v4(),
        "audit.note",
        json!({"to": "alice"}),
        now_ms(),
    );
    let text = serde_json::to_string(&good).unwrap();
    assert!(text.contains(r#""payload":{"to":"alice"}"#), "{text}");
    let duplicated = text.replace(
        r#""payload":{"to":"alice"}"#,
        r#""payload":{"to":"mallory","to":"alice"}"#,
    );
    let (status, body) = beta.post_text(EVENT, &duplicated).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["type"], "urn:logbook:problem:duplicate-member",
        "{body}"
    );
    let unsafe_float = text.replace(
        r#""payload":{"to":"alice"}"#,
        r#""payload":{"to":"alice","n":9007199254740993.0}"#,
    );
    let (status, body) = beta.post_text(EVENT, &unsafe_float).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "urn:logbook:problem:unsafe-integer", "{body}");
    assert_eq!(stored(&beta).await, 0);
    // The message as signed is accepted.
    let (status, body) = beta.post_text(EVENT, &text).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored(&beta).await, 1);
}
