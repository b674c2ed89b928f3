//! Deleting a plan forgets what the outbox holds of it: its undelivered
//! messages are never sent, and delivered ones no longer show its payload.
//! A published message (not a journal event) is untouched.

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

async fn delete_plan(node: &Node, plan: &str) {
    node.admin_text(&["plans", "delete", "--yes", plan]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_plan_forgets_its_outbox_rows() {
    let (alpha, mut beta) = subscribed_pair(
        "retry_initial_ms = 200
retry_max_secs = 1",
    )
    .await;

    let plan = Uuid::new_v4().to_string();
    append(&alpha, &plan, json!({"secret": "delivered"})).await;
    wait_for("the first event delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        (out.len() == 1 && out[0]["status"] == "delivered").then_some(())
    })
    .await;

    // beta is away: the next event of the plan waits in the outbox, next
    // to a published message that belongs to no plan.
    beta.stop();
    append(&alpha, &plan, json!({"secret": "undelivered"})).await;
    let (status, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "step.custom.done", "payload": {"published": true}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(alpha.messages("direction=outbound").await.len(), 3);

    delete_plan(&alpha, &plan).await;
    let out = alpha.messages("direction=outbound").await;
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0]["status"], "delivered");
    assert_eq!(out[0]["payload"], Value::Null, "{out:#?}");
    assert_eq!(out[1]["payload"], json!({"published": true}));
    assert!(!out.iter().any(|m| m.to_string().contains("secret")));

    // When beta is back, only the published message reaches it.
    beta.restart();
    wait_for("the published message delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        out.iter().all(|m| m["status"] == "delivered").then_some(())
    })
    .await;
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 2, "{inbound:#?}");
    assert!(
        !inbound
            .iter()
            .any(|m| m.to_string().contains("undelivered")),
        "{inbound:#?}"
    );
}
