//! The TCP listener's connection limits against the real binary: the cap
//! on open connections, the open-file limit it is fitted to, the cap on a
//! request head's size, and the bytes of request bodies held at once. (The per-client cap counts no loopback
//! client, so it is tested on the serve loop itself, in `src/http/serve.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, DaemonOpts, REQUEST_TIMEOUT, run_expecting_exit};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `GET /healthz` on `socket` and reads one response head and body.
async fn healthz(socket: &mut TcpStream) -> String {
    exchange(socket, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await
}

/// Sends `request` on `socket` and reads one response head and body (or
/// what came before the connection ended).
async fn exchange(socket: &mut TcpStream, request: &[u8]) -> String {
    socket.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline.into(), socket.read(&mut buf))
            .await
            .expect("response timed out")
            .unwrap();
        if n == 0 {
            return text;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_connection_over_the_cap_gets_one_503_and_is_closed() {
    let daemon = Daemon::start(
        DaemonOpts::default().replace("max_connections = 16384", "max_connections = 4"),
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut socket = TcpStream::connect(daemon.addr).await.unwrap();
        let text = healthz(&mut socket).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        held.push(socket);
    }
    // The fifth: one 503 problem+json answer, then the end of the connection.
    let mut extra = TcpStream::connect(daemon.addr).await.unwrap();
    let text = healthz(&mut extra).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("content-type: application/problem+json"),
        "{text}"
    );
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["status"], 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("max_connections"),
        "{body}"
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, extra.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed after the answer"
    );

    // The held ones still work, and a freed slot is usable again.
    assert!(healthz(&mut held[0]).await.starts_with("HTTP/1.1 200"));
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut socket = TcpStream::connect(daemon.addr).await.unwrap();
        if healthz(&mut socket).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The admin socket is not capped by the TCP limit.
    daemon.admin_json(&["status"]).await;
}

/// Opens connections that each answer one `/healthz` until one is refused,
/// and returns how many were served (the refused one's answer checked).
async fn connections_until_refused(daemon: &Daemon, most: usize) -> (usize, Vec<TcpStream>) {
    let mut held = Vec::new();
    while held.len() <= most {
        let mut socket = TcpStream::connect(daemon.addr).await.unwrap();
        let text = healthz(&mut socket).await;
        if text.starts_with("HTTP/1.1 503") {
            let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains("max_connections"),
                "{body}"
            );
            return (held.len(), held);
        }
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        held.push(socket);
    }
    panic!("{} connections were served, more than {most}", held.len());
}

#[tokio::test]
async fn the_connection_cap_is_fitted_to_the_open_file_limit() {
    // A soft limit of 600 raised to the hard 1000, less the 768 kept for
    // the store, listeners, peers and refusals: 232 connections, not 16384.
    let daemon = Daemon::start(DaemonOpts::default().open_files(600, 1000));
    assert!(
        daemon
            .wait_log(
                &[
                    "server.max_connections lowered to fit the open-file limit",
                    "\"lowered\":232"
                ],
                Duration::from_secs(10),
            )
            .await,
        "no warning that the cap was lowered to 232"
    );
    // The 233rd gets the cap's 503, not an accept failing with EMFILE.
    let (served, held) = connections_until_refused(&daemon, 232).await;
    assert_eq!(served, 232);
    drop(held);
    daemon.admin_json(&["status"]).await;
}

/// A limit that leaves fewer than 64 connections beside the daemon's other
/// files refuses the start, saying what to raise, before anything is done.
#[test]
fn an_open_file_limit_too_low_to_serve_refuses_the_start() {
    let (status, log) = run_expecting_exit(DaemonOpts::default().open_files(800, 800));
    assert!(!status.success());
    assert!(
        log.contains("the open-file limit is 800, which leaves room for 32 connections"),
        "{log}"
    );
}

