//! Adversarial journal tests: the interleavings and inputs most likely to
//! break the guarantees (deletion racing with followers, stalled readers at
//! shutdown, hostile JSON).

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Daemon, DaemonOpts, assert_problem, event_body, fill, new_plan};
use serde_json::Value;

/// A per-plan follower whose plan is deleted must be told so explicitly,
/// and the plan's id is never used again: an append to it is 410, since a
/// new chain under the same id would be a second, inconsistent log under
/// the plan's origin (docs/verifiable-logs.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_a_deleted_plan_is_told_and_the_id_is_never_used_again() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    fill(&daemon, plan, 3).await;
    let mut stream = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream"), &[])
        .await;
    assert_eq!(stream.take_events(3).await.last().unwrap().0, 3);

    let deleted = daemon
        .admin_json(&["plans", "delete", "--yes", &plan.to_string()])
        .await;
    assert_eq!(deleted["deleted_events"], 3);
    let frame = stream.next_message_frame(Duration::from_secs(10)).await;
    assert_eq!(
        frame.event.as_deref(),
        Some("error"),
        "expected an explicit error event, got {frame:?}"
    );
    let problem: Value = serde_json::from_str(&frame.data).expect("problem JSON");
    assert_eq!(
        problem["type"], "urn:logbook:problem:plan-deleted",
        "{problem}"
    );
    assert!(
        stream.expect_end(Duration::from_secs(5)).await.is_empty(),
        "nothing after the error event"
    );

    // The id stays used, also after a restart.
    for round in 0..2 {
        let resp = daemon.append(plan, event_body("step.started", 0)).await;
        assert_problem(&resp, 410);
        assert_eq!(
            resp.json["type"], "urn:logbook:problem:plan-deleted",
            "round {round}"
        );
        assert_eq!(daemon.head(plan).await, None, "nothing was appended");
        daemon.restart();
    }
}

/// Same as above while the follower is idle: the
/// follower's cursor is now beyond the head, which is never answered by
/// silence.
#[tokio::test]
async fn a_follower_of_a_deleted_plan_ends_even_if_the_plan_stays_gone() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    fill(&daemon, plan, 2).await;
    let mut stream = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream"), &[])
        .await;
    assert_eq!(stream.take_events(2).await.last().unwrap().0, 2);
    daemon
        .admin_json(&["plans", "delete", "--yes", &plan.to_string()])
        .await;
    let frame = stream.next_message_frame(Duration::from_secs(10)).await;
    assert_eq!(frame.event.as_deref(), Some("error"), "{frame:?}");
    assert!(frame.data.contains("plan-deleted"), "{frame:?}");
    stream.expect_end(Duration::from_secs(5)).await;
}

/// Following a plan that is already deleted is 410 at once, from any
/// cursor: its id is never used again, so a stream would wait forever.
#[tokio::test]
async fn following_a_plan_already_deleted_is_gone() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    fill(&daemon, plan, 2).await;
    daemon
        .admin_json(&["plans", "delete", "--yes", &plan.to_string()])
        .await;
    for after in ["0", "2", "5"] {
        let resp = daemon
            .sse_refused(
                &format!("/api/plans/{plan}/events/stream?after={after}"),
                &[],
            )
            .await;
        assert_problem(&resp, 410);
        assert_eq!(
            resp.json["type"], "urn:logbook:problem:plan-deleted",
            "after={after}"
        );
    }
}

/// The all-plans stream across a deletion: positions of the deleted plan
/// leave a hole; resuming inside the hole continues at the next stored
/// position, and a live follower keeps going without looping or stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_plans_stream_steps_over_the_positions_of_a_deleted_plan() {
    let daemon = Daemon::start(DaemonOpts::default());
    let (kept, doomed) = (new_plan(), new_plan());
    fill(&daemon, kept, 2).await; // positions 1, 2
    fill(&daemon, doomed, 3).await; // positions 3, 4, 5
    let mut live = daemon.sse_ok("/api/events/stream", &[]).await;
    assert_eq!(live.take_events(5).await.last().unwrap().0, 5);

    daemon
        .admin_json(&["plans", "delete", "--yes", &doomed.to_string()])
        .await; // tombstone: position 6
    fill(&daemon, kept, 2).await; // positions 7, 8

    let after = live.take_ids(3).await;
    assert_eq!(after, vec![6, 7, 8]);

    // Resume from inside the hole (positions 3..=5 are gone).
    let mut resumed = daemon
        .sse_ok("/api/events/stream", &[("Last-Event-ID", "3")])
        .await;
    let ids = resumed.take_ids(3).await;
    assert_eq!(ids, vec![6, 7, 8]);
    fill(&daemon, kept, 1).await; // position 9
    assert_eq!(resumed.next_event().await.0, 9);
    assert_eq!(live.next_event().await.0, 9);
}

