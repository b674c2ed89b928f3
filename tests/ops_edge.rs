//! The edge of the TCP API against the real binary: the Host check while no
//! token is required (DNS rebinding), the Origin check on writes, federation
//! management kept off TCP without a token, `[auth] required` and its
//! persisted latch, and the connection and SSE stream caps.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, DaemonOpts, assert_problem, event_body, new_plan, send};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FED: &str = "/api/v1/federation";

async fn plans_count(daemon: &Daemon) -> usize {
    let out = daemon.admin_json(&["plans", "list"]).await;
    out["plans"].as_array().map_or(0, |plans| {
        plans.iter().filter(|p| p["system"] != true).count()
    })
}

#[tokio::test]
async fn a_foreign_host_is_refused_while_no_token_is_required() {
    let daemon = Daemon::start(DaemonOpts::default().replace(
        "allowed_hosts = []",
        "allowed_hosts = [\"logbook.internal\"]",
    ));
    let port = daemon.addr.port();
    let plan = new_plan();

    // A page rebound to 127.0.0.1 still sends its own name as Host.
    for host in ["attacker.example", &format!("attacker.example:{port}")] {
        let resp = send(daemon.get("/api/plans").header("host", host)).await;
        let kind = assert_problem(&resp, 421);
        assert_eq!(kind, "urn:logbook:problem:host-not-allowed");
        let resp = send(
            daemon
                .post(&format!("/api/plans/{plan}/events"))
                .header("host", host)
                .json(&event_body("plan.created", 1)),
        )
        .await;
        assert_problem(&resp, 421);
    }
    assert_eq!(
        plans_count(&daemon).await,
        0,
        "a refused append changed nothing"
    );

    // Loopback names and addresses, with any port, and listed names pass.
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]:1".to_string(),
        "logbook.internal".to_string(),
        format!("LOGBOOK.internal:{port}"),
    ] {
        let resp = send(daemon.get("/api/plans").header("host", host.as_str())).await;
        assert_eq!(resp.status, 200, "Host {host}: {}", resp.text);
    }

    // A proxy on this host relays clients from anywhere, with a loopback
    // Host (nginx's default): what it adds gives it away.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
        ("via", "1.1 nginx"),
        ("X-Forwarded-Proto", "https"),
    ] {
        let resp = send(
            daemon
                .post(&format!("/api/plans/{plan}/events"))
                .header("host", format!("127.0.0.1:{port}"))
                .header(name, value)
                .json(&event_body("plan.created", 1)),
        )
        .await;
        let kind = assert_problem(&resp, 403);
        assert_eq!(kind, "urn:logbook:problem:proxied-request", "{name}");
        let resp = send(daemon.get("/api/plans").header(name, value)).await;
        assert_problem(&resp, 403);
    }
    assert_eq!(
        plans_count(&daemon).await,
        0,
        "a relayed append changed nothing"
    );

    // Once a token is required, the token is the guard: any Host may carry
    // it, through a proxy too.
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await
        .trim()
        .to_string();
    let resp = send(
        daemon
            .get("/api/plans")
            .header("host", "attacker.example")
            .header("x-forwarded-for", "203.0.113.9")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn a_write_from_an_origin_not_allowed_is_refused() {
    let daemon = Daemon::start(DaemonOpts::default().replace(
        "cors_origins = []",
        "cors_origins = [\"http://ui.example\"]",
    ));
    let plan = new_plan();
    let append = |origin: &str| {
        daemon
            .post(&format!("/api/plans/{plan}/events"))
            .header("origin", origin)
            .json(&event_body("plan.created", 1))
    };
    let resp = send(append("http://evil.example")).await;
    assert_eq!(
        assert_problem(&resp, 403),
        "urn:logbook:problem:origin-not-allowed"
    );
    assert_eq!(
        plans_count(&daemon).await,
        0,
        "the refused append changed nothing"
    );
    assert_eq!(send(append("null")).await.status, 403);
    let resp = send(append("http://ui.example")).await;
    assert_eq!(resp.status, 201, "{}", resp.text);

    // Reads are for CORS to police; a write without Origin (curl, scripts) passes.
    let resp = send(
        daemon
            .get("/api/plans")
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = daemon
        .append(new_plan(), event_body("plan.created", 2))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);

    // With tokens too: a valid token does not make a foreign page's write acceptable.
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "append"])
        .await
        .trim()
        .to_string();
    let resp = send(append("http://evil.example").bearer_auth(&token)).await;
    assert_problem(&resp, 403);
    let resp = send(append("http://ui.example").bearer_auth(&token)).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn federation_management_is_refused_over_tcp_without_a_token() {
    let daemon = Daemon::start(DaemonOpts::default());
    let refused = |resp: &common::Resp| {
        assert!(
            resp.status == 401 || resp.status == 403,
            "status {}: {}",
            resp.status,
            resp.text
        );
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json")
        );
    };
    refused(&daemon.get_json(&format!("{FED}/peers")).await);
    let peer = json!({"instanceId": "mallory", "baseUrl": "http://127.0.0.1:9", "fingerprint": "ab".repeat(32)});
    let pattern = json!({"peer": "mallory", "pattern": ">"});
    for (path, body) in [
        (format!("{FED}/peers"), peer),
        (
            format!("{FED}/peers/mallory/status"),
            json!({"status": "active"}),
        ),
        (format!("{FED}/events/subscribe"), pattern.clone()),
        (format!("{FED}/events/unsubscribe"), pattern),
        (format!("{FED}/events/publish"), json!({"peer": "mallory"})),
        (
            format!("{FED}/events/messages/retry"),
            json!({"peer": "mallory"}),
        ),
        (
            format!("{FED}/events/messages/drop"),
            json!({"peer": "mallory"}),
        ),
    ] {
        let resp = send(daemon.post(&path).json(&body)).await;
        refused(&resp);
    }
    // Nothing was added.
    let peers = daemon.admin_json(&["peers", "list"]).await;
    assert_eq!(peers["peers"], json!([]), "{peers}");

    // The public peer-facing routes stay public; the socket serves the rest.
    let resp = daemon.get_json(&format!("{FED}/instance")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = daemon
        .get_json(&format!("{FED}/events/subscriptions"))
        .await;
    assert_eq!(resp.status, 200, "listings stay readable: {}", resp.text);
    let status = daemon.admin_json(&["status"]).await;
    assert_eq!(status["auth"]["required"], false, "{status}");
    assert_eq!(status["auth"]["setting"], "auto", "{status}");
}

