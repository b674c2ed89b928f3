//! What peers, and strangers posing as peers, can cost us: memory under a
//! flood of large bodies from an unknown sender, the concurrency limit and
//! body cap on `/incoming/*`, the per-peer storage quota and byte rate,
//! retention of old records, and peer-supplied text stored inert.

mod federation_common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use federation_common::*;
use logbook_federation::message::EventMessage;
use serde_json::{Value, json};
use uuid::Uuid;

const EVENT: &str = "/api/v1/federation/incoming/event";
const SUBSCRIBE: &str = "/api/v1/federation/incoming/subscribe";
const WAIT: Duration = Duration::from_secs(60);

/// A message from `from` to the node most tests here run ("beta").
fn signed(from: &str, id: Uuid, event_type: &str, payload: Value) -> EventMessage {
    signed_to("beta", from, id, event_type, payload)
}

fn signed_to(to: &str, from: &str, id: Uuid, event_type: &str, payload: Value) -> EventMessage {
    let key = test_key(from);
    EventMessage::signed(
        &key,
        &key_id(&key),
        from,
        to,
        id,
        event_type,
        payload,
        now_ms(),
    )
    .unwrap()
}

fn note(text_len: usize) -> EventMessage {
    signed(
        "mallory",
        Uuid::new_v4(),
        "audit.note",
        json!({"text": "x".repeat(text_len)}),
    )
}

async fn inbound(node: &Node) -> Vec<Value> {
    node.messages("direction=inbound").await
}

