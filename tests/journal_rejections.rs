//! Strict bodies and uniform rejections: a JSON route whose body is an object
//! refuses any other JSON value with 422 `invalid-request` (serde would fill a
//! struct from an array, in field order), and every rejection on every route,
//! HTTP and admin socket, is problem+json, including a bad path segment.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, DaemonOpts, Resp, assert_problem, event_body, new_plan, send};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const FED: &str = "/api/v1/federation";

/// Every HTTP route that takes a JSON object body, with an array that a
/// field-order deserializer would accept as that object.
fn object_routes(plan: &str) -> Vec<(String, Value)> {
    vec![
        (
            format!("/api/plans/{plan}/events"),
            json!(["step.started", "me", {}, null]),
        ),
        (
            format!("{FED}/peers"),
            json!(["peer-b", "http://127.0.0.1:9", "", ""]),
        ),
        (format!("{FED}/peers/peer-b/status"), json!(["removed"])),
        (
            format!("{FED}/events/subscribe"),
            json!(["peer-b", "plan.*"]),
        ),
        (
            format!("{FED}/events/unsubscribe"),
            json!(["peer-b", "plan.*"]),
        ),
        (format!("{FED}/events/publish"), json!(["news.flash", {}])),
        (format!("{FED}/events/messages/retry"), json!([])),
        (
            format!("{FED}/events/messages/drop"),
            json!([null, null, true]),
        ),
    ]
}

/// Values that are JSON but not objects.
fn scalars() -> Vec<Value> {
    vec![json!("step.started"), json!(7), json!(null), json!(true)]
}

fn assert_invalid_request(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 422, "{what}: {}", resp.text);
    assert_eq!(
        assert_problem(resp, 422),
        "urn:logbook:problem:invalid-request",
        "{what}"
    );
}

#[tokio::test]
async fn non_object_bodies_get_422_on_every_json_route() {
    // Federation management over TCP needs a token (open mode serves it
    // only on the admin socket).
    let daemon = Daemon::start(DaemonOpts::default().with_admin_token()).send_admin_token();
    let plan = new_plan();
    for (path, array) in object_routes(&plan.to_string()) {
        for body in std::iter::once(array).chain(scalars()) {
            let resp = send(daemon.post(&path).json(&body)).await;
            assert_invalid_request(&resp, &format!("POST {path} {body}"));
        }
    }
    // Nothing was appended, published or changed.
    assert!(daemon.head(plan).await.is_none(), "an array was appended");
    let messages = daemon.get_json(&format!("{FED}/events/messages")).await;
    assert_eq!(messages.json["messages"], json!([]), "{}", messages.text);
    let peers = daemon.get_json(&format!("{FED}/peers")).await;
    assert_eq!(peers.json["peers"], json!([]), "{}", peers.text);
    // The object form still works.
    daemon.append_ok(plan, event_body("step.started", 1)).await;
}

#[tokio::test]
async fn non_object_bodies_get_422_on_the_admin_socket() {
    let daemon = Daemon::start(DaemonOpts::default());
    let socket = daemon.admin_socket();
    let routes = [
        ("POST", "/tokens", json!([["read"], "ci"])),
        ("PUT", "/log-level", json!(["debug"])),
    ];
    for (method, path, array) in routes {
        for body in std::iter::once(array).chain(scalars()) {
            let resp =
                admin_request(&socket, method, path, Some(body.to_string().as_bytes())).await;
            assert_invalid_request(&resp, &format!("admin {method} {path} {body}"));
        }
    }
    let tokens = admin_request(&socket, "GET", "/tokens", None).await;
    assert_eq!(tokens.json["tokens"], json!([]), "{}", tokens.text);
    let level = admin_request(&socket, "GET", "/log-level", None).await;
    assert_eq!(level.json["level"], "info", "{}", level.text);
    // The HTTP API reached through the socket refuses them the same way.
    let plan = new_plan();
    let path = format!("/api/plans/{plan}/events");
    let resp = admin_request(&socket, "POST", &path, Some(b"[\"step.started\"]")).await;
    assert_invalid_request(&resp, "admin passthrough append");
}

