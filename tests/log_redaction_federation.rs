//! Redaction reaches the federation outbox: a copy of the event still
//! queued for a peer leaves redacted, and a delivered copy's row no longer
//! shows the payload. (What a peer already received stays with it.)

mod federation_common;

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use federation_common::*;
use logbook_federation::message::EventMessage;
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
retry_max_secs = 1
max_attempts = 1000",
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

/// The outbox's copies are found through its index (`fed_outbox_events`)
/// also after a crash: the copies of the last events come back from the
/// write-ahead segment (or were already in redb, if a durable commit of
/// the delivery worker took them along), and the start checks the index
/// against the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_redaction_still_finds_the_queued_copies() {
    let (mut alpha, mut beta) =
        subscribed_pair("retry_initial_ms = 200\nretry_max_secs = 1\nmax_attempts = 1000").await;
    beta.stop();
    let plan = Uuid::new_v4().to_string();
    for n in 1..=3 {
        append(&alpha, &plan, json!({"secret": format!("secret-{n}")})).await;
    }
    alpha.kill_9();
    alpha.restart();
    redact(&alpha, &plan, "2").await;
    let out = alpha.messages("direction=outbound").await;
    assert_eq!(out.len(), 3, "{out:#?}");
    for row in &out {
        let redacted = row["payload"]["seq"] == 2;
        assert_eq!(row["payload"]["redacted"] == true, redacted, "{row}");
        assert!(!row.to_string().contains("secret-2"), "{row}");
    }
    beta.restart();
    let inbound = wait_for("the three events delivered", WAIT, || async {
        let inbound = beta.messages("direction=inbound").await;
        (inbound.len() == 3).then_some(inbound)
    })
    .await;
    assert!(!format!("{inbound:?}").contains("secret-2"), "{inbound:#?}");
    assert!(format!("{inbound:?}").contains("secret-3"), "{inbound:#?}");
}

/// A peer that hands the body of each message request to the test, and
/// answers each as `answer(n)` says (n counts from 0): a status line and
/// whether to wait for the test's go first. Other requests get 404.
fn scripted_peer(
    answer: fn(usize) -> (&'static str, bool),
) -> (u16, mpsc::Receiver<String>, mpsc::Sender<()>) {
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (arrived, bodies) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let (head, body) = read_request(&mut stream);
            let status = if head.starts_with("POST /api/v1/federation/incoming/event ") {
                let (status, hold) = answer(n);
                n += 1;
                let _ = arrived.send(body);
                if hold && wait.recv_timeout(WAIT).is_err() {
                    return;
                }
                status
            } else {
                "404 Not Found"
            };
            let problem = r#"{"type":"about:blank","title":"no"}"#;
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{problem}", problem.len())
                    .as_bytes(),
            );
        }
    });
    (port, bodies, go)
}

/// A redaction committed while the sender holds rows it read before: the
/// rows are read again before they are signed, so the payload does not
/// leave. Here the peer refuses a batch of two as a whole (422), so the
/// sender resends them one by one, and the event of the second is redacted
/// while the peer holds the first of those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_read_before_a_redaction_leaves_redacted() {
    redacted_while_the_peer_holds(Held::FirstResent).await;
}

/// The same, with the redaction while the peer holds the batch: each row
/// resent alone is checked against when it was read, not against the
/// row resent before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_read_before_a_redaction_during_the_batch_leaves_redacted() {
    redacted_while_the_peer_holds(Held::Batch).await;
}

/// A plan deleted while the peer holds a batch of its events: the rows are
/// removed, and none of them is resent alone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_plan_deleted_during_the_batch_are_not_resent() {
    let (alpha, bodies, go) = alpha_with_scripted_peer(|n| match n {
        0 => ("503 Service Unavailable", true),
        _ => ("422 Unprocessable Entity", n == 1),
    })
    .await;
    let (plan, other) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let next = || bodies.recv_timeout(WAIT).expect("a request from alpha");
    append(&alpha, &plan, json!({"n": 1})).await;
    assert!(next().contains(&plan));
    append(&alpha, &plan, json!({"n": 2})).await;
    go.send(()).unwrap();
    assert!(next().contains(r#""n":2"#), "the batch of both");
    alpha.admin_text(&["plans", "delete", "--yes", &plan]).await;
    // Refused as a whole: the sender would resend the rows it holds one
    // by one, but they were removed meanwhile.
    go.send(()).unwrap();
    append(&alpha, &other, json!({"n": 3})).await;
    let after = next();
    assert!(
        !after.contains(&plan) && after.contains(&other),
        "a deleted plan's event was sent after the deletion: {after}"
    );
}

/// Alpha, with `scripted_peer(script)` subscribed to its `step.>` events.
async fn alpha_with_scripted_peer(
    script: fn(usize) -> (&'static str, bool),
) -> (Node, mpsc::Receiver<String>, mpsc::Sender<()>) {
    let (port, bodies, go) = scripted_peer(script);
    let alpha = Node::start(
        "alpha",
        free_port(),
        // The peer holds requests while the test runs admin commands: a
        // send that timed out would be tried again, out of the script.
        "retry_initial_ms = 200\nretry_max_secs = 1\nsend_timeout_secs = 120",
        &peer_config("evil", port, &test_key("evil")),
    );
    let key = test_key("evil");
    let subscribe = EventMessage::signed(
        &key,
        &key_id(&key),
        "evil",
        "alpha",
        Uuid::new_v4(),
        "federation.subscribe",
        json!({"eventType": "step.>"}),
        now_ms(),
    )
    .unwrap();
    let (status, ack) = alpha
        .post("/api/v1/federation/incoming/subscribe", &json!(subscribe))
        .await;
    assert_eq!(status, 200, "{ack}");
    (alpha, bodies, go)
}

#[derive(Clone, Copy, PartialEq)]
enum Held {
    Batch,
    FirstResent,
}

async fn redacted_while_the_peer_holds(held: Held) {
    // The first event alone: held until the second is queued behind it,
    // then "busy" so that both are due together. Then the batch of both,
    // refused whole, and each resent alone, refused too.
    let script: fn(usize) -> (&'static str, bool) = match held {
        Held::Batch => |n| match n {
            0 => ("503 Service Unavailable", true),
            1 => ("422 Unprocessable Entity", true),
            _ => ("422 Unprocessable Entity", false),
        },
        Held::FirstResent => |n| match n {
            0 => ("503 Service Unavailable", true),
            2 => ("422 Unprocessable Entity", true),
            _ => ("422 Unprocessable Entity", false),
        },
    };
    let (alpha, bodies, go) = alpha_with_scripted_peer(script).await;
    let plan = Uuid::new_v4().to_string();
    let secret = "row-read-before-secret";
    let next = || bodies.recv_timeout(WAIT).expect("a request from alpha");
    append(&alpha, &plan, json!({"n": 1})).await;
    assert!(next().contains(r#""n":1"#));
    append(&alpha, &plan, json!({"card": secret})).await;
    go.send(()).unwrap();
    let batch = next();
    assert!(batch.contains(secret), "the batch of both: {batch}");
    if held == Held::Batch {
        redact(&alpha, &plan, "2").await;
        go.send(()).unwrap();
    }
    let first = next();
    assert!(!first.contains(secret), "the first alone: {first}");
    if held == Held::FirstResent {
        redact(&alpha, &plan, "2").await;
        go.send(()).unwrap();
    }
    let second = next();
    assert!(
        !second.contains(secret),
        "the redacted event left with its payload: {second}"
    );
    let message: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(message["payload"]["seq"], 2, "{message}");
    assert_eq!(message["payload"]["redacted"], true, "{message}");
}
