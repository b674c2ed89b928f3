//! A message the peer refuses for its content (here: larger than the
//! peer's `incoming_max_body_bytes`, so 413) is dead at once with the
//! peer's error, and the messages behind it are delivered: one bad message
//! does not block a peer's whole queue until it dies of age.

mod federation_common;

use std::time::Duration;

use federation_common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Alpha (with `alpha_fed`'s `[federation]` lines) and beta, which takes
/// requests of at most 20,000 bytes and subscribes to `exception.raised`.
async fn alpha_and_small_beta(alpha_fed: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, alpha_fed, &peer_config("beta", pb, &kb));
    let beta = Node::start(
        "beta",
        pb,
        "incoming_max_body_bytes = 20000",
        &peer_config("alpha", pa, &ka),
    );
    beta.subscribe("alpha", "exception.raised").await;
    (alpha, beta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_dead_at_once_and_the_queue_goes_on() {
    // Many attempts and a long backoff: before the fix the refused message
    // stayed `retrying` and held back the one behind it for the whole test.
    let (alpha, beta) =
        alpha_and_small_beta("max_attempts = 50\nretry_initial_ms = 60000\nretry_max_secs = 3600")
            .await;

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

/// A peer configured to take smaller requests than the sender's batches
/// (`incoming_max_body_bytes` below 512 KiB) refuses a batch once (413); the
/// sender then halves its batches for a while instead of having every one
/// refused and split into separately signed messages. Five rounds of
/// messages: the refusals stop after the first rounds, and every message
/// arrives, none dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_takes_smaller_requests_gets_smaller_batches() {
    let (alpha, beta) = alpha_and_small_beta("").await;
    // Failed message attempts: a batch refused whole counts all of its
    // messages.
    let failures = || async {
        let text = alpha.http.get(alpha.url("/metrics")).send().await.unwrap();
        let text = text.text().await.unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("logbook_federation_delivery_failures_total{peer=\"beta\"} ")
            })
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let mut after_round = Vec::new();
    for round in 0..5 {
        // About 30 KiB a round, queued while beta is suspended so that it
        // goes out in batches: more than one request of 20,000 bytes.
        let out = alpha.admin(&["peers", "suspend", "beta"]).await;
        assert!(out.status.success(), "{out:?}");
        for n in 0..30 {
            let (status, body) = alpha
                .post(
                    "/api/v1/federation/events/publish",
                    &json!({"eventType": "exception.raised", "payload": {"round": round, "n": n, "pad": "x".repeat(1000)}}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
        let out = alpha.admin(&["peers", "resume", "beta"]).await;
        assert!(out.status.success(), "{out:?}");
        let want = 30 * (round + 1);
        wait_for("the round delivered", WAIT, || async {
            (beta.messages("direction=inbound").await.len() == want).then_some(())
        })
        .await;
        after_round.push(failures().await);
    }
    assert!(
        after_round[0] >= 1,
        "the first batch is too large: {after_round:?}"
    );
    assert_eq!(
        after_round[2], after_round[4],
        "no refusal once the batches are small enough: {after_round:?}"
    );
    let dead = alpha.messages("direction=outbound&status=dead").await;
    assert!(dead.is_empty(), "{dead:?}");
}
