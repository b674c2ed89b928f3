//! A message the peer refuses for its content (here: larger than the
//! peer's `incoming_max_body_bytes`, so 413) is dead at once with the
//! peer's error, and the messages behind it are delivered: one bad message
//! does not block a peer's whole queue until it dies of age.

mod federation_common;

use std::time::Duration;

use federation_common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_dead_at_once_and_the_queue_goes_on() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    // Many attempts and a long backoff: before the fix the refused message
    // stayed `retrying` and held back the one behind it for the whole test.
    let alpha = Node::start(
        "alpha",
        pa,
        "max_attempts = 50\nretry_initial_ms = 60000\nretry_max_secs = 3600",
        &peer_config("beta", pb, &kb),
    );
    let beta = Node::start(
        "beta",
        pb,
        "incoming_max_body_bytes = 20000",
        &peer_config("alpha", pa, &ka),
    );
    beta.subscribe("alpha", "exception.raised").await;

    let publish = |payload: serde_json::Value| {
        let alpha = &alpha;
        async move {
            let (status, body) = alpha
                .post(
                    "/api/v1/federation/events/publish",
                    &json!({"eventType": "exception.raised", "payload": payload}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            body["messages"][0]["messageId"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let big = publish(json!({"blob": "x".repeat(40_000)})).await;
    let small = publish(json!({"n": 1})).await;

    let out = wait_for("the small message delivered", WAIT, || async {
        let out = alpha.messages("direction=outbound").await;
        out.iter()
            .any(|m| m["messageId"] == small.as_str() && m["status"] == "delivered")
            .then_some(out)
    })
    .await;
    let refused = out.iter().find(|m| m["messageId"] == big.as_str()).unwrap();
    assert_eq!(refused["status"], "dead", "{refused}");
    let error = refused["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("413"), "{refused}");
    let inbound = beta.messages("direction=inbound").await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0]["payload"], json!({"n": 1}));
}