#[tokio::test]
async fn every_rejection_is_problem_json() {
    let daemon = Daemon::start(DaemonOpts::default().with_admin_token()).send_admin_token();
    let plan = new_plan();
    daemon.append_ok(plan, event_body("step.started", 1)).await;

    // A path segment that is not UTF-8 once decoded, on every route with one.
    let bad_segments = [
        ("GET", "/api/plans/%ff".to_string()),
        ("GET", "/api/plans/%ff/events".to_string()),
        ("POST", "/api/plans/%ff/events".to_string()),
        ("GET", "/api/plans/%ff/events/stream".to_string()),
        ("POST", format!("{FED}/peers/%ff/status")),
        ("GET", "/ui/%ff".to_string()),
        ("GET", "/ui/plans/%ff".to_string()),
        ("GET", "/ui/assets/%ff".to_string()),
    ];
    for (method, path) in &bad_segments {
        let request = match *method {
            "GET" => daemon.get(path),
            _ => daemon.post(path).json(&json!({"status": "active"})),
        };
        let resp = send(request).await;
        assert_problem(&resp, 400);
    }

    // An unknown parameter and a malformed value, on every route with a query.
    let query_routes = [
        "/api/plans".to_string(),
        format!("/api/plans/{plan}/events"),
        format!("/api/plans/{plan}/events/stream"),
        "/api/events/stream".to_string(),
        format!("{FED}/events/messages"),
        format!("{FED}/events/stream"),
    ];
    for path in &query_routes {
        for query in ["bogus=1", "limit=x&after=x"] {
            let resp = send(daemon.get(&format!("{path}?{query}"))).await;
            assert_eq!(
                assert_problem(&resp, 400),
                "urn:logbook:problem:invalid-query",
                "{path}?{query}"
            );
        }
    }

    // Routes that take no query: any query is refused, as an unknown
    // parameter is above.
    for path in [
        format!("/api/plans/{plan}"),
        format!("/api/plans/{plan}/log-key"),
    ] {
        let resp = send(daemon.get(&format!("{path}?x=1"))).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:invalid-query",
            "{path}"
        );
        assert_eq!(send(daemon.get(&path)).await.status, 200, "{path}");
    }

    // Malformed JSON, and a body that is not JSON, on every route with a body.
    let mut body_routes: Vec<String> = object_routes(&plan.to_string())
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    for incoming in ["event", "event/ack", "subscribe", "unsubscribe"] {
        body_routes.push(format!("{FED}/incoming/{incoming}"));
    }
    for path in &body_routes {
        let resp = send(
            daemon
                .post(path)
                .header("content-type", "application/json")
                .body("{\"type\": "),
        )
        .await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:invalid-json",
            "{path}"
        );
        let resp = send(daemon.post(path).body("type=step.started")).await;
        assert_problem(&resp, 415);
    }

    // A request line or header the HTTP parser refuses before any route.
    let malformed: [&[u8]; 3] = [
        b"GET /api/plans x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /api/plans HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ];
    for request in malformed {
        let resp = daemon.raw_http(request).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:malformed-request",
            "{}",
            String::from_utf8_lossy(request)
        );
    }

    // A body in a content coding, or a transfer coding other than chunked
    // alone: refused, and nothing is appended.
    let before = daemon.head(plan).await.unwrap()["head_seq"].clone();
    let body = event_body("step.started", 2).to_string();
    let host = daemon.addr;
    let encoded = format!(
        "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Encoding: br\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = daemon.raw_http(encoded.as_bytes()).await;
    assert_eq!(
        assert_problem(&resp, 415),
        "urn:logbook:problem:unsupported-media-type"
    );
    // (Not ending in chunked, the length is unknown: hyper's 400, RFC
    // 9112 §6.3.)
    for (coding, status, kind) in [
        ("gzip, chunked", 501, "unsupported-transfer-coding"),
        ("chunked, chunked", 501, "unsupported-transfer-coding"),
        ("foo", 400, "malformed-request"),
    ] {
        let chunked = format!(
            "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        let resp = daemon.raw_http(chunked.as_bytes()).await;
        assert_eq!(
            assert_problem(&resp, status),
            format!("urn:logbook:problem:{kind}"),
            "{coding}"
        );
    }
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], before);
    // identity (with an empty list element, which RFC 9110 §5.6.1 allows)
    // is the body as sent: past the coding check, to the token check (this
    // raw request has no token).
    let identity = format!(
        "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Encoding: identity, \r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = daemon.raw_http(identity.as_bytes()).await;
    assert_eq!(
        assert_problem(&resp, 401),
        "urn:logbook:problem:unauthorized"
    );

    // A method a route does not take, and no route at all.
    let resp = send(daemon.client.delete(daemon.url("/api/plans"))).await;
    assert_problem(&resp, 405);
    let resp = send(daemon.get("/no/such/route")).await;
    assert_problem(&resp, 404);
}

