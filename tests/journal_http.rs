//! The HTTP contract: idempotent retries, optimistic concurrency with
//! `expected_seq`, bad input answered with problem+json that changes nothing,
//! and bearer-token auth.

mod common;

use common::{Daemon, DaemonOpts, assert_problem, event_body, new_plan, run_expecting_exit};
use serde_json::{Value, json};

#[tokio::test]
async fn healthz_answers() {
    let daemon = Daemon::start(DaemonOpts::default());
    let resp = daemon.get_json("/healthz").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json["status"], "ok");
    let resp = daemon.get_json("/api/no-such-route").await;
    assert_problem(&resp, 404);
}

#[tokio::test]
async fn idempotent_retry_returns_the_original_and_appends_nothing() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let body = json!({"type": "bank.message", "actor": "gateway", "payload": {"msg": "MT103", "amount": 12}});
    let key = [("Idempotency-Key", "req-0001")];

    let first = daemon.append_with(plan, body.clone(), &key).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);

    let retry = daemon.append_with(plan, body.clone(), &key).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.json, first.json,
        "the retry returns the original event"
    );
    let head = daemon.head(plan).await.unwrap();
    assert_eq!(head["head_seq"], 1, "the retry appended nothing: {head}");
    assert_eq!(head["head_signature"], first.json["signature"]);

    // Still the original after the plan has moved on.
    daemon.append_ok(plan, event_body("step.started", 1)).await;
    let late = daemon.append_with(plan, body.clone(), &key).await;
    assert_eq!(late.status, 200, "{}", late.text);
    assert_eq!(late.json["seq"], 1);
    assert_eq!(late.json["id"], first.json["id"]);
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 2);

    // Same key, different body: 409, nothing appended.
    let mut changed = body.clone();
    changed["payload"]["amount"] = json!(13);
    let conflict = daemon.append_with(plan, changed, &key).await;
    assert_eq!(
        assert_problem(&conflict, 409),
        "urn:logbook:problem:idempotency-conflict"
    );
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 2);

    // The key is per plan: the same key on another plan is a new request.
    let other = new_plan();
    let resp = daemon.append_with(other, body.clone(), &key).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.json["plan_id"], other.to_string());

    // An omitted payload and an explicit {} are the same request.
    let bare = daemon
        .append_with(
            plan,
            json!({"type": "plan.closed"}),
            &[("Idempotency-Key", "close")],
        )
        .await;
    assert_eq!(bare.status, 201);
    let explicit = daemon
        .append_with(
            plan,
            json!({"type": "plan.closed", "payload": {}}),
            &[("Idempotency-Key", "close")],
        )
        .await;
    assert_eq!(explicit.status, 200, "{}", explicit.text);
    assert_eq!(explicit.json["seq"], bare.json["seq"]);

    // Survives a restart: the key is stored with the event.
    let mut daemon = daemon;
    daemon.restart();
    let after_restart = daemon.append_with(plan, body, &key).await;
    assert_eq!(after_restart.status, 200, "{}", after_restart.text);
    assert_eq!(after_restart.json, first.json);
    assert_eq!(daemon.head(plan).await.unwrap()["head_seq"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_append_once() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let request = daemon
            .post(&format!("/api/plans/{plan}/events"))
            .header("Idempotency-Key", "same-key")
            .json(&event_body("instrument.issued", 7));
        tasks.push(tokio::spawn(common::send(request)));
    }
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let resp = task.await.unwrap();
        match resp.status {
            201 => created += 1,
            200 => assert_eq!(resp.header("idempotent-replayed"), Some("true")),
            other => panic!("unexpected {other}: {}", resp.text),
        }
        ids.insert(resp.json["id"].as_str().unwrap().to_string());
    }
    assert_eq!(created, 1, "exactly one of the racing requests appends");
    assert_eq!(ids.len(), 1, "all answers are the same event");
    assert_eq!(daemon.head(plan).await.unwrap()["count"], 1);
}