#[tokio::test]
async fn revoking_the_last_token_leaves_401_even_after_a_restart() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    assert_eq!(daemon.get_json("/api/plans").await.status, 200);
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "only"])
        .await
        .trim()
        .to_string();
    assert_eq!(daemon.get_as("/api/plans", &token).await.status, 200);
    assert_problem(&daemon.get_json("/api/plans").await, 401);

    daemon.admin_ok(&["tokens", "revoke", "only"]).await;
    assert_problem(&daemon.get_json("/api/plans").await, 401);
    assert_problem(&daemon.get_as("/api/plans", &token).await, 401);
    let status = daemon.admin_json(&["status"]).await;
    assert_eq!(
        status["auth"],
        json!({"required": true, "setting": "auto", "reason": "a token existed (latched)", "latched": true, "tokens": 0}),
        "{status}"
    );

    daemon.restart();
    assert_problem(&daemon.get_json("/api/plans").await, 401);
    assert_problem(&daemon.get_as("/api/plans", &token).await, 401);
    // The admin socket still works, so a new token can be made.
    let fresh = daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await
        .trim()
        .to_string();
    assert_eq!(daemon.get_as("/api/plans", &fresh).await.status, 200);
}

#[tokio::test]
async fn a_token_removed_from_the_config_leaves_401() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let hash = logbook_base::hex::encode(&logbook_base::canonical::sha256(b"config-secret"));
    let with_token = DaemonOpts::default().config(&format!(
        "[[auth.tokens]]\nname = \"cfg\"\nsha256 = \"{hash}\"\nscopes = [\"read\"]\n"
    ));
    std::fs::write(daemon.config_path(), with_token.config_text()).unwrap();
    daemon.admin_ok(&["reload"]).await;
    assert_problem(&daemon.get_json("/api/plans").await, 401);
    assert_eq!(
        daemon.get_as("/api/plans", "config-secret").await.status,
        200
    );

    // The token leaves the file: auth stays on, also after a restart.
    std::fs::write(daemon.config_path(), DaemonOpts::default().config_text()).unwrap();
    daemon.admin_ok(&["reload"]).await;
    assert_problem(&daemon.get_json("/api/plans").await, 401);
    daemon.restart();
    assert_problem(&daemon.get_json("/api/plans").await, 401);
    let status = daemon.admin_json(&["status"]).await;
    assert_eq!(
        status["auth"]["reason"], "a token existed (latched)",
        "{status}"
    );
}

