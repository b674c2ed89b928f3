//! Server-Sent Events: replay then live with no gap or duplicate while
//! appends race, the all-plans stream and its type filter, resuming with
//! `Last-Event-ID` across a restart, and cursors beyond the head.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Daemon, DaemonOpts, assert_problem, event_body, new_plan};
use serde_json::{Value, json};
use uuid::Uuid;

/// Runs `tasks` appenders on `plan` until `total` events exist (counting
/// what is already there as `start`). Every append must succeed.
fn spawn_appenders(
    daemon: &Daemon,
    plan: Uuid,
    tasks: usize,
    start: u64,
    total: u64,
) -> (Arc<AtomicU64>, Vec<tokio::task::JoinHandle<()>>) {
    let issued = Arc::new(AtomicU64::new(start));
    let handles = (0..tasks)
        .map(|_| {
            let client = daemon.client.clone();
            let url = daemon.url(&format!("/api/plans/{plan}/events"));
            let issued = issued.clone();
            tokio::spawn(async move {
                loop {
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    if n >= total {
                        return;
                    }
                    let resp = common::send(
                        client
                            .post(&url)
                            .timeout(common::REQUEST_TIMEOUT)
                            .json(&event_body("step.completed", n)),
                    )
                    .await;
                    assert_eq!(resp.status, 201, "append during the stream: {}", resp.text);
                }
            })
        })
        .collect();
    (issued, handles)
}