#[tokio::test]
async fn expected_seq_guards_the_head() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();

    let resp = daemon
        .append(plan, json!({"type": "plan.created", "expected_seq": 0}))
        .await;
    assert_eq!(
        resp.status, 201,
        "expected_seq 0 on a new plan: {}",
        resp.text
    );
    assert_eq!(resp.json["seq"], 1);

    let resp = daemon
        .append(plan, json!({"type": "plan.submitted", "expected_seq": 0}))
        .await;
    assert_eq!(
        assert_problem(&resp, 409),
        "urn:logbook:problem:seq-conflict"
    );
    assert_eq!(resp.json["head_seq"], 1, "{}", resp.text);
    assert_eq!(resp.json["expected_seq"], 0);

    let resp = daemon
        .append(plan, json!({"type": "plan.submitted", "expected_seq": 1}))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.json["seq"], 2);

    let resp = daemon
        .append(plan, json!({"type": "plan.approved", "expected_seq": 7}))
        .await;
    assert_problem(&resp, 409);
    assert_eq!(resp.json["head_seq"], 2);

    let head = daemon.head(plan).await.unwrap();
    assert_eq!(head["head_seq"], 2, "conflicts appended nothing");
    let events = daemon.all_events(plan).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["plan.created", "plan.submitted"]);
}

/// A bad-input case: what it is, the expected status, the expected problem
/// kind (when one is fixed), the content type and the body.
type Case = (
    &'static str,
    u16,
    Option<&'static str>,
    Option<&'static str>,
    Vec<u8>,
);