#[tokio::test]
async fn auth_required_true_and_false() {
    // true with no token: the daemon starts, TCP gets 401, the socket works.
    let daemon =
        Daemon::start(DaemonOpts::default().replace("required = \"auto\"", "required = true"));
    assert_problem(&daemon.get_json("/api/plans").await, 401);
    let status = daemon.admin_json(&["status"]).await;
    assert_eq!(status["auth"]["required"], true, "{status}");
    assert_eq!(status["auth"]["setting"], true, "{status}");
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await
        .trim()
        .to_string();
    assert_eq!(daemon.get_as("/api/plans", &token).await.status, 200);

    // false: the operator's opt-out, even with a token configured; still no
    // browser-reachable open door.
    let hash = logbook_base::hex::encode(&logbook_base::canonical::sha256(b"admin-secret"));
    let daemon = Daemon::start(
        DaemonOpts::default()
            .replace("required = \"auto\"", "required = false")
            .config(&format!(
                "[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{hash}\"\nscopes = [\"read\", \"append\", \"admin\"]\n"
            )),
    );
    assert_eq!(daemon.get_json("/api/plans").await.status, 200);
    let status = daemon.admin_json(&["status"]).await;
    assert_eq!(status["auth"]["required"], false, "{status}");
    assert_eq!(status["auth"]["setting"], false, "{status}");
    let resp = send(daemon.get("/api/plans").header("host", "attacker.example")).await;
    assert_problem(&resp, 421);
    let resp = daemon.get_as(&format!("{FED}/peers"), "admin-secret").await;
    assert_problem(&resp, 403);

    // And it cannot be combined with a public listen address.
    let (exit, log) = common::run_expecting_exit(
        DaemonOpts::default()
            .replace("required = \"auto\"", "required = false")
            .listen("0.0.0.0:0"),
    );
    assert!(!exit.success());
    assert!(log.contains("auth.required = false"), "{log}");
}

