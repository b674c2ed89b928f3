//! Redaction reaches the federation outbox: a copy of the event still
//! queued for a peer leaves redacted, and a delivered copy's row no longer
//! shows the payload. (What a peer already received stays with it.)

mod federation_common;

use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn append(node: &Node, plan: &str, payload: Value) {
    let (status, body) = node
        .post(
            &format!("/api/plans/{plan}/events"),
            &json!({"type": "step.started", "payload": payload}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn redact(node: &Node, plan: &str, seq: &str) {
    node.admin_text(&["redact", plan, seq, "--reason", "erasure request"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacting_rewrites_the_outbox_copies() {
    let (alpha, mut beta) = subscribed_pair(
        "retry_initial_ms = 200
retry_max_secs = 1",
    )
    .await;

    let plan = Uuid::new_v4().to_string();
    append(&alpha, &plan, json!({"secret": "delivered-secret"})).await;
    wait_for("the first event delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        (out.len() == 1 && out[0]["status"] == "delivered").then_some(())
    })
    .await;
    beta.stop();
    append(&alpha, &plan, json!({"secret": "queued-secret"})).await;

    redact(&alpha, &plan, "1").await;
    redact(&alpha, &plan, "2").await;
    let out = alpha.messages("direction=outbound").await;
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(
        !out.iter().any(|m| m.to_string().contains("secret")),
        "{out:#?}"
    );
    for row in &out {
        assert_eq!(row["payload"]["redacted"], true, "{row}");
        assert_eq!(row["payload"]["payload"], Value::Null, "{row}");
    }

    // The queued copy leaves redacted, and the peer takes it.
    beta.restart();
    wait_for("the queued event delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        out.iter().all(|m| m["status"] == "delivered").then_some(())
    })
    .await;
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 2, "{inbound:#?}");
    let second = inbound
        .iter()
        .find(|m| m["payload"]["seq"] == 2)
        .expect("seq 2 arrived");
    assert_eq!(second["payload"]["redacted"], true, "{second}");
    assert!(!second.to_string().contains("queued-secret"), "{second}");
}