#[tokio::test]
async fn a_request_head_over_64_kib_gets_431_and_the_daemon_serves_on() {
    let daemon = Daemon::start(DaemonOpts::default());
    // hyper's default buffer (about 400 KiB) takes this head whole.
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 100 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let mut socket = TcpStream::connect(daemon.addr).await.unwrap();
    let text = exchange(&mut socket, &request).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text:.200}");
    // hyper's own answer, made problem+json.
    assert!(
        text.contains("content-type: application/problem+json"),
        "{text:.400}"
    );
    assert!(
        text.contains("\"type\":\"urn:logbook:problem:head-too-large\""),
        "{text:.400}"
    );
    // A head just under the buffer is served.
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 60 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let mut socket = TcpStream::connect(daemon.addr).await.unwrap();
    assert!(
        exchange(&mut socket, &request)
            .await
            .starts_with("HTTP/1.1 200")
    );
}

/// An append body of `len` bytes: valid JSON, padded with a string.
fn padded_append(len: usize) -> Vec<u8> {
    let head = r#"{"type":"plan.created","payload":{"pad":""#;
    let tail = r#""}}"#;
    let mut body = head.as_bytes().to_vec();
    body.extend(std::iter::repeat_n(b'x', len - head.len() - tail.len()));
    body.extend_from_slice(tail.as_bytes());
    body
}

fn append_head(daemon: &Daemon, plan: uuid::Uuid, length: usize) -> Vec<u8> {
    format!(
        "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        daemon.addr
    )
    .into_bytes()
}

/// Bodies being received are counted against `limits.max_buffered_body_bytes`
/// until answered: one that finds no room gets 503 problem+json (read to
/// its end, so the answer is not lost to a reset) and appends nothing; once
/// the room is back, appends pass.
#[tokio::test]
async fn bodies_held_at_once_are_bounded_by_bytes() {
    // The smallest budget the default caps allow (federation's 1 MiB + 16 KiB).
    const BUDGET: usize = (1 << 20) + 16 * 1024;
    let daemon = Daemon::start(DaemonOpts::default().replace(
        "max_buffered_body_bytes = 268435456",
        &format!("max_buffered_body_bytes = {BUDGET}"),
    ));
    // A client that sends 900 KB of a 1,000,000-byte body, then waits.
    let stalled = padded_append(1_000_000);
    let hold = || async {
        let mut holder = TcpStream::connect(daemon.addr).await.unwrap();
        let mut request = append_head(&daemon, uuid::Uuid::new_v4(), stalled.len());
        request.extend_from_slice(&stalled[..900_000]);
        holder.write_all(&request).await.unwrap();
        holder
    };
    let mut holder = hold().await;

    // Another 200 KB body does not fit beside it. Until the daemon has read
    // the first, it may; and if the holder's bytes arrive while such a body
    // is counted, the holder is the one refused (drained, holding nothing,
    // unanswered until its body ends), so it is replaced by a new one.
    // Each try uses a fresh plan.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let plan = uuid::Uuid::new_v4();
        let body = padded_append(200_000);
        let mut request = append_head(&daemon, plan, body.len());
        request.extend_from_slice(&body);
        let resp = daemon.raw_http(&request).await;
        if resp.status == 503 {
            break (plan, resp);
        }
        assert_eq!(resp.status, 201, "{}", resp.text);
        assert!(Instant::now() < deadline, "never refused");
        drop(holder);
        tokio::time::sleep(Duration::from_millis(50)).await;
        holder = hold().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (plan, resp) = refused;
    assert_eq!(
        common::assert_problem(&resp, 503),
        "urn:logbook:problem:unavailable"
    );
    let detail = resp.json["detail"].as_str().unwrap();
    assert!(
        detail.contains("limits.max_buffered_body_bytes"),
        "{detail}"
    );
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert!(
        daemon.head(plan).await.is_none(),
        "the refused body appended"
    );
    assert!(
        daemon.metric("logbook_http_bodies_refused_total").await >= Some(1.0),
        "the refusal was not counted"
    );

    // The stalled client leaves: its share comes back, and the same
    // append goes through.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = padded_append(200_000);
        let mut request = append_head(&daemon, plan, body.len());
        request.extend_from_slice(&body);
        let resp = daemon.raw_http(&request).await;
        if resp.status == 201 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text);
        assert!(Instant::now() < deadline, "the budget never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 1);
}