#[tokio::test]
async fn a_stream_over_the_cap_gets_503() {
    let daemon = Daemon::start(
        DaemonOpts::default()
            .replace("max_streams = 15000", "max_streams = 2")
            .replace("keepalive_secs = 15", "keepalive_secs = 1"),
    );
    let first = daemon.sse_ok("/api/events/stream", &[]).await;
    let _second = daemon
        .sse_ok(&format!("/api/plans/{}/events/stream", new_plan()), &[])
        .await;
    for path in [
        "/api/events/stream".to_string(),
        format!("{FED}/events/stream"),
    ] {
        let resp = daemon.sse_refused(&path, &[]).await;
        assert_problem(&resp, 503);
        assert!(
            resp.json["detail"]
                .as_str()
                .unwrap()
                .contains("max_streams")
        );
    }
    // Other requests are not affected.
    assert_eq!(daemon.get_json("/api/plans").await.status, 200);

    // A closed stream frees its slot (noticed at the next keep-alive at the latest).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if daemon.sse("/api/events/stream", &[]).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads past keep-alives to the `event: error` frame that must end the
/// stream, checks its problem's status, and that the stream then ends.
async fn expect_ended_with(stream: &mut common::SseClient, status: u16) -> Value {
    // Bounded as a whole: keep-alives would satisfy any per-read timeout.
    let frame = tokio::time::timeout(
        Duration::from_secs(30),
        stream.next_message_frame(Duration::from_secs(30)),
    )
    .await
    .expect("the stream was not ended within 30 s");
    assert_eq!(frame.event.as_deref(), Some("error"), "{frame:?}");
    let problem: Value = serde_json::from_str(&frame.data).unwrap();
    assert_eq!(problem["status"], status, "{problem}");
    let rest = stream.expect_end(Duration::from_secs(20)).await;
    assert!(rest.is_empty(), "{rest:?}");
    problem
}

#[tokio::test]
async fn revoking_a_token_ends_the_streams_it_opened() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    daemon.append_ok(plan, event_body("plan.created", 1)).await;
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "read", "--name", "watcher"])
        .await
        .trim()
        .to_string();
    let other = daemon
        .admin_ok(&[
            "tokens",
            "create",
            "--scope",
            "read,append",
            "--name",
            "other",
        ])
        .await
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let mut all = daemon.sse_ok("/api/events/stream", &auth).await;
    let mut one = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream"), &auth)
        .await;
    let mut received = daemon.sse_ok(&format!("{FED}/events/stream"), &auth).await;
    let other_bearer = format!("Bearer {other}");
    let mut kept = daemon
        .sse_ok(
            "/api/events/stream",
            &[("authorization", other_bearer.as_str())],
        )
        .await;
    assert_eq!(all.next_event().await.1["type"], "plan.created");
    assert_eq!(one.next_event().await.1["type"], "plan.created");
    assert_eq!(kept.next_event().await.1["type"], "plan.created");

    daemon.admin_ok(&["tokens", "revoke", "watcher"]).await;
    for stream in [&mut all, &mut one, &mut received] {
        let problem = expect_ended_with(stream, 401).await;
        assert_eq!(problem["type"], "urn:logbook:problem:unauthorized");
        assert!(
            problem["detail"].as_str().unwrap().contains("revoked"),
            "{problem}"
        );
    }
    // A stream opened with a token still valid goes on.
    let appended = daemon
        .append_as(plan, event_body("step.started", 2), &other)
        .await;
    assert_eq!(appended.status, 201, "{}", appended.text);
    assert_eq!(kept.next_event().await.1["type"], "step.started");
}

#[tokio::test]
async fn a_token_becoming_required_ends_tokenless_streams() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    daemon.append_ok(plan, event_body("plan.created", 1)).await;
    let mut all = daemon.sse_ok("/api/events/stream", &[]).await;
    let mut one = daemon
        .sse_ok(&format!("/api/plans/{plan}/events/stream"), &[])
        .await;
    let mut received = daemon.sse_ok(&format!("{FED}/events/stream"), &[]).await;
    assert_eq!(all.next_event().await.1["type"], "plan.created");
    assert_eq!(one.next_event().await.1["type"], "plan.created");

    // The first token latches auth on ("auto"): open streams must not
    // outlive open mode.
    daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await;
    for stream in [&mut all, &mut one, &mut received] {
        let problem = expect_ended_with(stream, 401).await;
        assert_eq!(problem["type"], "urn:logbook:problem:unauthorized");
    }
}

#[tokio::test]
async fn a_reload_to_required_true_ends_tokenless_streams() {
    let daemon = Daemon::start(DaemonOpts::default());
    let mut all = daemon.sse_ok("/api/events/stream", &[]).await;
    let required = DaemonOpts::default().replace("required = \"auto\"", "required = true");
    std::fs::write(daemon.config_path(), required.config_text()).unwrap();
    daemon.signal("HUP");
    expect_ended_with(&mut all, 401).await;
}