/// A JSON value nested `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_changes_nothing() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    let first = daemon.append_ok(plan, event_body("plan.created", 0)).await;
    let fresh = new_plan();
    let events_url = format!("/api/plans/{plan}/events");
    let fresh_url = format!("/api/plans/{fresh}/events");

    let raw = |url: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = daemon.post(url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        common::send(request)
    };
    let json_ct = Some("application/json");
    let valid = br#"{"type":"plan.approved"}"#.to_vec();
    let too_deep = format!(r#"{{"type":"plan.approved","payload":{}}}"#, nested(40)).into_bytes();
    let way_too_deep =
        format!(r#"{{"type":"plan.approved","payload":{}}}"#, nested(300)).into_bytes();

    // (what, status, problem kind if fixed, content type, body)
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            400,
            Some("invalid-json"),
            json_ct,
            br#"{"type": "plan.approved""#.to_vec(),
        ),
        ("not an object", 422, None, json_ct, b"[1,2]".to_vec()),
        (
            "wrong content type",
            415,
            Some("unsupported-media-type"),
            Some("text/plain"),
            valid.clone(),
        ),
        (
            "no content type",
            415,
            Some("unsupported-media-type"),
            None,
            valid.clone(),
        ),
        (
            "unknown type",
            422,
            Some("unknown-type"),
            json_ct,
            br#"{"type":"plan.teleported"}"#.to_vec(),
        ),
        (
            "bad type syntax",
            422,
            Some("invalid-type"),
            json_ct,
            br#"{"type":"Plan..Created"}"#.to_vec(),
        ),
        (
            "type too long",
            422,
            Some("invalid-type"),
            json_ct,
            format!(r#"{{"type":"a{}"}}"#, ".b".repeat(70)).into_bytes(),
        ),
        (
            "missing type",
            422,
            None,
            json_ct,
            br#"{"payload":{}}"#.to_vec(),
        ),
        (
            "unknown field",
            422,
            None,
            json_ct,
            br#"{"type":"plan.approved","colour":"red"}"#.to_vec(),
        ),
        (
            "actor not a string",
            422,
            None,
            json_ct,
            br#"{"type":"plan.approved","actor":5}"#.to_vec(),
        ),
        (
            "actor too long",
            422,
            Some("invalid-actor"),
            json_ct,
            format!(
                r#"{{"type":"plan.approved","actor":"{}"}}"#,
                "a".repeat(257)
            )
            .into_bytes(),
        ),
        (
            "actor with a newline",
            422,
            Some("invalid-actor"),
            json_ct,
            br#"{"type":"plan.approved","actor":"alice\nroot: approved"}"#.to_vec(),
        ),
        (
            "actor with an escape sequence",
            422,
            Some("invalid-actor"),
            json_ct,
            br#"{"type":"plan.approved","actor":"\u001b[2Kalice"}"#.to_vec(),
        ),
        (
            "actor with a bidirectional override",
            422,
            Some("invalid-actor"),
            json_ct,
            br#"{"type":"plan.approved","actor":"\u202eecila"}"#.to_vec(),
        ),
        (
            "actor with a C1 control",
            422,
            Some("invalid-actor"),
            json_ct,
            "{\"type\":\"plan.approved\",\"actor\":\"a\u{85}b\"}"
                .as_bytes()
                .to_vec(),
        ),
        (
            "negative expected_seq",
            422,
            None,
            json_ct,
            br#"{"type":"plan.approved","expected_seq":-1}"#.to_vec(),
        ),
        (
            "too-deep JSON",
            400,
            Some("json-too-deep"),
            json_ct,
            too_deep,
        ),
        (
            "JSON past the parser's recursion limit",
            400,
            Some("json-too-deep"),
            json_ct,
            way_too_deep,
        ),
        ("empty body", 400, Some("invalid-json"), json_ct, Vec::new()),
    ];
    for (name, status, kind, content_type, body) in cases {
        for url in [&events_url, &fresh_url] {
            let resp = raw(url, content_type, body.clone()).await;
            let got = assert_problem(&resp, status);
            if let Some(kind) = kind {
                assert_eq!(
                    got,
                    format!("urn:logbook:problem:{kind}"),
                    "{name}: {}",
                    resp.text
                );
            }
        }
        let head = daemon
            .head(plan)
            .await
            .unwrap_or_else(|| panic!("{name}: the plan vanished"));
        assert_eq!(head["head_seq"], 1, "{name} changed the plan: {head}");
        assert_eq!(
            head["head_signature"], first["signature"],
            "{name} changed the plan"
        );
        assert!(
            daemon.head(fresh).await.is_none(),
            "{name} created the fresh plan"
        );
    }

    // Oversized: the declared length alone is refused, before any body is
    // sent. (A client that sends the whole body anyway may see the
    // connection closed under it, so this speaks raw HTTP.)
    for url in [&events_url, &fresh_url] {
        let head = format!(
            "POST {url} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            daemon.addr,
            1024 * 1024 + 1
        );
        let resp = daemon.raw_http(head.as_bytes()).await;
        assert_eq!(
            assert_problem(&resp, 413),
            "urn:logbook:problem:body-too-large",
            "{}",
            resp.text
        );
        assert_eq!(resp.json["max_body_bytes"], 1024 * 1024);
    }
    // A body just under the limit whose JSON is fine is accepted, so the
    // limit is the configured one and not lower.
    let filler = "x".repeat(1024 * 1024 - 200);
    let near_limit =
        format!(r#"{{"type":"plan.approved","payload":{{"blob":"{filler}"}}}}"#).into_bytes();
    let resp = raw(&fresh_url, json_ct, near_limit).await;
    assert_eq!(
        resp.status,
        201,
        "a body under the limit: {}",
        &resp.text[..resp.text.len().min(300)]
    );
    let fresh_event = resp.json;
    assert_eq!(daemon.head(fresh).await.unwrap()["head_seq"], 1);
    // A body under the limit whose canonical payload is over it (`1e22` is
    // written `1e+22`): what would be stored and sent to peers is refused,
    // and nothing changes.
    let numbers = vec!["1e22"; (1024 * 1024 - 100) / 5].join(",");
    let grows = format!(r#"{{"type":"plan.approved","payload":[{numbers}]}}"#).into_bytes();
    assert!(grows.len() <= 1024 * 1024);
    let resp = raw(&fresh_url, json_ct, grows).await;
    assert_eq!(
        assert_problem(&resp, 413),
        "urn:logbook:problem:payload-too-large",
        "{}",
        resp.text
    );
    assert_eq!(resp.json["max_body_bytes"], 1024 * 1024);
    assert_eq!(daemon.head(fresh).await.unwrap()["head_seq"], 1);

    // Bad plan ids, on every route that takes one.
    for bad in ["not-a-uuid", "12345", "0192f3a45b6c7d8e9f00112233445566x"] {
        let resp = raw(&format!("/api/plans/{bad}/events"), json_ct, valid.clone()).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:invalid-plan-id",
            "{bad}"
        );
        for path in [
            format!("/api/plans/{bad}"),
            format!("/api/plans/{bad}/events"),
            format!("/api/plans/{bad}/events/stream"),
        ] {
            let resp = daemon.get_json(&path).await;
            assert_eq!(
                assert_problem(&resp, 400),
                "urn:logbook:problem:invalid-plan-id",
                "{path}"
            );
        }
    }

    // Bad query strings and headers.
    for path in [
        format!("/api/plans/{plan}/events?limit=0"),
        format!("/api/plans/{plan}/events?limit=abc"),
        format!("/api/plans/{plan}/events?verify=maybe"),
        format!("/api/plans/{plan}/events?after=-1"),
        "/api/plans?after=nope".to_string(),
        // One spelling per number, as the proof routes take them: no sign,
        // no leading zero.
        format!("/api/plans/{plan}/events?after=01"),
        format!("/api/plans/{plan}/events?after=+1"),
        format!("/api/plans/{plan}/events?limit=010"),
        "/api/plans?limit=+5".to_string(),
    ] {
        let resp = daemon.get_json(&path).await;
        assert_eq!(
            assert_problem(&resp, 400),
            "urn:logbook:problem:invalid-query",
            "{path}"
        );
    }
    let plain = daemon
        .get_json(&format!("/api/plans/{plan}/events?after=0&limit=10"))
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    let resp = daemon
        .append_with(
            plan,
            event_body("plan.approved", 1),
            &[("Idempotency-Key", "")],
        )
        .await;
    assert_problem(&resp, 400);
    let resp = daemon
        .append_with(
            plan,
            event_body("plan.approved", 1),
            &[("Idempotency-Key", &"k".repeat(300))],
        )
        .await;
    assert_problem(&resp, 400);
    // Two keys: neither is taken silently (a retry through a proxy that
    // doubled the header would otherwise append again under the other).
    let resp = daemon
        .append_with(
            plan,
            event_body("plan.approved", 1),
            &[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        )
        .await;
    assert_eq!(
        assert_problem(&resp, 400),
        "urn:logbook:problem:invalid-idempotency-key"
    );

    // Wrong method.
    let resp = common::send(
        daemon
            .client
            .delete(daemon.url(&events_url))
            .timeout(common::REQUEST_TIMEOUT),
    )
    .await;
    assert_problem(&resp, 405);

    // After all that, the plan holds exactly its first event, still valid.
    let events = daemon.all_events(plan).await;
    assert_eq!(events, vec![first]);
    assert_eq!(daemon.all_events(fresh).await, vec![fresh_event]);
    common::assert_chain_valid(&daemon, plan).await;
    // And the daemon still works.
    daemon.append_ok(plan, event_body("plan.approved", 2)).await;
}

#[tokio::test]
async fn oversized_body_without_content_length_is_refused() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan();
    // A streamed (chunked) body has no Content-Length to check up front.
    let chunk = vec![b' '; 64 * 1024];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        std::iter::once(Ok(br#"{"type":"plan.created","payload":"#.to_vec()))
            .chain((0..20).map(|_| Ok(chunk.clone())))
            .chain(std::iter::once(Ok(b"{}}".to_vec())))
            .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let result = daemon
        .post(&format!("/api/plans/{plan}/events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    // The server may answer before the whole body is sent; if it does, the
    // answer must be 413.
    if let Ok(response) = result {
        let status = response.status().as_u16();
        assert_eq!(status, 413, "streamed oversized body");
    }
    // A fresh client: the connection above may be one the server dropped
    // (see the next test).
    let fresh = common::client();
    let resp = common::send(
        fresh
            .get(daemon.url(&format!("/api/plans/{plan}")))
            .timeout(common::REQUEST_TIMEOUT),
    )
    .await;
    assert_problem(&resp, 404);
}

#[tokio::test]
async fn refusing_an_unread_body_closes_the_connection_explicitly() {
    // When the daemon answers 413 without reading the body it cannot keep
    // the connection, so it must say `Connection: close`; otherwise a client
    // pools the connection and its next request fails when the server drops it.
    let daemon = Daemon::start(DaemonOpts::default());
    let head = format!(
        "POST /api/plans/{}/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        new_plan(),
        daemon.addr,
        1024 * 1024 + 1
    );
    let resp = daemon.raw_http(head.as_bytes()).await;
    assert_problem(&resp, 413);
    assert_eq!(
        resp.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "413 before the body was read, without Connection: close; headers: {:?}",
        resp.headers
    );
}

const READ_TOKEN: &str = "read-token-0123456789";
const APPEND_TOKEN: &str = "append-token-9876543210";

fn token_config() -> String {
    let hash = |t: &str| logbook_base::hex::encode(&logbook_base::canonical::sha256(t.as_bytes()));
    format!(
        "[[auth.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n[[auth.tokens]]\nname = \"writer\"\nsha256 = \"{}\"\nscopes = [\"append\", \"read\"]\n",
        hash(READ_TOKEN),
        hash(APPEND_TOKEN)
    )
}

#[tokio::test]
async fn tokens_are_required_and_scoped() {
    let daemon = Daemon::start(DaemonOpts::default().config(&token_config()));
    let plan = new_plan();
    let bearer = |t: &str| format!("Bearer {t}");
    let path = format!("/api/plans/{plan}/events");

    // No token: 401 on reads and appends.
    let resp = daemon.get_json("/api/event-types").await;
    assert_eq!(
        assert_problem(&resp, 401),
        "urn:logbook:problem:unauthorized"
    );
    assert!(
        resp.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let resp = daemon.append(plan, event_body("plan.created", 0)).await;
    assert_problem(&resp, 401);
    // A bad token: 401.
    let resp = common::send(
        daemon
            .get("/api/plans")
            .header("authorization", bearer("wrong")),
    )
    .await;
    assert_problem(&resp, 401);
    let resp = common::send(
        daemon
            .get("/api/plans")
            .header("authorization", format!("Basic {READ_TOKEN}")),
    )
    .await;
    assert_problem(&resp, 401);

    // The read token reads but may not append.
    let resp = common::send(
        daemon
            .get("/api/event-types")
            .header("authorization", bearer(READ_TOKEN)),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = common::send(
        daemon
            .post(&path)
            .header("authorization", bearer(READ_TOKEN))
            .json(&event_body("plan.created", 0)),
    )
    .await;
    assert_eq!(assert_problem(&resp, 403), "urn:logbook:problem:forbidden");

    // The append token appends.
    let resp = common::send(
        daemon
            .post(&path)
            .header("authorization", bearer(APPEND_TOKEN))
            .json(&event_body("plan.created", 0)),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.text);

    // Nothing the refused requests sent was stored.
    let resp = common::send(
        daemon
            .get(&path)
            .header("authorization", bearer(READ_TOKEN)),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json["events"].as_array().unwrap().len(), 1);

    // /healthz stays open for probes.
    assert_eq!(daemon.get_json("/healthz").await.status, 200);

    // SSE: 401 without a token; a browser's EventSource may pass it as ?access_token=.
    let refused = daemon.sse_refused(&format!("{path}/stream"), &[]).await;
    assert_problem(&refused, 401);
    let mut stream = daemon
        .sse_ok(&format!("{path}/stream?access_token={READ_TOKEN}"), &[])
        .await;
    let (id, event) = stream.next_event().await;
    assert_eq!((id, event["seq"].as_u64()), (1, Some(1)));
    // Sent twice, it is a malformed query (400), not a missing token (401).
    let twice = daemon
        .sse_refused(
            &format!("{path}/stream?access_token={READ_TOKEN}&access_token={READ_TOKEN}"),
            &[],
        )
        .await;
    assert_eq!(
        assert_problem(&twice, 400),
        "urn:logbook:problem:invalid-query"
    );
    // The query-string token is accepted only on streams.
    let resp = daemon
        .get_json(&format!("/api/plans?access_token={READ_TOKEN}"))
        .await;
    assert_ne!(
        resp.status, 200,
        "access_token on a non-stream route: {}",
        resp.text
    );
}

#[test]
fn public_listen_without_tokens_refuses_to_start() {
    let (status, stderr) = run_expecting_exit(DaemonOpts::default().listen("0.0.0.0:0"));
    assert!(
        !status.success(),
        "the daemon must refuse to start: {status}"
    );
    assert!(
        stderr.contains("authentication"),
        "the message says why: {stderr}"
    );
    assert!(!stderr.contains("logbook listening"), "{stderr}");
}

#[tokio::test]
async fn public_listen_with_tokens_starts() {
    let daemon = Daemon::start(
        DaemonOpts::default()
            .listen("0.0.0.0:0")
            .config(&token_config()),
    );
    assert!(
        daemon.addr.ip().is_unspecified(),
        "listening on {}",
        daemon.addr
    );
    let url = format!("http://127.0.0.1:{}/healthz", daemon.addr.port());
    let resp = common::send(daemon.client.get(url).timeout(common::REQUEST_TIMEOUT)).await;
    assert_eq!(resp.status, 200);
}

#[test]
fn loopback_listen_without_tokens_warns() {
    let daemon = Daemon::start(DaemonOpts::default());
    let log = daemon.log_text();
    let warned = log.lines().any(|line| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| {
            v["level"] == "WARN"
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("token"))
        })
    });
    assert!(warned, "no warning about running without tokens: {log}");
}

/// The append route reads its body (compact fast path or not) under the
/// request timeout: a body that stops arriving is answered 408
/// problem+json, and nothing is appended.
#[tokio::test]
async fn a_stalled_append_body_times_out() {
    let daemon = Daemon::start(
        DaemonOpts::default().replace("request_timeout_secs = 30", "request_timeout_secs = 1"),
    );
    let plan = new_plan();
    let body = br#"{"type":"plan.created","payload":{}}"#;
    // Declares the whole body, sends all but its last byte, and waits.
    let mut request = format!(
        "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        daemon.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body[..body.len() - 1]);
    let resp = daemon.raw_http(&request).await;
    assert_eq!(
        assert_problem(&resp, 408),
        "urn:logbook:problem:request-timeout",
        "{}",
        resp.text
    );
    assert!(
        daemon.head(plan).await.is_none(),
        "the stalled body appended"
    );
}
