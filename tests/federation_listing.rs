//! The federation messages listing pages: `limit` (default 100, at most
//! 10000) and `after=` with the previous page's `next_after`, across
//! outbound then inbound messages, with nothing listed twice or skipped.
//! Its pages, and the continuity listing, are written as they are read.

mod federation_common;

use federation_common::*;
use logbook_federation::message::EventMessage;
use serde_json::{Value, json};
use uuid::Uuid;

const LIST: &str = "/api/v1/federation/events/messages";

/// mallory (a test key) sends `n` events to beta in one batch.
async fn receive(beta: &Node, n: usize) {
    receive_payloads(beta, (0..n).map(|i| json!({"i": i}))).await;
}

/// mallory sends these payloads to beta in one batch.
async fn receive_payloads(beta: &Node, payloads: impl Iterator<Item = Value>) {
    let key = test_key("mallory");
    let batch: Vec<Value> = payloads
        .map(|payload| {
            json!(
                EventMessage::signed(
                    &key,
                    &key_id(&key),
                    "mallory",
                    "beta",
                    Uuid::new_v4(),
                    "audit.note",
                    payload,
                    now_ms(),
                )
                .unwrap()
            )
        })
        .collect();
    let (status, acks) = beta
        .post("/api/v1/federation/incoming/event", &json!(batch))
        .await;
    assert_eq!(status, 200, "{acks}");
}

async fn page(node: &Node, query: &str) -> (Vec<Value>, Value) {
    let (status, body) = node.get(&format!("{LIST}?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    (
        body["messages"].as_array().unwrap().clone(),
        body["next_after"].clone(),
    )
}

/// Every page of `query`, `limit` at a time, until a short page.
async fn walk(node: &Node, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (items, next) = page(node, &format!("{query}&limit={limit}&after={after}")).await;
        let short = items.len() < limit;
        all.extend(items);
        if short {
            return all;
        }
        after = next
            .as_str()
            .expect("a full page has a next_after")
            .to_string();
    }
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messages_listing_pages_with_after() {
    // mallory's port is closed: what beta publishes to it stays queued.
    let beta = Node::start(
        "beta",
        free_port(),
        "",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    let key = test_key("mallory");
    let subscribe = EventMessage::signed(
        &key,
        &key_id(&key),
        "mallory",
        "beta",
        Uuid::new_v4(),
        "federation.subscribe",
        json!({"eventType": "audit.>"}),
        now_ms(),
    )
    .unwrap();
    let (status, ack) = beta
        .post("/api/v1/federation/incoming/subscribe", &json!(subscribe))
        .await;
    assert_eq!(status, 200, "{ack}");
    for i in 0..5 {
        let (status, body) = beta
            .post(
                "/api/v1/federation/events/publish",
                &json!({"eventType": "audit.sent", "payload": {"i": i}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    receive(&beta, 105).await;

    // The default page is 100: the oldest ones, and a cursor to go on.
    let (first, next) = page(&beta, "direction=inbound").await;
    assert_eq!(first.len(), 100);
    assert_eq!(first[0]["payload"]["i"], 0);
    assert_eq!(next, "i:100");
    let (rest, end) = page(&beta, "direction=inbound&after=i:100").await;
    assert_eq!(rest.len(), 5);
    assert_eq!(rest[4]["payload"]["i"], 104);
    // An empty page past the end hands the cursor back, to poll with.
    let (none, same) = page(
        &beta,
        &format!("direction=inbound&after={}", end.as_str().unwrap()),
    )
    .await;
    assert!(none.is_empty());
    assert_eq!(same, end);

    // Walking both directions in small pages lists everything once, in
    // order: outbound (by peer and seq) first, then inbound.
    let everything = page(&beta, "limit=10000").await.0;
    assert_eq!(everything.len(), 110);
    for limit in [1, 3, 7, 100] {
        let walked = walk(&beta, "", limit).await;
        assert_eq!(ids(&walked), ids(&everything), "limit {limit}");
    }
    let directions: Vec<&str> = everything
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert!(
        directions[..5].iter().all(|d| *d == "outbound")
            && directions[5..].iter().all(|d| *d == "inbound")
    );
    // Filters keep working with a cursor.
    let outbound = walk(&beta, "direction=outbound&peer=mallory", 2).await;
    assert_eq!(ids(&outbound), ids(&everything[..5]));
    let (status, body) = beta.get(&format!("{LIST}?after=nonsense")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = beta
        .get(&format!("{LIST}?direction=outbound&after=i:3"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = beta.get(&format!("{LIST}?limit=10001")).await;
    assert_eq!(status, 400, "{body}");
}

/// Messages can each be as large as a request body: a page of them is
/// written as it is read, in runs of at most 1 MiB, never held whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_large_messages_is_written_as_it_is_read() {
    let beta = Node::start(
        "beta",
        free_port(),
        "",
        &peer_config("mallory", free_port(), &test_key("mallory")),
    );
    // 12 messages of 300 KB, three per batch (a batch body is at most
    // about 1 MiB): a page of them spans several runs.
    for batch in 0..4 {
        let payloads =
            (batch * 3..batch * 3 + 3).map(|i| json!({"i": i, "pad": "x".repeat(300_000)}));
        receive_payloads(&beta, payloads).await;
    }
    let response = beta
        .http
        .get(beta.url(&format!("{LIST}?direction=inbound&limit=10")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    // Written as read: no length known in advance.
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(header("content-length").is_none());
    let body: Value = response.json().await.unwrap();
    let listed = body["messages"].as_array().unwrap();
    let numbers: Vec<u64> = listed
        .iter()
        .map(|m| m["payload"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    assert_eq!(listed[9]["payload"]["pad"].as_str().unwrap().len(), 300_000);
    assert_eq!(body["next_after"], "i:10");
    // Each message as a page of one shows it.
    let (one, _) = page(&beta, "direction=inbound&after=i:6&limit=1").await;
    assert_eq!(one[0], listed[6]);
    let (rest, end) = page(&beta, "direction=inbound&after=i:10").await;
    assert_eq!(rest.len(), 2);
    assert_eq!(end, "i:12");

    // A filter that matches nothing reads through every run to the end.
    let (none, next) = page(&beta, "direction=inbound&peer=nobody&limit=5").await;
    assert!(none.is_empty());
    assert_eq!(next, Value::Null);
    // A status no inbound message has lists none, and hands the cursor back.
    let (none, next) = page(&beta, "direction=inbound&status=dead&after=i:3").await;
    assert!(none.is_empty());
    assert_eq!(next, "i:3");
    // The continuity listing reads the same runs: nothing here broke a chain.
    let (status, anomalies) = beta.get("/api/v1/federation/events/continuity").await;
    assert_eq!(status, 200, "{anomalies}");
    assert_eq!(anomalies, json!({"anomalies": []}));
}