/// Positions are never reused, even when the deleted plan held the highest
/// ones and the daemon restarts (which reloads the position counter from
/// the index): a global cursor held by a client must stay meaningful.
#[tokio::test]
async fn positions_are_not_reused_after_a_deletion_and_a_restart() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let (kept, doomed) = (new_plan(), new_plan());
    fill(&daemon, kept, 1).await; // position 1
    fill(&daemon, doomed, 3).await; // positions 2..=4
    daemon
        .admin_json(&["plans", "delete", "--yes", &doomed.to_string()])
        .await; // tombstone: position 5
    daemon.restart();
    fill(&daemon, kept, 1).await;
    let mut stream = daemon
        .sse_ok("/api/events/stream", &[("Last-Event-ID", "4")])
        .await;
    let ids = stream.take_ids(2).await;
    assert_eq!(ids, vec![5, 6], "positions after a deletion and a restart");
}

/// JSON that serde_json cannot hold as a Rust string (a lone surrogate
/// escape) is malformed input: 400, nothing stored, no panic. A proper
/// surrogate pair is stored and hashed as the character it encodes.
#[tokio::test]
async fn lone_surrogates_are_refused_and_pairs_round_trip() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let url = format!("/api/plans/{plan}/events");
    for body in [
        r#"{"type":"step.started","payload":{"s":"\ud800"}}"#,
        r#"{"type":"step.started","payload":{"\udfff":1}}"#,
        r#"{"type":"step.started","actor":"\ud83d"}"#,
    ] {
        let resp = common::send(
            daemon
                .post(&url)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_problem(&resp, 400);
    }
    assert_eq!(daemon.head(plan).await, None, "nothing was appended");

    let resp = common::send(
        daemon
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"type":"step.started","actor":"\ud83d\ude00","payload":{"\ud83d\ude00":"\u0000"}}"#),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let event: Value = serde_json::from_str(&resp.text).unwrap();
    assert_eq!(event["actor"], "\u{1F600}");
    assert_eq!(event["payload"]["\u{1F600}"], "\u{0}");
    common::assert_chain_valid(&daemon, plan).await;
}

/// A client that opens a stream and then never reads, while a large backlog
/// is pending for it, must not keep the daemon from exiting 0 within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_5s_with_a_stalled_stream_client() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    // ~16 MB of backlog: more than loopback socket buffers hold.
    let blob = "x".repeat(100_000);
    for n in 0..160 {
        let body = serde_json::json!({"type": "step.completed", "payload": {"n": n, "blob": blob}});
        daemon.append_ok(plan, body).await;
    }
    // A raw socket that sends the request and then never reads.
    let mut socket = std::net::TcpStream::connect(daemon.addr).expect("connect");
    write!(
        socket,
        "GET /api/plans/{plan}/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    socket.flush().unwrap();
    // Wait until the daemon counts the stream as connected.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if daemon.metric("logbook_sse_clients").await > Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.sigterm();
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .expect("the daemon did not exit within 5 s of SIGTERM with a stalled client");
    assert_eq!(status.code(), Some(0), "exit status: {status}");
    drop(socket);
}

/// An Idempotency-Key is scoped to its plan: the same key on another plan is
/// a new request, not a replay and not a conflict.
#[tokio::test]
async fn idempotency_keys_are_per_plan() {
    let daemon = Daemon::start(DaemonOpts::default());
    let (a, b) = (new_plan(), new_plan());
    let append_k1 = |plan, n| {
        daemon.append_with(
            plan,
            event_body("step.started", n),
            &[("Idempotency-Key", "k-1")],
        )
    };
    let first = append_k1(a, 1).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let other = append_k1(b, 2).await;
    assert_eq!(other.status, 201, "{}", other.text);
    let replay = append_k1(a, 1).await;
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(replay.text, first.text);
}