#[tokio::test]
async fn more_than_one_host_or_origin_is_refused() {
    let daemon = Daemon::start(DaemonOpts::default().replace(
        "cors_origins = []",
        "cors_origins = [\"http://ui.example\"]",
    ));
    let plan = new_plan();
    // The first Host is loopback, the second is not: refused whichever is checked.
    let resp = daemon
        .raw_http(b"GET /api/plans HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(
        assert_problem(&resp, 400),
        "urn:logbook:problem:duplicate-host"
    );
    // The first Origin is allowed, the second is not: not allowed.
    let body = event_body("plan.created", 1).to_string();
    let request = format!(
        "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://ui.example\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = daemon.raw_http(request.as_bytes()).await;
    assert_eq!(
        assert_problem(&resp, 403),
        "urn:logbook:problem:origin-not-allowed"
    );
    assert!(daemon.head(plan).await.is_none());
    // Two Content-Types, or two Authorizations (the first one valid): refused,
    // and nothing appended.
    for twice in [
        "Content-Type: application/json\r\nContent-Type: text/plain",
        "Content-Type: application/json\r\nAuthorization: Bearer x\r\nAuthorization: Bearer y",
    ] {
        let request = format!(
            "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{twice}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = daemon.raw_http(request.as_bytes()).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:duplicate-header",
            "{twice}"
        );
    }
    assert!(daemon.head(plan).await.is_none());
    // One allowed Origin still passes.
    let resp = send(
        daemon
            .post(&format!("/api/plans/{plan}/events"))
            .header("origin", "http://ui.example")
            .json(&event_body("plan.created", 1)),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn wildcard_cors_origins_count_for_nothing_while_no_token_is_required() {
    let wild =
        || DaemonOpts::default().replace("cors_origins = []", "cors_origins = [\"*\", \"null\"]");
    let daemon = Daemon::start(wild());
    let plan = new_plan();
    for origin in ["http://evil.example", "null"] {
        // A page may neither read ...
        let resp = send(daemon.get("/api/plans").header("origin", origin)).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(resp.header("access-control-allow-origin"), None, "{origin}");
        // ... nor get a preflight through ...
        let resp = send(
            daemon
                .client
                .request(
                    reqwest::Method::OPTIONS,
                    daemon.url(&format!("/api/plans/{plan}/events")),
                )
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type"),
        )
        .await;
        assert_eq!(resp.header("access-control-allow-origin"), None, "{origin}");
        // ... nor append.
        let resp = send(
            daemon
                .post(&format!("/api/plans/{plan}/events"))
                .header("origin", origin)
                .json(&event_body("plan.created", 1)),
        )
        .await;
        assert_eq!(
            assert_problem(&resp, 403),
            "urn:logbook:problem:origin-not-allowed"
        );
    }
    assert!(daemon.head(plan).await.is_none());

    // Once a token is required, "*" is the operator's choice again.
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await
        .trim()
        .to_string();
    let resp = send(
        daemon
            .get("/api/plans")
            .header("origin", "http://ui.example")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn streams_on_the_admin_socket_are_not_ended_by_token_changes() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    daemon.append_ok(plan, event_body("plan.created", 1)).await;
    let mut socket = tokio::net::UnixStream::connect(daemon.admin_socket())
        .await
        .unwrap();
    socket
        .write_all(b"GET /api/events/stream HTTP/1.1\r\nhost: logbook\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    // Read the replayed event.
    let mut buf = [0u8; 4096];
    while !seen.contains("plan.created") {
        let n = tokio::time::timeout(Duration::from_secs(20), socket.read(&mut buf))
            .await
            .expect("no event on the admin-socket stream")
            .unwrap();
        assert!(n > 0, "closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    daemon
        .admin_ok(&["tokens", "create", "--scope", "read"])
        .await;
    // Still open: a later append reaches it, and no error came first.
    let token = daemon
        .admin_ok(&["tokens", "create", "--scope", "append"])
        .await
        .trim()
        .to_string();
    let resp = daemon
        .append_as(plan, event_body("step.started", 2), &token)
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    seen.clear();
    while !seen.contains("step.started") {
        let n = tokio::time::timeout(Duration::from_secs(20), socket.read(&mut buf))
            .await
            .expect("no event after the token change")
            .unwrap();
        assert!(n > 0, "closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(!seen.contains("event: error"), "{seen}");
    }
}