#[tokio::test]
async fn every_admin_rejection_is_problem_json() {
    let daemon = Daemon::start(DaemonOpts::default());
    let socket = daemon.admin_socket();
    for (method, path) in [
        ("GET", "/plans/%ff"),
        ("DELETE", "/plans/%ff"),
        ("POST", "/plans/%ff/verify"),
        ("GET", "/plans/%ff/export"),
        ("DELETE", "/tokens/%ff"),
        ("POST", "/api/v1/federation/peers/%ff/status"),
    ] {
        let resp = admin_request(&socket, method, path, Some(b"{\"status\":\"active\"}")).await;
        assert_problem(&resp, 400);
    }
    for (method, path) in [("POST", "/tokens"), ("PUT", "/log-level")] {
        let resp = admin_request(&socket, method, path, Some(b"{\"scopes\": [")).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:invalid-json",
            "{method} {path}"
        );
        let resp = admin_request(&socket, method, path, Some(b"{\"bogus\": 1}")).await;
        assert_invalid_request(&resp, &format!("{method} {path} unknown member"));
    }
    let resp = admin_request(&socket, "DELETE", "/status", None).await;
    assert_problem(&resp, 405);
    let resp = admin_request(&socket, "GET", "/no/such/route", None).await;
    assert_problem(&resp, 404);
}

/// One HTTP/1.1 request on the admin socket, answered with `Connection:
/// close` so the response ends at EOF.
async fn admin_request(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .expect("connecting to the admin socket");
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: logbook\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("sending");
        // The server may answer (a bad path, say) and close before it reads
        // the body; the answer is what counts, so a failed write is fine.
        let _ = stream.write_all(body).await;
        let mut received = Vec::new();
        // A server that closed with our body unread may reset the stream
        // after its answer: keep what arrived.
        let read = stream.read_to_end(&mut received).await;
        assert!(!received.is_empty(), "no response: {read:?}");
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("admin request timed out");
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.trim().parse().unwrap(),
            );
        }
    }
    assert!(
        headers.get("transfer-encoding").is_none(),
        "expected a sized response: {text:?}"
    );
    Resp {
        status,
        headers,
        text: body.to_string(),
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// POSTs raw JSON text (serde_json would not write duplicates or keep a
/// literal's spelling) to an append route.
async fn append_text(daemon: &Daemon, plan: &str, text: &str) -> Resp {
    send(
        daemon
            .post(&format!("/api/plans/{plan}/events"))
            .header("content-type", "application/json")
            .body(text.to_string()),
    )
    .await
}

#[tokio::test]
async fn duplicate_members_are_refused_at_any_depth() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    for (text, member) in [
        (r#"{"type":"bogus","type":"plan.created"}"#, "type"),
        (r#"{"type":"plan.created","payload":{"a":1,"a":2}}"#, "a"),
        (
            r#"{"type":"plan.created","payload":{"l":[{"b":1,"\u0062":2}]}}"#,
            "b",
        ),
    ] {
        let resp = append_text(&daemon, &plan, text).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:duplicate-member",
            "{text}: {}",
            resp.text
        );
        let body: Value = serde_json::from_str(&resp.text).unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("duplicate member {member:?}")),
            "{body}"
        );
    }
    // Nothing was stored; the same member names in different objects pass.
    assert!(daemon.head(&plan).await.is_none());
    let ok = r#"{"type":"plan.created","payload":{"a":1,"n":{"a":2},"l":[{"a":3},{"a":4}]}}"#;
    let resp = append_text(&daemon, &plan, ok).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn whole_numbers_beyond_the_safe_range_are_refused_however_written() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    for literal in [
        "9007199254740993.0",
        "1e19",
        "-1.0E18",
        "9007199254740992e0",
    ] {
        let text = format!(r#"{{"type":"plan.created","payload":{{"n":{literal}}}}}"#);
        let resp = append_text(&daemon, &plan, &text).await;
        assert_eq!(
            assert_problem(&resp, 422),
            "urn:logbook:problem:unsafe-integer",
            "{literal}: {}",
            resp.text
        );
    }
    assert!(daemon.head(&plan).await.is_none());
    // Still exact, or kept with an exponent by RFC 8785: accepted.
    let text = r#"{"type":"plan.created","payload":{"a":9007199254740991.0,"b":1e21,"c":0.5}}"#;
    let resp = append_text(&daemon, &plan, text).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}