/// Reads events until `last` and checks they are exactly `from..=last`, in
/// order, with ids equal to seqs and each linking to the one before.
async fn assert_stream_covers(
    stream: &mut common::SseClient,
    plan: Uuid,
    from: u64,
    last: u64,
) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut expected = from;
    while expected <= last {
        let (id, event) = stream.next_event().await;
        assert_eq!(
            id,
            expected,
            "SSE id after {:?}: a gap or a duplicate",
            events.last().map(|e| &e["seq"])
        );
        assert_eq!(event["seq"], id, "id is the seq");
        assert_eq!(event["plan_id"], plan.to_string());
        if let Some(previous) = events.last() {
            assert_eq!(
                event["prev_hash"], previous["signature"],
                "chain on the stream at {id}"
            );
        }
        events.push(event);
        expected += 1;
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_has_no_gap_or_duplicate_under_concurrent_appends() {
    const PRELOAD: u64 = 600; // more than one storage page (512)
    const TOTAL: u64 = 1400;
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for n in 0..PRELOAD {
        daemon
            .append_ok(plan, event_body("step.completed", n))
            .await;
    }

    let (issued, appenders) = spawn_appenders(&daemon, plan, 4, PRELOAD, TOTAL);
    // Connect while the load runs: one from the start, one mid-way via Last-Event-ID.
    while issued.load(Ordering::SeqCst) < PRELOAD + 100 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let path = format!("/api/plans/{plan}/events/stream");
    let mut from_start = daemon.sse_ok(&format!("{path}?after=0"), &[]).await;
    let mut from_middle = daemon.sse_ok(&path, &[("Last-Event-ID", "250")]).await;
    let head_at_connect = daemon.head(plan).await.unwrap()["head_seq"]
        .as_u64()
        .unwrap();

    let streamed = assert_stream_covers(&mut from_start, plan, 1, TOTAL).await;
    assert_stream_covers(&mut from_middle, plan, 251, TOTAL).await;
    for handle in appenders {
        handle.await.unwrap();
    }
    assert!(
        head_at_connect < TOTAL,
        "the streams connected while appends were still running"
    );

    // What was streamed is exactly what is stored.
    let stored = daemon.all_events(plan).await;
    assert_eq!(stored.len() as u64, TOTAL);
    assert_eq!(streamed, stored);

    // Nothing more arrives: a further append is the next and only event.
    let extra = daemon
        .append_ok(plan, event_body("plan.closed", TOTAL))
        .await;
    let (id, event) = from_start.next_event().await;
    assert_eq!(id, TOTAL + 1);
    assert_eq!(event, extra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_slow_and_fast_readers_all_get_everything() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let path = format!("/api/plans/{plan}/events/stream");
    let mut fast = daemon.sse_ok(&path, &[]).await;
    // A reader that does not read while the load runs.
    let mut idle = daemon.sse_ok(&path, &[]).await;
    let (_, appenders) = spawn_appenders(&daemon, plan, 4, 0, 400);
    let events = assert_stream_covers(&mut fast, plan, 1, 400).await;
    for handle in appenders {
        handle.await.unwrap();
    }
    let late = assert_stream_covers(&mut idle, plan, 1, 400).await;
    assert_eq!(events, late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_catches_up_from_storage_without_blocking_appends() {
    // Large events, so that the socket buffers fill and the stalled
    // follower falls more than the fan-out capacity behind.
    const TOTAL: u64 = 6000;
    let filler = "z".repeat(8 * 1024);
    // Stalled on purpose while thousands of appends run: a slow machine
    // must not take this for a client that stopped reading for good.
    let daemon = Daemon::start(
        DaemonOpts::default().replace("send_timeout_secs = 60", "send_timeout_secs = 600"),
    );
    let plan = new_plan();
    let path = format!("/api/plans/{plan}/events/stream");
    let mut stalled = daemon.sse_ok(&path, &[]).await;
    let mut all_stalled = daemon.sse_ok("/api/events/stream", &[]).await;

    let issued = Arc::new(AtomicU64::new(0));
    let appenders: Vec<_> = (0..4)
        .map(|_| {
            let client = daemon.client.clone();
            let url = daemon.url(&format!("/api/plans/{plan}/events"));
            let (issued, filler) = (issued.clone(), filler.clone());
            tokio::spawn(async move {
                loop {
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    if n >= TOTAL {
                        return;
                    }
                    let body =
                        json!({"type": "step.completed", "payload": {"n": n, "filler": filler}});
                    let resp = common::send(
                        client
                            .post(&url)
                            .timeout(common::REQUEST_TIMEOUT)
                            .json(&body),
                    )
                    .await;
                    assert_eq!(
                        resp.status, 201,
                        "append while a reader is stalled: {}",
                        resp.text
                    );
                }
            })
        })
        .collect();
    // Appends finish although nobody reads the streams.
    for handle in appenders {
        tokio::time::timeout(std::time::Duration::from_secs(60), handle)
            .await
            .expect("appends were blocked by a stalled reader")
            .unwrap();
    }
    let mut previous: Option<Value> = None;
    for expected in 1..=TOTAL {
        let (id, event) = stalled.next_event().await;
        assert_eq!(
            id, expected,
            "the stalled reader skipped or repeated events"
        );
        if let Some(previous) = &previous {
            assert_eq!(event["prev_hash"], previous["signature"]);
        }
        previous = Some(event);
    }
    for expected in 1..=TOTAL {
        assert_eq!(
            all_stalled.next_event().await.0,
            expected,
            "the stalled all-plans reader skipped or repeated events"
        );
    }
}

/// A follower whose client reads nothing is cut once a write has waited
/// `server.send_timeout_secs`, while a follower that reads gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_reads_nothing_is_cut_after_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const EVENTS: u64 = 200;
    let daemon = Daemon::start(
        DaemonOpts::default().replace("send_timeout_secs = 60", "send_timeout_secs = 5"),
    );
    let plan = new_plan();
    let path = format!("/api/plans/{plan}/events/stream");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(daemon.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", daemon.addr);
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut reading = daemon.sse_ok(&path, &[]).await;
    let reader = tokio::spawn(async move {
        for expected in 1..=EVENTS {
            assert_eq!(
                reading.next_event().await.0,
                expected,
                "the reading follower"
            );
        }
        reading
    });

    // 12 MB of events: far more than both sockets' buffers hold.
    let filler = "z".repeat(60 * 1024);
    for n in 0..EVENTS {
        let body = json!({"type": "step.completed", "payload": {"n": n, "filler": filler}});
        daemon.append_ok(plan, body).await;
    }
    let _reading = reader.await.unwrap();
    let mut cut = false;
    for _ in 0..200 {
        let cuts = daemon.metric("logbook_http_send_timeouts_total").await;
        if cuts.is_some_and(|n| n >= 1.0) {
            assert_eq!(cuts, Some(1.0), "the reading follower was cut too");
            cut = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(cut, "the stalled follower was not cut");
    // Its stream is gone; the reading follower's stays.
    let mut streams = None;
    for _ in 0..50 {
        streams = daemon.metric("logbook_sse_clients").await;
        if streams == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(streams, Some(1.0));
    // The connection ends: EOF, or the reset.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stalled.read_to_end(&mut rest),
    )
    .await
    .expect("the cut connection ends");
    assert!(
        read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the cut connection ends with EOF or a reset"
    );
    // The socket was reset, so the kernel dropped what it still held:
    // the client got at most what the buffers held when it was cut.
    assert!(
        rest.len() < 8 << 20,
        "a cut follower got only what was buffered ({} bytes)",
        rest.len()
    );
}

/// A follower that reads slowly but steadily is not cut, although its
/// socket stays full for several times the limit: the kernel wakes a
/// refused writer only once about a third of its buffer has drained, so
/// the clock asks whether the peer took bytes before it cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_reads_slowly_is_not_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start(
        DaemonOpts::default().replace("send_timeout_secs = 60", "send_timeout_secs = 5"),
    );
    let plan = new_plan();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(daemon.addr).await.unwrap();
    let request = format!(
        "GET /api/plans/{plan}/events/stream HTTP/1.1\r\nHost: {}\r\n\r\n",
        daemon.addr
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    // 6 MB: at 20 KiB/s the reader needs minutes for it.
    let filler = "z".repeat(60 * 1024);
    for n in 0..100 {
        let body = json!({"type": "step.completed", "payload": {"n": n, "filler": filler}});
        daemon.append_ok(plan, body).await;
    }
    // 4 KiB every 200 ms for 12 s: more than twice the limit.
    let mut buf = vec![0u8; 4096];
    for _ in 0..60 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("the stream goes on")
            .expect("the stream is not cut");
        assert!(n > 0, "the stream ended");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        daemon.metric("logbook_http_send_timeouts_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_plans_stream_filters_types_and_uses_global_positions() {
    let daemon = Daemon::start(DaemonOpts::default());
    let (a, b) = (new_plan(), new_plan());
    // (plan, type) in append order; position = index + 1.
    let script: Vec<(Uuid, &str)> = vec![
        (a, "plan.created"),
        (b, "plan.created"),
        (a, "step.started"),
        (a, "step.completed"),
        (b, "plan.state_changed"),
        (b, "step.failed"),
        (a, "exception.raised"),
        (a, "plan.approved"),
        (b, "ledger.transaction"),
        (b, "plan.closed"),
    ];
    let wanted = |t: &str| t.starts_with("plan.");
    let half = script.len() / 2;
    let mut appended = Vec::new();
    for (n, (plan, t)) in script[..half].iter().enumerate() {
        appended.push(daemon.append_ok(plan, event_body(t, n as u64)).await);
    }

    // Connected after half was appended: the rest arrives live.
    let mut stream = daemon.sse_ok("/api/events/stream?types=plan.*", &[]).await;
    let mut steps = daemon
        .sse_ok("/api/events/stream?types=step.>,exception.*", &[])
        .await;
    for (n, (plan, t)) in script[half..].iter().enumerate() {
        appended.push(
            daemon
                .append_ok(plan, event_body(t, (half + n) as u64))
                .await,
        );
    }

    let expected: Vec<(u64, &Value)> = appended
        .iter()
        .enumerate()
        .filter(|(_, e)| wanted(e["type"].as_str().unwrap()))
        .map(|(i, e)| ((i + 1) as u64, e))
        .collect();
    let got = stream.take_events(expected.len()).await;
    for ((id, event), (position, want)) in got.iter().zip(&expected) {
        assert_eq!(id, position, "the all-plans id is the store-wide position");
        assert_eq!(&event, want);
    }
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let step_types: Vec<String> = steps
        .take_events(4)
        .await
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        step_types,
        [
            "step.started",
            "step.completed",
            "step.failed",
            "exception.raised"
        ]
    );

    // A non-matching append is not delivered; the next matching one is.
    daemon.append_ok(a, event_body("bank.message", 100)).await;
    let last = daemon.append_ok(a, event_body("plan.closed", 101)).await;
    let (id, event) = stream.next_event().await;
    assert_eq!(id, script.len() as u64 + 2);
    assert_eq!(event, last);

    // Resume by position.
    let mut resumed = daemon
        .sse_ok("/api/events/stream?types=plan.*", &[("Last-Event-ID", "5")])
        .await;
    let (id, event) = resumed.next_event().await;
    assert_eq!(id, 8);
    assert_eq!(event, appended[7]);

    // A bad filter is a 400.
    let refused = daemon
        .sse_refused("/api/events/stream?types=plan..x", &[])
        .await;
    assert_problem(&refused, 400);
    // One plan's stream takes no filter, and does not offer one.
    let refused = daemon
        .sse_refused(&format!("/api/plans/{a}/events/stream?typo=1"), &[])
        .await;
    assert_problem(&refused, 400);
    let detail = refused.json["detail"].as_str().unwrap();
    assert!(
        detail.contains("after") && !detail.contains("types"),
        "{detail}"
    );
    let refused = daemon
        .sse_refused(&format!("/api/plans/{a}/events/stream?types=plan.*"), &[])
        .await;
    assert_problem(&refused, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_across_a_restart() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let other = new_plan();
    let mut appended = Vec::new();
    for n in 0..20 {
        appended.push(daemon.append_ok(plan, event_body("step.started", n)).await);
        daemon.append_ok(other, event_body("plan.created", n)).await;
    }

    let path = format!("/api/plans/{plan}/events/stream");
    let mut stream = daemon.sse_ok(&path, &[]).await;
    let seen = stream.take_events(8).await;
    assert_eq!(
        seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<u64>>()
    );
    let mut all = daemon.sse_ok("/api/events/stream", &[]).await;
    let seen_all = all.take_events(11).await;
    let last_position = seen_all.last().unwrap().0;
    drop(stream);
    drop(all);

    daemon.restart();
    for n in 20..25 {
        appended.push(
            daemon
                .append_ok(plan, event_body("step.completed", n))
                .await,
        );
    }

    let mut resumed = daemon.sse_ok(&path, &[("Last-Event-ID", "8")]).await;
    let rest = assert_stream_covers(&mut resumed, plan, 9, 25).await;
    assert_eq!(rest, appended[8..]);
    // Live after the resume: the next append comes next, nothing in between.
    let next = daemon.append_ok(plan, event_body("plan.closed", 25)).await;
    assert_eq!(resumed.next_event().await, (26, next));

    // The all-plans position also survives the restart.
    let mut resumed_all = daemon
        .sse_ok(
            "/api/events/stream",
            &[("Last-Event-ID", &last_position.to_string())],
        )
        .await;
    let (id, _) = resumed_all.next_event().await;
    assert_eq!(id, last_position + 1);

    // Last-Event-ID wins over ?after=.
    let mut both = daemon
        .sse_ok(&format!("{path}?after=2"), &[("Last-Event-ID", "24")])
        .await;
    assert_eq!(both.next_event().await.0, 25);
}

#[tokio::test]
async fn cursor_beyond_head_is_an_explicit_error() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    for n in 0..3 {
        daemon.append_ok(plan, event_body("step.started", n)).await;
    }
    let path = format!("/api/plans/{plan}/events/stream");

    let refused = daemon.sse_refused(&path, &[("Last-Event-ID", "4")]).await;
    assert_eq!(
        assert_problem(&refused, 409),
        "urn:logbook:problem:cursor-beyond-head"
    );
    assert_eq!(refused.json["head"], 3, "{}", refused.text);
    let refused = daemon.sse_refused(&format!("{path}?after=100"), &[]).await;
    assert_problem(&refused, 409);
    let refused = daemon
        .sse_refused(
            &format!("/api/plans/{}/events/stream?after=1", new_plan()),
            &[],
        )
        .await;
    assert_problem(&refused, 409);
    let refused = daemon
        .sse_refused("/api/events/stream", &[("Last-Event-ID", "1000")])
        .await;
    assert_eq!(
        assert_problem(&refused, 409),
        "urn:logbook:problem:cursor-beyond-head"
    );
    // Ids are spelled as the server sends them: no leading zero or sign.
    for bad in ["three", "03", "+3", "3 3"] {
        let refused = daemon.sse_refused(&path, &[("Last-Event-ID", bad)]).await;
        assert_eq!(
            assert_problem(&refused, 400),
            "urn:logbook:problem:invalid-last-event-id",
            "{bad}"
        );
    }
    for bad in ["01", "+1"] {
        let refused = daemon
            .sse_refused(&format!("{path}?after={bad}"), &[])
            .await;
        assert_eq!(
            assert_problem(&refused, 400),
            "urn:logbook:problem:invalid-query",
            "{bad}"
        );
    }
    // Two cursors are none: neither is taken silently.
    let refused = daemon
        .sse_refused(&path, &[("Last-Event-ID", "1"), ("Last-Event-ID", "2")])
        .await;
    assert_eq!(
        assert_problem(&refused, 400),
        "urn:logbook:problem:invalid-last-event-id"
    );

    // The head itself is a valid cursor: nothing to replay, then live.
    let mut at_head = daemon.sse_ok(&path, &[("Last-Event-ID", "3")]).await;
    let next = daemon.append_ok(plan, json!({"type": "plan.closed"})).await;
    assert_eq!(at_head.next_event().await, (4, next));
    // An empty plan from 0 waits for its first event.
    let fresh = new_plan();
    let mut empty = daemon
        .sse_ok(&format!("/api/plans/{fresh}/events/stream"), &[])
        .await;
    let first = daemon
        .append_ok(fresh, json!({"type": "plan.created"}))
        .await;
    assert_eq!(empty.next_event().await, (1, first));
}

#[tokio::test]
async fn idle_streams_get_keepalive_comments() {
    let daemon =
        Daemon::start(DaemonOpts::default().replace("keepalive_secs = 15", "keepalive_secs = 1"));
    let plan = new_plan();
    daemon
        .append_ok(plan, json!({"type": "plan.created"}))
        .await;
    let mut stream = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream"), &[])
        .await;
    assert_eq!(stream.next_event().await.0, 1);
    let frame = stream
        .next_frame(std::time::Duration::from_secs(5))
        .await
        .expect("a keep-alive within 5 s")
        .expect("the stream is open");
    assert!(
        frame.is_comment_only(),
        "expected a comment line, got {frame:?}"
    );
}

/// Each followed plan has its own channel in the fan-out, and the last
/// follower to leave takes it away: `logbook_sse_followed_plans` counts
/// the plans followed now, and falls back to 0 once every stream is gone
/// (the daemon notices a closed stream at the latest at its next
/// keep-alive, 1 s here).
#[tokio::test]
async fn a_plans_channel_goes_with_its_last_follower() {
    let daemon =
        Daemon::start(DaemonOpts::default().replace("keepalive_secs = 15", "keepalive_secs = 1"));
    let followed_plans = || async {
        let value = daemon.metric("logbook_sse_followed_plans").await;
        value.expect("the gauge is exposed") as u64
    };
    let wait_for = |want: u64| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = followed_plans().await;
            if now == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{now} plans followed, not {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert_eq!(followed_plans().await, 0);
    let (a, b) = (new_plan(), new_plan());
    let mut streams = Vec::new();
    for plan in [a, a, b] {
        streams.push(
            daemon
                .sse_ok(&format!("/api/plans/{plan}/events/stream"), &[])
                .await,
        );
    }
    // The all-plans stream has no plan channel.
    streams.push(daemon.sse_ok("/api/events/stream", &[]).await);
    wait_for(2).await;
    // One of plan a's two followers leaves: a's channel stays.
    drop(streams.remove(0));
    daemon.append_ok(a, json!({"type": "plan.created"})).await;
    assert_eq!(streams[0].next_event().await.0, 1);
    wait_for(2).await;
    drop(streams);
    wait_for(0).await;
}