/// Posts `body` and returns the status, the Retry-After header and the body.
async fn post_raw(node: &Node, body: &Value) -> (u16, Option<String>, Value) {
    let r = node
        .http
        .post(node.url(EVENT))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_parallel_large_bodies_barely_raise_peak_memory() {
    let beta = Node::start("beta", free_port(), "", "");
    let (status, _) = beta.get("/api/v1/federation/instance").await;
    assert_eq!(status, 200);
    // ~1 MB of tiny objects: costly to build as a JSON tree, cheap to skip.
    let mut payload = String::from("[");
    while payload.len() < 1_000_000 {
        payload.push_str(r#"{"a":[1]},"#);
    }
    payload.push_str("{}]");
    let body = format!(
        r#"{{"messageId":"{}","instanceId":"stranger","eventType":"audit.note","payload":{payload},"timestamp":{},"keyId":"k","signature":"s"}}"#,
        Uuid::new_v4(),
        now_ms()
    );
    // Shared by every request without copies.
    let body: &'static str = Box::leak(body.into_boxed_str());
    let before = peak_rss_kib(beta.pid());
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (http, url) = (beta.http.clone(), beta.url(EVENT));
        tasks.push(tokio::spawn(async move {
            match http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => Some(r.status().as_u16()),
                // Refused before its body was read: the server may close
                // the connection while the client is still sending.
                Err(_) => None,
            }
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let after = peak_rss_kib(beta.pid());
    assert!(
        statuses.iter().flatten().all(|s| *s == 403 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&Some(403)), "{statuses:?}");
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("peak RSS grew by {grown_mib} MiB under 200 parallel 1 MB bodies");
    assert!(
        grown_mib < 100,
        "peak RSS grew by {grown_mib} MiB ({before} KiB → {after} KiB)"
    );
    let (status, _) = beta.get("/api/v1/federation/instance").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_requests_beyond_the_limit_get_503_and_large_bodies_413() {
    let beta = Node::start(
        "beta",
        free_port(),
        "incoming_concurrency = 1\nincoming_max_body_bytes = 4096",
        "",
    );
    let stranger = json!(signed("stranger", Uuid::new_v4(), "audit.note", json!({})));
    // A slow sender holds the only permit: its body never completes. If
    // a probe took the permit first, that slow sender was refused: open
    // another (the refused ones are closed by the server).
    let mut slow = Vec::new();
    let (retry, problem) = wait_for("a 503 while the permit is held", WAIT, || {
        let mut holder = TcpStream::connect(("127.0.0.1", beta.port)).unwrap();
        holder
            .write_all(
                format!("POST {EVENT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{")
                    .as_bytes(),
            )
            .unwrap();
        slow.push(holder);
        let probe = beta.http.post(beta.url(EVENT)).json(&stranger).send();
        async move {
            // Give the holder's request time to reach its handler.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = probe.await.unwrap();
            if r.status() != 503 {
                return None;
            }
            let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
            assert_eq!(content_type, "application/problem+json");
            let retry = r.headers()["retry-after"].to_str().unwrap().to_string();
            Some((retry, r.json::<Value>().await.unwrap()))
        }
    })
    .await;
    assert_eq!(retry, "1");
    assert_eq!(problem["status"], 503, "{problem}");
    // The slow senders go away: the permit is free again.
    drop(slow);
    wait_for("the permit released", WAIT, || async {
        let (status, _, _) = post_raw(&beta, &stranger).await;
        (status == 403).then_some(())
    })
    .await;
    // Over the body cap: refused before anything is parsed.
    let big = json!({"instanceId": "stranger", "keyId": "k", "payload": "x".repeat(5000)});
    let (status, _, problem) = post_raw(&beta, &big).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["max_body_bytes"], 4096, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_quota_gets_507_and_storage_stops_growing() {
    let beta = Node::start(
        "beta",
        free_port(),
        "peer_quota_bytes = 20000",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    let db = beta.data_dir().join("data").join("journal.redb");
    let mut accepted = Vec::new();
    let mut refusal = None;
    for _ in 0..20 {
        let m = note(3000);
        let (status, retry, body) = post_raw(&beta, &json!(m)).await;
        if status == 200 {
            accepted.push(m);
            continue;
        }
        refusal = Some((status, retry, body));
        break;
    }
    let (status, retry, problem) = refusal.expect("the quota was never reached");
    assert_eq!(status, 507, "{problem}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() > 0));
    assert_eq!(
        problem["type"], "urn:logbook:problem:peer-quota-exceeded",
        "{problem}"
    );
    assert!((4..=6).contains(&accepted.len()), "{}", accepted.len());
    let stored = inbound(&beta).await.len();
    assert_eq!(stored, accepted.len());
    let size = std::fs::metadata(&db).unwrap().len();

    // A flood of further messages changes nothing on disk.
    for _ in 0..30 {
        let (status, _, body) = post_raw(&beta, &json!(note(3000))).await;
        assert_eq!(status, 507, "{body}");
    }
    assert_eq!(inbound(&beta).await.len(), stored);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), size);
    // A redelivery of a stored message costs no room and is acked again.
    let first = &accepted[0];
    let again = EventMessage::signed(
        &test_key("mallory"),
        &key_id(&test_key("mallory")),
        "mallory",
        "beta",
        first.message_id,
        &first.event_type,
        first.payload.clone(),
        now_ms(),
    )
    .unwrap();
    let (status, _, ack) = post_raw(&beta, &json!(again)).await;
    assert_eq!(status, 200, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_byte_rate_gets_429() {
    let beta = Node::start(
        "beta",
        free_port(),
        "peer_bytes_per_sec = 1\npeer_bytes_burst = 8000",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    for _ in 0..2 {
        let (status, _, body) = post_raw(&beta, &json!(note(3000))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry, body) = post_raw(&beta, &json!(note(3000))).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("byte rate"),
        "{body}"
    );
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 900));
    assert_eq!(inbound(&beta).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_inbox_records_and_idempotency_keys_are_pruned() {
    let mut beta = Node::start(
        "beta",
        free_port(),
        "keep_days = 0\nidempotency_keep_days = 0\ntimestamp_window_secs = 1",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    for _ in 0..3 {
        let (status, _, body) = post_raw(&beta, &json!(note(10))).await;
        assert_eq!(status, 200, "{body}");
    }
    let plan = Uuid::new_v4();
    let append = |beta: &Node| {
        let request = beta
            .http
            .post(beta.url(&format!("/api/plans/{plan}/events")))
            .header("Idempotency-Key", "k-1")
            .json(&json!({"type": "step.completed", "payload": {}}))
            .send();
        async move {
            let r = request.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, event) = append(&beta).await;
    assert_eq!(status, 201, "{event}");
    let (status, replay) = append(&beta).await;
    assert!(status == 200 || status == 201, "{replay}");
    assert_eq!(replay["seq"], 1, "a retry within the window is a replay");
    // Within twice the timestamp window a message could be accepted again:
    // its record, which refuses the replay, stays whatever keep_days says.
    beta.restart();
    // The pass on start has run by then (three rows).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbound(&beta).await.len(), 3, "kept within the window");
    // Past it, every record but the newest is older than the pass's cutoff.
    std::thread::sleep(Duration::from_millis(2100));
    beta.restart();
    let kept = wait_for("the pass on start", WAIT, || async {
        let list = inbound(&beta).await;
        (list.len() == 1).then_some(list)
    })
    .await;
    // The newest is kept: positions go on from it, never reused.
    assert_eq!(kept[0]["position"], 3);
    let (status, _, body) = post_raw(&beta, &json!(note(10))).await;
    assert_eq!(status, 200, "{body}");
    let positions: Vec<Value> = inbound(&beta)
        .await
        .iter()
        .map(|m| m["position"].clone())
        .collect();
    assert_eq!(positions, [json!(3), json!(4)]);
    // The idempotency record is gone: the same key appends anew.
    let (status, again) = append(&beta).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["seq"], 2, "{again}");
}

/// A peer that answers every request with a problem whose detail is full
/// of terminal escape sequences and a fake log line.
fn hostile_peer() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the headers and the declared body, then answer.
            let _ = read_request(&mut stream);
            let body = json!({
                "type": "urn:x",
                "title": "no",
                "status": 422,
                "detail": "\u{1b}[2J\u{1b}[31mPWNED\u{1b}[0m\r\nlevel=info msg=\"forged\"\u{7}\u{202e}",
            })
            .to_string();
            let _ = stream.write_all(
                format!("HTTP/1.1 422 Unprocessable Entity\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_error_text_is_stored_and_shown_inert() {
    let evil_port = hostile_peer();
    let alpha = Node::start(
        "alpha",
        free_port(),
        "max_attempts = 1",
        &peer_config("evil", evil_port, &test_key("evil")),
    );
    let subscribe = signed_to(
        "alpha",
        "evil",
        Uuid::new_v4(),
        "federation.subscribe",
        json!({"eventType": "audit.>"}),
    );
    let (status, ack) = alpha.post(SUBSCRIBE, &json!(subscribe)).await;
    assert_eq!(status, 200, "{ack}");
    let (status, body) = alpha
        .post(
            "/api/v1/federation/events/publish",
            &json!({"eventType": "audit.note", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let dead = wait_for("the message dead", WAIT, || async {
        let out = alpha.messages("direction=outbound&status=dead").await;
        (out.len() == 1).then(|| out[0].clone())
    })
    .await;
    let error = dead["lastError"].as_str().unwrap();
    assert!(!error.chars().any(char::is_control), "{error:?}");
    assert!(!error.contains('\u{202e}'), "{error:?}");
    assert!(error.contains(r"\u{1b}[31mPWNED"), "{error:?}");
    assert!(error.contains(r"\u{d}\u{a}level=info"), "{error:?}");

    let socket = alpha.data_dir().join("admin.sock");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_logbook"))
            .arg("admin")
            .arg("--socket")
            .arg(socket)
            .args(["dead", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(shown.contains(r"\u{1b}[31mPWNED"), "{shown}");
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    assert!(!shown.contains('\r'), "{shown:?}");
    // Nor does the daemon's log carry the raw text.
    assert!(!alpha.log().contains('\u{1b}'), "{}", alpha.log());
}
